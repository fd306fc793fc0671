"""Model shapes as typed dataclasses, validated on construction, with named presets."""

import dataclasses
import math
from dataclasses import dataclass, field

from sutra.errors import SutraError


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int = 49152
    max_seq_len: int = 8192
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    initializer_range: float | None = None  # None: 1/sqrt(hidden_size), the rule HF uses for small SmolLM2s
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SutraError(f"model config: {key} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise SutraError(f"model config: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise SutraError(f"model config: num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise SutraError(f"model config: head_dim {self.head_dim} must be even for RoPE")
        for key in ("rope_theta", "rms_norm_eps", "initializer_range"):
            value = getattr(self, key)
            if not (value is None and key == "initializer_range") and not (
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise SutraError(f"model config: {key} must be a positive number, got {value!r}")
        if not self.tie_embeddings:
            raise SutraError("model config: only tied input/output embeddings are supported (SmolLM2 ties them)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def init_std(self) -> float:
        return self.initializer_range if self.initializer_range is not None else 1 / math.sqrt(self.hidden_size)

    @property
    def num_parameters(self) -> int:
        d, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attention = d * d * 2 + d * kv * 2
        mlp = 3 * d * self.intermediate_size
        per_layer = attention + mlp + 2 * d
        return self.vocab_size * d + self.num_layers * per_layer + d

    @property
    def num_matmul_parameters(self) -> int:
        """Parameters that take part in a matmul per token: all but norms (the tied head counted once)."""
        return self.num_parameters - (2 * self.num_layers + 1) * self.hidden_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def shape(self) -> dict:
        """The fields that decide what the model computes: not its name or how it was initialised
        (an export and re-import renames it and spells out the default initializer_range)."""
        return {key: value for key, value in self.to_dict().items() if key not in ("name", "initializer_range")}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SutraError(f"model config: unknown keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SutraError(f"model config: {exc}") from None

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    "smollm2-70m": ModelConfig(384, 1024, 32, 6, 2, name="smollm2-70m"),
    "smollm2-135m": ModelConfig(576, 1536, 30, 9, 3, initializer_range=1 / math.sqrt(576), name="smollm2-135m"),
    "smollm2-360m": ModelConfig(960, 2560, 32, 15, 5, initializer_range=0.02, name="smollm2-360m"),
    # Trains usefully on 2 CPU cores: ~7M parameters, most of them the shared embedding.
    "tiny": ModelConfig(128, 512, 4, 4, 2, max_seq_len=1024, name="tiny"),
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise SutraError(f"unknown model preset '{name}'; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
