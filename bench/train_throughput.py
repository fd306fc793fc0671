"""Training throughput: transformers LlamaForCausalLM vs Sutra (causal) vs Sutra (document-masked).

On CUDA the document-masked model runs twice, once per attention kernel: sutra-document with a
FlexAttention block mask, sutra-varlen with PyTorch's variable-length flash attention.
`--only ...,sutra-document-ac` adds sutra-document with activation checkpointing
(train.activation_checkpointing: each block recomputed in backward), for its cost in time and
its saving in peak memory.

All three run the same training step in the same process on the same device: forward, backward,
grad clipping at 1.0 and one fused AdamW update (wd 0.1), on the same batch, starting from the
same weights. The transformers model runs eager, as its users train it (the issue's baseline); the
Sutra models are compiled on CUDA. On CUDA the default is the card's: smollm2-70m, micro-batch 4 x 8192, bf16 autocast,
TF32. On CPU it is recipes/tiny-cpu.yaml's: the tiny preset, fp32 (a CPU without bf16 units
emulates bf16 matmuls, slower than fp32), at 4 x 256. Document lengths for the masked
run are drawn uniformly from --doc-min..--doc-max tokens (as in gpu-anchors-h100.md). On a CPU the
variants are timed interleaved, one step of each in turn, so the machine's slow spells fall on all
(median step); on a GPU each runs its timed steps back to back, as a training loop does (mean step).

    python bench/train_throughput.py [--preset P] [--batch B] [--seq T] [--steps N] [--no-compile]
                                     [--compile-mode max-autotune-no-cudagraphs]

FLOPs convention (printed with MFU): 6 x matmul parameters + 12 x layers x hidden x mean keys
attended per token, i.e. 6N + 6·L·d·T for causal, and only the attended document spans for the
document-masked run. The last line is one JSON object with every figure.
"""

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sutra.model.llama import Llama
from sutra.model.config import get_preset  # noqa: E402
from sutra.model.hf import hf_config, sutra_to_hf_state  # noqa: E402
from sutra.model.llama import flops_per_token  # noqa: E402
from sutra.train.metrics import device_peak_tflops, document_attended_per_token  # noqa: E402


def parse_args():
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smollm2-70m" if cuda else "tiny")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=8192 if cuda else 256)
    p.add_argument("--steps", type=int, default=10 if cuda else 8)
    p.add_argument("--warmup", type=int, default=3 if cuda else 1)
    p.add_argument("--doc-min", type=int, default=200)
    p.add_argument("--doc-max", type=int, default=1800)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32", help="bf16: autocast, as train.precision=bf16")
    p.add_argument("--no-compile", action="store_true", help="eager Sutra models (compile is on by default on CUDA)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the Sutra models, e.g. max-autotune-no-cudagraphs "
                   "(inductor then also tunes FlexAttention's block sizes)")
    p.add_argument("--only", default="transformers,sutra-causal,sutra-document" + (",sutra-varlen" if cuda else ""),
                   help="variants to run; sutra-varlen is sutra-document through varlen flash attention (CUDA only), "
                   "sutra-document-ac is sutra-document with activation checkpointing")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 1:
        p.error(f"--steps and --warmup must be at least 1, got {args.steps} and {args.warmup}")
    args.compile = cuda and not args.no_compile
    return args


def document_ids(batch: int, seq: int, lo: int, hi: int, generator) -> torch.Tensor:
    """Per-token document ids (B, T) for packed rows of documents of lo..hi tokens."""
    rows = []
    for _ in range(batch):
        ids, doc = [], 0
        while len(ids) < seq:
            length = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            ids += [doc] * min(length, seq - len(ids))
            doc += 1
        rows.append(ids)
    return torch.tensor(rows, dtype=torch.int32)


