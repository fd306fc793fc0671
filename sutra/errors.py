"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class SutraError(Exception):
    """A problem with the user's input or environment, with a message saying what to do."""

    exit_code = 2
