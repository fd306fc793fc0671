"""Where a Sutra training step spends its GPU time: the top CUDA kernels of a few profiled steps.

    python bench/profile_step.py [--attention causal|document] [--document-kernel flex|varlen] [--preset P] [--batch B] [--seq T]

Same step and document lengths as bench/train_throughput.py; prints a kernel table sorted by
CUDA time, then one JSON line with the share of attention, matmul and other kernels.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import document_ids, make_optimizer, training_step  # noqa: E402

from sutra.model.llama import Llama
from sutra.model.config import get_preset  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--attention", choices=["causal", "document"], default="document")
    p.add_argument("--document-kernel", choices=["flex", "varlen"], default="flex")
    p.add_argument("--preset", default="smollm2-70m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    config = get_preset(args.preset)
    torch.manual_seed(0)
    model = Llama(config).to(device).train()
    opt = make_optimizer(model)
    forward = torch.compile(model)
    generator = torch.Generator().manual_seed(0)
    window = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), generator=generator).to(device)
    doc_ids = document_ids(args.batch, args.seq, 200, 1800, generator) if args.attention == "document" else None
    if doc_ids is not None and args.document_kernel == "flex":
        doc_ids = doc_ids.to(device)  # varlen spans come from host ids, as in training

    def compute_loss():
        mask = model.attention_mask(doc_ids, args.document_kernel) if doc_ids is not None else None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return forward(window[:, :-1], window[:, 1:], mask=mask)

    def step():
        training_step(model, opt, compute_loss)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    print(f"{'kernel':90s} {'ms/step':>8s} {'share':>6s}")
    for e in events[:25]:
        print(f"{e.key[:90]:90s} {e.self_device_time_total / 1e3 / args.steps:8.2f} {e.self_device_time_total / total:6.1%}")
    groups = {"attention": ("flash", "attn", "fmha", "flex", "cudnn"), "matmul": ("gemm", "cutlass", "sm90_xmma", "nvjet", "matmul")}
    shares = {name: 0.0 for name in (*groups, "other")}
    for e in events:
        key = e.key.lower()
        group = next((g for g, words in groups.items() if any(w in key for w in words)), "other")
        shares[group] += e.self_device_time_total
    print(json.dumps({"bench": "profile_step", "attention_mode": args.attention, "document_kernel": args.document_kernel, "gpu_ms_per_step": round(total / 1e3 / args.steps, 2),
                      **{f"{k}_share": round(v / total, 3) for k, v in shares.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
