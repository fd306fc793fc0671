"""The `sutra` command. Each pipeline stage registers its own subcommands from its package.

Command modules must import heavy libraries (torch, transformers) inside their handlers, so
that `sutra --help` stays instant.
"""

import argparse
import importlib
import os
import sys
import time

from sutra import __version__
from sutra.errors import SutraError

# Modules with a `register(subparsers)` function, listed in pipeline order.
COMMAND_MODULES = (
    "sutra.commands",  # assets, model, generate, export, import
    "sutra.synth.cli",
    "sutra.data.cli",
    "sutra.train.cli",
    "sutra.eval.cli",
    "sutra.report.cli",
    "sutra.pipeline.cli",  # demo, compare
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sutra",
        description="Pretrain, evaluate and publish small Llama language models on pedagogical data.",
    )
    parser.add_argument("--version", action="version", version=f"sutra {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


# Set by `sutra demo`/`sutra compare` (sutra.pipeline.stages) for the stage commands they start.
PIPELINE_PID_ENV = "SUTRA_PIPELINE_PID"


def _end_with_pipeline() -> None:
    """A pipeline stage gets SIGTERM when the `sutra demo`/`compare` process that started it dies
    (a training then saves `last` and stops)."""
    pipeline = os.environ.pop(PIPELINE_PID_ENV, None)
    if pipeline is not None:
        from sutra.processes import die_with_parent

        die_with_parent(int(pipeline))


def main(argv: list[str] | None = None) -> int:
    _end_with_pipeline()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return args.func(args) or 0
    except SutraError as exc:
        if int(os.environ.get("RANK", "0")) > 0:  # under torchrun: rank 0 says it first, and the launcher
            time.sleep(3)  # then stops the others, so an error every process found prints once
        print(f"sutra: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        from sutra.io import WRITE_FAILURES

        if exc.errno not in WRITE_FAILURES:
            raise
        # every write is atomic: the output is as it was, and what a long job finished is kept for its re-run
        print(f"sutra: error: could not write {exc.filename or 'the output'} ({exc.strerror}); make room there or write "
              "somewhere else, then run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sutra: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sutra generate ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
