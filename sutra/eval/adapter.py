"""A Sutra model inside lm-evaluation-harness: an lm-eval `TemplateLM` over sutra.model.Llama.

Requests are tokenised exactly as lm-eval's `hf` model (HFLM) tokenises them: TemplateLM's
`_encode_pair` (trailing context whitespace moved to the continuation, context+continuation
encoded whole and split after the context's tokens), then left truncation to max_length + 1
tokens. So loglikelihoods equal HFLM's up to float rounding, and every metric is identical.

BOS: as HFLM with its v0.4.11 default `add_bos_token=None`: the tokenizer's own post-processor
decides, except that a string already starting with the BOS text gets nothing added. The
SmolLM2 tokenizer's post-processor adds nothing, so sequences start with the first text token.

Where the speed comes from (the numbers do not change):
  * requests that share token prefixes run as one prefix tree: every shared token once, laid out
    depth first, with a mask that lets a token see only its ancestors and RoPE positions at its
    depth, so each request is scored as if it ran alone. A HellaSwag item's context runs once for
    its four endings, WinoGrande's two sentences share everything before the blank, BoolQ's
    " yes"/" no" and MMLU's letters share whole inputs, and MMLU's questions of one subject share
    its header. Trees of any size then fill rows first-fit, so little padding runs and each
    forward is large (on a CPU, each forward also rereads every weight);
  * the output head and log-softmax run only at the positions that are scored;
  * generation (gsm8k) runs through the KV-cached generator with continuous batching: each prompt
    is prefilled alone (never padded), and a row whose answer reaches a stop string takes the next
    prompt at once instead of waiting for the batch's longest answer.
"""

import json
from dataclasses import dataclass, field

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from sutra.errors import SutraError
from sutra.eval.journal import AnswerJournal
from sutra.model.checkpoint import LoadedModel
from sutra.model.generate import generate_batch
from sutra.model.loss import target_log_probs

MAX_GEN_TOKS = 256  # HFLM's default when a task sets no max_gen_toks (gsm8k sets none)


MIN_SHARED_PREFIX = 8  # tokens a request must share with the previous one to join its prefix tree
TREE_TOKENS = 2048  # at most, so a packed row's (width x width) mask stays small


