"""Record filters on metadata, for the sutra-10B schema or any other JSON fields.

sutra-10B records carry id, concept_name, domain, content_type, text, quality_score,
information_density, complexity_level, token_count, prerequisites, builds_to,
cross_domain_connections and quality_assessment; other fields are ignored unless a filter names them.
"""

import operator
import re
from dataclasses import dataclass

from sutra.errors import SutraError

OPERATORS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
CONTAINS = "~="
CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|~=|>|<)\s*(.*?)\s*$")
MISSING = object()


class WrongType(Exception):
    """A filtered field whose type its filter cannot compare; `check` names the filter (see Filters.reject)."""
    check: str | None = None


def has_field(record: dict, path: str) -> bool:
    """Whether the record has a value at the path (one of the wrong type counts: that is reported as such)."""
    try:
        return field_value(record, path) is not MISSING
    except WrongType:
        return True


def field_value(record: dict, path: str):
    """The value at a dotted path (quality_assessment.clarity), or MISSING (absent or null).

    Raises WrongType when a step of the path is there but is no object (e.g. a JSON string)."""
    value, keys = record, path.split(".")
    for depth, key in enumerate(keys):
        if value is None:
            return MISSING
        if not isinstance(value, dict):
            raise WrongType(f"'{'.'.join(keys[:depth])}' is {type(value).__name__}, not an object with a '{key}' field")
        if key not in value:
            return MISSING
        value = value[key]
    return MISSING if value is None else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_number(text: str) -> int | float | None:
    """The number a condition's VALUE spells, or None. Integers stay exact: as a float,
    9007199254740993 equals 9007199254740992, and a 64-bit id would match its neighbour."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Condition":
        match = CONDITION.match(text)
        if not match:
            raise SutraError(f"--where '{text}': expected FIELD OP VALUE with OP one of ==, !=, >=, <=, >, <, ~= (e.g. 'quality_assessment.depth>=0.7')")
        field, op, value = match.groups()
        if not value and op not in ("==", "!="):  # an empty string is a value only to compare for (in)equality
            raise SutraError(f"--where '{text}': no VALUE after {op} (e.g. '{field}{op}0.7')")
        return cls(field, op, value)

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"

    @property
    def holds_when_missing(self) -> bool:
        """A record without the field (or with null) does not equal any value, so it passes `!=`
        and fails every other operator."""
        return self.op == "!="

    def holds(self, value) -> bool:
        if self.op == CONTAINS:  # list membership or substring
            if isinstance(value, list):  # items compare as == compares them: true as "true", 1.0 as 1
                number = _as_number(self.value)
                return any(item == number if _is_number(item) and number is not None
                           else (str(item).lower() if isinstance(item, bool) else str(item)) == self.value for item in value)
            if isinstance(value, str):
                return self.value in value
            raise WrongType(f"'{self.field}' is {type(value).__name__}; ~= needs a list or a string")
        if isinstance(value, bool):
            # true/false (or 1/0) for (in)equality only: as strings, "false" >= "1" held
            wanted = {"true": True, "1": True, "false": False, "0": False}.get(self.value.lower())
            if self.op not in ("==", "!=") or wanted is None:
                raise WrongType(f"'{self.field}' is true/false; compare it with == or != and true or false, not {self.op}{self.value}")
            return OPERATORS[self.op](value, wanted)
        if _is_number(value):
            number = _as_number(self.value)
            if number is None:
                raise WrongType(f"'{self.field}' is a number but the condition compares it with '{self.value}'")
            return OPERATORS[self.op](value, number)
        if isinstance(value, str):
            if self.op in ("<", "<=", ">", ">=") and _as_number(self.value) is not None:
                # "10" >= "4" is False as strings: a numeric condition needs a number
                raise WrongType(f"'{self.field}' is the string {value!r}; {self.op} {self.value} compares numbers")
            return OPERATORS[self.op](value, self.value)
        raise WrongType(f"'{self.field}' is {type(value).__name__}; {self.op} needs a number, string or boolean")


@dataclass(frozen=True)
class Filters:
    min_quality: float | None = None
    domains: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    complexity: tuple[int, int] | None = None
    where: tuple[Condition, ...] = ()

    @classmethod
    def from_args(cls, min_quality=None, domains=None, content_types=None, complexity=None, where=()) -> "Filters":
        return cls(
            min_quality=min_quality,
            domains=_names(domains, "--domains"),
            content_types=_names(content_types, "--content-types"),
            complexity=parse_range(complexity) if complexity else None,
            where=tuple(Condition.parse(w) for w in where or ()),
        )

    @property
    def active(self) -> bool:
        """Whether any filter is set (else every good record is kept)."""
        return bool(self.fields)

    @property
    def fields(self) -> set[str]:
        """Top-level record fields the filters read."""
        used = {c.field.split(".")[0] for c in self.where}
        for name, active in (("quality_score", self.min_quality is not None), ("domain", self.domains),
                             ("content_type", self.content_types), ("complexity_level", self.complexity)):
            if active:
                used.add(name)
        return used

    def describe(self) -> dict:
        return {
            "min_quality": self.min_quality, "domains": list(self.domains), "content_types": list(self.content_types),
            "complexity": list(self.complexity) if self.complexity else None, "where": [str(c) for c in self.where],
        }

    def reject(self, record: dict) -> str | None:
        """None to keep the record, else the filter that removes it ('min_quality', 'where:depth>=3' ...).

        Raises WrongType when a filtered field has a type the filter cannot compare.
        """
        checks = []  # (name, field, test, whether a record without the field passes)
        if self.min_quality is not None:
            checks.append(("min_quality", "quality_score", lambda v: _number(v, "quality_score") >= self.min_quality, False))
        if self.domains:
            checks.append(("domains", "domain", lambda v: _string(v, "domain").casefold() in self.domains, False))
        if self.content_types:
            checks.append(("content_types", "content_type", lambda v: _string(v, "content_type").casefold() in self.content_types, False))
        if self.complexity:
            lo, hi = self.complexity
            checks.append(("complexity", "complexity_level", lambda v: lo <= _number(v, "complexity_level") <= hi, False))
        checks += [(f"where:{c}", c.field, c.holds, c.holds_when_missing) for c in self.where]
        for name, path, test, missing_passes in checks:
            try:
                value = field_value(record, path)
                if value is MISSING:
                    if missing_passes:
                        continue
                    return f"{name} (no '{path}' field)"
                if not test(value):
                    return name
            except WrongType as exc:
                exc.check = name
                raise
        return None


def _number(value, name: str) -> float:
    if not _is_number(value):
        raise WrongType(f"'{name}' is {type(value).__name__} {value!r}, expected a number")
    return value


def _string(value, name: str) -> str:
    if not isinstance(value, str):
        raise WrongType(f"'{name}' is {type(value).__name__} {value!r}, expected a string")
    return value


def _names(text: str | None, flag: str) -> tuple[str, ...]:
    names = tuple(sorted({part.strip().casefold() for part in (text or "").split(",") if part.strip()}))
    if text is not None and not names:  # `--domains ,` would filter nothing
        raise SutraError(f"{flag} {text!r} names nothing; give comma-separated names, or leave {flag} out to keep every record")
    return names


def parse_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise SutraError(f"--complexity '{text}': expected A-B or A with integers, e.g. 4-8")
    lo = int(match.group(1))
    hi = int(match.group(2) or lo)
    if lo > hi:
        raise SutraError(f"--complexity '{text}': the lower bound is above the upper bound")
    return lo, hi
