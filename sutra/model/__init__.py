"""The Llama model family (SmolLM2 shapes), checkpoints and Hugging Face interop."""

from sutra.model.config import PRESETS, ModelConfig, get_preset
from sutra.model.llama import Llama

__all__ = ["PRESETS", "ModelConfig", "Llama", "get_preset"]
