"""Requests/s of the Sutra lm-eval adapter against lm-eval's own `hf` model (HFLM), same model, same requests.

Both models run through lm-eval's simple_evaluate on the same offline-store tasks and --limit;
only the time spent inside their loglikelihood/generate calls is counted (task building and
metrics are the same code for both), after one untimed item per task warms each model up.
Scores must be identical for the ratio to count.

    .venv/bin/python bench/eval_throughput.py [--spec smollm2-135m-instruct] [--tasks ...] [--limit 20]

The last line printed is one JSON object: {"ratio": sutra_rps / hf_rps, "identical_scores": ..., ...}.
"""

import argparse
import json
import platform
import tempfile
import time

import torch


def timed(lm):
    """Wrap lm's request methods so their wall time and request count accumulate in lm.bench."""
    lm.bench = {"seconds": 0.0, "requests": 0}
    for name in ("loglikelihood", "generate_until"):
        method = getattr(lm, name)

        def wrapper(requests, *args, _method=method, **kwargs):
            started = time.perf_counter()
            out = _method(requests, *args, **kwargs)
            lm.bench["seconds"] += time.perf_counter() - started
            lm.bench["requests"] += len(requests)
            return out

        setattr(lm, name, wrapper)
    return lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", default="arc_easy,hellaswag,piqa,winogrande,boolq")
    parser.add_argument("--limit", type=float, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="both models; only float32 can give identical scores (bfloat16 rounds differently in each)")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from sutra.eval.adapter import SutraLM
    from sutra.eval.harness import run_lm_eval, summarize
    from sutra.eval.tasks import parse_tasks
    from sutra.model.checkpoint import load_model, resolve_spec
    from sutra.model.export import export_hf

    tasks = parse_tasks(args.tasks)
    limit = int(args.limit) if args.limit >= 1 else args.limit
    dtype = getattr(torch, args.dtype)
    kind, directory = resolve_spec(args.spec)
    with tempfile.TemporaryDirectory() as scratch:
        hf_dir = directory if kind == "hf" else export_hf(args.spec, f"{scratch}/hf")
        ours = SutraLM(load_model(args.spec, device=args.device, dtype=dtype), batch_size=args.batch_size)
        run_lm_eval(ours, tasks, limit=1)
        ours_out = run_lm_eval(timed(ours), tasks, limit=limit)
        baseline = HFLM(pretrained=str(hf_dir), batch_size=args.batch_size, device=args.device, dtype=args.dtype)
        run_lm_eval(baseline, tasks, limit=1)
        baseline_out = run_lm_eval(timed(baseline), tasks, limit=limit)
    ours_scores = {k: v["metrics"] for k, v in summarize(ours_out, tasks).items()}
    baseline_scores = {k: v["metrics"] for k, v in summarize(baseline_out, tasks).items()}
    ours_rps = ours.bench["requests"] / ours.bench["seconds"]
    baseline_rps = baseline.bench["requests"] / baseline.bench["seconds"]
    print(f"{'model':<10} {'requests':>9} {'seconds':>9} {'req/s':>8}")
    for name, lm, rps in (("sutra", ours, ours_rps), ("lm-eval hf", baseline, baseline_rps)):
        print(f"{name:<10} {lm.bench['requests']:>9} {lm.bench['seconds']:>9.1f} {rps:>8.2f}")
    print(json.dumps({
        "bench": "eval_throughput",
        "spec": args.spec,
        "tasks": [t.name for t in tasks],
        "limit": limit,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "device": args.device if args.device != "cpu" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "requests": ours.bench["requests"],
        "sutra_requests_per_s": round(ours_rps, 3),
        "hf_requests_per_s": round(baseline_rps, 3),
        "ratio": round(ours_rps / baseline_rps, 3),
        "identical_scores": ours_scores == baseline_scores,
    }))


if __name__ == "__main__":
    main()
