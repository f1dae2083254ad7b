"""Batched decoding on the embedded backend against the one-at-a-time loops people write.

(a) a plain llama-cpp-python loop answering 32 instructions, against synth's Respond recipe;
(b) a plain Magpie loop against synth's Magpie recipe (generated tokens/s: synth drops cut-off
instructions); (c) tokens/s by batch size. Writes benchmarks/results/batched.{json,md,png}.

    PYTHONPATH=$PWD python benchmarks/batched.py [--max-tokens 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from synth import recipes
from synth.backends import Sampling
from synth.backends.llamacpp import DEFAULT_BATCH_SIZE, LlamaCppBackend

RESULTS = Path(__file__).parent / "results"
# llama-cpp-python's create_completion defaults, on both sides: what a plain loop runs with.
DEFAULTS = {"top_k": 40, "top_p": 0.95, "min_p": 0.05}
TOPICS = [
    "photosynthesis",
    "the French revolution",
    "binary search",
    "compound interest",
    "black holes",
    "the water cycle",
    "vaccines",
    "supply and demand",
    "recursion",
    "plate tectonics",
    "the immune system",
    "inflation",
    "neural networks",
    "the Roman empire",
    "climate change",
    "DNA replication",
    "gravity",
    "the stock market",
    "sorting algorithms",
    "volcanoes",
    "democracy",
    "electricity",
    "the moon landing",
    "hash tables",
    "evolution",
    "the printing press",
    "antibiotics",
    "renewable energy",
    "prime numbers",
    "the internet",
    "earthquakes",
    "the Renaissance",
]
INSTRUCTIONS = [f"Explain {t} to a high-school student in a short paragraph." for t in TOPICS]


def plain_respond(llm, backend: LlamaCppBackend, max_tokens: int) -> dict:
    """What people write today: one create_completion per instruction."""
    stop = list(backend.template.response_stop)
    tokens, started = 0, time.perf_counter()
    for i, text in enumerate(INSTRUCTIONS):
        prompt = backend.tokenize([{"role": "user", "content": text}])
        out = llm.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=0.7, stop=stop, seed=i)
        tokens += out["usage"]["completion_tokens"]
    return _rate(tokens, time.perf_counter() - started)


def synth_respond(backend: LlamaCppBackend, max_tokens: int, work: Path) -> dict:
    source = work / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "instruction": t}) + "\n" for i, t in enumerate(INSTRUCTIONS)))
    params = Sampling(max_tokens=max_tokens, temperature=0.7, seed=0, **DEFAULTS)
    result = recipes.respond(backend, source, out=work / "respond", params=params, overwrite=True)
    return _rate(result["tokens"], result["seconds"])


def plain_magpie(llm, backend: LlamaCppBackend, attempts: int, max_tokens: int) -> dict:
    template = backend.template
    stop = [*template.instruction_stop, "\n\n"]
    prompt = backend.tokenize(template.pre_query())
    tokens, started = 0, time.perf_counter()
    for i in range(attempts):
        out = llm.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=1.0, stop=stop, seed=i)
        tokens += out["usage"]["completion_tokens"]
    return _rate(tokens, time.perf_counter() - started)


def synth_magpie(backend: LlamaCppBackend, n: int, max_tokens: int, work: Path) -> dict:
    result = recipes.magpie(
        backend,
        n=n,
        out=work / "magpie",
        instruction=Sampling(max_tokens=max_tokens, temperature=1.0, seed=0, **DEFAULTS),
        response=None,
        batch_size=32,
        overwrite=True,
    )
    return {**_rate(result["tokens"], result["seconds"]), "kept": result["rows"]}


def by_batch_size(sizes: list[int], max_tokens: int, threads: int) -> list[dict]:
    rows = []
    prompts = [[{"role": "user", "content": t}] for t in INSTRUCTIONS]
    for size in sizes:
        backend = LlamaCppBackend(n_ctx=1024, batch_size=size, n_threads=threads)
        stats = backend.decoder.stats
        started = time.perf_counter()
        out = backend.generate(prompts, Sampling(max_tokens=max_tokens, temperature=0.7, seed=0, **DEFAULTS))
        seconds = time.perf_counter() - started
        tokens = sum(c.completion_tokens for c in out)
        rows.append(
            {
                "batch_size": size,
                **_rate(tokens, seconds),
                "steps": stats.steps,
                "sampling_share": round(stats.sample_seconds / (stats.sample_seconds + stats.decode_seconds), 4),
                "kv_cache_mib": backend.decoder.memory.get("kv", 0.0),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
        print(rows[-1], flush=True)
        del backend
    return rows


def _rate(tokens: int, seconds: float) -> dict:
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--sizes", default="1,4,8,16,32")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    backend = LlamaCppBackend(n_ctx=1024, n_threads=args.threads)  # the default batch size
    # the baseline: llama-cpp-python's own one-sequence path, its default settings (and, as the backend
    # loaded above set for this process, without ggml's AMX kernels where the CPU has them)
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(backend.path), n_ctx=1024, n_threads=args.threads, verbose=False)
    report = {"threads": args.threads, "max_tokens": args.max_tokens, "default_batch_size": DEFAULT_BATCH_SIZE}
    report["respond_plain"] = plain_respond(llm, backend, args.max_tokens)
    report["respond_synth"] = synth_respond(backend, args.max_tokens, work)
    report["magpie_plain"] = plain_magpie(llm, backend, 32, 64)
    report["magpie_synth"] = synth_magpie(backend, 8, 64, work)
    for task in ("respond", "magpie"):
        report[f"{task}_ratio"] = round(
            report[f"{task}_synth"]["tokens_per_s"] / report[f"{task}_plain"]["tokens_per_s"], 2
        )
    print(report, flush=True)
    del backend, llm
    report["by_batch_size"] = by_batch_size([int(s) for s in args.sizes.split(",")], args.max_tokens, args.threads)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batched.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "batched.md").write_text(_table(report))
    _plot(report["by_batch_size"], RESULTS / "batched.png")
    print(_table(report))


def _table(report: dict) -> str:
    lines = [
        f"Embedded Gemma 3 270M Q4_K_M, {report['threads']} threads, temperature 0.7, "
        f"max {report['max_tokens']} tokens.",
        "",
        "| | one at a time (tokens/s) | synth (tokens/s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for task in ("respond", "magpie"):
        plain, ours = report[f"{task}_plain"], report[f"{task}_synth"]
        lines.append(f"| {task} | {plain['tokens_per_s']} | {ours['tokens_per_s']} | {report[f'{task}_ratio']}x |")
    lines += [
        "",
        "| batch size | tokens/s | decode steps | sampling share | KV cache MiB | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["by_batch_size"]:
        lines.append(
            f"| {row['batch_size']} | {row['tokens_per_s']} | {row['steps']} | {row['sampling_share']:.1%} "
            f"| {row['kv_cache_mib']:.0f} | {row['peak_rss_mib']} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["batch_size"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequences per llama.cpp step")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("Embedded Gemma 3 270M, batched decoding")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
