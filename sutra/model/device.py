"""Where a model runs and in which dtype, as every command picks them: a CUDA GPU when there is
one, bf16 there and fp32 on the CPU (where bf16 is slower, and lm-eval's numbers are fp32's)."""

import torch

from sutra.errors import SutraError


def pick_device(name: str | torch.device | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SutraError(f"unknown device '{name}'; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # (mps, xpu, ...: Sutra's kernels and dtypes are chosen for these two)
        raise SutraError(f"device '{name}' is not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SutraError(f"device '{name}' was asked for but no CUDA GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SutraError(f"device '{name}' was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32
