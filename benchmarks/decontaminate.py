"""Decontamination benchmark: synth's n-gram method against a datatrove-style baseline in one run,
the embedding pass's speed, and recall / false positives on the planted pool.

    flock /tmp/heavy.lock python benchmarks/decontaminate.py                  # 1,000,000 rows, 20,000 items
    python benchmarks/decontaminate.py --rows 100000 --items 5000             # a quick look
    python benchmarks/decontaminate.py --calibrate --embedder minilm --embedder static   # the defaults' curves

`--calibrate`: the precision/recall curves the defaults in filters/decontamination/thresholds.yaml
were chosen from, per embedder, on three corpora of real text installed on the machine
(tests/realtext.py: stdlib docstrings, dpkg package descriptions, the Python library reference;
near-copies inside a corpus removed). Per corpus, `--cal-items` texts stand for a benchmark; each is
planted once as a light edit (one word in seven replaced by a word drawn at random from the corpus)
and `--cal-negatives` other texts of the corpus are the rows that must stay. Then the benchmark-shaped
sets of tests/fixtures/benchmarks (GSM8K-like, ARC-like, IFEval-like, HumanEval-like) at the defaults.

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
# Run as a script, this folder comes first on sys.path, and its kernels.py would pass for the `kernels`
# package that transformers probes for (then fails to read a version of): the folder is no package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


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


CURVE = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def _curve(scores: np.ndarray, positive: np.ndarray) -> dict[str, list[float]]:
    """Recall on the planted rows and false-positive rate on the others, at each threshold of CURVE."""
    return {
        f"{t:.2f}": [round(float(np.mean(scores[positive] >= t)), 4), round(float(np.mean(scores[~positive] >= t)), 4)]
        for t in CURVE
    }


def calibrate(embedders: list[str], items: int, negatives: int, seed: int = 0) -> dict:
    """Per corpus and embedder: the curves of the edit and embedding methods, and both at the defaults."""
    import random

    sys.path.insert(0, str(ROOT))
    from synth.benchmarks import Benchmark
    from synth.stages import decontaminate as module
    from synth.stages.decontaminate import Decontaminate
    from tests import realtext

    embed, memo = module._embed, {}

    def remembered(texts, model=None):  # the curves and the defaults' run embed the same rows: once
        key = (tuple(texts), model)
        if key not in memo:
            memo[key] = embed(texts, model)
        return memo[key]

    module._embed = remembered
    results: dict = {}
    for name, texts in realtext.iter_corpora():
        wanted = min(items, len(texts) // 4)
        chosen, others = realtext.split(texts, wanted, min(negatives, len(texts) - wanted), seed)
        rng, vocab = random.Random(seed + 1), realtext.vocabulary(texts)
        rows = [realtext.light_edit(t, rng, vocab) for t in chosen] + others
        planted = np.r_[np.ones(len(chosen), bool), np.zeros(len(others), bool)]
        bench = Benchmark(name, "real text", tuple(map(str, range(len(chosen)))), tuple(chosen), ("",) * len(chosen))
        table = pa.table({"instruction": rows})
        entry = {"items": len(chosen), "planted": int(planted.sum()), "others": len(others), "embedders": {}}
        edit = Decontaminate((bench,), ("instruction",), ("edit",))
        _, share = edit._edits.best(table["instruction"].combine_chunks())
        entry["edit_curve"] = _curve(share, planted)
        for embedder in embedders:
            stage = Decontaminate((bench,), ("instruction",), ("ngram", "edit", "embedding"), model=embedder)
            started = time.perf_counter()
            _, sims = stage._embeddings.best(rows)
            found = stage.check(table).to_pylist()
            flagged = np.array([f is not None for f in found])
            entry["embedders"][embedder] = {
                "embedding_curve": _curve(sims, planted),
                "others_99th_cosine": round(float(np.quantile(sims[~planted], 0.99)), 4),
                "others_99_5th_cosine": round(float(np.quantile(sims[~planted], 0.995)), 4),
                "defaults": {
                    "edit_threshold": stage.edit_threshold,
                    "embedding_threshold": stage.embedding_threshold,
                    "light_edit_recall": round(float(flagged[planted].mean()), 4),
                    "false_positives": round(float(flagged[~planted].mean()), 4),
                },
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"{name} {embedder}: {entry['embedders'][embedder]['defaults']}", file=sys.stderr)
        results[name] = entry
    results["benchmark_shaped"] = {e: shaped(e) for e in embedders}
    return results


def shaped(embedder: str, seed: int = 0) -> dict:
    """At the defaults, on the benchmark-shaped fixtures: GSM8K's planted pool per kind of row, and the
    ARC-, IFEval- and HumanEval-like sets with a light edit of each item and same-topic rows that ask
    something else (tests/fixtures/benchmarks/same_topic_nonnumeric.jsonl)."""
    import random

    sys.path.insert(0, str(ROOT))
    from synth.benchmarks import load_benchmark
    from synth.stages.decontaminate import Decontaminate
    from tests import realtext

    out: dict = {}
    bench = load_benchmark(f"gsm8k={FIXTURES / 'gsm8k_test.jsonl'}")
    pool = pa.Table.from_pylist([json.loads(line) for line in (FIXTURES / "pool.jsonl").read_text().splitlines()])
    found = Decontaminate((bench,), model=embedder).check(pool).to_pylist()
    kinds = defaultdict(list)
    for row, f in zip(pool.to_pylist(), found):
        kinds[row["kind"]].append(f is not None)
    out["gsm8k_pool"] = {k: f"{sum(v)}/{len(v)}" for k, v in kinds.items()}
    negatives = [json.loads(line) for line in (FIXTURES / "same_topic_nonnumeric.jsonl").read_text().splitlines()]
    for name, file in (("arc_challenge", "arc_like"), ("ifeval", "ifeval_like"), ("humaneval", "humaneval_like")):
        bench = load_benchmark(f"{name}={FIXTURES / (file + '.jsonl')}")
        rng = random.Random(seed)
        vocab = realtext.vocabulary(list(bench.questions))
        edits = [realtext.light_edit(q, rng, vocab) for q in bench.questions]
        others = [n["instruction"] for n in negatives if n["benchmark"] == name]
        table = pa.table({"instruction": edits + others})
        flags = [
            f is not None for f in Decontaminate((bench,), ("instruction",), model=embedder).check(table).to_pylist()
        ]
        out[name] = {
            "light_edits": f"{sum(flags[: len(edits)])}/{len(edits)}",
            "same_topic": f"{sum(flags[len(edits) :])}/{len(others)}",
        }
    print(f"benchmark-shaped, {embedder}: {out}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--embed-rows", type=int, default=2_000)
    parser.add_argument("--calibrate", action="store_true", help="Only the real-text curves (see above).")
    parser.add_argument("--embedder", action="append", help="With --calibrate: minilm, static, or a model path.")
    parser.add_argument("--cal-items", type=int, default=300)
    parser.add_argument("--cal-negatives", type=int, default=2000)
    args = parser.parse_args()
    if args.calibrate:
        result = calibrate(args.embedder or ["minilm", "static"], args.cal_items, args.cal_negatives)
        result["machine"] = f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f} at the end)"
        out = ROOT / "benchmarks" / "results" / "decontaminate-calibration.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
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
