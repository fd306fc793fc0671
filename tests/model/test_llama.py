import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sutra.errors import SutraError
from sutra.model.llama import Llama
from sutra.model.config import ModelConfig, get_preset
from sutra.model.llama import flops_per_token
from sutra.model.loss import IGNORE_INDEX, linear_cross_entropy, target_log_probs
from sutra.model import masks
from sutra.model.masks import DocumentSpans, dense_document_mask, document_spans, flex_document_mask

SMALL = ModelConfig(64, 128, 2, 4, 2, vocab_size=512, max_seq_len=128)


@pytest.mark.parametrize(
    "preset, expected",
    [("smollm2-70m", 69_230_976), ("smollm2-135m", 134_515_008), ("smollm2-360m", 361_821_120)],
)
def test_preset_parameter_counts(preset, expected):
    config = get_preset(preset)
    assert config.num_parameters == expected
    with torch.device("meta"):
        assert sum(p.numel() for p in Llama(config).parameters()) == expected


def test_tiny_preset_is_a_few_million_parameters_with_the_smollm2_vocab():
    config = get_preset("tiny")
    assert config.vocab_size == 49152 and 2e6 < config.num_parameters < 2e7


def test_initialisation_follows_hf_rule():
    torch.manual_seed(0)
    model = Llama(get_preset("tiny"))
    assert abs(model.embed.weight.std().item() - 128**-0.5) < 2e-3
    assert abs(model.blocks[0].attn.wqkv.weight.std().item() - 128**-0.5) < 5e-3
    assert torch.all(model.blocks[0].attn_norm.weight == 1)
    assert model.lm_head_weight.data_ptr() == model.embed.weight.data_ptr()


def test_invalid_configs_are_rejected():
    with pytest.raises(SutraError, match="divisible"):
        ModelConfig(64, 128, 2, 5, 1)
    with pytest.raises(SutraError, match="num_kv_heads"):
        ModelConfig(64, 128, 2, 4, 3)
    with pytest.raises(SutraError, match="positive integer"):
        ModelConfig(64, -1, 2, 4, 2)
    with pytest.raises(SutraError, match="unknown keys"):
        ModelConfig.from_dict({**SMALL.to_dict(), "dropout": 0.1})
    with pytest.raises(SutraError, match="unknown model preset"):
        get_preset("gpt5")


def loss_case():
    """Hidden states and head weight that need gradients, and targets with two ignored positions."""
    torch.manual_seed(0)
    targets = torch.randint(0, 50, (37,))
    targets[[3, 10]] = IGNORE_INDEX
    return torch.randn(37, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True), targets


def reference_loss_and_grads(hidden, weight, targets):
    """fp32 cross-entropy of the full logits, and its gradients (any earlier ones are dropped first)."""
    hidden.grad = weight.grad = None
    reference = F.cross_entropy(hidden @ weight.t(), targets, ignore_index=IGNORE_INDEX)
    reference.backward()
    return reference, hidden.grad, weight.grad


@pytest.mark.parametrize("chunk_size", [8, 64])  # several chunks, then one: a CPU's reused logits buffer regrows
def test_chunked_loss_matches_full_cross_entropy_and_gradients(chunk_size):
    hidden, weight, targets = loss_case()
    loss = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    reference, *reference_grads = reference_loss_and_grads(hidden, weight, targets)
    assert torch.allclose(loss, reference, atol=1e-5)
    assert torch.allclose(grads[0], reference_grads[0], atol=1e-5)
    assert torch.allclose(grads[1], reference_grads[1], atol=1e-5)
    with torch.no_grad():  # the evaluation path gives the same number
        assert torch.allclose(linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size), reference, atol=1e-5)


def test_target_log_probs_equal_log_softmax_in_chunks():
    hidden, weight, targets = loss_case()
    targets = targets.clamp(min=0)
    targets[5] = (hidden[5] @ weight.t()).argmax()  # one target that is its row's argmax
    reference = torch.log_softmax(hidden @ weight.t(), dim=-1).detach()
    for chunk_size in (8, 64):  # several chunks, then one (the reused buffer regrows)
        log_probs, greedy = target_log_probs(hidden.detach(), weight.detach(), targets, chunk_size)
        # a GEMM's last bits depend on its row count, so not bitwise across chunkings
        assert torch.allclose(log_probs, reference.gather(1, targets[:, None])[:, 0], rtol=0, atol=1e-5)
        assert torch.equal(greedy, reference.argmax(dim=-1) == targets) and greedy[5]


