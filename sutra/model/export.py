"""`sutra export`: any model spec -> a Hugging Face LlamaForCausalLM directory."""

from pathlib import Path

import torch

from sutra.errors import SutraError
from sutra.io import atomic_directory, atomic_write_json
from sutra.model.checkpoint import WEIGHTS_MARK_PATTERN, check_model_output, load_model, weights_sha256
from sutra.model.hf import hf_config, sutra_to_hf_state


def card_for_export(text: str, card: str, spec: str, dtype: str) -> str:
    """A card `sutra card` wrote must describe these weights; its Precision row becomes the
    exported dtype. A card written by hand is published as it is."""
    import re

    found = WEIGHTS_MARK_PATTERN.search(text)
    if found and found.group(1) != weights_sha256(spec):
        raise SutraError(f"--card {card}: describes other weights than {spec}'s; write its card with `sutra card {spec} --results ...`")
    return re.sub(r"^\| Precision \| [^|\n]* \|$", f"| Precision | {dtype} |", text, count=1, flags=re.MULTILINE)


def mark_exported(text: str, directory: Path) -> str:
    """The card's mark names the weight files written beside it: Hugging Face names (and --dtype)
    make other bytes than the source checkpoint's, and exporting the export again checks these."""
    found = WEIGHTS_MARK_PATTERN.search(text)
    if not found:  # a card written by hand: as it is
        return text
    return text[: found.start(1)] + weights_sha256(str(directory)) + text[found.end(1) :]


def export_hf(spec: str, out: str, dtype: str = "float32", card: str | None = None) -> Path:
    from safetensors.torch import save_file

    check_model_output(out, spec, card=card is not None, takes_card=True)
    try:
        card_text = Path(card).read_text(encoding="utf-8") if card else None
    except (OSError, UnicodeDecodeError) as exc:
        raise SutraError(f"--card {card}: cannot read it ({exc}); write one with `sutra card`") from None
    if card_text is not None:
        card_text = card_for_export(card_text, card, spec, dtype)
    loaded = load_model(spec)
    config, tokenizer = loaded.model.config, loaded.tokenizer
    torch_dtype = getattr(torch, dtype)
    state = sutra_to_hf_state({k: v.to(torch_dtype) for k, v in loaded.model.state_dict().items()}, config)
    eos = loaded.eos_token_ids[0] if len(loaded.eos_token_ids) == 1 else loaded.eos_token_ids
    with atomic_directory(out) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # one pad id in both files: the declared one, else the document separator generate pads with
        pad = tokenizer.document_separator_id if tokenizer.pad_id is None else tokenizer.pad_id
        atomic_write_json(tmp / "config.json", hf_config(config, tokenizer.bos_id, eos, dtype, pad))
        atomic_write_json(tmp / "generation_config.json", {"bos_token_id": tokenizer.bos_id, "eos_token_id": eos, "pad_token_id": pad, "do_sample": False})
        tokenizer.save(tmp, model_max_length=config.max_seq_len)
        if card_text is not None:  # after config.json: it makes `tmp` a model directory to digest
            (tmp / "README.md").write_text(mark_exported(card_text, tmp), encoding="utf-8")
    return Path(out)