def time_steps(steps_by_name: dict, steps: int, device) -> dict:
    """Per variant: (seconds per step, peak CUDA memory in bytes).

    On a GPU each variant runs its steps back to back with one sync at the end, as a training
    loop runs them (a sync per step would add the time the host takes to queue a step's first
    kernels to every step): the mean step. On a CPU each round runs one step of every variant in
    turn, so a slow spell of the shared machine falls on all of them: the median step."""
    if device.type == "cuda":
        timed = {}
        for name, step in steps_by_name.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
            timed[name] = ((time.perf_counter() - start) / steps, torch.cuda.max_memory_allocated(device))
        return timed
    times = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            float(step())
            times[name].append(time.perf_counter() - start)
    return {name: (sorted(t)[len(t) // 2], 0) for name, t in times.items()}


def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)


def training_step(model, optimizer, compute_loss):
    """One step as every variant runs it: the loss (under autocast for bf16), backward, clip, AdamW."""
    loss = compute_loss()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def run_transformers(state, config, tokens, targets, device, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = hf_config(config, 0, 0, "float32")
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in hf_cfg.items() if k not in ("architectures", "dtype", "torch_dtype")}))
    model.config._attn_implementation = "sdpa"
    model.load_state_dict(sutra_to_hf_state(state, config), strict=False)
    model.tie_weights()
    model.to(device).train()
    opt = make_optimizer(model)

    def compute_loss():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(input_ids=tokens).logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    return lambda: training_step(model, opt, compute_loss)


def run_sutra(state, config, tokens, targets, doc_ids, device, args, kernel="flex", prepare=None):
    """prepare(model), if given, adjusts the model before it is compiled (bench/train_experiments.py)."""
    model = Llama(config)
    model.load_state_dict(state)
    model.to(device).train()
    if prepare:
        prepare(model)
    opt = make_optimizer(model)
    forward = torch.compile(model, mode=args.compile_mode) if args.compile else model

    def compute_loss():
        mask = model.attention_mask(doc_ids, kernel) if doc_ids is not None else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            return forward(tokens, targets, mask=mask)

    return lambda: training_step(model, opt, compute_loss)


def describe(exc: Exception) -> str:
    return "out of memory" if isinstance(exc, torch.OutOfMemoryError) else f"{type(exc).__name__}: {str(exc)[:300]}"


def measure(names, runs, tokens_per_step, config, peak, device, args) -> dict:
    """Build, warm up and time these variants together: name -> figures, or {"error": ...} (one
    failing variant must not hide the others)."""
    from torch._dynamo.utils import counters

    results, steps, first_loss, graphs = {}, {}, {}, {}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for name in names:
        try:
            compiled_before = counters["stats"]["unique_graphs"]  # the counter is process-wide: count this variant's
            step = runs[name][0]()
            first_loss[name] = float(step())  # the first step compiles
            for _ in range(args.warmup - 1):
                step()
            steps[name] = step
            graphs[name] = counters["stats"]["unique_graphs"] - compiled_before
        except Exception as exc:
            results[name] = {"error": describe(exc)}
            step = None
            gc.collect()
    try:
        timed = time_steps(steps, args.steps, device)
    except Exception as exc:
        return results | {name: {"error": describe(exc)} for name in steps}
    finally:
        step = steps = None
        gc.collect()
    for name, (seconds, peak_bytes) in timed.items():
        tps = tokens_per_step / seconds
        tflops = tps * flops_per_token(config, runs[name][1]) / 1e12
        results[name] = {
            "tokens_per_s": round(tps),
            "step_s": round(seconds, 4),
            "first_loss": round(first_loss[name], 4),
            "tflops": round(tflops, 1),
            "mfu": round(tflops / peak, 4) if peak else None,
            "peak_mem_gib": round(peak_bytes / 2**30, 2) if device.type == "cuda" else None,
        }
        if args.compile and name.startswith("sutra"):
            results[name]["compiled_graphs"] = graphs[name]
    return results


