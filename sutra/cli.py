"""The `sutra` command. Each pipeline stage registers its own subcommands from its package.

Command modules must import heavy libraries (torch, transformers) inside their handlers, so
that `sutra --help` stays instant.
"""

import argparse
import importlib
import os
import signal
import sys
import threading
import time

from sutra import __version__
from sutra.errors import SutraError
from sutra.processes import STOPPED_EXIT_CODES

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


class _StoreOnce(argparse._StoreAction):
    """A flag's value, refused when the flag is given again: argparse keeps the last one silently
    (`--tasks arc_easy --tasks piqa` scored PIQA alone), while --set and the other repeatable flags add up."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_flags_given", set())
        if option_string is not None and self.dest in given:
            parser.error(f"{'/'.join(self.option_strings)} is given twice; give it once")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class SutraParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "store", _StoreOnce)
        self.register("action", None, _StoreOnce)

    def error(self, message: str):
        """One `sutra: error:` line, as for every other mistake (argparse printed its usage block first)."""
        self.exit(2, f"sutra: error: {message}; see `{self.prog} --help`\n")


class SubcommandParser(SutraParser):
    """A subcommand's parser: an argument it does not know is reported with its usage, not the top
    level's (`usage: sutra [-h] [--version] COMMAND ...` said nothing of `data prepare`'s flags)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = SutraParser(
        prog="sutra",
        description="Pretrain, evaluate and publish small Llama language models on pedagogical data.",
    )
    parser.add_argument("--version", action="version", version=f"sutra {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
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


# Flags for which an empty value means something: `generate --prompt ''` starts from nothing (a new document).
EMPTY_VALUE_FLAGS = ("--prompt",)


def empty_argument(argv: list[str]) -> str | None:
    """What is empty in `argv`, if anything. An empty value is nearly always an unset shell variable,
    and argparse takes it: `--out ''` is the current directory, `--domains ''` filters nothing."""
    for i, arg in enumerate(argv):
        before = argv[i - 1] if i else ""
        if arg == "" and before not in EMPTY_VALUE_FLAGS:
            return f"{before} is given an empty value" if before.startswith("-") else f"argument {i + 1} is empty"
        flag, sep, value = arg.partition("=")
        if arg.startswith("--") and sep and not value and flag not in EMPTY_VALUE_FLAGS:
            return f"{flag} is given an empty value"
    return None


def _exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (kill, docker stop, a scheduler) ends a command as Ctrl-C does, through its cleanup:
    a server or worker it started is stopped, not orphaned, and a temporary file is removed.
    (`sutra train` sets its own handler while it trains: it finishes the step and saves `last`.)"""
    os.write(2, b"sutra: stopped (SIGTERM)\n")  # (os.write: print could re-enter a stream being written)
    sys.exit(STOPPED_EXIT_CODES["SIGTERM"])


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():  # (signal handlers are the main thread's)
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    _end_with_pipeline()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    empty = empty_argument(argv)
    if empty:
        parser.error(f"{empty} (an unset shell variable?); give a value, or leave the argument out")
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
    except BrokenPipeError:  # e.g. `sutra generate ... | head` (an OSError, so before that clause)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
