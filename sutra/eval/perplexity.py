"""Token-level perplexity on a prepared dataset's validation split (the number the card tracks per epoch).

Every validation window is scored once, in order, through the training data path
(sutra.data.loader.TokenLoader, split "val"), and perplexity = exp(summed next-token cross-entropy
/ scored tokens). Attention stays inside each document by default (`train.attention: document`);
`attention="causal"` lets it cross the documents packed into a window, as a causal run trains and
validates (its logged val_ppl is this figure).
"""

import math
import time

import torch

from sutra.errors import SutraError


def as_validated(spec: str) -> dict:
    """How a Sutra checkpoint's run validated: its recipe's data.seq_len, eval.max_windows (None: every
    window) and train.attention, so `sutra eval --perplexity` reproduces its logged val_ppl by default;
    {} for other models."""
    from sutra.eval.harness import ATTENTION
    from sutra.model.checkpoint import read_training_record

    recipe = read_training_record(spec).get("resolved_recipe") or {}
    data, evaluation, train = (recipe.get(section) or {} for section in ("data", "eval", "train"))
    if not (isinstance(data.get("seq_len"), int) and train.get("attention") in ATTENTION and "max_windows" in evaluation):
        return {}  # no recipe (or a hand-edited one): the defaults for any model
    return {"seq_len": data["seq_len"], "max_windows": evaluation["max_windows"], "attention": train["attention"]}


def perplexity_of(loss: float) -> float:
    """exp(mean token cross-entropy), capped where exp would overflow (past 709): a diverged model
    reads ~1e304, not an OverflowError. The trainer's val_ppl and `sutra eval` share it."""
    return math.exp(min(loss, 700.0))


@torch.inference_mode()
def perplexity(loaded, data_dir: str, seq_len: int | None = None, batch_size: int = 8, max_windows: int | None = None,
               attention: str = "document") -> dict:
    from sutra.data.loader import TokenLoader

    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("max_windows", max_windows)):
        if value is not None and value < 1:  # 0 windows would score no token and divide by zero below
            raise SutraError(f"perplexity: {name} must be at least 1, got {value}")
    model = loaded.model
    context = model.config.max_seq_len
    if seq_len is not None and seq_len > context:  # (it was cut to the context silently: another window than asked for)
        raise SutraError(f"perplexity: a window of {seq_len} tokens is longer than the model's context of {context}; give --seq-len {context} or less")
    seq_len = seq_len or min(2048, context)
    loader = TokenLoader(data_dir, split="val", seq_len=seq_len, micro_batch=batch_size)
    if loader.tokenizer_fingerprint != loaded.tokenizer.fingerprint:
        raise SutraError(
            f"{data_dir}: prepared with tokenizer {loader.tokenizer_fingerprint} but the model uses {loaded.tokenizer.fingerprint}; "
            "prepare the data with the model's tokenizer"
        )
    if loader.windows_per_epoch == 0:
        if loader.split_tokens == 0:
            raise SutraError(f"{data_dir}: the validation split is empty (prepared with --val-fraction 0?); prepare the data with a validation share")
        raise SutraError(f"{data_dir}: the validation split has {loader.split_tokens} tokens, fewer than the {seq_len + 1} a window of "
                         f"{seq_len} needs; use a smaller --seq-len")
    device = model.embed.weight.device
    total_nll, tokens, windows = 0.0, 0, 0
    started = time.time()
    for batch in loader.iter_eval(max_windows=max_windows):
        batch = batch.to(device)
        loss = model(batch.inputs, batch.targets, doc_ids=batch.doc_ids if attention == "document" else None)
        total_nll += float(loss) * batch.targets.numel()
        tokens += batch.targets.numel()
        windows += batch.inputs.shape[0]
    return {
        "data": str(data_dir),
        "split": "val",
        "perplexity": perplexity_of(total_nll / tokens),
        "loss": total_nll / tokens,
        "tokens": tokens,
        "windows": windows,
        "windows_in_split": loader.windows_per_epoch,
        "seq_len": seq_len,
        "attention": attention,
        "seconds": round(time.time() - started, 1),
    }