def benchmark_inputs(args, device):
    """What every variant starts from: TF32 on, the same initial weights, one batch, and its
    document ids both on the host (varlen spans come from host ids, as in training) and on the device.
    Returns (config, state, tokens, targets, host_doc_ids, doc_ids)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = get_preset(args.preset).replace(max_seq_len=max(args.seq, get_preset(args.preset).max_seq_len))
    torch.manual_seed(0)
    state = Llama(config).state_dict()
    generator = torch.Generator().manual_seed(0)
    window = torch.randint(0, config.vocab_size, (args.batch, args.seq + 1), generator=generator)
    host_doc_ids = document_ids(args.batch, args.seq, args.doc_min, args.doc_max, generator)
    return config, state, window[:, :-1].to(device), window[:, 1:].to(device), host_doc_ids, host_doc_ids.to(device)


def main() -> int:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config, state, tokens, targets, host_doc_ids, doc_ids = benchmark_inputs(args, device)
    mean_doc_attended = document_attended_per_token(host_doc_ids)
    tokens_per_step = args.batch * args.seq
    peak = device_peak_tflops(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; model {args.preset} ({config.num_parameters:,} params); batch {args.batch} x {args.seq}; "
          f"{args.precision}; compile {args.compile} (mode {args.compile_mode or 'default'}); torch {torch.__version__}", flush=True)

    runs = {
        "transformers": (lambda: run_transformers(state, config, tokens, targets, device, args), (args.seq + 1) / 2),
        "sutra-causal": (lambda: run_sutra(state, config, tokens, targets, None, device, args), (args.seq + 1) / 2),
        "sutra-document": (lambda: run_sutra(state, config, tokens, targets, doc_ids, device, args), mean_doc_attended),
        "sutra-varlen": (lambda: run_sutra(state, config, tokens, targets, host_doc_ids, device, args, "varlen"), mean_doc_attended),
        "sutra-document-ac": (lambda: run_sutra(state, config, tokens, targets, doc_ids, device, args,
                                                prepare=lambda model: setattr(model, "activation_checkpointing", True)), mean_doc_attended),
    }
    names = args.only.split(",")
    # a CPU times the variants interleaved; a GPU, whose timings are steady, one at a time, so each
    # variant's peak memory is its own
    groups = [names] if device.type == "cpu" else [[name] for name in names]
    results = {}
    for group in groups:
        results.update(measure(group, runs, tokens_per_step, config, peak, device, args))
        base = results.get("transformers", {}).get("tokens_per_s")
        for name in group:
            entry = results[name]
            # each ratio as soon as it is known: a run cut short by a time limit keeps the figures it has
            ratio = f"  {entry['tokens_per_s'] / base:.2f}x transformers" if base and name != "transformers" and "error" not in entry else ""
            print(f"{name:18s} " + (f"FAILED {entry['error']}" if "error" in entry else
                  f"{entry['tokens_per_s']:>10,} tok/s  {entry['tflops']:7.1f} TFLOP/s  mfu {entry['mfu']}  "
                  f"peak {entry['peak_mem_gib']} GiB  first loss {entry['first_loss']}{ratio}"), flush=True)

    summary = {
        "bench": "train_throughput",
        "device": device_name,
        "preset": args.preset,
        "batch": args.batch,
        "seq": args.seq,
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": (args.compile_mode or "default") if args.compile else None,
        "torch": torch.__version__,
        "flops_convention": "6*matmul_params + 12*L*d*mean_keys_attended",
        "mean_keys_attended_document": round(mean_doc_attended, 1),
        "results": results,
    }
    for name in ("sutra-causal", "sutra-document", "sutra-varlen", "sutra-document-ac"):
        ours = results.get(name, {}).get("tokens_per_s")
        if base and ours:
            summary[f"{name}_vs_transformers"] = round(ours / base, 3)
            print(f"{name} / transformers = {ours / base:.2f}x", flush=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
