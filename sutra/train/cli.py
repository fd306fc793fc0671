"""`sutra train` and `sutra plot`."""

import argparse
import shlex

from sutra.argtypes import positive_int
from sutra.errors import SutraError

TRAIN_EPILOG = """\
several GPUs (DistributedDataParallel; the global batch micro_batch x grad_accum x seq_len is the same
for any process count, so train.grad_accum must be a multiple of the process count):
  torchrun --nproc_per_node=8 -m sutra train RECIPE.yaml
  (--set train.parallel=fsdp shards weights, gradients and AdamW moments over the processes: FSDP2)
several nodes: run this on every node, with the run directory on a filesystem all nodes share:
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=NODE0_HOST:29500 \\
           --rdzv_id=RUN_NAME -m sutra train RECIPE.yaml
  (NCCL picks the network; without InfiniBand set NCCL_IB_DISABLE=1 and NCCL_SOCKET_IFNAME=<interface>)
a run resumes on any number of processes that divides train.grad_accum: [torchrun ...] -m sutra train --resume RUN_DIR
less memory for activations (a longer data.seq_len, a bigger model or micro-batch), about a third
more compute: --set train.activation_checkpointing=true (each block recomputed in backward)

stopping: SIGTERM (a scheduler's preemption) or Ctrl-C finishes the step in flight, saves `last`
and exits 143 or 130, so nothing takes the run as finished (--stop-after exits 0); a second
Ctrl-C stops at once. Continue with --resume RUN_DIR.

run directory: recipe.yaml (resolved), metrics.jsonl, tensorboard/, and the checkpoints `last`,
e{N}-best (lowest validation perplexity of epoch N), e{N}-final and last-good (the newest saved
outside a streak of skipped steps, where a rollback goes), each usable as a model spec.
MFU = achieved FLOP/s / the GPU's dense bf16 peak, with FLOPs per token = 6 x matmul parameters
+ 12 x layers x hidden x mean keys attended per query ((T+1)/2 causal; the real spans with
train.attention=document).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="pretrain a model from a YAML recipe (resumable; works under torchrun)",
        description="Train from RECIPE.yaml into its run directory, or continue a run with --resume RUN_DIR.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", nargs="?", metavar="RECIPE.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.micro_batch=2 (repeatable)")
    p.add_argument("--init-from", metavar="SPEC", help="continue pretraining from these weights (checkpoint dir, HF dir, smollm2-135m-instruct); "
                   "the recipe's model preset and overrides are dropped (the shape comes from SPEC)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its `last` checkpoint, bit for bit")
    p.add_argument("--stop-after", type=positive_int, metavar="STEP", help="stop cleanly after this optimizer step, writing `last` (resume later)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("plot", help="draw a run's loss, perplexity and learning-rate curves to PNG")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="PNG", help="default: RUN_DIR/curves.png")
    p.set_defaults(func=cmd_plot)


def cmd_train(args) -> int:
    if (args.recipe is None) == (args.resume is None):
        raise SutraError("give either a RECIPE.yaml to start a run or --resume RUN_DIR to continue one")
    if args.resume is not None and args.init_from is not None:
        raise SutraError("--init-from starts a run; a resumed run continues from its own `last` checkpoint (drop --init-from)")
    shaped = [item for item in args.overrides if item.split("=", 1)[0].strip().startswith("model.")]
    if args.init_from is not None and shaped:
        raise SutraError(f"--set {shaped[0]}: --init-from {args.init_from} gives the model (its shape and weights); drop the --set, "
                         "or start without --init-from")
    from sutra.train.trainer import train

    overrides = args.overrides + ([(key, value, f"--init-from {shlex.quote(args.init_from)}") for key, value in
                                   (("model.init_from", args.init_from), ("model.preset", None), ("model.overrides", {}))] if args.init_from is not None else [])
    return train(args.recipe, overrides, args.resume, args.stop_after)


def cmd_plot(args) -> int:
    from sutra.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