def test_target_log_probs_take_gradients_when_asked():
    hidden, weight, targets = loss_case()
    log_probs, _ = target_log_probs(hidden, weight, targets.clamp(min=0), 8)  # e.g. distillation: not only under inference_mode
    (-log_probs.mean()).backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_training_after_evaluation_in_one_process_can_reuse_the_logits_buffer():
    """Evaluation scores under torch.inference_mode, which makes the reused CPU logits buffer an
    inference tensor; a training step after it in the same process (a notebook, say) must still run."""
    hidden, weight, targets = loss_case()
    with torch.inference_mode():
        target_log_probs(hidden.detach(), weight.detach(), targets.clamp(min=0), 64)
    loss = linear_cross_entropy(hidden, weight, targets, chunk_size=64)
    loss.backward()
    assert torch.allclose(loss, reference_loss_and_grads(hidden, weight, targets)[0], atol=1e-5)


def test_chunked_loss_gradients_under_bf16_autocast_stay_close_to_fp32():
    hidden, weight, targets = loss_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(hidden, weight, targets, chunk_size=8).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    _, *reference_grads = reference_loss_and_grads(hidden, weight, targets)
    for ours, reference in zip(grads, reference_grads):
        assert (ours - reference).abs().max() < 0.02 * reference.abs().max()
    assert grads[0][[3, 10]].abs().max() == 0, "ignored positions get no gradient"


def test_chunked_loss_gradients_of_confident_tokens_under_bf16_autocast_stay_close_to_fp32():
    """A token the model already predicts with p ~ 1 has a tiny gradient (p - 1) * w: forming it
    after rounding softmax to bf16 left mostly rounding error (44 % relative error in the hidden
    gradient, 84 % in the head's, against 4 % from autocast F.cross_entropy)."""
    torch.manual_seed(0)
    N, d, V = 512, 64, 2048
    weight = torch.randn(V, d) / d**0.5
    targets = torch.randint(0, V, (N,))
    # hidden states pointing at their target's embedding: mean p(target) = 0.9996
    hidden = 2.0 * d**0.5 * F.normalize(weight[targets], dim=1) + 0.1 * torch.randn(N, d)
    hidden.requires_grad_(), weight.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(hidden, weight, targets, chunk_size=128).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    _, *reference_grads = reference_loss_and_grads(hidden, weight, targets)
    for ours, reference in zip(grads, reference_grads):
        assert (ours - reference).norm() < 0.1 * reference.norm()


def test_model_loss_equals_cross_entropy_of_logits_under_bf16_autocast():
    torch.manual_seed(0)
    model = Llama(SMALL)
    tokens = torch.randint(0, 512, (2, 33))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(tokens[:, :-1], tokens[:, 1:])
        logits = model(tokens[:, :-1])
    reference = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(loss.item() - reference.item()) < 2e-2


def test_document_mask_equals_running_each_document_alone():
    torch.manual_seed(0)
    model = Llama(SMALL).eval()
    tokens = torch.randint(0, 512, (1, 30))
    doc_ids = torch.tensor([[0] * 12 + [1] * 7 + [2] * 11])
    with torch.no_grad():
        packed = model(tokens, doc_ids=doc_ids)
        pieces = [model(tokens[:, s:e]) for s, e in [(0, 12), (12, 19), (19, 30)]]
    # RoPE is relative, so a document attends the same whether it starts at position 0 or later.
    assert torch.allclose(packed, torch.cat(pieces, dim=1), atol=1e-4)
    mask = dense_document_mask(doc_ids)
    assert mask.shape == (1, 1, 30, 30) and mask[0, 0, 12, 11].item() is False and mask[0, 0, 13, 12].item() is True


@pytest.mark.parametrize("attention", ["causal", "document"])
def test_activation_checkpointing_recomputes_each_block_to_the_same_loss_and_gradients(attention):
    """Each block runs twice a training step (forward, then again in backward) and gives bitwise the
    loss and gradients of the run that kept its activations; evaluation runs it once."""
    torch.manual_seed(0)
    model = Llama(SMALL)
    tokens = torch.randint(0, 512, (2, 41))
    doc_ids = torch.tensor([[0] * 15 + [1] * 25, [1] * 3 + [2] * 37]) if attention == "document" else None
    calls = []
    model.blocks[1].register_forward_pre_hook(lambda *args: calls.append(1))
    results = []
    for recompute in (False, True):
        model.activation_checkpointing, calls[:] = recompute, []
        model.zero_grad()
        loss = model(tokens[:, :-1], tokens[:, 1:], doc_ids=doc_ids)
        loss.backward()
        results.append((loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}, len(calls)))
    (loss, grads, kept_calls), (loss_ac, grads_ac, recomputed_calls) = results
    assert (kept_calls, recomputed_calls) == (1, 2)
    assert torch.equal(loss, loss_ac)
    for name in grads:
        assert torch.equal(grads[name], grads_ac[name]), name
    calls[:] = []
    with torch.no_grad():
        model(tokens[:, :-1], tokens[:, 1:], doc_ids=doc_ids)
    assert len(calls) == 1


