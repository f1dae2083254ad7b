"""Why batching gains little on SmolLM2 here: the same weights in other GGUF types, batch 1 against 16.

llama.cpp batches a matrix product well only where its CPU backend has a batched kernel for the
weights' type (tinyBLAS or a repacked layout): on x86 with AVX2, Q8_0, Q4_0, Q5_0 and IQ4_NL have
one, Q4_1 (SmolLM2's shipped file) has not, so each extra sequence costs nearly a whole dot-product
pass. This converts the shipped Q4_1 file with llama.cpp's own quantizer (`llama_model_quantize`,
into a temporary folder) and decodes the same 32 prompts through `LlamaCppBackend` at batch 1 and
at batch 16, each in its own process. Q8_0 holds Q4_1's weights almost exactly (8 bits against 4);
Q4_0 and IQ4_NL quantize them again, which changes the model.

    flock /tmp/heavy.lock env PYTHONPATH=$PWD python benchmarks/kernels.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PROMPTS = [f"Explain topic number {i} to a high-school student in a short paragraph." for i in range(32)]
TYPES = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "IQ4_NL": "LLAMA_FTYPE_MOSTLY_IQ4_NL"}


def convert(source: Path, kind: str, folder: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = getattr(llama_cpp, TYPES[kind]), True, 2
    target = folder / f"{source.stem}.{kind}.gguf"
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)):
        raise SystemExit(f"llama.cpp could not convert {source.name} to {kind}")
    return target


def child(model: str, batch: int, threads: int, max_tokens: int) -> dict:
    from synth.backends import Sampling
    from synth.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(model, batch_size=batch, n_threads=threads)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    backend.generate(prompts[:2], Sampling(max_tokens=4, temperature=0.0))  # opens the cache
    stats = backend.decoder.stats
    before, started = stats.generated_tokens, time.perf_counter()
    backend.generate(prompts, Sampling(max_tokens=max_tokens, temperature=0.7, top_k=40, top_p=0.95, seed=0))
    wall = time.perf_counter() - started
    tokens = stats.generated_tokens - before
    return {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall}


def measure(model: Path, batch: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", str(model), "--batch", str(batch), "--threads", str(args.threads)]
    done = subprocess.run([*command, "--max-tokens", str(args.max_tokens)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--child"), parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.threads, args.max_tokens)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from batched import models

    source = models()["SmolLM2-135M-Instruct Q4_1"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"Q4_1 (shipped)": source, **{kind: convert(source, kind, Path(tmp)) for kind in TYPES}}
        for kind, path in files.items():
            one, many = measure(path, 1, args), measure(path, 16, args)
            rows.append({"type": kind, "MiB": path.stat().st_size / 2**20, "batch_1": one, "batch_16": many})
            rates = f"batch 1 {one['tokens_per_s']:6.1f} tok/s, batch 16 {many['tokens_per_s']:6.1f}"
            print(f"{kind:<15} {rates}", flush=True)
    base = rows[0]["batch_1"]["tokens_per_s"]
    lines = [
        "| SmolLM2-135M-Instruct weights | file MiB | batch 1 tok/s | batch 16 tok/s | 16 vs 1 "
        "| 16 vs shipped Q4_1 at 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        one, many = r["batch_1"]["tokens_per_s"], r["batch_16"]["tokens_per_s"]
        cells = [r["type"], f"{r['MiB']:.0f}", f"{one:.1f}", f"{many:.1f}", f"{many / one:.2f}x", f"{many / base:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernels.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1) + "\n")
    (RESULTS / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
