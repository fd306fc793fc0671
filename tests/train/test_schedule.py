"""LR schedules: the card's cosine per epoch, and warmup-stable-decay."""

import pytest

from sutra.train.recipe import EpochLR, ScheduleSection
from sutra.train.schedule import Schedule

CARD = [EpochLR(3e-4, 3e-5), EpochLR(1e-4, 1e-5), EpochLR(3e-5, 3e-6)]


def test_cosine_restarts_each_epoch_from_its_peak_to_its_floor():
    schedule = Schedule(ScheduleSection(kind="cosine", warmup_steps=10, epochs=CARD), steps_per_epoch=100, epochs=3)
    for epoch, phase in enumerate(CARD):
        first = epoch * 100
        lrs = [schedule.lr(first + i) for i in range(100)]
        assert lrs[0] == pytest.approx(phase.peak_lr / 10)  # warmup restarts
        assert lrs[9] == pytest.approx(phase.peak_lr) and lrs[10] < lrs[9]  # warmup ends at the peak, and the cosine leaves it at once
        assert lrs[-1] == pytest.approx(phase.min_lr)  # the epoch ends at its floor
        assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone cosine decay
        assert lrs[9 + 45] == pytest.approx((phase.peak_lr + phase.min_lr) / 2, rel=0.05)  # halfway: the midpoint


def test_wsd_warms_up_holds_and_decays_over_the_last_fraction():
    section = ScheduleSection(kind="wsd", warmup_steps=5, peak_lr=1e-3, min_lr=0.0, decay_fraction=0.2)
    schedule = Schedule(section, steps_per_epoch=50, epochs=2)
    lrs = [schedule.lr(s) for s in range(100)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[4] == pytest.approx(1e-3)
    assert all(lr == 1e-3 for lr in lrs[5:80])
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:]))
    assert lrs[-1] == pytest.approx(0.0)


def test_a_one_step_run_trains_at_the_peak_under_either_schedule():
    wsd = Schedule(ScheduleSection(kind="wsd", warmup_steps=0, peak_lr=1e-3, min_lr=0.0), steps_per_epoch=1, epochs=1)
    cosine = Schedule(ScheduleSection(kind="cosine", warmup_steps=0, epochs=CARD[:1]), steps_per_epoch=1, epochs=1)
    assert wsd.lr(0) == 1e-3 and cosine.lr(0) == 3e-4  # a decay would leave the only step at min_lr (0: no training)
    two = Schedule(ScheduleSection(kind="wsd", warmup_steps=0, peak_lr=1e-3, min_lr=0.0), steps_per_epoch=2, epochs=1)
    assert [two.lr(0), two.lr(1)] == [1e-3, 0.0]  # otherwise the decay keeps at least one step
