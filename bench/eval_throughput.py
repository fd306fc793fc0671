"""Requests/s of the Sutra lm-eval adapter against lm-eval's own `hf` model (HFLM), same model, same requests.

Both models run through lm-eval's simple_evaluate on the same offline-store tasks and --limit;
only the time spent inside their loglikelihood/generate calls is counted (task building and
metrics are the same code for both), after one untimed item per task warms each model up.
Each model runs --repeats times (2 on a CPU), alternating which goes first, and its fastest run
counts. Scores must be identical in every run for the ratio to count.

    .venv/bin/python bench/eval_throughput.py [--spec smollm2-135m-instruct] [--tasks ...] [--limit 20] [--repeats 2]

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
    lm.bench = {"seconds": 0.0, "requests": 0}  # reset by the caller before each timed run
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
    parser.add_argument("--repeats", type=int, default=1 if torch.cuda.is_available() else 2,
                        help="timed runs of each model, alternating which goes first; each model's fastest counts "
                        "(a shared CPU's slow spells otherwise decide the ratio)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

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
        models = {
            "sutra": timed(SutraLM(load_model(args.spec, device=args.device, dtype=dtype), batch_size=args.batch_size)),
            "lm-eval hf": timed(HFLM(pretrained=str(hf_dir), batch_size=args.batch_size, device=args.device, dtype=args.dtype)),
        }
        for lm in models.values():
            run_lm_eval(lm, tasks, limit=1)
        seconds, scores = {name: [] for name in models}, []
        for repeat in range(args.repeats):  # alternate which model goes first, so a slow spell of the machine hits both
            for name in (list(models) if repeat % 2 == 0 else list(models)[::-1]):
                lm = models[name]
                lm.bench.update(seconds=0.0, requests=0)
                out = run_lm_eval(lm, tasks, limit=limit)
                seconds[name].append(lm.bench["seconds"])
                scores.append({k: v["metrics"] for k, v in summarize(out, tasks).items()})
    requests = models["sutra"].bench["requests"]
    rps = {name: requests / min(times) for name, times in seconds.items()}  # each model's fastest repeat
    ours_rps, baseline_rps = rps["sutra"], rps["lm-eval hf"]
    print(f"{'model':<10} {'requests':>9} {'seconds (each repeat)':>24} {'req/s':>8}")
    for name, times in seconds.items():
        print(f"{name:<10} {requests:>9} {', '.join(f'{t:.1f}' for t in times):>24} {rps[name]:>8.2f}")
    print(json.dumps({
        "bench": "eval_throughput",
        "spec": args.spec,
        "tasks": [t.name for t in tasks],
        "limit": limit,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "device": args.device if args.device != "cpu" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "requests": requests,
        "repeats": args.repeats,
        "sutra_requests_per_s": round(ours_rps, 3),
        "hf_requests_per_s": round(baseline_rps, 3),
        "ratio": round(ours_rps / baseline_rps, 3),
        "identical_scores": all(run == scores[0] for run in scores),
    }))


if __name__ == "__main__":
    main()