ACTIVATION_MEMORY = """
import re, sys, torch
from sutra.model.llama import Llama
from sutra.model.config import ModelConfig

def peak_resident_bytes():  # this process's own high-water mark (ru_maxrss would include the parent's at fork)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

model = Llama(ModelConfig(128, 384, 12, 4, 2, vocab_size=1024, max_seq_len=512))
model.activation_checkpointing = sys.argv[1] == "on"
model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)).backward()  # the libraries' own first-use memory
tokens = torch.randint(0, 1024, (8, 513))
before = peak_resident_bytes()
model(tokens[:, :-1], tokens[:, 1:]).backward()
print(peak_resident_bytes() - before)
"""


def test_activation_checkpointing_cuts_a_training_steps_peak_memory():
    """The process's peak resident memory over one forward and backward (12 layers, 8 x 512
    tokens), each in a fresh process: 600-700 MiB keeping the activations, 240-290 MiB
    recomputing them (2-core CPU)."""
    peak = {}
    for mode in ("off", "on"):
        result = subprocess.run([sys.executable, "-c", ACTIVATION_MEMORY, mode], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        peak[mode] = int(result.stdout.split()[-1])
    assert peak["off"] > 400 * 2**20 and peak["on"] < 0.55 * peak["off"], peak


def test_document_spans_start_at_every_document_and_every_row():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [2, 2, 3, 3, 3, 3]])  # row 2 continues row 1's last document id
    spans = document_spans(doc_ids, "cpu")
    assert spans.cu_seqlens.dtype == torch.int32
    assert spans.cu_seqlens.tolist() == [0, 3, 5, 6, 8, 12] and spans.max_len == 4


def reference_varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1), is_causal=False, enable_gqa=False):
    """PyTorch's varlen_attn contract, computed one document at a time with SDPA (CPU, with autograd)."""
    assert is_causal or tuple(window_size) == (-1, 0), "document attention must be causal"
    assert torch.equal(cu_seq_q, cu_seq_k) and max_q == max_k == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    assert enable_gqa or k.shape[1] == q.shape[1], "without enable_gqa the kernel needs as many K/V heads as query heads"
    pieces = []
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist()):
        qs, ks, vs = (x[start:end].transpose(0, 1)[None] for x in (q, k, v))
        pieces.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=enable_gqa)[0].transpose(0, 1))
    return torch.cat(pieces)


@pytest.mark.parametrize("options", [{"window_size": (-1, 0), "enable_gqa": True}, {"is_causal": True}], ids=["gqa", "expanded-kv"])
def test_varlen_spans_mean_what_the_dense_document_mask_means(monkeypatch, options):
    """The varlen path's reshapes, K/V expansion and spans, through the whole model forward and
    backward, with a CPU stand-in for the CUDA kernel; tests/model/test_cuda.py runs the real one."""
    monkeypatch.setattr(masks, "VARLEN", (reference_varlen_attn, options))
    torch.manual_seed(0)
    model = Llama(SMALL)
    tokens = torch.randint(0, 512, (2, 41))
    doc_ids = torch.tensor([[0] * 12 + [1] * 7 + [2] * 21, [0] * 40])
    losses, grads = [], []
    for mask in (document_spans(doc_ids, "cpu"), dense_document_mask(doc_ids)):
        loss = model(tokens[:, :-1], tokens[:, 1:], mask=mask)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.blocks[1].attn.wqkv.weight.grad.clone())
        model.zero_grad()
    assert abs(losses[0] - losses[1]) < 1e-5
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert isinstance(model.attention_mask(doc_ids, "varlen"), torch.Tensor), "off CUDA every kernel choice is the dense mask"


@torch.library.custom_op("sutra_test::varlen_attn", mutates_args=())
def _varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int, enable_gqa: bool) -> torch.Tensor:
    return reference_varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, is_causal=True, enable_gqa=enable_gqa)


