"""A Llama decoder (the SmolLM2 family), written to be read top to bottom.

token embedding -> N x [RMSNorm -> grouped-query attention with RoPE -> residual,
                        RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> tied output head

Speed choices: one fused QKV projection and one fused gate/up projection (HF import/export
maps the names), attention through PyTorch SDPA (or, for document masks on CUDA, FlexAttention or varlen flash attention),
and a loss that never materialises the full fp32 logits (sutra/model/loss.py).
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sutra.model.config import ModelConfig
from sutra.model.loss import linear_cross_entropy
from sutra.model.masks import DocumentSpans, document_mask, flex_attention, varlen_document_attention


def rope_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (max_seq_len, head_dim), in float32, for the half-split RoPE HF Llama uses."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    positions = torch.arange(config.max_seq_len, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, T, heads, head_dim); cos/sin: (T, 1, head_dim), or (B, T, 1, head_dim) for per-row positions."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache:
    """Keys and values of every layer for several sequences (rows) of their own lengths, so each
    new token costs one position.

    A prompt is written into a row from column 0 (`row(i)` is a view of one row). A decode step,
    with `columns` set, writes each row's one new token at that row's own column and returns the
    first `width` columns; the caller's mask hides each row's columns past its own length."""

    def __init__(self, config: ModelConfig, rows: int, max_len: int, device, dtype):
        shape = (config.num_layers, rows, config.num_kv_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.columns: torch.Tensor | None = None  # (rows,) during a decode step
        self.width = 0

    def row(self, index: int) -> "KVCache":
        view = copy.copy(self)
        view.keys, view.values = self.keys[:, index : index + 1], self.values[:, index : index + 1]
        return view

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows only (e.g. the generations still running)."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.columns is None:  # a prompt, from column 0
            T = k.shape[2]
            self.keys[layer, :, :, :T], self.values[layer, :, :, :T] = k, v
            return k, v
        rows = torch.arange(k.shape[0], device=k.device)
        self.keys[layer, rows, :, self.columns] = k[:, :, 0]
        self.values[layer, rows, :, self.columns] = v[:, :, 0]
        return self.keys[layer, :, :, : self.width], self.values[layer, :, :, : self.width]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.wqkv = nn.Linear(config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=False)
        self.wo = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split(
            [self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim], dim=-1
        )
        # RoPE before the transpose to (B, heads, T, D), as torchtitan does, so q and k keep the
        # projection's token-major memory: compiled FlexAttention gives its output and gradients
        # the query's strides, so the output projection and RoPE's backward need no transposing
        # copy, and varlen attention takes q/k/v as (B * T, heads, D) views
        q = apply_rope(q.view(B, T, self.num_heads, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(k.view(B, T, self.num_kv_heads, self.head_dim), cos, sin).transpose(1, 2)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)
        y = attend(q, k, v, mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


def attend(q, k, v, mask):
    """mask: None (causal), a boolean tensor (True = may attend) for SDPA, DocumentSpans for
    varlen flash attention, or a FlexAttention BlockMask."""
    if isinstance(mask, DocumentSpans):
        return varlen_document_attention(q, k, v, mask)
    if not isinstance(mask, (type(None), torch.Tensor)):
        return flex_attention(q, k, v, block_mask=mask, enable_gqa=True)
    if k.shape[1] != q.shape[1] and q.device.type != "cpu":
        # Expanded K/V on GPUs: SDPA's cuDNN and masked kernels lack native GQA. The CPU kernels
        # take it natively, bitwise the same and as fast or faster; a decode step then reads its
        # KV cache once instead of copying it (10x faster attention at 1,156 cached tokens).
        repeats = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
    gqa = k.shape[1] != q.shape[1]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class RMSNorm(nn.RMSNorm):
    """In half precision, rounds as Hugging Face's LlamaRMSNorm does: normalise in fp32, round to the
    input's dtype, then scale (nn.RMSNorm scales before rounding, so a quarter of bf16 values
    differed from transformers' by one ulp, enough to change a greedy token). fp32 is the same
    either way and keeps PyTorch's fused kernel, as in training, where the residual stream is fp32."""

    def forward(self, x):
        if x.dtype == torch.float32:
            return super().forward(x)
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.w_gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.w_down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.w_gate_up(x).split(self.intermediate_size, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attn = Attention(config, layer_index)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, cache=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # training: keep only each block's input for backward and recompute the rest there
        # (about a third more compute for a fraction of the activation memory)
        self.activation_checkpointing = False
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        """As Hugging Face initialises Llama: N(0, initializer_range) for every matrix, ones for norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.embed.weight  # tied input/output embeddings

    def attention_mask(self, doc_ids: torch.Tensor, kernel: str = "flex"):
        """The document-causal mask for `doc_ids` (B, T), on this model's device: for CUDA, the
        input of `kernel` (flex: a FlexAttention BlockMask; varlen: DocumentSpans, best built from
        host-side ids, which costs no device sync); a dense SDPA mask elsewhere.

        Built outside forward so a compiled model receives it as an input."""
        return document_mask(doc_ids, self.embed.weight.device, kernel)

    def hidden_states(self, tokens, *, doc_ids=None, mask=None, positions=None, cache: KVCache | None = None):
        """tokens (B, T) -> final normed hidden states (B, T, hidden), before the output head.

        doc_ids (B, T) restricts attention to each token's own document; `mask` is the same
        thing prebuilt with `attention_mask`, or any boolean (B, 1, T, T) mask. `positions` (B, T)
        gives each token its own RoPE position (e.g. several continuations packed after one shared
        context, each starting where the context ends). `cache` keeps the keys and values for
        generation (see KVCache).
        """
        B, T = tokens.shape
        if positions is None and T > self.config.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds the context of {self.config.max_seq_len}")
        if mask is None and doc_ids is not None:
            mask = self.attention_mask(doc_ids)
        if positions is not None:
            cos, sin = self.rope_cos[positions][:, :, None], self.rope_sin[positions][:, :, None]
        else:
            cos, sin = self.rope_cos[:T, None], self.rope_sin[:T, None]
        x = self.embed(tokens)
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, mask, cache, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache)
        return self.norm(x)

    def forward(self, tokens, targets=None, **kwargs):
        """tokens (B, T) -> logits (B, T, V), or the mean cross-entropy against `targets` (B, T).

        Keyword arguments are those of `hidden_states`."""
        x = self.hidden_states(tokens, **kwargs)
        if targets is not None:
            return linear_cross_entropy(x.flatten(0, 1), self.lm_head_weight, targets.flatten())
        return F.linear(x, self.lm_head_weight)


def flops_per_token(config: ModelConfig, attended_per_token: float) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 x layers x hidden x (mean keys attended).

    For causal attention over T tokens the mean number of keys is (T + 1) / 2, so this is the
    common 6N + 6·L·d·T; with document masking it counts only the spans actually attended."""
    return 6 * config.num_matmul_parameters + 12 * config.num_layers * config.hidden_size * attended_per_token

