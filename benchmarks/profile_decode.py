"""Where a batched decode step's time goes: cProfile over LlamaCppBackend.generate.

`llama_decode` is llama.cpp's own compute; everything else (sampling, batch assembly, the
per-token bookkeeping) is Python around it. Prints the top functions by own time and the
decode / sampling split the decoder counts itself.

    flock /tmp/heavy.lock env PYTHONPATH=$PWD python benchmarks/profile_decode.py --model FILE.gguf
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

from synth.backends import Sampling
from synth.backends.llamacpp import LlamaCppBackend

PROMPTS = [f"Explain topic number {i} to a high-school student in a short paragraph." for i in range(32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    backend = LlamaCppBackend(args.model, batch_size=args.batch_size, n_threads=args.threads)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    params = Sampling(max_tokens=args.max_tokens, temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, seed=0)
    backend.generate(prompts[:2], Sampling(max_tokens=4, temperature=0.0))  # opens the cache
    stats = backend.decoder.stats
    before = (stats.decode_seconds, stats.sample_seconds, stats.generated_tokens, stats.steps)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    backend.generate(prompts, params)
    profile.disable()
    wall = time.perf_counter() - started
    decode, sample = stats.decode_seconds - before[0], stats.sample_seconds - before[1]
    tokens, steps = stats.generated_tokens - before[2], stats.steps - before[3]
    print(
        f"{backend.model}: batch {backend.batch_size}, {tokens} tokens in {wall:.2f} s ({tokens / wall:.1f}/s), "
        f"{steps} steps; llama_decode {decode / wall:.1%} of the wall time, sampling {sample / wall:.1%}, "
        f"the rest {(wall - decode - sample) / wall:.1%}; KV cache {backend.decoder.cache_tokens} tokens"
    )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
