"""`sutra train` and `sutra plot`."""

from sutra.errors import SutraError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="pretrain a model from a YAML recipe (resumable; works under torchrun)",
        description="Train from RECIPE.yaml into its run directory, or continue a run with --resume RUN_DIR. "
        "Multi-GPU: torchrun --nproc_per_node=N -m sutra train RECIPE.yaml (same global batch for any N).",
    )
    p.add_argument("recipe", nargs="?", metavar="RECIPE.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.micro_batch=2 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its `last` checkpoint, bit for bit")
    p.add_argument("--stop-after", type=int, metavar="STEP", help="stop cleanly after this optimizer step, writing `last` (resume later)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("plot", help="draw a run's loss, perplexity and learning-rate curves to PNG")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="PNG", help="default: RUN_DIR/curves.png")
    p.set_defaults(func=cmd_plot)


def cmd_train(args) -> int:
    if (args.recipe is None) == (args.resume is None):
        raise SutraError("give either a RECIPE.yaml to start a run or --resume RUN_DIR to continue one")
    if args.stop_after is not None and args.stop_after < 1:
        raise SutraError(f"--stop-after must be at least 1, got {args.stop_after}")
    from sutra.train.trainer import train

    train(args.recipe, args.overrides, args.resume, args.stop_after)
    return 0


def cmd_plot(args) -> int:
    from sutra.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
