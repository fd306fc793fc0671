"""The training loop: one process or many (torchrun), exact resume, best/final checkpoints per epoch.

One optimizer step = `train.grad_accum` micro-batches of `train.micro_batch` windows, split over
the processes (each does grad_accum / world_size of them), so the global batch — and the data
each step sees, thanks to the loader's global cursor — does not depend on the process count.

An epoch is `steps_per_epoch` optimizer steps (by default one full pass: the windows that fill
whole steps; the few left over are counted and reported); the loader is realigned to the next
epoch's permutation at each epoch end, so epochs line up with the per-epoch LR schedule.

Host synchronisation: none in the hot loop. A step with a non-finite loss or gradient is skipped
on the device (fused AdamW's `found_inf`, as GradScaler uses it), and each step's loss, gradient
norm and stop votes are copied to the host behind its kernels and read one step later, while the
device runs the next step. Everything is read before a log line, evaluation or checkpoint.
"""

import errno
import json
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import yaml
from safetensors import SafetensorError

from sutra.errors import SutraError
from sutra.eval.perplexity import perplexity_of
from sutra.data.stream import describe_data
from sutra.io import atomic_write_json, atomic_write_text
from sutra.processes import LOCK_FILE, STOPPED_EXIT_CODES, exclusive
from sutra.train.checkpoints import CHECKPOINTS, LAST, LAST_GOOD, TRAINER_STATE, CheckpointStore, load_trainer_state
from sutra.train.metrics import METRICS_FILE, MetricsLog, causal_attended_per_token, device_peak_tflops, document_attended_per_token, finite, finite_or_null
from sutra.train.recipe import DATA_FILE, RECIPE_FILE, RESUME_MAY_CHANGE, Recipe, flat_recipe, load_recipe, recipe_differences
from sutra.train.schedule import Schedule

RECIPE_HEADER = "# the resolved recipe of this run, written by `sutra train`; `sutra train --resume` reads it\n"
# what a failed write raises: safetensors' and torch.save's I/O errors are not OSErrors
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
RUN_FILES = {RECIPE_FILE, DATA_FILE, METRICS_FILE, "tensorboard", CHECKPOINTS, "curves.png"}  # what a run (and `sutra plot`) writes before its first checkpoint


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def broadcast_object(self, value):
        """Rank 0's `value`, on every process."""
        if self.active:
            box = [value]
            dist.broadcast_object_list(box, src=0)
            value = box[0]
        return value

    def agree(self, work: Callable[[], None], main_only: bool = False) -> None:
        """`work` on every process (`main_only`: on rank 0 while the others wait), then every process
        ends as the first that failed did: its error stops them all, with its message. (A check that
        fails on one node alone, such as a path it cannot see, would otherwise end that process only,
        and the others would wait in their next collective: under NCCL, until its timeout.)"""
        failure = None
        if self.is_main or not main_only:
            try:
                work()
            except Exception as exc:  # (re-raised below, once the others know)
                failure = exc
        if self.active:
            said = None if failure is None else str(failure) if isinstance(failure, SutraError) else f"{type(failure).__name__}: {failure}"
            messages = [None] * self.world_size
            dist.all_gather_object(messages, said)
            failed = next((rank for rank, message in enumerate(messages) if message is not None), None)
            if failure is None and failed is not None:
                raise SutraError(f"stopped because rank {failed} failed: {messages[failed]}")
        if failure is not None:
            raise failure

    def on_main(self, work: Callable[[], None]) -> None:
        self.agree(work, main_only=True)


