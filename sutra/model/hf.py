"""Hugging Face Llama <-> Sutra: parameter names, fused projections and config.json."""

from pathlib import Path

import torch

from sutra.errors import SutraError
from sutra.model.config import ModelConfig


def hf_to_sutra_state(hf_state: dict, config: ModelConfig) -> dict:
    """Map a `LlamaForCausalLM` state dict onto Sutra names, fusing QKV and gate/up; every tensor
    must be used (one left over means config.json describes a smaller model than the weights)."""
    state = {}
    prefix = "model." if "model.embed_tokens.weight" in hf_state else ""
    unused = {key for key in hf_state if key != "lm_head.weight" and not key.endswith("rotary_emb.inv_freq")}  # a tied head; old RoPE buffers

    def take(name):
        key = prefix + name
        if key not in hf_state:
            raise SutraError(f"Hugging Face checkpoint lacks tensor '{key}'; is it a Llama model of this shape?")
        unused.discard(key)
        return hf_state[key]

    state["embed.weight"] = take("embed_tokens.weight")
    if "lm_head.weight" in hf_state and not torch.equal(hf_state["lm_head.weight"], state["embed.weight"]):
        raise SutraError("the checkpoint's lm_head differs from its embeddings; Sutra models tie them (SmolLM2 does)")
    for i in range(config.num_layers):
        layer = f"layers.{i}."
        attn = f"{layer}self_attn."
        state[f"blocks.{i}.attn.wqkv.weight"] = torch.cat([take(attn + f"{p}_proj.weight") for p in ("q", "k", "v")], dim=0)
        state[f"blocks.{i}.attn.wo.weight"] = take(attn + "o_proj.weight")
        state[f"blocks.{i}.mlp.w_gate_up.weight"] = torch.cat([take(layer + f"mlp.{p}_proj.weight") for p in ("gate", "up")], dim=0)
        state[f"blocks.{i}.mlp.w_down.weight"] = take(layer + "mlp.down_proj.weight")
        state[f"blocks.{i}.attn_norm.weight"] = take(layer + "input_layernorm.weight")
        state[f"blocks.{i}.mlp_norm.weight"] = take(layer + "post_attention_layernorm.weight")
    state["norm.weight"] = take("norm.weight")
    if unused:
        names = sorted(unused)
        raise SutraError(f"the checkpoint holds tensors its config.json does not describe ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''}; "
                         f"config.json says {config.num_layers} layers): fix config.json, or it is not a plain Llama model")
    return state


def sutra_to_hf_state(state: dict, config: ModelConfig) -> dict:
    """Sutra names -> `LlamaForCausalLM` names (the tied lm_head is not stored, as HF saves it)."""
    q_size = config.num_heads * config.head_dim
    kv_size = config.num_kv_heads * config.head_dim
    hf = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    for i in range(config.num_layers):
        layer = f"model.layers.{i}."
        q, k, v = state[f"blocks.{i}.attn.wqkv.weight"].split([q_size, kv_size, kv_size], dim=0)
        gate, up = state[f"blocks.{i}.mlp.w_gate_up.weight"].split(config.intermediate_size, dim=0)
        hf[layer + "self_attn.q_proj.weight"] = q
        hf[layer + "self_attn.k_proj.weight"] = k
        hf[layer + "self_attn.v_proj.weight"] = v
        hf[layer + "self_attn.o_proj.weight"] = state[f"blocks.{i}.attn.wo.weight"]
        hf[layer + "mlp.gate_proj.weight"] = gate
        hf[layer + "mlp.up_proj.weight"] = up
        hf[layer + "mlp.down_proj.weight"] = state[f"blocks.{i}.mlp.w_down.weight"]
        hf[layer + "input_layernorm.weight"] = state[f"blocks.{i}.attn_norm.weight"]
        hf[layer + "post_attention_layernorm.weight"] = state[f"blocks.{i}.mlp_norm.weight"]
    return {name: tensor.contiguous() for name, tensor in hf.items()}


def config_from_hf(hf: dict, source: str) -> ModelConfig:
    """A ModelConfig from a Llama config.json, refusing features the Sutra model does not have."""
    if hf.get("model_type") not in ("llama", None):
        raise SutraError(f"{source}: model_type '{hf.get('model_type')}' is not supported; Sutra imports Llama models")
    architectures = hf.get("architectures")
    if isinstance(architectures, list) and architectures and not any(str(a).startswith("Llama") for a in architectures):
        # (with no model_type, the architecture is what names the model)
        raise SutraError(f"{source}: architectures {architectures} is no Llama; Sutra imports Llama models")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise SutraError(f"{source}: biases in attention/MLP are not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise SutraError(f"{source}: activation '{hf.get('hidden_act')}' is not supported (SwiGLU/silu only)")
    # transformers 5 writes rope_parameters, 4.x rope_scaling; a config may carry both, and either may scale
    for key in ("rope_parameters", "rope_scaling"):
        rope = hf.get(key) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
        if rope_type not in ("default", None):
            raise SutraError(f"{source}: RoPE scaling '{rope_type}' ({key}) is not supported")
    theta = (hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10000.0))

    def count(key: str, default: int | None = None) -> int:
        value = hf[key] if hf.get(key) is not None else default
        if value is None:
            raise SutraError(f"{source}: config.json lacks '{key}'")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SutraError(f"{source}: config.json '{key}' must be a positive whole number, got {value!r}")
        return value

    hidden, heads = count("hidden_size"), count("num_attention_heads")
    if hf.get("head_dim") not in (None, hidden // heads):
        raise SutraError(f"{source}: head_dim {hf['head_dim']} differs from hidden_size / heads")
    for key in ("rope_theta", "rms_norm_eps", "initializer_range"):
        value = theta if key == "rope_theta" else hf.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SutraError(f"{source}: config.json '{key}' must be a number, got {value!r}")
    return ModelConfig(
        hidden_size=hidden,
        intermediate_size=count("intermediate_size"),
        num_layers=count("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=count("num_key_value_heads", heads),
        vocab_size=count("vocab_size"),
        max_seq_len=count("max_position_embeddings", 2048),  # (transformers' LlamaConfig defaults)
        rope_theta=float(theta),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        initializer_range=hf.get("initializer_range"),
        name=hf.get("_name_or_path") or Path(source).name or "imported",  # the built-in asset is named by its directory
    )


def hf_config(config: ModelConfig, bos_token_id: int | None, eos_token_id: int | list[int], torch_dtype: str, pad_token_id: int | None = None) -> dict:
    """config.json for `LlamaForCausalLM`, built by the installed transformers so it loads there."""
    from transformers import LlamaConfig

    hf = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.max_seq_len,
        initializer_range=config.init_std,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        rope_theta=config.rope_theta,
    )
    data = hf.to_dict()
    data["architectures"] = ["LlamaForCausalLM"]
    data["_name_or_path"] = config.name  # read back by `sutra import` (transformers sets its own on load)
    data["torch_dtype"] = data["dtype"] = torch_dtype
    # transformers 5 keeps theta under rope_parameters, 4.x at top level: write both.
    data["rope_theta"] = config.rope_theta
    return data
