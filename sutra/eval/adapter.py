"""A Sutra model inside lm-evaluation-harness: an lm-eval `TemplateLM` over sutra.model.Llama.

Requests are tokenised exactly as lm-eval's `hf` model (HFLM) tokenises them: TemplateLM's
`_encode_pair` (trailing context whitespace moved to the continuation, context+continuation
encoded whole and split after the context's tokens), then left truncation to max_length + 1
tokens. So loglikelihoods equal HFLM's up to float rounding, and every metric is identical.

BOS: as HFLM with its v0.4.11 default `add_bos_token=None`: the tokenizer's own post-processor
decides, except that a string already starting with the BOS text gets nothing added. The
SmolLM2 tokenizer's post-processor adds nothing, so sequences start with the first text token.

Where the speed comes from (the numbers do not change):
  * each distinct context is run once. With several multi-token continuations its KV cache is
    copied to every continuation (the four endings of a HellaSwag item share one pass over the
    context); such contexts are batched by exact token length, so their continuations start at
    one cache position and no padding ever enters attention. Otherwise (one continuation, or
    only one-token ones, as in BoolQ and MMLU) one right-padded row serves them all;
  * the output head and log-softmax run only at the positions that are scored;
  * generation (gsm8k) uses the KV-cached generator and stops at the first stop string.
"""

from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from sutra.model.checkpoint import LoadedModel
from sutra.model.generate import generate
from sutra.model.llama import KVCache

MAX_GEN_TOKS = 256  # HFLM's default when a task sets no max_gen_toks (gsm8k sets none)


def _logits_at(model, tokens: torch.Tensor, positions: torch.Tensor, **kwargs) -> torch.Tensor:
    """Logits only at `positions` (B, K) of each row, so the (vocab x hidden) head and the
    log-softmax run on the scored positions instead of all of them."""
    hidden = model.hidden_states(tokens, **kwargs)
    hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    return F.linear(hidden, model.lm_head_weight)


