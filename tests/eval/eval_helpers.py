"""Shared fixtures of the eval and report tests (import the ones you use)."""

import pytest
import torch

from sutra.model.llama import Llama
from sutra.model.config import ModelConfig

# Full SmolLM2 vocabulary (the tokenizer must fit), everything else tiny: parity, not quality.
TINY = ModelConfig(64, 96, 2, 4, 2, max_seq_len=512)


@pytest.fixture(scope="session")
def benchmarks():
    from sutra import assets
    from sutra.eval.store import check_store
    from sutra.eval.tasks import TASKS

    assets.ensure("benchmarks")
    check_store([TASKS["boolq"]])  # rebuilds a store an older conversion built
    return assets.path("benchmarks")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer):
    """(Sutra checkpoint dir, the same model exported as an HF LlamaForCausalLM dir)."""
    from sutra.model.checkpoint import save_checkpoint
    from sutra.model.export import export_hf

    torch.manual_seed(0)
    model = Llama(TINY)
    with torch.no_grad():  # norms away from 1, so a mismatch in either direction would show
        for block in model.blocks:
            block.attn_norm.weight.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("tiny_model")
    checkpoint = save_checkpoint(out / "sutra", model, tokenizer)
    return checkpoint, export_hf(str(checkpoint), str(out / "hf"))
