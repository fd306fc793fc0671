"""The Llama model family (SmolLM2 shapes), checkpoints and Hugging Face interop: config.py (presets),
llama.py (the model), loss.py and masks.py (its kernels), checkpoint.py, hf.py and export.py (files),
generate.py, device.py. Import from the modules: this file imports nothing, so reading a config does
not import torch."""
