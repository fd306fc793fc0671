"""argparse types for counts, sizes and durations: a bad value is argparse's one-line error naming
the flag, rather than a silent fallback or a division by zero deep inside a command."""

import argparse
import math


def whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None


def positive_int(value: str) -> int:
    number = whole(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def non_negative_int(value: str) -> int:
    number = whole(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def _number(value: str) -> float:
    """`value` as a float, NaN where it is none (so one finiteness check refuses both)."""
    try:
        return float(value)
    except ValueError:
        return math.nan


def positive_seconds(value: str) -> float:
    number = _number(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value!r}")
    return number


def finite_number(value: str) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return number


def temperature(value: str) -> float:
    """A sampling temperature: finite, 0 or more (NaN or Infinity would reach a server as invalid JSON)."""
    number = _number(value)
    if not (math.isfinite(number) and number >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {value!r}")
    return number


def seed(value: str) -> int:
    """A random seed torch and numpy take: 0 <= seed < 2**63."""
    number = whole(value)
    if not 0 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return number


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def dtype_name(value: str) -> str:
    """A weights/compute type, by torch's name or the short one recipes use (`bf16`), as torch's name."""
    if value not in DTYPES:
        raise argparse.ArgumentTypeError(f"must be float32 (fp32), bfloat16 (bf16) or float16 (fp16), got {value!r}")
    return DTYPES[value]
