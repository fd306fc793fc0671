"""CUDA-only paths (run by bench/gpu_check.sh on a GPU machine; skipped elsewhere)."""

import pytest
import torch

from sutra.model.llama import Llama
from sutra.model.config import ModelConfig
from sutra.model.generate import generate, generate_batch
from sutra.model.masks import dense_document_mask

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIG = ModelConfig(128, 256, 2, 4, 2, vocab_size=1024, max_seq_len=512)


@pytest.fixture(autouse=True)
def exact_matmuls():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield


def _batch(T=256, B=2):
    torch.manual_seed(0)
    tokens = torch.randint(0, CONFIG.vocab_size, (B, T + 1), device="cuda")
    lengths = [37, 100, 1, 64, 54]
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(torch.int32)
    doc_ids = torch.stack([doc, doc.flip(0).max() - doc.flip(0)]).cuda()
    return tokens[:, :-1], tokens[:, 1:], doc_ids


def test_compiled_model_matches_eager_under_bf16_autocast():
    x, y, doc_ids = _batch()
    model = Llama(CONFIG).cuda()
    compiled = torch.compile(model)
    results = []
    for forward in (model, compiled):
        for mask in (None, model.attention_mask(doc_ids)):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = forward(x, y, mask=mask)
            loss.backward()
            results.append((loss.item(), model.embed.weight.grad.clone()))
            model.zero_grad()
    for eager, comp in zip(results[:2], results[2:]):
        assert abs(eager[0] - comp[0]) < 2e-2
        assert torch.allclose(eager[1], comp[1], atol=2e-3, rtol=5e-2)


def test_causal_gqa_path_equals_cpu_reference():
    x, _, _ = _batch(T=128, B=1)
    model = Llama(CONFIG).cuda().eval()
    with torch.no_grad():
        gpu = model(x).cpu()
        cpu = model.cpu()(x.cpu())
    assert torch.allclose(gpu, cpu, atol=1e-3)


def test_kv_cached_generation_on_cuda_equals_cpu():
    torch.manual_seed(0)
    model = Llama(CONFIG).eval()
    prompt = [3, 14, 15, 92, 65]
    prompts = [prompt, [7], [2, 2, 9, 4, 4, 1, 8, 8, 3]]  # left padding on CUDA too
    cpu_ids, cpu_batch = generate(model, prompt, 16), generate_batch(model, prompts, 16)
    model.cuda()
    assert generate(model, prompt, 16) == cpu_ids
    assert generate_batch(model, prompts, 16) == cpu_batch


def test_varlen_document_attention_matches_flex_and_dense_under_compile():
    """The varlen spans (flash attention per document, built from host-side ids) give the loss and
    gradients of the dense SDPA mask (eager), as does the flex block mask, both compiled as training runs them."""
    x, y, doc_ids = _batch()
    model = Llama(CONFIG).cuda()
    compiled = torch.compile(model)
    runs = {"dense": (model, dense_document_mask(doc_ids)), "flex": (compiled, model.attention_mask(doc_ids, "flex")),
            "varlen": (compiled, model.attention_mask(doc_ids.cpu(), "varlen"))}
    results = {}
    for name, (forward, mask) in runs.items():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(x, y, mask=mask)
        loss.backward()
        results[name] = (loss.item(), model.blocks[0].attn.wqkv.weight.grad.clone())
        model.zero_grad()
    for name in ("flex", "varlen"):
        assert abs(results[name][0] - results["dense"][0]) < 2e-2, name
        assert torch.allclose(results[name][1], results["dense"][1], atol=2e-3, rtol=5e-2), name


def test_compiled_flex_attention_in_fp32_equals_eager_dense_and_recomputing_saves_memory():
    """In fp32 (no bf16 rounding to hide behind) the compiled model with the flex block mask, q and k
    made by RoPE in their own buffers and v a view into the QKV projection's output, as training
    makes them, gives the eager dense mask's loss and gradients. On a CPU, inductor's FlexAttention
    template (torch 2.13) reads such a v from its buffer's start, dropping the view's offset
    (attention outputs off by up to ~5); Sutra never runs it there. Recomputing the blocks
    (activation checkpointing) keeps the values and lowers the step's peak memory."""
    x, y, doc_ids = _batch(T=512, B=4)
    model = Llama(ModelConfig(128, 256, 4, 4, 2, vocab_size=1024, max_seq_len=512)).cuda()
    reference = model(x, y, mask=dense_document_mask(doc_ids))
    reference.backward()
    reference_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled, peaks = torch.compile(model), {}
    for recompute in (False, True):
        model.activation_checkpointing = recompute
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loss = compiled(x, y, mask=model.attention_mask(doc_ids, "flex"))
        loss.backward()
        torch.cuda.synchronize()
        peaks[recompute] = torch.cuda.max_memory_allocated()
        assert abs(loss.item() - reference.item()) < 1e-4, recompute
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, reference_grads[name], atol=1e-4, rtol=1e-3, msg=f"{name} (recompute {recompute})")
        model.zero_grad(set_to_none=True)
    assert peaks[True] < 0.75 * peaks[False], peaks
