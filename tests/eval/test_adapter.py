"""The adapter's packing: requests that share a prefix run as one row, yet score as if each ran alone."""

import random

import pytest
import torch
import torch.nn.functional as F

from eval_helpers import tiny_model  # noqa: F401 (fixture)
from sutra.eval.adapter import SutraLM
from sutra.model.checkpoint import load_model
from sutra.model.generate import generate_batch


@torch.no_grad()
def alone(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """One request in its own row, the plain way: full logits, log-softmax, gather."""
    tokens = torch.tensor([context + continuation[:-1]])
    log_probs = F.log_softmax(model(tokens)[0, len(context) - 1 :].float(), dim=-1)
    targets = torch.tensor(continuation)
    return float(log_probs.gather(1, targets[:, None]).sum()), bool((log_probs.argmax(-1) == targets).all())


def sharing_requests() -> list[tuple[list[int], list[int]]]:
    """(context, continuation) token lists that share prefixes the ways real tasks do, shuffled."""
    rng = random.Random(0)
    words = lambda n: [rng.randrange(1000, 30000) for _ in range(n)]  # noqa: E731
    question, sentence_start = words(20), words(12)
    requests = [(question, words(n)) for n in (1, 3, 7, 2)]  # one context, four choices (HellaSwag)
    requests += [(sentence_start + option, words(6)) for option in (words(2), words(3))]  # WinoGrande
    requests += [(question + words(5), [42]), (question + words(5), [43])]  # BoolQ-like one-token choices
    requests += [(words(30), words(4)), (words(3), words(2)), (words(3), [7])]  # nothing shared
    header = words(10)  # MMLU: one subject's header, then questions, each with four one-token answers
    requests += [(header + body, [letter]) for body in (words(9), words(4) + question[:6]) for letter in (330, 331, 332, 333)]
    requests += [requests[0], requests[1]]  # exact duplicates
    rng.shuffle(requests)
    return requests


def test_packed_requests_score_as_if_each_ran_alone(tiny_model):
    checkpoint, _ = tiny_model
    lm = SutraLM(load_model(str(checkpoint)), batch_size=5)
    requests = sharing_requests()

    forwarded = []
    hidden_states = lm.model.hidden_states
    lm.model.hidden_states = lambda tokens, **kw: forwarded.append(tokens.numel()) or hidden_states(tokens, **kw)
    answers = lm._loglikelihood_tokens([(None, c, k) for c, k in requests], disable_tqdm=True)
    del lm.model.hidden_states

    for (context, continuation), (score, greedy) in zip(requests, answers):
        expected_score, expected_greedy = alone(lm.model, context, continuation)
        assert abs(score - expected_score) < 1e-4
        assert greedy == expected_greedy
    # shared prefixes ran once: fewer tokens than the requests hold, in batches of at most 5 rows
    assert sum(forwarded) < sum(len(c) + len(k) - 1 for c, k in requests)
    assert len(forwarded) < len(requests)


def test_context_truncated_from_the_left_as_hflm_does(tiny_model):
    checkpoint, _ = tiny_model
    lm = SutraLM(load_model(str(checkpoint)), max_length=16)
    context, continuation = list(range(1000, 1030)), [5, 6, 7]
    ((score, _),) = lm._loglikelihood_tokens([(None, context, continuation)], disable_tqdm=True)
    window = (context + continuation)[-17:]
    assert abs(score - alone(lm.model, window[:-3], continuation)[0]) < 1e-4


def test_bfloat16_weights_score_close_to_float32_and_generate(tiny_model):
    """The bf16 path a GPU runs (`sutra eval` defaults to bf16 on CUDA), here on the CPU: the same
    packed scoring and the continuous-batching generator, with bf16 weights and activations."""
    checkpoint, _ = tiny_model
    requests = [(None, c, k) for c, k in sharing_requests()]
    lms = {dtype: SutraLM(load_model(str(checkpoint), dtype=dtype), batch_size=5) for dtype in (torch.float32, torch.bfloat16)}
    assert lms[torch.bfloat16].model.embed.weight.dtype == torch.bfloat16
    scores = {dtype: [s for s, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)] for dtype, lm in lms.items()}
    assert all(abs(a - b) < 0.05 * abs(a) + 0.1 for a, b in zip(scores[torch.float32], scores[torch.bfloat16]))
    assert scores[torch.float32] != scores[torch.bfloat16], "bf16 rounds differently: it really ran in bf16"
    out = generate_batch(lms[torch.bfloat16].model, [[5, 6, 7], [9] * 12, [3, 1]], 6, max_rows=2)
    assert [len(ids) for ids in out] == [6, 6, 6]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_scores_equal_cpu_and_bf16_stays_close(tiny_model):
    torch.backends.cuda.matmul.allow_tf32 = False
    checkpoint, _ = tiny_model
    requests = [(None, c, k) for c, k in sharing_requests()]
    scores = {
        name: [s for s, _ in SutraLM(load_model(str(checkpoint), device=device, dtype=dtype), batch_size=5)._loglikelihood_tokens(requests, disable_tqdm=True)]
        for name, device, dtype in [("cpu", "cpu", torch.float32), ("fp32", "cuda", torch.float32), ("bf16", "cuda", torch.bfloat16)]
    }
    assert all(abs(a - b) < 1e-3 for a, b in zip(scores["cpu"], scores["fp32"]))
    assert all(abs(a - b) < 0.05 * abs(a) + 0.1 for a, b in zip(scores["cpu"], scores["bf16"]))


def test_prefix_tree_holds_each_shared_token_once_and_sees_only_ancestors():
    from sutra.eval.adapter import PrefixTree

    inputs = [(1, 2, 3, 4), (1, 2, 3, 5, 6), (1, 2, 7), (1, 2, 3, 4)]
    continuations = [(4,), (5, 6), (7,), (4,)]
    tree = PrefixTree.build(sorted(range(4), key=lambda i: inputs[i]), inputs, continuations)
    assert tree.tokens == [1, 2, 3, 4, 5, 6, 7] and tree.positions == [0, 1, 2, 3, 3, 4, 2]
    assert tree.ends == [7, 7, 6, 4, 6, 6, 7]
    assert dict(tree.scored) == {0: [3], 3: [3], 1: [4, 5], 2: [6]}
    ancestors = lambda i: [j for j in range(len(tree.tokens)) if j <= i < tree.ends[j]]  # noqa: E731
    assert ancestors(5) == [0, 1, 2, 4, 5] and ancestors(6) == [0, 1, 6]
    assert not tree.is_chain and PrefixTree.build([0, 3], inputs, continuations).is_chain


def test_trees_join_where_sharing_outweighs_a_wider_row(tiny_model):
    """A few-shot prefix (the same examples before every question) runs once for all questions;
    a short header shared by long questions does not widen the rows (dense attention would cost more)."""
    checkpoint, _ = tiny_model
    lm = SutraLM(load_model(str(checkpoint)))
    rng = random.Random(1)
    words = lambda n: [rng.randrange(1000, 30000) for _ in range(n)]  # noqa: E731
    prefix, header = words(100), words(10)
    few_shot = [tuple(prefix + words(20)) for _ in range(8)] * 2  # each question twice (two one-token answers)
    assert [len(tree.tokens) for tree in lm._prefix_trees(few_shot, [(1,)] * 16)] == [100 + 8 * 20]
    long_questions = [tuple(header + words(200)) for _ in range(3)]
    assert [len(tree.tokens) for tree in lm._prefix_trees(long_questions, [(1,)] * 3)] == [210] * 3
