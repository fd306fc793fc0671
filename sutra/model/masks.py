"""Document-causal attention masks: a token attends to earlier tokens of its own document only.

On CUDA this is a FlexAttention BlockMask, so fully masked blocks are skipped and the work
follows the real document spans. Elsewhere it is a dense boolean mask for SDPA with the same
meaning, which keeps the semantics testable on CPU.
"""

import torch

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
    refilled each call, so a compiled model sees the same function every step and never recompiles."""
    from torch.nn.attention.flex_attention import create_block_mask

    global _compiled_create_block_mask
    if _compiled_create_block_mask is None:  # compiled, it never materialises the B x T x T mask
        _compiled_create_block_mask = torch.compile(create_block_mask)
    B, T = doc_ids.shape
    key = (B, T, doc_ids.device, doc_ids.dtype)
    if key not in _flex_mask_mods:
        buffer = torch.empty_like(doc_ids)

        def document_causal(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (buffer[b, q_idx] == buffer[b, kv_idx])

        _flex_mask_mods[key] = (buffer, document_causal)
    buffer, mask_mod = _flex_mask_mods[key]
    buffer.copy_(doc_ids)
    return _compiled_create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device)


def document_mask(doc_ids: torch.Tensor):
    if doc_ids.is_cuda:
        return flex_document_mask(doc_ids)
    return dense_document_mask(doc_ids)
