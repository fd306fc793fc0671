"""Text generation with a KV cache: the prompt is processed once, then one position per token."""

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

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
    row_callback = (lambda _, token_id: on_token(token_id)) if on_token else None
    return generate_batch(model, [prompt_ids], max_new_tokens, temperature, top_k, top_p, seed, stop_ids, row_callback)[0]


@torch.inference_mode()
def generate_batch(
    model: Llama,
    prompts: list[list[int]],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] = (),
    on_token: Callable[[int, int], bool | None] | None = None,
) -> list[list[int]]:
    """`generate` for several prompts at once; `on_token(prompt_index, token_id)`.

    Prompts are left-padded to one length, so every row's next token lands in the same cache
    column; each row keeps its own RoPE positions and never attends to its padding. A finished
    row leaves the batch, so the others go on with fewer rows."""
    if not prompts or not all(prompts):
        raise SutraError("a prompt is empty; give at least one token of text")
    context, longest = model.config.max_seq_len, max(map(len, prompts))
    if longest >= context:
        raise SutraError(f"the prompt has {longest} tokens but the model's context is {context}; shorten it")
    max_new_tokens = min(max_new_tokens, context - longest)
    device = model.embed.weight.device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    stop = set(stop_ids)

    padding = torch.tensor([longest - len(p) for p in prompts], device=device)
    tokens = torch.tensor([[0] * (longest - len(p)) + p for p in prompts], device=device)
    columns = torch.arange(longest + max_new_tokens, device=device)
    cache = KVCache(model.config, len(prompts), longest + max_new_tokens, device, model.embed.weight.dtype)
    rows, out = list(range(len(prompts))), [[] for _ in prompts]
    position = 0
    for _ in range(max_new_tokens):
        kwargs = {}
        if padding.any():  # positions count from each row's first real token, whose padding stays unseen
            end = position + tokens.shape[1]
            queries, keys = columns[position:end], columns[:end]
            visible = (keys[None, None, :] >= padding[:, None, None]) & (keys[None, None, :] <= queries[None, :, None])
            padded_query = queries[None, :, None] < padding[:, None, None]
            kwargs = {"positions": (queries[None, :] - padding[:, None]).clamp(min=0), "mask": (visible | padded_query & (keys == queries[:, None]))[:, None]}
        hidden = model.hidden_states(tokens, cache=cache, start_pos=position, **kwargs)[:, -1]
        logits = F.linear(hidden, model.lm_head_weight)  # the prompt's other positions need no logits
        position += tokens.shape[1]
        if temperature <= 0:
            next_ids = logits.argmax(dim=-1).tolist()
        else:
            next_ids = [sample_next(row_logits, temperature, top_k, top_p, generator) for row_logits in logits]
        keep = []
        for r, (row, next_id) in enumerate(zip(rows, next_ids)):
            out[row].append(next_id)
            if not ((on_token and on_token(row, next_id)) or next_id in stop):
                keep.append(r)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.select(index)
            padding, rows, next_ids = padding[index], [rows[r] for r in keep], [next_ids[r] for r in keep]
        tokens = torch.tensor(next_ids, device=device)[:, None]
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