class SutraLM(TemplateLM):
    def __init__(self, loaded: LoadedModel, batch_size: int = 16, max_length: int | None = None):
        super().__init__()
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.sutra_tokenizer = loaded.tokenizer
        self.batch_size = max(1, int(batch_size))
        self._max_length = min(max_length or self.model.config.max_seq_len, self.model.config.max_seq_len)
        self._bos_text = self.sutra_tokenizer.decode([self.prefix_token_id])
        self._eos_text = self.sutra_tokenizer.decode([self.eot_token_id])

    # ---- what lm-eval asks of a model -------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.sutra_tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.sutra_tokenizer.bos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    def get_model_info(self) -> dict:
        return {"model_source": self.loaded.source, "model_kind": self.loaded.kind}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:  # the tokenizer's default, unless BOS is already in the text
            add_special_tokens = not string.startswith(self._bos_text)
        return self.sutra_tokenizer.backend.encode(string, add_special_tokens=add_special_tokens).ids

    # ---- loglikelihood ------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # The window HFLM scores is (context + continuation)[-(max_length + 1):]; what precedes the
        # continuation inside it is the effective context. Equal effective contexts run once.
        scored = []
        for _, context, continuation in requests:
            window = (context + continuation)[-(self.max_length + 1) :]
            scored.append((tuple(window[: -len(continuation)]), tuple(continuation)))
        by_context: dict[tuple, list[int]] = defaultdict(list)
        for index, (context, _) in enumerate(scored):
            by_context[context].append(index)
        # A context with one continuation, or whose continuations are all one token, needs one row:
        # those batch across lengths with right padding. Several longer continuations share the
        # context through its KV cache, which needs contexts of equal length in a batch.
        single, shared = [], []
        for context, indices in by_context.items():
            lengths = [len(scored[i][1]) for i in indices]
            (single if len(indices) == 1 or max(lengths) == 1 else shared).append(context)
        single.sort(key=lambda c: -(len(c) + max(len(scored[i][1]) for i in by_context[c])))
        by_length: dict[int, list[tuple]] = defaultdict(list)
        for context in shared:
            by_length[len(context)].append(context)
        work = [(self._score_rows, batch) for batch in self._batches(single, by_context)]
        work += [(self._score_shared, batch) for length in sorted(by_length, reverse=True) for batch in self._batches(by_length[length], by_context)]

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="Sutra loglikelihood")
        for score, batch in work:
            rows = [index for context in batch for index in by_context[context]]
            for index, answer in zip(rows, score(batch, by_context, scored)):
                results[index] = answer
                request_strings = requests[index][0]
                if request_strings is not None:
                    self.cache_hook.add_partial("loglikelihood", request_strings, answer)
            progress.update(len(rows))
        progress.close()
        return results

    def _batches(self, contexts: list[tuple], by_context: dict):
        """Consecutive contexts holding at most batch_size continuations together (one context at least)."""
        batch, rows = [], 0
        for context in contexts:
            n = len(by_context[context])
            if batch and rows + n > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append(context)
            rows += n
        if batch:
            yield batch

    @torch.inference_mode()
    def _score_rows(self, batch: list[tuple], by_context: dict, scored: list) -> list[tuple[float, bool]]:
        """One right-padded row per context: context + its longest continuation but the last token."""
        device = self.device
        longest = [max((scored[i][1] for i in by_context[c]), key=len) for c in batch]
        rows = [list(c) + list(cont[:-1]) for c, cont in zip(batch, longest)]
        tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long, device=device)
        positions = torch.zeros(len(rows), max(map(len, longest)), dtype=torch.long, device=device)
        for r, (row, context, cont) in enumerate(zip(rows, batch, longest)):
            tokens[r, : len(row)] = torch.tensor(row)
            positions[r, : len(cont)] = torch.arange(len(context) - 1, len(context) - 1 + len(cont))
        logits = _logits_at(self.model, tokens, positions)
        return [self._answer(logits[r, : len(scored[i][1])], scored[i][1]) for r, c in enumerate(batch) for i in by_context[c]]

    @torch.inference_mode()
    def _score_shared(self, batch: list[tuple], by_context: dict, scored: list) -> list[tuple[float, bool]]:
        model, device = self.model, self.device
        context_len = len(batch[0])
        row_context = [b for b, context in enumerate(batch) for _ in by_context[context]]
        continuations = [scored[index][1] for context in batch for index in by_context[context]]
        longest = max(len(c) for c in continuations)

        cache = KVCache(model.config, len(batch), context_len + longest - 1, device, model.embed.weight.dtype)
        last_position = torch.full((len(batch), 1), context_len - 1, device=device)
        last_logits = _logits_at(model, torch.tensor(batch, device=device), last_position, cache=cache, start_pos=0)[:, -1]
        first = last_logits[row_context]  # (rows, V): predicts each continuation's first token

        if longest > 1:  # continuation tokens but the last, against a copy of their context's cache
            rows = torch.tensor(row_context, device=device)
            cache.select(rows)
            inputs = torch.zeros(len(continuations), longest - 1, dtype=torch.long, device=device)
            for r, continuation in enumerate(continuations):
                inputs[r, : len(continuation) - 1] = torch.tensor(continuation[:-1])
            rest = model(inputs, cache=cache, start_pos=context_len)  # right padding only trails
        return [
            self._answer(first[r : r + 1] if len(c) == 1 else torch.cat([first[r : r + 1], rest[r, : len(c) - 1]]), c)
            for r, c in enumerate(continuations)
        ]

    def _answer(self, logits: torch.Tensor, continuation: tuple) -> tuple[float, bool]:
        """(summed log-probability of the continuation, whether greedy decoding gives it); logits (len, V)."""
        log_probs = F.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(continuation, device=log_probs.device)
        return float(log_probs.gather(1, targets[:, None]).sum()), bool((log_probs.argmax(dim=-1) == targets).all())

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text loglikelihood in disjoint max_length windows, as HFLM computes it."""
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="Sutra rolling loglikelihood"):
            (text,) = request.args
            windows = [
                (None, *make_disjoint_window(window))
                for window in get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1
                )
            ]
            total = sum(score for score, _ in self._loglikelihood_tokens(windows, disable_tqdm=True))
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return results

    # ---- generation ---------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="Sutra generate"):
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=self._eos_text)
            max_new_tokens = kwargs.pop("max_gen_toks")
            prompt = self.tok_encode(context)[-(self.max_length - max_new_tokens) :]
            text = self._generate_text(prompt, max_new_tokens, until, temperature=kwargs.get("temperature", 0.0) if kwargs.get("do_sample") else 0.0)
            results.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results

    def _generate_text(self, prompt: list[int], max_new_tokens: int, until: list[str], temperature: float) -> str:
        generated: list[int] = []

        def on_token(token_id: int) -> bool:
            generated.append(token_id)
            return any(stop in self.sutra_tokenizer.decode(generated, skip_special_tokens=True) for stop in until)

        generate(self.model, prompt, max_new_tokens, temperature=temperature, seed=1234, stop_ids=self.loaded.eos_token_ids, on_token=on_token)
        text = self.sutra_tokenizer.decode(generated, skip_special_tokens=True)
        return postprocess_generated_text(text, until, think_end_token=None)
