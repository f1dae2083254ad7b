"""Decontamination benchmark: synth's n-gram method against a datatrove-style baseline in one run,
the embedding pass's speed, and recall / false positives on the planted pool.

    flock /tmp/heavy.lock python benchmarks/decontaminate.py                  # 1,000,000 rows, 20,000 items
    python benchmarks/decontaminate.py --rows 100000 --items 5000             # a quick look

The corpus: instruction + response rows of words drawn Zipf-like from a 20,000-word vocabulary (about
150 words a row), 1% of them holding a benchmark item's question verbatim; the benchmark: GSM8K-shaped
items (question and answer) from the same vocabulary. `synth decontaminate --methods ngram` runs in its
own process, so its wall time and peak memory (VmHWM) are its alone: reading parquet, checking,
writing the kept rows and the rejects. The baseline does what datatrove's NGramsDecontFilter does
(word n-grams joined and hashed one by one, looked up in a Python dict), on a sample of the rows.
The embedding pass and the planted-pool figures use the shipped all-MiniLM-L6-v2, as `synth` does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"


def texts(rng: np.random.Generator, vocab: pa.Array, rows: int, low: int, high: int) -> pa.Array:
    """`rows` texts of `low` to `high` words, drawn Zipf-like, joined in Arrow (no Python loop per row)."""
    lengths = rng.integers(low, high, rows)
    words = np.minimum(rng.zipf(1.15, int(lengths.sum())) - 1, len(vocab) - 1)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), vocab.take(pa.array(words)))
    return pc.binary_join(lists, " ")


def make_data(folder: Path, rows: int, items: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    vocab = pa.array([f"w{i}" + "abcdefghij"[i % 10] * (1 + i % 5) for i in range(20_000)])
    questions, answers = texts(rng, vocab, items, 25, 70), texts(rng, vocab, items, 30, 120)
    bench = folder / "bench.parquet"
    pq.write_table(pa.table({"question": questions, "answer": answers}), bench)
    data = folder / "rows.parquet"
    schema = pa.schema([("id", pa.string()), ("instruction", pa.string()), ("response", pa.string())])
    planted_total = 0
    with pq.ParquetWriter(data, schema) as w:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            instruction, response = texts(rng, vocab, n, 15, 60), texts(rng, vocab, n, 60, 160)
            planted = np.flatnonzero(rng.random(n) < 0.01)
            planted_total += len(planted)
            if len(planted):  # 1%: a benchmark question copied into the instruction
                values = instruction.to_pylist()
                for i, q in zip(planted, questions.take(pa.array(rng.integers(0, items, len(planted)))).to_pylist()):
                    values[i] = q
                instruction = pa.array(values)
            ids = pa.array([f"r{i}" for i in range(start, start + n)])
            w.write_table(pa.table({"id": ids, "instruction": instruction, "response": response}))
    return data, bench, planted_total


def run_synth(data: Path, bench: Path, out: Path) -> dict:
    code = (
        "import json, time, sys, resource; from synth import recipes; t = time.perf_counter(); "
        f"r = recipes.decontaminate({str(data)!r}, [{str(bench)!r}], out={str(out / 'kept')!r}, "
        f"rejects={str(out / 'rejects')!r}, methods=('ngram',)); "
        "s = time.perf_counter() - t; "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "u = resource.getrusage(resource.RUSAGE_SELF); "
        "print(json.dumps({'seconds': s, 'cpu_seconds': u.ru_utime + u.ru_stime, 'peak_mb': int(hwm) / 1024, "
        "'counts': r['counts']}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline(data: Path, bench: Path, n: int, sample: int) -> dict:
    """datatrove's way: per row, normalise, split, join each n-gram and hash it, look it up in a dict."""
    import xxhash

    def words(text: str) -> list[str]:
        return re.sub(r"[^\w\s]+", " ", text.lower()).split()

    started = time.perf_counter()
    table = pq.read_table(bench)
    index = {}
    for q, a in zip(table["question"].to_pylist(), table["answer"].to_pylist()):
        for span in (words(q), words(a), words(q + " " + a)):
            for i in range(len(span) - n + 1):
                index[xxhash.xxh64_intdigest(" ".join(span[i : i + n]).encode())] = q
    built = time.perf_counter() - started
    rows = pq.ParquetFile(data).read_row_group(0).slice(0, sample)
    started = time.perf_counter()
    flagged = 0
    for q, a in zip(rows["instruction"].to_pylist(), rows["response"].to_pylist()):
        span = words(q + "\n" + a)
        grams = (" ".join(span[i : i + n]).encode() for i in range(len(span) - n + 1))
        flagged += any(xxhash.xxh64_intdigest(g) in index for g in grams)
    seconds = time.perf_counter() - started
    return {
        "rows": sample,
        "seconds": seconds,
        "rows_per_s": sample / seconds,
        "index_seconds": built,
        "flagged": flagged,
    }


