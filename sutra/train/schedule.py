"""Learning-rate schedules as pure functions of the optimizer step.

Being a function of the step alone, a schedule needs no state of its own: restoring the step
counter restores it exactly.
"""

import math
from dataclasses import dataclass

from sutra.train.recipe import ScheduleSection


@dataclass(frozen=True)
class Schedule:
    section: ScheduleSection
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        if self.section.kind == "cosine":
            return self._cosine_per_epoch(step)
        return self._warmup_stable_decay(step)

    def _cosine_per_epoch(self, step: int) -> float:
        """Each epoch restarts: linear warmup to its peak, then a half cosine down to its floor.

        This is the model card's progression (3e-4→3e-5, 1e-4→1e-5, 3e-5→3e-6), each epoch
        continuing from the previous epoch's weights."""
        epoch, position = divmod(step, self.steps_per_epoch)
        phase = self.section.epochs[min(epoch, self.epochs - 1)]
        warmup = min(self.section.warmup_steps, self.steps_per_epoch - 1)
        if position < warmup:
            return phase.peak_lr * (position + 1) / warmup
        peak = max(warmup - 1, 0)  # warmup's last step is at the peak already: the cosine starts there, not a step later
        progress = (position - peak) / max(1, self.steps_per_epoch - 1 - peak)
        return phase.min_lr + (phase.peak_lr - phase.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    @property
    def decay_start(self) -> int:
        """WSD: the first step of the decay, which takes the run's last decay_fraction (at least one
        step; none in a run of one step, which trains at the peak, as a one-step cosine epoch does)."""
        return self.total_steps - min(self.total_steps - 1, max(1, round(self.section.decay_fraction * self.total_steps)))

    def _warmup_stable_decay(self, step: int) -> float:
        """Warmup to the peak, hold it, and decay linearly to min_lr over the final fraction of the run."""
        s = self.section
        warmup = min(s.warmup_steps, self.total_steps - 1)
        if step < warmup:
            return s.peak_lr * (step + 1) / warmup
        if step < self.decay_start:
            return s.peak_lr
        progress = (step - self.decay_start + 1) / (self.total_steps - self.decay_start)
        return s.peak_lr + (s.min_lr - s.peak_lr) * min(progress, 1.0)
