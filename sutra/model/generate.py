"""Text generation with a KV cache: the prompt is processed once, then one position per token."""

from typing import Callable, Iterable

import torch

from sutra.errors import SutraError
from sutra.model.llama import KVCache, Llama


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> int:
    """One token id from the last position's logits (greedy when temperature == 0)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate(
    model: Llama,
    prompt_ids: list[int],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] = (),
    on_token: Callable[[int], bool | None] | None = None,
) -> list[int]:
    """Generated token ids (without the prompt), stopping after a stop id, after max_new_tokens,
    or when `on_token(token_id)` returns True (e.g. a stop string was produced)."""
    if not prompt_ids:
        raise SutraError("the prompt is empty; give at least one token of text")
    context = model.config.max_seq_len
    if len(prompt_ids) >= context:
        raise SutraError(f"the prompt has {len(prompt_ids)} tokens but the model's context is {context}; shorten it")
    max_new_tokens = min(max_new_tokens, context - len(prompt_ids))
    device = model.embed.weight.device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    stop = set(stop_ids)
    cache = KVCache(model.config, 1, len(prompt_ids) + max_new_tokens, device, model.embed.weight.dtype)
    tokens = torch.tensor([prompt_ids], device=device)
    position, out = 0, []
    for _ in range(max_new_tokens):
        logits = model(tokens, cache=cache, start_pos=position)[0, -1]
        position += tokens.shape[1]
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        out.append(next_id)
        if (on_token and on_token(next_id)) or next_id in stop:
            break
        tokens = torch.tensor([[next_id]], device=device)
    return out


class StreamDecoder:
    """Turns token ids into printable text increments (byte-level BPE may split a character)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.printed = tokenizer, [], ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.printed = text[len(self.printed) :], text
        return delta