def _common_prefix(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@dataclass
class PrefixTree:
    """Requests' input tokens as one prefix tree, one token per node, laid out depth first.

    A node's subtree is the contiguous run [node, ends[node]), so a token attends to the nodes j
    with j <= i < ends[j]: exactly its ancestors, i.e. the tokens before it in its own request.
    At the RoPE position of its depth, every scored logit is the one a separate row gives."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # depth: the token's index within its request
    ends: list[int] = field(default_factory=list)
    scored: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, node indexes)

    @classmethod
    def build(cls, members: list[int], inputs: list[tuple], continuations: list[tuple]) -> "PrefixTree":
        """members are sorted by their input tokens, so each shares the longest prefix with the one before."""
        tree, path, previous = cls(), [], ()
        for index in members:
            sequence = inputs[index]
            shared = _common_prefix(previous, sequence)
            for node in path[shared:]:  # the previous request's branch is closed
                tree.ends[node] = len(tree.tokens)
            del path[shared:]
            for depth in range(shared, len(sequence)):
                path.append(len(tree.tokens))
                tree.tokens.append(sequence[depth])
                tree.positions.append(depth)
                tree.ends.append(-1)  # set when its branch closes
            tree.scored.append((index, path[len(sequence) - len(continuations[index]) :]))
            previous = sequence
        for node in path:
            tree.ends[node] = len(tree.tokens)
        return tree

    @property
    def is_chain(self) -> bool:
        """One request (or copies of it): plain causal attention sees the same tokens."""
        return self.positions[-1] == len(self.tokens) - 1


class SutraLM(TemplateLM):
    def __init__(self, loaded: LoadedModel, batch_size: int = 16, max_length: int | None = None, journal: AnswerJournal | None = None):
        super().__init__()
        self.journal = journal
        if journal is not None:
            self.cache_hook = journal  # every answer goes to cache_hook.add_partial as it comes
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
        bos = self.sutra_tokenizer.bos_id  # as lm-eval's hf model: the BOS, else the EOS
        return self.eot_token_id if bos is None else bos

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

    # ---- the three request kinds, answered from the journal where an interrupted run left them ----

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._answer("loglikelihood", requests, lambda todo: super(SutraLM, self).loglikelihood(todo, disable_tqdm))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return self._answer("loglikelihood_rolling", requests, lambda todo: self._loglikelihood_rolling(todo, disable_tqdm))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return self._answer("generate_until", requests, lambda todo: self._generate_until(todo, disable_tqdm))

    def _answer(self, method: str, requests, run) -> list:
        if self.journal is None:
            return run(requests)
        # a sampled generation is drawn again, as lm-eval's own cache does (else repeats would be identical)
        answers = [None if method == "generate_until" and request.args[1].get("do_sample") else self.journal.get(method, request.args)
                   for request in requests]
        todo = [i for i, answer in enumerate(answers) if answer is None]
        if todo:
            for i, answer in zip(todo, run([requests[i] for i in todo])):
                answers[i] = answer
        return answers

    # ---- loglikelihood ------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # HFLM scores the window (context + continuation)[-(max_length + 1):]: the model reads all of it
        # but its last token, and the continuation's tokens are the targets.
        inputs, continuations = [], []
        for strings, context, continuation in requests:
            if not context or not continuation or len(continuation) > self.max_length:  # HFLM asserts these; unchecked, they misalign the scores
                raise SutraError(
                    f"a loglikelihood request needs at least 1 context token and 1 to {self.max_length} (the model's context) continuation tokens; "
                    f"got {len(context)} and {len(continuation)} for {strings!r}"
                )
            inputs.append(tuple((context + continuation)[-(self.max_length + 1) :][:-1]))
            continuations.append(tuple(continuation))
        trees = sorted(self._prefix_trees(inputs, continuations), key=lambda tree: -len(tree.tokens))

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="Sutra loglikelihood")
        for rows in self._batches(trees):
            for index, answer in self._score(rows, continuations):
                results[index] = answer
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                progress.update(1)
        progress.close()
        return results

    def _prefix_trees(self, inputs: list[tuple], continuations: list[tuple]) -> list[PrefixTree]:
        """Requests sharing a long enough token prefix with their neighbour in sorted order (a
        question's choices, WinoGrande's two sentences up to the blank, MMLU's answers and its
        subject's header, a few-shot prefix) become one tree, while that costs less than running the
        request on its own. Attention over a packed row is dense, so a wider tree makes every one of
        its tokens dearer: a 15-token header is not worth joining a 500-token question to."""
        config = self.model.config
        layer_matmul = (config.num_matmul_parameters - config.vocab_size * config.hidden_size) / config.num_layers
        # the width at which a layer's dense attention (2 x width x d multiply-adds per token) costs as much as its matmuls
        attention_width = layer_matmul / (2 * config.hidden_size)
        cost = lambda tokens: tokens * (1 + tokens / attention_width)  # noqa: E731
        order = sorted(range(len(inputs)), key=lambda i: inputs[i])
        trees, members, size = [], [], 0
        for index in order:
            if members:
                shared = _common_prefix(inputs[members[-1]], inputs[index])
                added = len(inputs[index]) - shared  # an exact copy adds nothing and always joins
                if added == 0 or (
                    shared >= MIN_SHARED_PREFIX
                    and size + added <= min(TREE_TOKENS, self.max_length)
                    and cost(size + added) < cost(size) + cost(len(inputs[index]))
                ):
                    members.append(index)
                    size += added
                    continue
                trees.append(PrefixTree.build(members, inputs, continuations))
            members, size = [index], len(inputs[index])
        if members:
            trees.append(PrefixTree.build(members, inputs, continuations))
        return trees

    def _batches(self, trees: list[PrefixTree]):
        """Rows for each forward: at most batch_size rows (as HFLM), as wide as the longest tree
        left. Trees fill them first-fit, longest first, so short trees share a row instead of each
        padding its own; trees sorted longest first keep the widest batch first."""
        remaining = trees
        while remaining:
            width, shortest = len(remaining[0].tokens), len(remaining[-1].tokens)
            rows, free, leftover = [], [], []
            for g, tree in enumerate(remaining):
                if len(rows) == self.batch_size and max(free) < shortest:
                    leftover += remaining[g:]  # the batch is full: nothing left can fit
                    break
                fits = next((r for r, room in enumerate(free) if room >= len(tree.tokens)), None)
                if fits is not None:
                    rows[fits].append(tree)
                    free[fits] -= len(tree.tokens)
                elif len(rows) < self.batch_size:
                    rows.append([tree])
                    free.append(width - len(tree.tokens))
                else:
                    leftover.append(tree)
            yield rows
            remaining = leftover

    @torch.inference_mode()
    def _score(self, rows: list[list[PrefixTree]], continuations: list[tuple]):
        """(request index, (loglikelihood, is_greedy)) for every request in the rows' trees."""
        device, shape = self.device, (len(rows), len(rows[0][0].tokens))
        tokens, positions = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
        ends = torch.arange(1, shape[1] + 1).repeat(shape[0], 1)  # padding attends to itself only
        scored = []  # (request index, row, token indexes in the row)
        for r, row in enumerate(rows):
            offset = 0
            for tree in row:
                span = slice(offset, offset + len(tree.tokens))
                tokens[r, span], positions[r, span] = torch.tensor(tree.tokens), torch.tensor(tree.positions)
                ends[r, span] = torch.tensor(tree.ends) + offset
                scored += [(index, r, [offset + i for i in nodes]) for index, nodes in tree.scored]
                offset = span.stop
        kwargs = {}
        if any(len(row) > 1 or not row[0].is_chain for row in rows):  # packed: each token sees its ancestors only
            index = torch.arange(shape[1], device=device)
            ends = ends.to(device)
            visible = (index[None, :] <= index[:, None])[None] & (index[None, :, None] < ends[:, None, :])
            kwargs = {"positions": positions.to(device), "mask": visible[:, None]}
        # else one request per row: right padding only trails, the causal default holds
        hidden = self.model.hidden_states(tokens.to(device), **kwargs)

        row_index = torch.tensor([r for _, r, indexes in scored for _ in indexes], device=device)
        column_index = torch.tensor([i for _, _, indexes in scored for i in indexes], device=device)
        targets = torch.tensor([t for index, _, _ in scored for t in continuations[index]], device=device)
        # the output head and log-softmax at scored positions only
        log_probs, greedy = target_log_probs(hidden[row_index, column_index], self.model.lm_head_weight, targets)
        if not torch.isfinite(log_probs).all():  # lm-eval would score NaN choices (argmax picks the first) as answers
            raise SutraError(
                f"the model's log-likelihoods are not finite (NaN or inf) on these benchmark inputs, so every score would be "
                f"meaningless: its weights have diverged, or {self.model.embed.weight.dtype} overflows (try --dtype float32, or an earlier checkpoint)"
            )
        log_probs, greedy = log_probs.tolist(), greedy.tolist()
        start = 0
        for index, _, indexes in scored:
            end = start + len(indexes)
            yield index, (float(sum(log_probs[start:end])), all(greedy[start:end]))
            start = end

    def _loglikelihood_rolling(self, requests, disable_tqdm: bool) -> list[float]:
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

    def _generate_until(self, requests, disable_tqdm: bool) -> list[str]:
        """Requests with the same generation settings run together, longest prompt first (as HFLM),
        at most batch_size rows decoding at once."""
        by_settings: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_settings.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="Sutra generate")
        for indices in by_settings.values():
            kwargs = normalize_gen_kwargs(dict(requests[indices[0]].args[1]), MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=self._eos_text)
            max_new_tokens = kwargs.pop("max_gen_toks")
            if max_new_tokens >= self.max_length:  # HFLM refuses too: no room would be left for the prompt
                raise SutraError(f"generating up to {max_new_tokens} tokens (max_gen_toks) leaves no room for the prompt in the model's context of {self.max_length} tokens")
            temperature = kwargs.get("temperature", 0.0) if kwargs.get("do_sample") else 0.0
            prompts = {i: self.tok_encode(requests[i].args[0])[-(self.max_length - max_new_tokens) :] for i in indices}
            order = sorted(indices, key=lambda i: -len(prompts[i]))

            def finished(position: int, text: str, order=order) -> None:  # as each row ends, so a kill keeps it
                results[order[position]] = text
                self.cache_hook.add_partial("generate_until", requests[order[position]].args, text)
                progress.update(1)

            self._generate_texts([prompts[i] for i in order], max_new_tokens, until, temperature, finished)
        progress.close()
        return results

    def _generate_texts(self, prompts: list[list[int]], max_new_tokens: int, until: list[str], temperature: float, finished) -> None:
        """Generate for every prompt; finished(position, text) as each one ends."""
        generated: list[list[int]] = [[] for _ in prompts]

        def on_token(index: int, token_id: int) -> bool:
            generated[index].append(token_id)
            # On the text with special tokens, as HFLM's stopping criterion reads it: a stop string that is a
            # special token (gsm8k's "<|im_end|>") never shows in the returned text, which is decoded without them.
            return any(stop in self.sutra_tokenizer.decode(generated[index]) for stop in until)

        def on_finish(position: int) -> None:
            text = self.sutra_tokenizer.decode(generated[position], skip_special_tokens=True)
            finished(position, postprocess_generated_text(text, until, think_end_token=None))

        generate_batch(self.model, prompts, max_new_tokens, temperature=temperature, seed=1234, stop_ids=self.loaded.eos_token_ids,
                       on_token=on_token, max_rows=self.batch_size, on_finish=on_finish)
