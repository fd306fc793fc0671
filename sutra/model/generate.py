"""Text generation with a KV cache: the prompt is processed once, then one position per token;
several prompts at once by continuous batching."""

import math
from collections import deque
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from sutra.errors import SutraError
from sutra.model.llama import KVCache, Llama


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> int:
    """One token id from the last position's logits (greedy when temperature == 0)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = (logits.float() - logits.max()) / temperature  # from the top down: a tiny temperature makes -inf, never +inf and NaN
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
def room_after(prompt_ids: list[int], context: int) -> int:
    """How many tokens a prompt leaves room to generate: the last one is never fed back."""
    return context - len(prompt_ids) + 1


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
    max_rows: int | None = None,
    on_finish: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """`generate` for several prompts, at most `max_rows` (default: all) decoding at once;
    `on_token(prompt_index, token_id)`, and `on_finish(prompt_index)` when a prompt's generation ends.

    Continuous batching: prompts enter in the order given, each prefilled alone into a free row
    of the cache, and a row whose generation ends takes the next prompt at once, so a long answer
    never holds a batch of finished ones. Each row keeps its own positions, attends only to its own
    tokens, stops at its own context limit and samples from its own generator (seeded seed + its
    index), so every output is that prompt's generation alone: exactly in fp32; in bf16 to rounding,
    since a decode step attends over the batch's widest row (masked), which can flip a near tie
    and so the rest of that row, as padding does in any batched generation."""
    if not prompts or not all(prompts):
        raise SutraError("a prompt is empty; give at least one token of text")
    if not temperature >= 0 or math.isinf(temperature) or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise SutraError(f"sampling needs temperature >= 0, top_k >= 1 and 0 < top_p <= 1 (got {temperature}, {top_k}, {top_p})")
    context, longest = model.config.max_seq_len, max(map(len, prompts))
    if longest > context:
        raise SutraError(f"the prompt has {longest} tokens but the model's context is {context}; shorten it")
    limits = [min(max_new_tokens, room_after(p, context)) for p in prompts]
    device = model.embed.weight.device
    generators = [torch.Generator(device=device) for _ in prompts] if temperature > 0 else []
    for index, generator in enumerate(generators):
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed + index)
    stop = set(stop_ids)

    def next_tokens(hidden: torch.Tensor, indices: list[int]) -> list[int]:
        logits = F.linear(hidden, model.lm_head_weight)
        if temperature <= 0:
            return logits.argmax(dim=-1).tolist()
        return [sample_next(row, temperature, top_k, top_p, generators[i]) for row, i in zip(logits, indices)]

    out: list[list[int]] = [[] for _ in prompts]

    def finished(index: int, token_id: int) -> bool:
        out[index].append(token_id)
        done = bool(on_token and on_token(index, token_id)) or token_id in stop or len(out[index]) >= limits[index]
        if done and on_finish:
            on_finish(index)
        return done

    waiting = deque(i for i in range(len(prompts)) if limits[i] > 0)  # max_new_tokens <= 0: nothing to generate
    for index in range(len(prompts)):
        if limits[index] <= 0 and on_finish:  # ended before it began
            on_finish(index)
    if not waiting:
        return out
    cache = KVCache(model.config, min(max_rows or len(waiting), len(waiting)), max(len(prompts[i]) + limits[i] for i in waiting), device, model.embed.weight.dtype)
    rows: list[int | None] = [None] * cache.keys.shape[1]  # the prompt each cache row generates for
    while True:
        for r in range(len(rows)):
            while rows[r] is None and waiting:  # prefill the next prompt into this free row
                index = waiting.popleft()
                hidden = model.hidden_states(torch.tensor([prompts[index]], device=device), cache=cache.row(r))
                if not finished(index, next_tokens(hidden[:, -1], [index])[0]):  # no logits for the prompt's other positions
                    rows[r] = index
        active = [r for r, index in enumerate(rows) if index is not None]
        if not active:
            return out
        if len(active) < len(rows):  # no prompt is waiting: finished rows leave the batch
            cache.select(torch.tensor(active, device=device))
            rows = [rows[r] for r in active]
        # each row feeds its last token, at the column after its cache: prompt + tokens fed so far
        columns = [len(prompts[i]) + len(out[i]) - 1 for i in rows]
        cache.columns, cache.width = torch.tensor(columns, device=device), max(columns) + 1
        visible = torch.arange(cache.width, device=device)[None, :] <= cache.columns[:, None]
        feed = torch.tensor([out[i][-1] for i in rows], device=device)[:, None]
        hidden = model.hidden_states(feed, cache=cache, positions=cache.columns[:, None], mask=visible[:, None, None])
        cache.columns = None
        for r, token in enumerate(next_tokens(hidden[:, -1], rows)):
            if finished(rows[r], token):
                rows[r] = None


class StreamDecoder:
    """Turns token ids into printable text increments. Byte-level BPE may split a character, and a
    SentencePiece tokenizer drops the space a word starts with when it is decoded first, so each
    decode starts at the prompt's last tokens (`context`) and keeps only the text after theirs."""

    def __init__(self, tokenizer, context=()):
        self.tokenizer, self.context, self.ids, self.printed = tokenizer, list(context)[-4:], [], ""
        self.context_text = tokenizer.decode(self.context)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.context + self.ids)
        # a decoder that rewrites across the join (none of ours) falls back to the tokens alone
        text = text[len(self.context_text):] if text.startswith(self.context_text) else self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        delta, self.printed = text[len(self.printed) :], text
        return delta