def setup_distributed(device_name: str) -> Distributed:
    """Rank and device from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    from sutra.model.device import pick_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(None if device_name == "auto" else device_name)
    if device.type == "cuda":  # torchrun's processes take a GPU each; one process may name its own
        device = torch.device("cuda", device.index if device.index is not None and world_size == 1 else local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        # the others wait in a collective while rank 0 writes a checkpoint: NCCL's 10-minute default is
        # short for a large model on slow shared storage (gloo's default is these 30 minutes)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None,
                                timeout=timedelta(minutes=30))
    return Distributed(rank, world_size, device)


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens consumed (global), skipped steps included
    skipped_steps: int = 0  # non-finite loss or gradient: update not applied
    bad_streak: int = 0  # the latest skipped steps in a row (a resumed streak still counts toward max_bad_steps)
    rollbacks: int = 0
    rollback_due: int | None = None  # a rollback found early (see _settle), made after the next step


@dataclass
class _InFlight:
    """An enqueued step whose loss, gradient norm and stop votes are still on their way to the host."""

    step: int
    numbers: torch.Tensor  # on the host (pinned when the model is on CUDA)
    copied: "torch.cuda.Event | None"

    def read(self) -> tuple[float, float, float]:
        if self.copied is not None:
            self.copied.synchronize()  # waits for this step's kernels, not for those queued after it
        loss, grad_norm, stop_votes = self.numbers.tolist()
        return loss, grad_norm, stop_votes


class Trainer:
    def __init__(self, recipe: Recipe, resume: bool, dist_info: Distributed):
        self.recipe, self.dist = recipe, dist_info
        self.run_dir = recipe.resolved_run_dir
        self.device = dist_info.device
        self.store = CheckpointStore(self.run_dir)
        self.dist.agree(lambda: self._check(resume))  # every process checks what it sees, before the first collective
        self._build()
        self.progress = Progress()
        self.in_flight: deque[_InFlight] = deque()  # steps enqueued but not yet read (at most two)
        self.window = _Window()
        self.last_grad_norm = float("nan")
        self.stop_signal: str | None = None  # 'SIGTERM' (e.g. a preempting scheduler) or 'Ctrl-C'; all ranks stop together
        self.stopping = False
        self.log: MetricsLog | None = None
        self.run_dir_lock = ExitStack()  # rank 0's hold on RUN_DIR/.lock, from before its first write to close()
        try:
            resumable = self._prepare_run_dir(resume)
            if resumable:
                self._restore(LAST, full=True)
            logged_until = self.progress.step if resumable else -1  # records past the checkpoint are redone

            def open_log() -> None:
                with self._writing(METRICS_FILE):
                    self.log = MetricsLog(self.run_dir, recipe.logging.tensorboard, logged_until)

            self.dist.on_main(open_log)
        except BaseException:
            self.close()
            raise

    # ---- setup -------------------------------------------------------------------------------

    def _check(self, resume: bool) -> None:
        """Every check of the recipe against data, model and process count; opens the data and the model's source."""
        from sutra.data.loader import TokenLoader

        r, t = self.recipe, self.recipe.train
        world = self.dist.world_size
        if t.grad_accum % world:
            counts = ", ".join(str(n) for n in range(1, t.grad_accum + 1) if t.grad_accum % n == 0)
            fix = f"resume it on a process count that divides it ({counts})" if resume else \
                f"make it a multiple of {world}, or run on a process count that divides it ({counts})"
            raise r.error("train.grad_accum", f"{t.grad_accum} micro-batches per step cannot be split over {world} processes; {fix}")
        self.accum = t.grad_accum // world
        if t.attention == "document" and t.document_kernel == "varlen" and self.device.type == "cuda":
            from sutra.model.masks import varlen_training_problem

            if problem := varlen_training_problem():
                raise r.error("train.document_kernel", problem)
        data_path = Path(r.data.path).expanduser()
        if not data_path.exists():
            raise r.error("data.path", f"{data_path} does not exist; prepare it with `sutra data prepare` (or `sutra data mix`)")
        loader_args = dict(seq_len=r.data.seq_len, micro_batch=t.micro_batch, rank=self.dist.rank, world_size=world, seed=r.data.seed)
        self.train_loader = TokenLoader(data_path, "train", **loader_args)
        self.val_loader = TokenLoader(data_path, "val", **loader_args)
        config, self.tokenizer, init_weights, model_eos = self._model_source(resume)
        # generation from the checkpoints stops at the model's own end tokens and where the training
        # documents ended (an Instruct tokenizer's eos is <|im_end|>, the separator <|endoftext|>)
        self.eos_token_ids = list(dict.fromkeys([*model_eos, self.tokenizer.eos_id, self.tokenizer.document_separator_id]))
        self._check_fits(config)
        if r.data.seq_len > config.max_seq_len:
            raise r.error("data.seq_len", f"{r.data.seq_len} is longer than the model's context of {config.max_seq_len} tokens")
        if self.val_loader.windows_per_epoch < 1:
            raise r.error("data.path", f"{data_path} has no validation window of {r.data.seq_len + 1} tokens; prepare it with a val split")
        # a model's embedding may be padded past its tokenizer's vocabulary (as many hub models are)
        if self.train_loader.tokenizer_fingerprint == self.tokenizer.fingerprint and self.train_loader.vocab_size > config.vocab_size:
            raise r.error("model.overrides.vocab_size" if "vocab_size" in r.model.overrides else "model",
                          f"the model's vocabulary of {config.vocab_size} is smaller than its tokenizer's {self.train_loader.vocab_size}")
        if self.train_loader.tokenizer_fingerprint != self.tokenizer.fingerprint:
            raise r.error(
                "data.path", f"{data_path} was tokenized with vocabulary {self.train_loader.vocab_size} (tokenizer {self.train_loader.tokenizer_fingerprint}) "
                f"but the model has vocabulary {config.vocab_size} (tokenizer {self.tokenizer.fingerprint}); re-prepare the data with the model's tokenizer"
            )
        step_windows = t.micro_batch * t.grad_accum
        full_pass = self.train_loader.windows_per_epoch // step_windows
        if full_pass < 1:
            # blame the step's size, which a user sets to fit the data: a --set one first
            sizes = ["train.micro_batch", "train.grad_accum"]
            given = [key for key in sizes if r.sources.get(key, "").startswith("--set")]
            raise r.error((given or sizes)[0], f"a step of {t.micro_batch} x {t.grad_accum} windows (train.micro_batch x train.grad_accum) is more "
                          f"than the {self.train_loader.windows_per_epoch} training windows of {data_path}; lower them, or prepare more data")
        if t.steps_per_epoch is not None and t.steps_per_epoch > full_pass:
            raise r.error("train.steps_per_epoch", f"{t.steps_per_epoch} steps exceed the {full_pass} steps one pass over {data_path} gives")
        steps_per_epoch = t.steps_per_epoch or full_pass
        self.schedule = Schedule(r.schedule, steps_per_epoch, t.epochs)
        if r.schedule.kind == "cosine" and r.schedule.warmup_steps >= steps_per_epoch:
            raise r.error("schedule.warmup_steps", f"{r.schedule.warmup_steps} warmup steps do not fit in an epoch of {steps_per_epoch} steps")
        if r.schedule.kind == "wsd" and r.schedule.warmup_steps > self.schedule.decay_start:
            raise r.error("schedule.warmup_steps", f"{r.schedule.warmup_steps} warmup steps run into the decay, which takes the last "
                          f"{self.schedule.total_steps - self.schedule.decay_start} of {self.schedule.total_steps} steps (schedule.decay_fraction)")
        self.unused_windows_per_epoch = self.train_loader.windows_per_epoch - steps_per_epoch * step_windows
        self.tokens_per_step = step_windows * r.data.seq_len
        self.config, self._source_model = config, init_weights  # (the init_from model, built in _build)

    def _build(self) -> None:
        """The model on its device (sharded or wrapped for DDP), compiled as the recipe asks, and its optimizer."""
        r, t, config = self.recipe, self.recipe.train, self.config
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
        from sutra.model.llama import Llama

        torch.manual_seed(t.seed)
        self.model = self._source_model if self._source_model is not None else Llama(config)
        del self._source_model
        self.model.to(self.device).train()
        self.model.activation_checkpointing = t.activation_checkpointing
        self.sharded = t.parallel == "fsdp" and self.dist.active  # (one process has nothing to shard)
        if self.sharded:
            from sutra.train.sharding import shard

            shard(self.model)  # before the optimizer: it holds the shards
        self.optimizer = self._optimizer()
        compiled = torch.compile(self.model) if (t.compile if t.compile is not None else self.device.type == "cuda") else self.model
        self.ddp = None
        if self.dist.active and not self.sharded:
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            # buffers are RoPE tables, equal everywhere: no sync per forward (torch 2.13 renamed the
            # switch and warns about the old name); bucket views save a gradient-sized copy
            no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
            self.ddp = DistributedDataParallel(compiled, device_ids=ids, gradient_as_bucket_view=True, **{no_sync: False})
        self.compiled = compiled
        self.forward = self.ddp or compiled
        self.peak_tflops = r.logging.peak_tflops or device_peak_tflops(self.device)

    def _model_source(self, resume: bool):
        """(config, tokenizer, model or None, the model's end-of-text ids): from the preset, or model.init_from.

        A resumed init_from run takes them from its own `last`, so the source need not load any more
        (a deleted run directory, a hub id while offline)."""
        from sutra.model.config import get_preset
        from sutra.tokenizer import load_tokenizer

        m = self.recipe.model
        if m.init_from:
            from sutra.model.checkpoint import load_model

            last = self.store.resolve(LAST) if resume else None
            loaded = load_model(str(last) if last else m.init_from, device="cpu", dtype=torch.float32)
            return loaded.model.config, loaded.tokenizer, loaded.model, loaded.eos_token_ids
        return get_preset(m.preset).replace(**m.overrides), load_tokenizer(), None, []  # (checked with the recipe)

    def _training_state(self, config) -> tuple[float, int]:
        """(bytes on each process, processes sharing it) of the fp32 weights, gradients and two AdamW
        moments: 16 bytes a parameter, split under FSDP."""
        shards = self.dist.world_size if self.recipe.train.parallel == "fsdp" else 1
        return 16 * config.num_parameters / shards, shards

    def _check_fits(self, config) -> None:
        """Refuse a model whose training state cannot fit this process's device, before building it:
        a huge override would otherwise end in an allocator's traceback, or build layers for hours."""
        if self.device.type == "cuda":
            where, memory = torch.cuda.get_device_name(self.device), torch.cuda.get_device_properties(self.device).total_memory
        else:
            where, memory = "this machine's memory", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        needed, shards = self._training_state(config)
        if needed > memory:
            per = f" per process over {shards} processes" if shards > 1 else ""
            raise self.recipe.error("model.overrides" if self.recipe.model.overrides else "model",
                                    f"{config.num_parameters:,} parameters need {needed / 2**30:,.1f} GiB{per} for their fp32 weights, gradients "
                                    f"and AdamW moments, more than the {memory / 2**30:,.1f} GiB of {where}; choose a smaller model")

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW with weight decay on matrices and embeddings, not on norm gains (as HF Trainer does)."""
        o = self.recipe.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.schedule.lr(0), betas=o.betas, eps=o.eps, fused=o.fused)

    def _lock_run_dir(self) -> None:
        """One process writes a run at a time: two (a second --resume, or a pipeline's re-run while the
        stage it left still saves `last`) would write the same checkpoints and metrics at once."""
        self.run_dir_lock.enter_context(exclusive(self.run_dir, "train"))

    def _prepare_run_dir(self, resume: bool) -> bool:
        """Whether there is a `last` checkpoint to resume from; writes the resolved recipe on a fresh start.
        Nothing a user keeps in the directory is ever overwritten or removed: a fresh start takes only
        an absent or empty directory, or one where an earlier start ended before its first checkpoint."""
        recipe_file = self.run_dir / RECIPE_FILE
        if not resume:
            self.dist.agree(self._check_fresh_run_dir)  # every process looks before rank 0 writes the recipe
            self.dist.on_main(self._lock_run_dir)

            def start() -> None:
                with self._writing(RECIPE_FILE):
                    self.store.collect_garbage()  # a first checkpoint that a kill left without a name
                    atomic_write_text(recipe_file, RECIPE_HEADER + self.recipe.to_yaml())
                with self._writing(DATA_FILE):
                    atomic_write_json(self.run_dir / DATA_FILE, describe_data(Path(self.recipe.data.path).expanduser()))

            self.dist.on_main(start)
            self._check_one_run_dir(resumable=False)
            return False
        self.dist.on_main(self._lock_run_dir)
        self.dist.on_main(self._complete_first_naming)
        self.dist.agree(self._check_resumable)
        self.dist.on_main(self._tidy_names)
        resumable = self.store.resolve(LAST) is not None
        self._check_one_run_dir(resumable)
        if resumable:
            self.dist.agree(lambda: self._check_recipe_unchanged(self.store.info(LAST)))
        return resumable

    def _check_resumable(self) -> None:
        names = self.store.names()
        if self.store.resolve(LAST) is None and names:  # (none at all: killed before the first was named; starts again)
            held = [n for n in names if self.store.resolve(n)]
            point = (f"Point `{LAST}` at the checkpoint to continue from (ln -sfn checkpoints/step-NNNNNNNN {self.run_dir / LAST}), or start"
                     if any((self.store.resolve(n) / TRAINER_STATE).is_file() for n in held) else
                     f"None of them holds the optimizer state a resume needs (only `{LAST}` and `{LAST_GOOD}` keep it): start")
            raise SutraError(f"{self.run_dir}: the run has checkpoints ({', '.join(held) or 'none of them complete'}) but no `{LAST}` to resume from; "
                             f"nothing was changed. {point} a new run from one: sutra train RECIPE.yaml --init-from {self.run_dir}/NAME")

    def _check_one_run_dir(self, resumable: bool) -> None:
        """Every node must see one run directory, on a filesystem they share: with a node-local or stale
        copy, a node would resume at another step (its collectives then pair with the wrong ones) or
        find no checkpoint to roll back to."""
        last = self.store.info(LAST) if resumable else None
        seen = (self.run_dir / RECIPE_FILE).is_file(), last["step"] if last else None
        on_main = self.dist.broadcast_object(seen)

        def describe(view) -> str:
            recipe, step = view
            return f"`{LAST}` at step {step}" if step is not None else "no checkpoint" if recipe else f"no {RECIPE_FILE}"

        def same() -> None:
            if seen != on_main:
                raise SutraError(f"{self.run_dir}: rank {self.dist.rank} sees {describe(seen)} there, rank 0 {describe(on_main)}; "
                                 "every node must see the same run directory: put run_dir on a filesystem all nodes share")

        self.dist.agree(same)

    def _tidy_names(self) -> None:
        """A kill between pointing e{N}-best/final and `last` leaves names past `last`: the resumed run
        redoes those steps (as metrics.jsonl is cut back), so they must not keep old weights."""
        last = self.store.info(LAST)
        with self._writing("the checkpoint names"):
            self.store.discard_after(last["step"] if last else -1)
            if last and last.get("bad_streak", 0) == 0 and (self.store.info(LAST_GOOD) or {}).get("step") != last["step"]:
                self.store.point(LAST_GOOD, last["step"])  # a kill between the two names left it behind
            self.store.collect_garbage()

    def _complete_first_naming(self) -> None:
        """A kill while the run's first checkpoint was being named can leave its per-epoch names but no
        `last`: point `last` at it (every checkpoint holds the whole training state, so the run resumes
        there exactly). Only in that case: one checkpoint written, every name at it, no `last-good`."""
        names = [name for name in self.store.names() if self.store.resolve(name)]
        if not names or self.store.resolve(LAST) or self.store.resolve(LAST_GOOD):
            return
        steps = {self.store.info(name)["step"] for name in names}
        written = [p for p in self.store.root.iterdir() if not p.name.startswith(".")]
        if len(steps) == 1 and len(written) == 1 and (written[0] / TRAINER_STATE).is_file():
            self.store.point(LAST, steps.pop())

    def _check_fresh_run_dir(self) -> None:
        if self.store.names():
            raise SutraError(f"{self.run_dir} already holds a run; continue it with `sutra train --resume {self.run_dir}` or set another run_dir (--set run_dir=...)")
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise self.recipe.error("run_dir", f"{self.run_dir} is a file, not a directory; set another run_dir (--set run_dir=...)")
        # (a name's temporary link is ours too: a kill in the first checkpoint's naming leaves one, and a killed run its lock file)
        held = sorted(p.name for p in self.run_dir.iterdir() if not p.name.endswith(".link.tmp") and p.name != LOCK_FILE) if self.run_dir.is_dir() else []
        recipe_file = self.run_dir / RECIPE_FILE
        ours = recipe_file.is_file() and recipe_file.read_text(errors="replace").startswith(RECIPE_HEADER)
        if held and not (ours and set(held) <= RUN_FILES):
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise self.recipe.error("run_dir", f"{self.run_dir} exists and is not a run directory of `sutra train` (it holds {shown}); "
                                    "a run writes recipe.yaml, metrics.jsonl and checkpoints there: set another run_dir (--set run_dir=...)")
        if held:  # an earlier start ended before its first checkpoint (an error, out of memory): nothing to keep
            self._say(f"{self.run_dir} holds a run that ended before its first checkpoint; starting it again with this recipe")

    def _check_recipe_unchanged(self, last: dict) -> None:
        """A resumed run trains with the recipe its checkpoints were made with (it is bit for bit the
        same run): an edited recipe.yaml is refused, except in the sections that only decide when to
        evaluate, checkpoint, log or roll back."""
        saved = last.get("resolved_recipe")
        if saved is None:  # a checkpoint from before recipes were recorded in it
            return
        now, then = flat_recipe(json.loads(json.dumps(self.recipe.to_dict()))), flat_recipe(saved)
        changed = recipe_differences(now, then)
        refused = [key for key in changed if not key.startswith(RESUME_MAY_CHANGE)]
        if refused:
            key = refused[0]
            raise self.recipe.error(key, f"{now.get(key)!r} here, but the run's checkpoints were trained with {then.get(key)!r}; "
                                    f"a resumed run keeps its recipe. Restore the value, or start a new run from these weights: "
                                    f"sutra train RECIPE.yaml --init-from {self.run_dir / LAST}")
        changed = [key for key in changed if key != "run_dir"]  # (set to the directory resumed from: the run may have moved)
        if changed:
            self._say("recipe changed since the checkpoint: " + ", ".join(f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in changed))

    # ---- checkpoints -----------------------------------------------------------------------------

    def _save(self, epoch: int, val: dict | None, final: bool, last: bool) -> None:
        """Rank 0 writes this step's checkpoint if some name should point at it (`_names_to_point`)."""
        names = self._names_to_point(epoch, val, final, last) if self.dist.is_main else []
        weights = optimizer_state = None
        if self.sharded:  # every process gathers the shards, and only for a checkpoint rank 0 writes
            names = self.dist.broadcast_object(names)
            if names:
                from sutra.train.sharding import full_state

                weights, optimizer_state = full_state(self.model, self.optimizer)

        def write() -> None:
            if not names:
                return
            training = {
                **asdict(self.progress), "epoch": self.progress.step / self.schedule.steps_per_epoch, "recipe": self.recipe.name,
                "world_size": self.dist.world_size, "loader": self.train_loader.state_dict(),
                "val_loader": self.val_loader.state_dict(), "log_window": asdict(self.window), **(val or {}),
                "resolved_recipe": self.recipe.to_dict(),
            }
            training = finite_or_null(training)
            trainer_state = {"optimizer": optimizer_state if self.sharded else self.optimizer.state_dict(), "rng_cpu": torch.get_rng_state()}
            if self.device.type == "cuda":
                trainer_state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
            with self._writing(f"the checkpoint of step {self.progress.step}"):
                self.store.write(self.progress.step, self.model, self.tokenizer, self.eos_token_ids, training, trainer_state, weights)
                for name in names:
                    self.store.point(name, self.progress.step)
                self.store.collect_garbage()  # e.g. the previous e{epoch}-best

        self.dist.on_main(write)

    def _names_to_point(self, epoch: int, val: dict | None, final: bool, last: bool) -> list[str]:
        """`e{epoch}-best` when the validation perplexity beats the epoch's best so far, `e{epoch}-final`,
        and `last` when asked or with any other name (resume takes the newest state), but not inside a
        streak of skipped steps unless asked; `last-good` with `last` outside a streak (a rollback must
        go back before the streak). In the order they are pointed: `last` after the per-epoch names (a
        kill between leaves them past `last`, which a resume discards) and before `last-good`, which
        must never pass `last` (a resume would discard the rollback's target)."""
        best = self.store.info(f"e{epoch}-best")
        better = val is not None and math.isfinite(val["val_ppl"]) and (best is None or val["val_ppl"] < best["val_ppl"])
        names = [f"e{epoch}-best"] * better + [f"e{epoch}-final"] * final
        return names + ([LAST, LAST_GOOD] if self.progress.bad_streak == 0 and (last or names) else [LAST] * last)

    def _restore(self, name: str, full: bool) -> None:
        """Weights and optimizer from checkpoint `name`; with `full`, also step counters, RNG and data position."""
        from safetensors.torch import load_file

        checkpoint = self.store.resolve(name)
        # sharded, every process reads the whole file: mapped on the host (safetensors maps CPU
        # loads), each keeps its shard, one tensor at a time on the device, never all of them
        try:
            weights = load_file(checkpoint / "model.safetensors", device="cpu" if self.sharded else str(self.device))
        except Exception as exc:  # safetensors raises SafetensorError on a truncated or corrupt file
            raise SutraError(f"{checkpoint / 'model.safetensors'}: cannot read weights ({exc}); the checkpoint is corrupt or truncated: "
                             f"restore it from a copy, or start a new run with --init-from another checkpoint of {self.run_dir}") from None
        state = load_trainer_state(checkpoint)
        if self.sharded:
            from sutra.train.sharding import load_full_state

            load_full_state(self.model, self.optimizer, weights, state["optimizer"])
        else:
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
        if not full:
            return
        training = self.store.info(name)
        self.progress = Progress(**{k: training.get(k, default) for k, default in asdict(Progress()).items()})
        self.window = _Window(**training.get("log_window", {}))  # the next log line averages the steps before the stop too
        try:
            self.train_loader.load_state_dict(training["loader"])
            if "val_loader" in training:  # (not in checkpoints from before 2026-12-03) the same validation windows
                self.val_loader.load_state_dict(training["val_loader"])
        except SutraError as exc:
            raise self.recipe.error("data.path", str(exc)) from None
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> int:
        """Train to the end, or until step `stop_after`, a SIGTERM or a Ctrl-C, saving `last` before
        returning; the exit code: 0 when finished or stopped as asked, else the signal's (130, 143)."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        handlers = {signal.SIGTERM: self._request_stop, signal.SIGINT: self._interrupt} if in_main_thread else {}
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            return self._run(stop_after)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = self.stop_signal or "SIGTERM"

    def _interrupt(self, signum, frame) -> None:
        """Ctrl-C stops as SIGTERM does, saving `last` (see _stop_reason); a second one stops at once."""
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = "Ctrl-C"
        if self.dist.is_main:  # os.write: print could re-enter the stream the progress bar is writing
            when = b"once every process has heard (a step or two)" if self.dist.active else b"after this step"
            os.write(2, b"\nsutra: stopping " + when + b", saving `last` (Ctrl-C again stops at once, losing the steps since the last checkpoint)\n")

    def _run(self, stop_after: int | None) -> int:
        from tqdm import tqdm

        total, spe = self.schedule.total_steps, self.schedule.steps_per_epoch
        if stop_after is not None and self.progress.step >= stop_after:
            self._say(f"--stop-after {stop_after}: {self.run_dir} is already at step {self.progress.step}; nothing to do")
            return 0
        self._announce()
        if self.progress.step == 0:
            self._log({"step": 0, "epoch": 0.0, "tokens": 0, **self._evaluate()})
        stop_reason = None
        # a context, so an error closes the bar first and its message starts a line of its own
        with tqdm(total=total, initial=self.progress.step, unit="step", dynamic_ncols=True, disable=not self.dist.is_main, file=sys.stderr,
                  mininterval=0.5 if sys.stderr.isatty() else 30) as bar:  # a log file gets a line every 30 s, not every step
            while self.progress.step < total:
                step = self.progress.step
                started = time.perf_counter()
                flops = self._train_step(step)
                self.window.add_step(self.tokens_per_step, flops)
                self.progress.step += 1
                self.progress.tokens += self.tokens_per_step
                done = self.progress.step
                self._settle(keep=1)  # the previous step's numbers: the device runs this step meanwhile
                stop_reason = self._stop_reason(done, stop_after)
                log_due = done % self.recipe.logging.every_steps == 0 or done == total
                if log_due or stop_reason or self._checkpoint_due(done):
                    self._settle(keep=0)
                    stop_reason = self._stop_reason(done, stop_after)  # this step's numbers may carry a stop vote
                self.window.seconds += time.perf_counter() - started
                bar.set_postfix_str(self._postfix(), refresh=False)  # before update(), which draws the bar
                bar.update(1)
                if log_due:
                    self._log({"step": done, "epoch": done / spe, "tokens": self.progress.tokens, **self.window.summary(self.peak_tflops),
                               "lr": self.schedule.lr(step), "grad_norm": self.last_grad_norm, "skipped_steps": self.progress.skipped_steps})
                    self.window = _Window(last_loss=self.window.last_loss)
                self._after_step(done)
                if stop_reason and done < total:
                    self._save((done - 1) // spe + 1, None, final=False, last=True)
                    break
        if self.progress.step == total:
            self._say(self._summary())
            return 0
        self._say(f"stopped after step {self.progress.step} of {total} ({stop_reason}), `last` saved; continue with `sutra train --resume {self.run_dir}`")
        # a signal's stop is not success: a pipeline or scheduler must not take the run as finished
        return 0 if stop_reason == "--stop-after" else STOPPED_EXIT_CODES.get(stop_reason, STOPPED_EXIT_CODES["SIGTERM"])

    def _stop_reason(self, done: int, stop_after: int | None) -> str | None:
        """Why the loop stops after step `done`, if it does. One process stops after the step in flight;
        several stop together, at the step whose numbers bring the first vote (a step or two later)."""
        if self.stopping or (self.stop_signal is not None and not self.dist.active):
            return self.stop_signal or "a stop on another process"
        return "--stop-after" if stop_after is not None and done >= stop_after else None

    def _checkpoint_due(self, done: int) -> bool:
        """Whether step `done` evaluates or checkpoints (an epoch end does both)."""
        return done % self.schedule.steps_per_epoch == 0 or done % self.recipe.eval.every_steps == 0 or done % self.recipe.checkpoint.every_steps == 0

    def _after_step(self, done: int) -> None:
        """Evaluate and checkpoint where due; every process takes the same branches (they meet in barriers)."""
        spe = self.schedule.steps_per_epoch
        epoch_end = done % spe == 0
        epoch = (done - 1) // spe + 1  # 1-based epoch of the step just done
        val = None
        if epoch_end or done % self.recipe.eval.every_steps == 0:
            val = self._evaluate()
            self._log({"step": done, "epoch": done / spe, "tokens": self.progress.tokens, **val})
        if epoch_end:
            self._say(f"epoch {epoch} done at step {done}: val loss {val['val_loss']:.4f}, ppl {val['val_ppl']:.2f}")
            self._start_epoch(epoch)  # the loader counts epochs from 0: this is the next one
        last_due = epoch_end or done % self.recipe.checkpoint.every_steps == 0
        if val is not None or last_due:
            self._save(epoch, val, final=epoch_end, last=last_due and self.progress.bad_streak == 0)

    def _start_epoch(self, epoch: int) -> None:
        """Put the loader at the start of `epoch`'s permutation (skipping the windows that fill no whole step)."""
        state = self.train_loader.state_dict()
        if (state["epoch"], state["cursor"]) != (epoch, 0):
            self.train_loader.load_state_dict({**state, "epoch": epoch, "cursor": 0})

    def _train_step(self, step: int) -> float:
        """Enqueue one optimizer step (its numbers join self.in_flight); returns the FLOPs done on this process."""
        if step and step % self.schedule.steps_per_epoch == 0 and self.recipe.optimizer.across_epochs == "reset":
            self.optimizer.state.clear()  # made afresh by this step's update, as a new optimizer's would be
        lr = self.schedule.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        flops = 0.0
        with self._memory_guard():
            for micro in range(self.accum):
                batch = self.train_loader.next_batch()
                flops += self._flops(batch.doc_ids)
                inputs, targets = self._to_device(batch.inputs), self._to_device(batch.targets)
                mask = self._attention_mask(batch.doc_ids)
                with self._gradient_sync(micro == self.accum - 1):
                    with self._autocast():
                        loss = self.forward(inputs, targets, mask=mask)
                    (loss / self.accum).backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.optimizer.grad_clip)
            if self.sharded:
                from sutra.train.sharding import full_tensor

                grad_norm = full_tensor(grad_norm)
            # one all-reduce carries the loss and every rank's stop request; the gradient norm is already global
            totals = self.dist.sum_(torch.stack([loss_sum, torch.full((), float(self.stop_signal is not None), device=self.device)]))
            numbers = torch.stack([totals[0] / self.recipe.train.grad_accum, grad_norm.float(), totals[1]])
            found_inf = (~torch.isfinite(numbers[:2]).all()).float()
            if self.optimizer.param_groups[0]["fused"]:  # (a resumed optimizer state carries its own)
                self.optimizer.found_inf = found_inf  # the fused kernel then leaves weights, moments and step count alone
                self.optimizer.step()  # (its first call allocates the moments)
            elif not found_inf.item():  # the foreach kernel cannot skip on the device: a host sync each step
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        copied = None
        if self.device.type == "cuda":
            numbers, copied = numbers.to("cpu", non_blocking=True), torch.cuda.Event()
            copied.record()
        self.in_flight.append(_InFlight(step, numbers, copied))
        return flops

    def _gradient_sync(self, sync: bool):
        """Gradients are reduced across processes once per step, after its last micro-batch."""
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
            return nullcontext()
        return nullcontext() if (self.ddp is None or sync) else self.ddp.no_sync()

    def _settle(self, keep: int) -> None:
        """Read the numbers of enqueued steps, oldest first, until `keep` are left in flight: count the
        skipped ones, note stop votes, and roll back after max_bad_steps in a row (reading the rest first).
        A streak that ends at step S is rolled back after step S + 1, where reading one step behind finds
        it: found early (a log line, a checkpoint or a stop reads S at once), it is recorded in the
        progress and made at the next call, so when numbers are read never changes what is trained.
        After the run's last step it is made at once."""
        roll_back_at, self.progress.rollback_due = self.progress.rollback_due, None
        while len(self.in_flight) > (keep if roll_back_at is None else 0):
            entry = self.in_flight.popleft()
            loss, grad_norm, stop_votes = entry.read()
            self.stopping = self.stopping or stop_votes > 0
            self.window.add_loss(loss)
            self.last_grad_norm = grad_norm
            if math.isfinite(loss) and math.isfinite(grad_norm):
                self.progress.bad_streak = 0
                continue
            self.progress.skipped_steps += 1
            self.progress.bad_streak += 1
            if self.progress.bad_streak >= self.recipe.stability.max_bad_steps and roll_back_at is None:
                roll_back_at = entry.step
        if roll_back_at is None:
            return
        if roll_back_at == self.progress.step - 1 and self.progress.step < self.schedule.total_steps:
            self.progress.rollback_due = roll_back_at
        else:
            self._roll_back(roll_back_at)

    def _roll_back(self, step: int) -> None:
        """Restore weights and optimizer from `last-good`; the data position moves on, past the bad batches."""
        s = self.recipe.stability
        hint = "lower the learning rate (schedule), raise warmup_steps, or check the data"
        if self.store.resolve(LAST_GOOD) is None:
            kept = [name for name in self.store.names() if self.store.resolve(name)]
            again = (f"then remove {self.run_dir} or set another run_dir: its checkpoints ({', '.join(kept)}) were all saved inside the streak" if kept
                     else "then start again: a run directory without a checkpoint is replaced")
            raise SutraError(f"step {step + 1}: {s.max_bad_steps} consecutive steps with a non-finite loss or gradient before any checkpoint "
                             f"outside the streak; {hint} ({again})")
        if self.progress.rollbacks >= s.max_rollbacks:
            raise SutraError(f"step {step + 1}: training keeps diverging after {self.progress.rollbacks} rollbacks (stability.max_rollbacks); {hint}")
        self._restore(LAST_GOOD, full=False)
        good_step, spe = self.store.info(LAST_GOOD)["step"], self.schedule.steps_per_epoch
        if self.recipe.optimizer.across_epochs == "reset" and good_step <= self.progress.step // spe * spe:
            self.optimizer.state.clear()  # saved before this epoch's reset, which the steps after the rollback will not redo
        self.progress.rollbacks += 1
        message = (f"step {step + 1}: {s.max_bad_steps} consecutive non-finite steps; rolled weights and optimizer back to "
                   f"'{LAST_GOOD}' (step {good_step}), continuing with the next batches (rollback {self.progress.rollbacks} of at most {s.max_rollbacks})")
        self.progress.bad_streak = 0
        self._say(message)
        # logged at the step it is made after: a resume from a checkpoint before it redoes it, and drops this record
        self._log({"step": self.progress.step, "event": "rollback", "message": message})

    @contextmanager
    def _memory_guard(self):
        """Out of memory (CUDA's error, or a CPU allocation refused) becomes one message naming the knobs."""
        try:
            yield
        except torch.OutOfMemoryError:
            raise self._out_of_memory() from None
        except RuntimeError as exc:
            if "can't allocate memory" in str(exc):
                raise self._out_of_memory() from None
            raise

    def _out_of_memory(self) -> SutraError:
        t = self.recipe.train
        if t.micro_batch > 1:
            factor = next(f for f in range(2, t.micro_batch + 1) if t.micro_batch % f == 0)  # a divisor: the global batch stays
            batch = (f"lower train.micro_batch and raise train.grad_accum by the same factor to keep the global batch "
                     f"(e.g. --set train.micro_batch={t.micro_batch // factor} --set train.grad_accum={t.grad_accum * factor}), or shorten data.seq_len")
        else:
            batch = "train.micro_batch is 1 already: shorten data.seq_len"
        recompute = "train.activation_checkpointing=true (recomputes each block's activations in backward: about a third more compute)"
        fsdp = self.dist.active and not self.sharded
        if self.store.resolve(LAST) is None:  # nothing to keep: the same run_dir starts again with other settings
            knobs = batch + f", or --set {recompute}" * (not t.activation_checkpointing)
            again = " (the run directory has no checkpoint yet, so the same run_dir can start again)"
        else:  # a resumed run keeps its batch and sequence (its recipe.yaml may change the two others)
            edits = [edit for edit, wanted in ((recompute, not t.activation_checkpointing), ("train.parallel=fsdp", fsdp)) if wanted]
            resume = f"set {' or '.join(edits)} in {self.run_dir / RECIPE_FILE} and resume; or " if edits else ""
            knobs = (f"{self.run_dir} has checkpoints, and a resumed run keeps its batch and sequence: {resume}continue in a new run "
                     f"(sutra train RECIPE.yaml --init-from {self.run_dir / LAST} --set run_dir=NEW ...) and there {batch}")
            again = ""
        state, shards = self._training_state(self.config)
        return SutraError(
            f"out of memory on {self.device} with train.micro_batch={t.micro_batch} x data.seq_len={self.recipe.data.seq_len}: {knobs}"
            + ("; train.attention=document and train.precision=bf16 also use less memory" if self.device.type == "cuda" else "")
            + f". The weights, gradients and AdamW moments alone take {state / 2**20:,.0f} MiB" + " per process" * (shards > 1)
            + ": if that is near the memory there, choose a smaller model" + " or train.parallel=fsdp" * fsdp + again
        )

    @torch.no_grad()
    def _evaluate(self) -> dict:
        """Mean validation loss over the held-out split (or eval.max_windows windows spread over it), all processes together."""
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        batches, max_windows = 0, self.recipe.eval.max_windows
        with self._memory_guard():
            for batch in self.val_loader.iter_eval(max_windows):
                inputs, targets = self._to_device(batch.inputs), self._to_device(batch.targets)
                mask = self._attention_mask(batch.doc_ids)
                with self._autocast():
                    loss = self.compiled(inputs, targets, mask=mask)
                totals[0] += loss.double() * targets.numel()
                totals[1] += targets.numel()
                batches += 1
            # a sharded forward gathers weights from every process: one with fewer windows runs uncounted ones
            for _ in range(self.val_loader.eval_batch_count(max_windows) - batches if self.sharded else 0):
                blank = torch.zeros(1, self.recipe.data.seq_len, dtype=torch.long)
                with self._autocast():
                    self.compiled(self._to_device(blank), self._to_device(blank), mask=self._attention_mask(blank))
        self.model.train()
        val_loss = float(self.dist.sum_(totals)[0] / totals[1])
        return {"val_loss": val_loss, "val_ppl": perplexity_of(val_loss)}

    # ---- helpers -----------------------------------------------------------------------------

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _attention_mask(self, doc_ids: torch.Tensor):
        """None for causal attention; else the document mask of the batch's host-side `doc_ids`
        (varlen spans are computed on the host, the other masks on the device)."""
        t = self.recipe.train
        if t.attention != "document":
            return None
        return self.model.attention_mask(doc_ids if t.document_kernel == "varlen" else self._to_device(doc_ids), t.document_kernel)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.recipe.train.precision == "bf16")

    def _flops(self, doc_ids: torch.Tensor) -> float:
        from sutra.model.llama import flops_per_token

        if self.recipe.train.attention == "document":
            attended = document_attended_per_token(doc_ids)
        else:
            attended = causal_attended_per_token(doc_ids.shape[1])
        return flops_per_token(self.config, attended) * doc_ids.numel()

    def _postfix(self) -> str:
        summary = self.window.summary(self.peak_tflops)
        mfu = f" mfu {summary['mfu']:.1%}" if summary["mfu"] is not None else f" {summary['tflops']:.2f} TFLOP/s"
        loss = "-" if self.window.last_loss is None else f"{self.window.last_loss:.4f}"  # (a step's loss is read a step later)
        return f"loss {loss} {summary['tokens_per_s']:,.0f} tok/s{mfu}"

    def _log(self, record: dict) -> None:
        """Rank 0 appends `record`; every process calls this at the same points (it is a collective
        under torchrun: they learn whether the write worked), where the host has waited for the device anyway."""
        def write() -> None:
            with self._writing(METRICS_FILE):
                self.log.write(record)

        self.dist.on_main(write)

    @contextmanager
    def _writing(self, what: str):
        """A failed write in the run directory (a full disk, a quota) as one message saying what to do;
        what was written before it is intact (every write is atomic, or an append)."""
        try:
            yield
        except WRITE_ERRORS as exc:
            again = f"continue with `sutra train --resume {self.run_dir}`" if (self.run_dir / RECIPE_FILE).is_file() else "run the command again"
            full = not isinstance(exc, OSError) or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # (the others' causes are in their text)
            fix = "Make room there" if full else f"Make {self.run_dir} a directory this user can write"
            kept = "; the checkpoints written before are intact" if self.store.names() else ""
            raise SutraError(f"{self.run_dir}: could not write {what} ({exc}){kept}. {fix}, then {again}") from None

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)  # above the progress bar, not through it

    def _announce(self) -> None:
        r, s = self.recipe, self.schedule
        mode = f"resuming at step {self.progress.step}" if self.progress.step else "starting"
        self._say(
            f"{mode}: {r.name} -> {self.run_dir} | {self.config.name} ({self.config.num_parameters:,} parameters) on {self.device} x{self.dist.world_size}{self._parallelism()} | "
            f"{s.epochs} epochs x {s.steps_per_epoch} steps of {self.tokens_per_step:,} tokens | attention {r.train.attention}"
            + " | activation checkpointing" * r.train.activation_checkpointing
        )
        if r.train.precision == "bf16" and self.device.type == "cpu":  # (device auto falls back to the CPU: the card's recipe there ran 10x slower)
            self._say("warning: train.precision is bf16 on a CPU, where its autocast runs several times slower than fp32; "
                      "--set train.precision=fp32 to train faster here")
        if r.schedule.kind == "wsd" and r.schedule.epochs:
            self._say("schedule.kind is wsd: one warmup-stable-decay over the whole run; the per-epoch schedule.epochs are not used")
        if self.unused_windows_per_epoch:
            reason = f"train.steps_per_epoch is {r.train.steps_per_epoch}" if r.train.steps_per_epoch else "they fill no whole step"
            self._say(f"each epoch leaves {self.unused_windows_per_epoch} of {self.train_loader.windows_per_epoch} training windows unused ({reason})")

    def _parallelism(self) -> str:
        return (" (FSDP2)" if self.sharded else " (DDP)") if self.dist.active else ""

    def _summary(self) -> str:
        lines = [f"done: {self.progress.step} steps, {self.progress.tokens:,} tokens, {self.progress.skipped_steps} skipped steps, {self.progress.rollbacks} rollbacks"]
        for name in self.store.names():
            info = self.store.info(name)
            ppl = f", val ppl {info['val_ppl']:.2f}" if finite(info.get("val_ppl")) else ""
            lines.append(f"  {self.run_dir / name}: step {info['step']}{ppl}")
        return "\n".join(lines)

    def close(self) -> None:
        if self.log:
            self.log.close()
        self.run_dir_lock.close()


