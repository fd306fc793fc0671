"""Document-causal attention masks: a token attends to earlier tokens of its own document only.

On CUDA this is one of two kernels' inputs, with the same meaning:
  * flex:   a FlexAttention BlockMask, so fully masked blocks are skipped and the work follows
            the real document spans;
  * varlen: the documents' offsets in the flattened batch (cu_seqlens) for PyTorch's
            variable-length flash attention, which runs each document as its own causal sequence.
Elsewhere it is a dense boolean mask for SDPA with the same meaning, which keeps the semantics
testable on CPU.
"""

import inspect
from dataclasses import dataclass

import torch

DOCUMENT_KERNELS = ("flex", "varlen")

_compiled_flex = None


def flex_attention(q, k, v, block_mask, enable_gqa=True):
    from torch.nn.attention.flex_attention import flex_attention as flex

    global _compiled_flex
    if torch.compiler.is_compiling():
        return flex(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
    if _compiled_flex is None:  # eager flex attention is a slow reference; compile the kernel once
        _compiled_flex = torch.compile(flex, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def dense_document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, 1, T, T) boolean mask, True where attention is allowed."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


_flex_mask_mods: dict = {}
_compiled_create_block_mask = None


def flex_document_mask(doc_ids: torch.Tensor):
    """A BlockMask for `doc_ids`. The mask function closes over one persistent buffer per shape,
    refilled each call, so a compiled model sees the same function every step and never recompiles.
    Hence only the newest mask of a shape is valid: an older one keeps its block tables but its
    mask function reads the new ids. Build a micro-batch's mask after the previous one's backward
    is queued (the trainer does), never ahead of it."""
    from torch.nn.attention.flex_attention import create_block_mask

    global _compiled_create_block_mask
    if _compiled_create_block_mask is None:  # compiled, it never materialises the B x T x T mask
        _compiled_create_block_mask = torch.compile(create_block_mask)
    B, T = doc_ids.shape
    key = (B, T, doc_ids.device, doc_ids.dtype)
    # an inference tensor (first made under torch.inference_mode, e.g. by evaluation) refuses writes outside it
    stale = key in _flex_mask_mods and _flex_mask_mods[key][0].is_inference() and not torch.is_inference_mode_enabled()
    if key not in _flex_mask_mods or stale:
        buffer = torch.empty_like(doc_ids)

        def document_causal(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (buffer[b, q_idx] == buffer[b, kv_idx])

        _flex_mask_mods[key] = (buffer, document_causal)
    buffer, mask_mod = _flex_mask_mods[key]
    buffer.copy_(doc_ids)
    return _compiled_create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device)


@dataclass(frozen=True)
class DocumentSpans:
    """Every document of a (B, T) batch as a span of the flattened B * T tokens."""

    cu_seqlens: torch.Tensor  # int32 (documents + 1,): where each document starts, then B * T
    max_len: int  # the longest document, which sizes the kernel's grid


def document_spans(doc_ids: torch.Tensor, device) -> DocumentSpans:
    """Spans of `doc_ids` (B, T), computed where the ids lie (on the host they cost the device no
    sync), then moved to `device`. A row's start always starts a span: rows never attend each other."""
    varlen_kernel()
    B, T = doc_ids.shape
    starts = torch.ones(B, T, dtype=torch.bool, device=doc_ids.device)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    cu_seqlens = torch.cat([starts.flatten().nonzero().flatten(), torch.tensor([B * T], device=doc_ids.device)]).to(torch.int32)
    max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    if cu_seqlens.device.type == "cpu" and torch.device(device).type == "cuda":
        cu_seqlens = cu_seqlens.pin_memory()
    cu_seqlens = cu_seqlens.to(device, non_blocking=True)
    # The document count changes every batch: a compiled model takes it as a dynamic size from the
    # start, so only max_len's first change recompiles (then it is dynamic too).
    torch._dynamo.mark_dynamic(cu_seqlens, 0)
    return DocumentSpans(cu_seqlens, max_len)


def _varlen_options(kernel) -> dict:
    """Causal and grouped-query keywords in the spelling of this PyTorch's varlen_attn (2.9 took
    is_causal; later releases take window_size=(-1, 0) and, from some release on, enable_gqa)."""
    params = inspect.signature(kernel).parameters
    options = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return options | ({"enable_gqa": True} if "enable_gqa" in params else {})


VARLEN_MIN_TORCH = (2, 10)  # varlen_attn came in 2.9, its backward later
VARLEN = None  # (the kernel or None, its keywords), read by varlen_kernel() on first use


def varlen_kernel() -> tuple:
    """PyTorch's varlen_attn and its keywords, imported on first use (the import brings in all of
    torch._dynamo: seconds of every command's start on a slow CPU). document_spans reads it, so a
    compiled model finds it read outside its compiled code."""
    global VARLEN
    if VARLEN is None:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            varlen_attn = None
        VARLEN = (varlen_attn, _varlen_options(varlen_attn) if varlen_attn else {})
    return VARLEN


def varlen_training_problem() -> str | None:
    """Why this PyTorch cannot train through varlen_attn, or None when it can."""
    if varlen_kernel()[0] is None or tuple(int(x) for x in torch.__version__.split(".")[:2]) < VARLEN_MIN_TORCH:
        return f"varlen needs PyTorch {'.'.join(map(str, VARLEN_MIN_TORCH))} or later for its backward (this is {torch.__version__}); use flex"
    return None


def varlen_document_attention(q, k, v, spans: DocumentSpans):
    """q (B, heads, T, D), k/v (B, kv_heads, T, D) -> (B, heads, T, D), each document causal on
    its own, through PyTorch's varlen_attn (CUDA, bf16/fp16 only)."""
    kernel, options = VARLEN or varlen_kernel()
    if kernel is None:
        raise RuntimeError(f"train.document_kernel=varlen needs PyTorch's varlen_attn (this is {torch.__version__}); use flex")
    B, H, T, D = q.shape
    if k.shape[1] != H and "enable_gqa" not in options:
        k, v = k.repeat_interleave(H // k.shape[1], dim=1), v.repeat_interleave(H // k.shape[1], dim=1)
    q, k, v = (x.transpose(1, 2).reshape(B * T, x.shape[1], D) for x in (q, k, v))
    y = kernel(q, k, v, spans.cu_seqlens, spans.cu_seqlens, spans.max_len, spans.max_len, **options)
    return y.view(B, T, H, D).transpose(1, 2)


def document_mask(doc_ids: torch.Tensor, device, kernel: str = "flex"):
    """The document-causal mask of `doc_ids` (B, T) for a model on `device`: `kernel` (flex or
    varlen) picks the CUDA form; any other device gets the dense mask."""
    if kernel not in DOCUMENT_KERNELS:
        raise ValueError(f"unknown document attention kernel {kernel!r}; use one of {', '.join(DOCUMENT_KERNELS)}")
    device = torch.device(device)
    if device.type != "cuda":
        return dense_document_mask(doc_ids.to(device))
    if kernel == "varlen":
        return document_spans(doc_ids, device)
    return flex_document_mask(doc_ids.to(device))
