"""Teacher throughput: llama.cpp's OpenAI-compatible server (the synth default) against the
baseline in-process transformers/sutra.model backend, on the same chat prompts.

    .venv/bin/python bench/synth_backends.py [--prompts 3] [--max-new-tokens 64] [--threads 1]

Prints tokens/s for each and the ratio; the last line is one JSON object.
"""

import argparse
import asyncio
import json
import time

from sutra.synth.backends import OpenAIBackend, TransformersBackend
from sutra.synth.serve import LlamaCppServer

PROMPTS = [
    "Explain photosynthesis to a ten-year-old in one paragraph.",
    "Explain what a prime number is, with two examples.",
    "Describe how a lever makes lifting easier.",
    "Explain why the sky looks blue.",
]


async def measure(backend, prompts: list[str], max_new_tokens: int) -> dict:
    await backend.check()
    await backend.complete([{"role": "user", "content": "Hi"}], 4, temperature=0.0)  # warm-up
    started, tokens = time.perf_counter(), 0
    for i, prompt in enumerate(prompts):
        completion = await backend.complete([{"role": "user", "content": prompt}], max_new_tokens, temperature=0.7, seed=i)
        tokens += completion.completion_tokens
    elapsed = time.perf_counter() - started
    await backend.close()
    return {"tokens": tokens, "seconds": round(elapsed, 2), "tokens_per_s": round(tokens / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (torch uses its default)")
    args = parser.parse_args()
    prompts = (PROMPTS * args.prompts)[:args.prompts]
    baseline = asyncio.run(measure(TransformersBackend("smollm2-135m-instruct", device="cpu"), prompts, args.max_new_tokens))
    print(f"baseline  in-process transformers (sutra.model, fp32): {baseline['tokens_per_s']} tokens/s ({baseline['tokens']} tokens)")
    with LlamaCppServer(threads=args.threads) as server:
        served = asyncio.run(measure(OpenAIBackend([server.base_url], concurrency=1), prompts, args.max_new_tokens))
    print(f"candidate llama.cpp server (Q4_1 GGUF, {args.threads} thread(s)): {served['tokens_per_s']} tokens/s ({served['tokens']} tokens)")
    ratio = served["tokens_per_s"] / baseline["tokens_per_s"]
    print(f"llama.cpp server is {ratio:.1f}x the in-process backend")
    print(json.dumps({"bench": "synth_backends", "baseline": {"name": "transformers-in-process", **baseline},
                      "candidate": {"name": "llama-cpp-server", **served}, "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