@_varlen_op.register_fake
def _(q, k, v, cu_seqlens, max_len, enable_gqa):
    return torch.empty_like(q)


def opaque_varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1), enable_gqa=False):
    """The stand-in as an opaque custom op, as PyTorch's varlen_attn is to torch.compile."""
    assert tuple(window_size) == (-1, 0)
    return _varlen_op(q, k, v, cu_seq_q, max_q, enable_gqa)


def test_varlen_spans_compile_and_stay_compiled_as_documents_change(monkeypatch):
    """Under torch.compile (dynamo + AOTAutograd, as training compiles the model) the spans flow in
    as an input: new document layouts and lengths reuse the compiled graph, not one per batch."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(masks, "VARLEN", (opaque_varlen_attn, masks._varlen_options(opaque_varlen_attn)))
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = Llama(SMALL).eval()
    compiled = torch.compile(model, backend="aot_eager")
    tokens = torch.randint(0, 512, (2, 40))
    # the second layout changes only the longest document, the third only the document count
    layouts = [[12, 7, 21, 40], [20, 20, 39, 1], [39, 1, 20, 10, 10], [5] * 8 + [3, 37], [40, 1, 1, 38]]
    with torch.no_grad():
        for lengths in layouts:
            doc_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).view(2, 40)
            expected = model(tokens, mask=dense_document_mask(doc_ids))
            assert torch.allclose(compiled(tokens, mask=document_spans(doc_ids, "cpu")), expected, atol=1e-5)
    assert counters["stats"]["unique_graphs"] <= 2, "the first layout, then one graph with dynamic spans"


@pytest.mark.skipif(masks.varlen_kernel()[0] is None, reason="PyTorch < 2.9 has no varlen_attn")
def test_the_real_varlen_kernel_accepts_our_call_forward_and_backward_on_meta_tensors():
    """PyTorch's own varlen_attn (its keywords, shape rules and autograd), run on meta tensors: the
    CUDA kernel itself only runs on a GPU, but the call must already fit this PyTorch's API."""
    model = Llama(SMALL).to("meta").to(torch.bfloat16)
    tokens = torch.zeros(2, 40, dtype=torch.long, device="meta")
    spans = DocumentSpans(torch.zeros(5, dtype=torch.int32, device="meta"), 21)
    hidden = model.hidden_states(tokens, mask=spans)
    assert hidden.shape == (2, 40, SMALL.hidden_size) and hidden.dtype == torch.bfloat16
    hidden.float().sum().backward()
    assert model.blocks[0].attn.wqkv.weight.grad.shape == model.blocks[0].attn.wqkv.weight.shape


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_flex_document_mask_matches_dense_sdpa_forward_and_backward(device):
    """The FlexAttention block mask (compiled, as training uses it on CUDA) means what the dense mask
    means. CPU FlexAttention has no backward, so there only the forward is compared."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    config = ModelConfig(128, 256, 2, 4, 2, vocab_size=1024, max_seq_len=512)
    tokens = torch.randint(0, config.vocab_size, (2, 257), device=device)
    doc = torch.repeat_interleave(torch.arange(5), torch.tensor([37, 100, 1, 64, 54])).to(torch.int32)
    doc_ids = torch.stack([doc, doc.max() - doc.flip(0)]).to(device)
    model = Llama(config).to(device).requires_grad_(device == "cuda")
    losses, grads = [], []
    for mask in (flex_document_mask(doc_ids), dense_document_mask(doc_ids)):
        loss = model(tokens[:, :-1], tokens[:, 1:], mask=mask)
        losses.append(loss.item())
        if device == "cuda":
            loss.backward()
            grads.append(model.blocks[0].attn.wqkv.weight.grad.clone())
            model.zero_grad()
    assert abs(losses[0] - losses[1]) < 1e-4
    if grads:
        assert torch.allclose(grads[0], grads[1], atol=1e-4)
    # a mask first built under inference_mode (an evaluation) is rebuilt, not written to, by training after it
    with torch.inference_mode():
        flex_document_mask(doc_ids[:, :100])
    flex_document_mask(doc_ids[:, :100])


def test_flops_per_token_matches_the_reference_numbers():
    config = get_preset("smollm2-70m")
    # training-anchors.md §3.2: causal 6N + 6·L·d·T = 1,019.2 MFLOP/token at T = 8192
    assert abs(flops_per_token(config, 8192 / 2) / 1e6 - 1019.2) < 0.1


def test_context_overflow_is_refused():
    model = Llama(SMALL)
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 129, dtype=torch.long))
