"""`sutra demo` and `sutra compare`."""

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the whole chain on the offline default: synthesize, prepare, train, evaluate, report",
                              description="Fetch the offline assets, synthesize a few entries with the local teacher, prepare the corpus, "
                                          "train the tiny preset, evaluate it against its untrained initialisation, sample completions and "
                                          "write a report directory. About 7 minutes on 2 CPU cores from an empty cache (3-5 with the assets fetched); re-running reuses finished stages.")
    p.add_argument("--out", type=Path, default=Path("sutra-demo"), help="output directory (default: ./sutra-demo)")
    p.add_argument("--scale", choices=["auto", "cpu", "gpu", "quick"], default="auto",
                   help="auto: gpu when CUDA is available, else cpu; quick: a few steps, for smoke tests")
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser("compare", help="train the same recipe on several datasets at a fixed token budget and compare them",
                              description="Run an experiment file (see recipes/compare-*.yaml): each arm prepares its dataset, trains "
                                          "the shared recipe for its token budget and is evaluated on the same tasks; then the comparison "
                                          "table (rows datasets, columns tasks + Avg) and a chart are written. Finished arms are skipped.")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the experiment's out, or runs/compare-NAME)")
    p.set_defaults(func=cmd_compare)


def cmd_demo(args) -> int:
    from sutra.pipeline.demo import pick_scale, run_demo

    run_demo(args.out, pick_scale(args.scale))
    return 0


def cmd_compare(args) -> int:
    from sutra.pipeline.compare import load_experiment, run_experiment

    run_experiment(load_experiment(args.experiment), args.out)
    return 0
