"""Prompt templates and the content-type / style vocabularies, loaded from editable YAML files.

The defaults live in sutra/synth/prompts/. `--prompts DIR` points at a directory whose files
replace the defaults one by one (copy a file there with `sutra synth prompts --export DIR`).
Templates use `$name` placeholders (string.Template), so JSON braces in them need no escaping.
"""

import shutil
from pathlib import Path
from string import Template

import yaml

from sutra.errors import SutraError
from sutra.io import invalid_yaml, read_text_input

DEFAULT_DIR = Path(__file__).with_name("prompts")

# template name -> the placeholders it may use
TEMPLATES = {
    "generate": {
        "concept_name", "domain", "complexity", "level", "description", "prerequisites", "builds_to", "cross_domain",
        "content_type", "content_type_instruction", "style", "style_instruction", "target_words",
    },
    "judge": {"text", "concept_name", "domain", "complexity", "content_type"},
    "rephrase": {"source", "content_type", "content_type_instruction", "style", "style_instruction"},
    "annotate": {"text", "domains"},
    "expand": {"concept_name", "domain", "complexity", "prerequisites", "count", "known_concepts"},
}
VOCABULARIES = ("content_types", "styles")

LEVELS = {1: "absolute beginner", 3: "primary school", 4: "middle school", 5: "high school", 7: "undergraduate", 9: "graduate", 10: "expert"}


def level_description(complexity: int) -> str:
    return LEVELS[min(k for k in LEVELS if k >= complexity)]


class PromptSet:
    def __init__(self, override_dir: str | Path | None = None):
        self.override_dir = Path(override_dir) if override_dir else None
        if self.override_dir and not self.override_dir.is_dir():
            raise SutraError(f"{self.override_dir}: --prompts must be a directory of prompt files (see 'sutra synth prompts --export DIR')")
        if self.override_dir:
            self._check_override_names()
        self.templates = {name: self._load_template(name) for name in TEMPLATES}
        self.content_types = self._load_vocabulary("content_types")
        self.styles = self._load_vocabulary("styles")

    @property
    def texts(self) -> list:
        """Every template and vocabulary in use, as plain data (for a run's settings record)."""
        return [{name: {role: t.template for role, t in roles.items()} for name, roles in self.templates.items()}, self.content_types, self.styles]

    def _check_override_names(self) -> None:
        """A --prompts file with a name no prompt has (generate.yml, a typo) would be ignored: say so instead."""
        known = [f"{name}.yaml" for name in (*TEMPLATES, *VOCABULARIES)]
        files = sorted(p.name for p in self.override_dir.iterdir() if p.suffix in (".yaml", ".yml"))
        unknown = [name for name in files if name not in known]
        if unknown:
            raise SutraError(f"{self.override_dir}: {', '.join(unknown)}: not a prompt file name, so it would be ignored; "
                             f"prompt files are named {', '.join(known)} (rename or remove it)")
        if not files:
            raise SutraError(f"{self.override_dir}: --prompts holds no prompt file ({', '.join(known)}); "
                             "see 'sutra synth prompts --export DIR' for editable copies")

    def _file(self, name: str) -> Path:
        if self.override_dir and (self.override_dir / f"{name}.yaml").exists():  # (a directory in its place is an error, not ignored)
            return self.override_dir / f"{name}.yaml"
        return DEFAULT_DIR / f"{name}.yaml"

    def _read(self, name: str) -> tuple[Path, dict]:
        path = self._file(name)
        try:
            data = yaml.safe_load(read_text_input(path))
        except (yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise invalid_yaml(path, exc) from None
        if not isinstance(data, dict) or not data:
            raise SutraError(f"{path}: expected a non-empty mapping")
        return path, data

    def _load_template(self, name: str) -> dict[str, Template]:
        path, data = self._read(name)
        if set(data) - {"system", "user"} or not isinstance(data.get("user"), str):
            raise SutraError(f"{path}: a template has a 'user' text and an optional 'system' text, nothing else")
        templates = {role: Template(text) for role, text in data.items() if text}
        for role, template in templates.items():
            if not template.is_valid():
                raise SutraError(f"{path}: {role}: malformed placeholder; write $name or ${{name}}, and $$ for a literal $")
            unknown = set(template.get_identifiers()) - TEMPLATES[name]
            if unknown:
                raise SutraError(f"{path}: {role}: unknown placeholder(s) {', '.join(sorted(unknown))}; available: {', '.join(sorted(TEMPLATES[name]))}")
        return templates

    def _load_vocabulary(self, name: str) -> dict[str, str]:
        path, data = self._read(name)
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
                raise SutraError(f"{path}: entry {key!r} must map a label to a non-empty instruction")
        return data

    def messages(self, name: str, **values) -> list[dict]:
        """Chat messages for template `name` with every placeholder filled."""
        return [{"role": role, "content": t.substitute(values).strip()} for role, t in self.templates[name].items()]

    def check_choices(self, content_types: list[str] | None, styles: list[str] | None) -> tuple[list[str], list[str]]:
        """The requested subsets (default: all), failing on a label no file defines."""
        chosen = []
        for requested, vocabulary, label in ((content_types, self.content_types, "content type"), (styles, self.styles, "style")):
            unknown = [v for v in requested or [] if v not in vocabulary]
            if unknown:
                raise SutraError(f"unknown {label}(s) {', '.join(unknown)}; known: {', '.join(vocabulary)}")
            chosen.append(list(requested) if requested else list(vocabulary))
        return chosen[0], chosen[1]


def export_defaults(out: str | Path) -> list[Path]:
    from sutra.synth.journal import prepare_output_dir

    out = prepare_output_dir(out)
    written = []
    for name in (*TEMPLATES, *VOCABULARIES):
        target = out / f"{name}.yaml"
        if not target.exists():  # never overwrite a user's edits
            shutil.copyfile(DEFAULT_DIR / f"{name}.yaml", target)
            written.append(target)
    return written
