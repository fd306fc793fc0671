"""Candidate speed-ups of the document-masked training step, each timed against the step as
Sutra trains it today, in one run on one GPU.

Each experiment is a patch applied by this script alone, so a GPU session can measure several
ideas in one call before any of them enters the model; the ones that win move into sutra/model.

    python bench/train_experiments.py [--only baseline,flash,...] [--steps N]

  baseline        sutra-document as bench/train_throughput.py runs it: FlexAttention (Triton),
                  128-token blocks, fp32 residual stream (autocast keeps the embedding's fp32)
  flash           FlexAttention's FlashAttention-4 backend (kernel_options BACKEND=FLASH; needs the
                  flash-attn-4 package and a PyTorch whose flex attention has that backend)
  varlen          PyTorch's varlen flash attention (train.document_kernel=varlen)
  bf16-residual   the residual stream in bf16 (Megatron's default): the fused residual add + norm
                  kernels and their gradients move a third fewer bytes; changes the numerics,
                  hence "first loss"
  rope-fn         RoPE as an autograd.Function whose backward is the inverse rotation, one
                  pointwise pass like its forward, instead of autograd's slice/neg/cat backward
                  (RoPE's backward took ~5x its bytes' time in the 2026-11-27 profile)
  NAME+NAME       several at once, e.g. flash+bf16-residual

The baseline always runs first, so every experiment's ratio comes from the same run. Prints one
line per experiment (tokens/s, ratio to baseline, first loss, peak memory), then one JSON line.
Same step, batch, document lengths and FLOPs convention as bench/train_throughput.py.
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import benchmark_inputs, measure, run_sutra  # noqa: E402

from sutra.model import llama  # noqa: E402
from sutra.train.metrics import device_peak_tflops, document_attended_per_token  # noqa: E402

PATCHES = ("flash", "varlen", "bf16-residual", "rope-fn")


def flash_flex_attention(q, k, v, block_mask, enable_gqa=True):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa, kernel_options={"BACKEND": "FLASH"})


class Rotary(torch.autograd.Function):
    """apply_rope with its backward spelled out: rotating by -angle undoes rotating by +angle, and
    a rotation's transpose is its inverse."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return ORIGINAL_ROPE(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return ORIGINAL_ROPE(grad, cos, -sin), None, None


ORIGINAL_ROPE = llama.apply_rope


def bf16_embedding(module, inputs, output):
    return output.to(torch.get_autocast_dtype("cuda")) if torch.is_autocast_enabled("cuda") else output


@contextlib.contextmanager
def patched(patches: set):
    """The model code as this experiment runs it; restored afterwards."""
    original = llama.flex_attention, llama.apply_rope
    if "flash" in patches:
        llama.flex_attention = flash_flex_attention
    if "rope-fn" in patches:
        llama.apply_rope = Rotary.apply
    try:
        yield
    finally:
        llama.flex_attention, llama.apply_rope = original


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="flash,rope-fn,bf16-residual,flash+rope-fn+bf16-residual",
                   help="experiments to run after the baseline (varlen is also in bench/train_throughput.py as sutra-varlen)")
    p.add_argument("--preset", default="smollm2-70m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--doc-min", type=int, default=200)
    p.add_argument("--doc-max", type=int, default=1800)
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("these experiments are CUDA kernels: run them on a GPU machine (bench/gpu_check.sh, section experiments)")
    experiments = {"baseline": set()}
    for name in args.only.split(","):
        patches = set() if name == "baseline" else set(name.split("+"))
        if unknown := patches - set(PATCHES):
            p.error(f"unknown experiment {name!r} ({', '.join(sorted(unknown))}); experiments: baseline, {', '.join(PATCHES)}, or NAME+NAME")
        if {"flash", "varlen"} <= patches:
            p.error(f"{name}: flash and varlen are two different attention kernels; pick one")
        experiments[name] = patches
    # measure() and run_sutra() read these as bench/train_throughput.py sets them
    args.precision, args.compile, args.compile_mode = "bf16", True, None

    device = torch.device("cuda")
    config, state, tokens, targets, host_doc_ids, doc_ids = benchmark_inputs(args, device)
    attended = document_attended_per_token(host_doc_ids)
    print(f"device: {torch.cuda.get_device_name(device)}; {args.preset} {args.batch} x {args.seq}, documents of "
          f"{args.doc_min}-{args.doc_max} tokens; torch {torch.__version__}", flush=True)

    def build(patches):
        kernel = "varlen" if "varlen" in patches else "flex"
        hook = (lambda model: model.embed.register_forward_hook(bf16_embedding)) if "bf16-residual" in patches else None
        ids = host_doc_ids if kernel == "varlen" else doc_ids  # varlen spans come from host ids, as in training
        return lambda: run_sutra(state, config, tokens, targets, ids, device, args, kernel, prepare=hook)

    results, peak = {}, device_peak_tflops(device)
    for name, patches in experiments.items():
        with patched(patches):
            runs = {name: (build(patches), attended)}
            results.update(measure([name], runs, args.batch * args.seq, config, peak, device, args))
        torch._dynamo.reset()  # the next experiment's patches must not meet this one's compiled code
        entry, base = results[name], results["baseline"].get("tokens_per_s")
        if "error" in entry:
            print(f"{name:28s} FAILED {entry['error']}", flush=True)
            continue
        ratio = f"{entry['tokens_per_s'] / base:5.2f}x baseline" if base else ""
        print(f"{name:28s} {entry['tokens_per_s']:>9,} tok/s  {ratio}  first loss {entry['first_loss']}  "
              f"peak {entry['peak_mem_gib']} GiB", flush=True)
    print(json.dumps({"bench": "train_experiments", "device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                      "preset": args.preset, "batch": args.batch, "seq": args.seq, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