@dataclass
class _Window:
    """Training throughput and loss between two log lines (time spent in steps only); checkpointed,
    so a log line after a resume is the one an uninterrupted run writes."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    last_loss: float | None = None  # the progress bar's loss (carried into the next window until it has its own; None: none read yet)

    def add_step(self, tokens: int, flops: float) -> None:
        self.tokens, self.flops = self.tokens + tokens, self.flops + flops

    def add_loss(self, loss: float) -> None:
        self.last_loss = loss
        if math.isfinite(loss):
            self.losses.append(loss)

    def summary(self, peak_tflops: float | None) -> dict:
        seconds = max(self.seconds, 1e-9)
        tflops = self.flops / seconds / 1e12  # per process
        return {
            "loss": sum(self.losses) / len(self.losses) if self.losses else float("nan"),
            "tokens_per_s": self.tokens / seconds,
            "tflops": tflops,
            "mfu": tflops / peak_tflops if peak_tflops else None,
        }


def _restore_recipe(run_dir: Path) -> None:
    """A run whose recipe.yaml was deleted: write it again from the recipe its `last` checkpoint
    records it was trained with (the recipe a resume checks against), or refuse the directory."""
    if (run_dir / RECIPE_FILE).exists():
        raise SutraError(f"{run_dir / RECIPE_FILE}: not a file; move it away, and `sutra train --resume` writes the run's recipe there again")
    from sutra.model.checkpoint import WEIGHTS_FILE

    saved = (CheckpointStore(run_dir).info(LAST) or {}).get("resolved_recipe")
    if not isinstance(saved, dict) and (run_dir / WEIGHTS_FILE).is_file() and (run_dir.parent / RECIPE_FILE).is_file():  # RUN/e1-best, say
        raise SutraError(f"{run_dir}: a checkpoint of the run {run_dir.parent}, not a run directory; continue that run with "
                         f"`sutra train --resume {run_dir.parent}` (from its `{LAST}`), or train on from this checkpoint with "
                         f"`sutra train RECIPE --init-from {run_dir}`")
    if not isinstance(saved, dict):
        raise SutraError(f"{run_dir}: not a run directory (no {RECIPE_FILE}, and no `{LAST}` checkpoint recording its recipe); "
                         "start a run with `sutra train RECIPE.yaml`")
    # every process of a torchrun writes the same text (each atomically)
    atomic_write_text(run_dir / RECIPE_FILE, RECIPE_HEADER + yaml.safe_dump(saved, sort_keys=False))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"sutra: {run_dir / RECIPE_FILE} was missing; wrote it again from the recipe `{LAST}` was trained with", file=sys.stderr)


def train(recipe_path: str | None, overrides: list[str], resume_dir: str | None, stop_after: int | None = None) -> int:
    """`sutra train`: a fresh run from a recipe, or `--resume RUN_DIR` from its `last` checkpoint;
    returns the exit code (see Trainer.run)."""
    if resume_dir is not None:
        if not (Path(resume_dir) / RECIPE_FILE).is_file():  # (first: advice to edit a run's recipe needs a run)
            _restore_recipe(Path(resume_dir))
        if overrides:
            may_change = ", ".join(key + "*" if key.endswith(".") else key for key in RESUME_MAY_CHANGE)
            raise SutraError(f"--set cannot change a run being resumed: edit {Path(resume_dir) / RECIPE_FILE} for what a resume may change "
                             f"({may_change}), or start a new run from its weights with `sutra train RECIPE --init-from {Path(resume_dir) / LAST}`")
        recipe = load_recipe(Path(resume_dir) / RECIPE_FILE)
        recipe.run_dir = str(resume_dir)
    else:
        recipe = load_recipe(recipe_path, overrides)
        # the saved recipe must resume from any working directory
        recipe.data.path = str(Path(recipe.data.path).expanduser().absolute())
        if recipe.model.init_from and Path(recipe.model.init_from).expanduser().exists():
            recipe.model.init_from = str(Path(recipe.model.init_from).expanduser().absolute())
    try:
        dist_info = setup_distributed(recipe.train.device)
    except SutraError as exc:
        raise recipe.error("train.device", str(exc)) from None
    try:
        trainer = Trainer(recipe, resume=resume_dir is not None, dist_info=dist_info)
        try:
            return trainer.run(stop_after)
        finally:
            trainer.close()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