def planted_pool() -> dict:
    """Recall per kind of planted row, for each choice of methods, on tests/fixtures/benchmarks/pool.jsonl."""
    sys.path.insert(0, str(ROOT))
    from synth.benchmarks import load_benchmark
    from synth.stages.decontaminate import Decontaminate

    bench = load_benchmark(f"gsm8k={FIXTURES / 'gsm8k_test.jsonl'}")
    pool = pa.Table.from_pylist([json.loads(line) for line in (FIXTURES / "pool.jsonl").read_text().splitlines()])
    results = {}
    for methods in (("ngram",), ("embedding",), ("ngram", "embedding")):
        found = Decontaminate((bench,), methods=methods).check(pool).to_pylist()
        kinds = defaultdict(list)
        for row, f in zip(pool.to_pylist(), found):
            kinds[row["kind"]].append(f is not None)
        results["+".join(methods)] = {k: f"{sum(v)}/{len(v)}" for k, v in kinds.items()}
    return results


def embedding_speed(rows: int) -> dict:
    """The embedding pass on realistic text: the planted pool's instructions, repeated to `rows`,
    against an index of as many items (the corpus above is made-up words, which split into many
    word pieces each and would understate it)."""
    sys.path.insert(0, str(ROOT))
    from synth.stages.decontaminate import EmbeddingIndex

    pool = [json.loads(line)["instruction"] for line in (FIXTURES / "pool.jsonl").read_text().splitlines()]
    texts = (pool * (rows // len(pool) + 1))[:rows]
    started = time.perf_counter()
    index = EmbeddingIndex(texts)
    built = time.perf_counter() - started
    started = time.perf_counter()
    index.best(texts)
    seconds = time.perf_counter() - started
    return {"items": rows, "index_items_per_s": rows / built, "rows": rows, "rows_per_s": rows / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--embed-rows", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        data, bench, planted = make_data(folder, args.rows, args.items)
        print(f"data: {args.rows} rows, {args.items} items in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        synth = run_synth(data, bench, folder)
        print(f"synth: {synth}", file=sys.stderr)
        base = baseline(data, bench, args.ngram, args.baseline_rows)
        print(f"baseline: {base}", file=sys.stderr)
        embed = embedding_speed(args.embed_rows)
        print(f"embedding: {embed}", file=sys.stderr)
    synth["rows_per_s"] = args.rows / synth["seconds"]
    synth["planted"] = planted  # rows holding an item's question; `dropped` should match it
    result = {
        "machine": f"{os.cpu_count()} cores, shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end)",
        "rows": args.rows,
        "items": args.items,
        "ngram": args.ngram,
        "synth_ngram": synth,
        "baseline_datatrove_style": base,
        "speedup_vs_baseline": synth["rows_per_s"] / base["rows_per_s"],
        "embedding": embed,
        "planted_pool_caught": planted_pool(),
    }
    out = ROOT / "benchmarks" / "results" / f"decontaminate-{args.rows}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
