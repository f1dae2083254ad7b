"""Dedup benchmark: synth's MinHash against datasketch's MinHashLSH in one run, plus semantic speed.

    python benchmarks/dedup.py                   # 50,000 rows: synth vs datasketch, semantic on 1,000
    python benchmarks/dedup.py --rows 1000000 --only synth   # the million-row run

synth's MinHash reads 8,192-row batches, as `synth dedup` does by default.

Builds a corpus of short instructions with planted near-duplicates (exact copies, case and
punctuation noise, one word changed), writes it to parquet, and runs each method in its own
process so peak memory (max RSS) is that method's alone. Reports docs/s, precision and recall
against the planted ground truth, peak memory, and ratios against datasketch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NOUNS = (
    "garden river library market bridge lighthouse orchard database compiler telescope harbour glacier bakery "
    "vineyard satellite railway festival museum monastery reef desert forest spreadsheet kernel cathedral bicycle "
    "workshop laboratory marathon parliament symphony volcano theatre castle canal factory pipeline network "
    "algorithm startup classroom hospital village island mountain budget contract vaccine battery engine "
    "election climate insurance mortgage recipe painting novel podcast camera password firewall cluster "
    "tournament orchestra bakery pharmacy airport tunnel subway stadium prison embassy archive newsroom "
    "greenhouse beehive tractor drone robot sensor microscope galaxy comet asteroid fossil dinosaur coral "
    "salmon wolf falcon elephant cactus mushroom wheat coffee chocolate cheese bread noodle soup violin guitar"
).split()
ADJS = (
    "quiet ancient modern rural urban coastal frozen tropical digital medieval distributed noisy sparse renewable "
    "fragile hidden forgotten crowded remote seasonal volcanic secure mobile vintage organic floating underground "
    "portable nocturnal migratory industrial experimental affordable sustainable haunted luxurious minimalist "
    "chaotic efficient legendary mysterious automated handmade bilingual decentralised"
).split()
PEOPLE = (
    "children beginners nurses engineers tourists farmers students retirees managers chefs pilots teachers "
    "designers historians volunteers athletes lawyers investors parents musicians scientists journalists "
    "librarians firefighters gardeners programmers translators"
).split()
OPENERS = [
    "Write a short poem about",
    "Explain to a beginner how",
    "Draft an email to my landlord about",
    "List surprising facts about",
    "Give me a step-by-step plan covering",
    "What are the risks of combining",
    "Summarise the history of",
    "Design a board game built around",
    "Tell a bedtime story featuring",
    "Why do people keep arguing about",
    "Suggest names for a shop selling",
    "Create a lesson plan that connects",
    "Is it ethical to invest in",
    "Compare the costs of maintaining",
    "Describe a day in the life of",
    "Outline a podcast episode on",
    "Write a product review of",
    "Brainstorm marketing slogans for",
]
CLOSERS = [
    "in {k} words.",
    "for {p}.",
    "as {k} bullet points.",
    "with {k} concrete examples.",
    "in a cheerful tone for {p}.",
    "and keep it under {k} sentences.",
    "for an audience of {p}, please.",
    "using simple language.",
    "?",
    "and cite {k} sources.",
]


def instruction(rng: random.Random) -> str:
    pairs = [f"{rng.choice(ADJS)} {rng.choice(NOUNS)}" for _ in range(rng.randint(4, 6))]
    closer = rng.choice(CLOSERS).format(p=rng.choice(PEOPLE), k=rng.randint(3, 999))
    return f"{rng.choice(OPENERS)} the {', the '.join(pairs[:-1])} and the {pairs[-1]} {closer}"


def near_copy(text: str, rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        return text
    if kind < 0.5:  # case, punctuation and spacing noise
        return "  ".join(w.upper() if rng.random() < 0.3 else w for w in text.split()).rstrip(".") + "!!"
    words = text.split()
    i = rng.randrange(1, len(words) - 1)
    if kind < 0.8:
        words[i] = rng.choice(NOUNS + ADJS)  # one word changed
    else:
        words.insert(i, rng.choice(["really", "very", "quite", "short"]))  # one word added
    return " ".join(words)


def build(rows: int, path: Path, dup_rate: float = 0.1, seed: int = 0) -> None:
    """Parquet of `rows` instructions; `truth` is the id of the earlier row a planted copy copies."""
    rng = random.Random(seed)
    writer, originals = None, []
    for start in range(0, rows, 50_000):
        ids, texts, truth = [], [], []
        for i in range(start, min(rows, start + 50_000)):
            if originals and rng.random() < dup_rate:
                source_id, source_text = rng.choice(originals)
                ids.append(f"r{i}"), texts.append(near_copy(source_text, rng)), truth.append(source_id)
            else:
                text = instruction(rng)
                ids.append(f"r{i}"), texts.append(text), truth.append(None)
                if len(originals) < 200_000:
                    originals.append((f"r{i}", text))
        table = pa.table({"id": ids, "instruction": texts, "truth": pa.array(truth, pa.string())})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def score(dropped: set[str], truth: dict[str, str | None]) -> dict[str, float]:
    planted = {k for k, v in truth.items() if v is not None}
    hits = len(dropped & planted)
    return {"precision": hits / max(len(dropped), 1), "recall": hits / max(len(planted), 1)}


def worker(method: str, path: Path, limit: int | None) -> dict:
    from synth.core import pipe, take
    from synth.io import read
    from synth.stages import dedup_minhash, dedup_semantic

    if method == "datasketch":
        import datasketch  # noqa: F401  (imports are not dedup speed, on either side)
    pa.array([0])  # nor is pandas, which pyarrow imports on its first array from Python values
    if method == "synth":
        from synth.io import jemalloc_for_arrow

        jemalloc_for_arrow()  # as `synth dedup` does
    if method == "semantic":
        from synth.stages.dedup import load_encoder

        load_encoder()  # nor is loading the model
    dropped: set[str] = set()
    matched: list[pa.Table] = []  # synth's dropped rows and the kept row each matched, held as Arrow
    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    if method == "read":  # the floor: reading the file, holding nothing
        for batch in read(path):
            rows += batch.num_rows
    elif method in ("synth", "semantic"):
        factory = dedup_semantic if method == "semantic" else dedup_minhash
        stage = factory(rejects=lambda b: matched.append(b.select(["id", "dup_cluster"])))
        size = 8192 if method == "synth" else 1000  # what `synth dedup` reads at once; semantic: the usual
        for batch in pipe(read(path, size), take(limit or 10**12), stage):
            rows += batch.num_rows
        rows += sum(t.num_rows for t in matched)
    else:
        rows = _datasketch(path, dropped)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = _peak_mb()  # before the scoring below holds ids
    pairs = pa.concat_tables(matched).to_pylist() if matched else []
    dropped.update(p["id"] for p in pairs)
    truth: dict[str, str | None] = {}
    for batch in pipe(read(path), take(limit or 10**12)):
        truth.update(zip(batch["id"].to_pylist(), batch["truth"].to_pylist()))
    result = {"method": method, "rows": rows, "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak}
    result.update(score(dropped, truth))
    if method == "synth":
        result["precision_true_jaccard"] = _true_precision(path, pairs, truth)
    return result


def _peak_mb() -> float:
    """This process's peak RSS since exec (VmHWM): ru_maxrss would carry the parent's size over a fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _true_precision(path: Path, pairs: list[dict], truth: dict[str, str | None], threshold: float = 0.7) -> float:
    """Precision counting as right a drop that is planted or whose word set (synth's shingles) has a
    true Jaccard similarity of at least `threshold` with the row it matched: the generator's
    small vocabulary makes chance near-duplicates among a million rows."""
    from synth.io import read
    from synth.stages.dedup import _words

    wanted = {p["id"] for p in pairs} | {p["dup_cluster"] for p in pairs}
    words: dict[str, set[str]] = {}
    for batch in read(path):
        for key, tokens in zip(batch["id"].to_pylist(), _words(batch["instruction"].combine_chunks()).to_pylist()):
            if key in wanted:
                words[key] = set(tokens)
    right = 0
    for p in pairs:
        a, b = words[p["id"]], words[p["dup_cluster"]]
        right += truth[p["id"]] is not None or len(a & b) / max(len(a | b), 1) >= threshold
    return right / max(len(pairs), 1)


def _datasketch(path: Path, dropped: set[str]) -> int:
    """The baseline: datasketch MinHash + MinHashLSH, greedy, with synth's shingles and bands."""
    from datasketch import MinHash, MinHashLSH

    from synth.io import read
    from synth.stages.dedup import _words, lsh_params

    lsh = MinHashLSH(num_perm=128, params=lsh_params(0.7, 128))
    rows = 0
    for batch in read(path):
        words = _words(batch["instruction"].combine_chunks()).to_pylist()
        for key, tokens in zip(batch["id"].to_pylist(), words):
            m = MinHash(num_perm=128)
            m.update_batch([t.encode() for t in set(tokens)])
            if lsh.query(m):
                dropped.add(key)
            else:
                lsh.insert(key, m)
        rows += batch.num_rows
    return rows


def run(method: str, path: Path, limit: int | None = None, threads: int = 2) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, __file__, "--worker", method, "--input", str(path), "--limit", str(limit or 0)]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--semantic-rows", type=int, default=1000)
    parser.add_argument("--only", choices=["synth", "datasketch", "semantic"], action="append")
    parser.add_argument("--worker"), parser.add_argument("--input"), parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.input), args.limit or None)))
        return
    methods = args.only or ["synth", "datasketch", "semantic"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.parquet"
        started = time.perf_counter()
        build(args.rows, path)
        print(f"corpus: {args.rows} rows, 10% planted copies, built in {time.perf_counter() - started:.1f}s")
        results = {"read": run("read", path)}
        for method in methods:
            limit = args.semantic_rows if method == "semantic" else None
            results[method] = run(method, path, limit)
    header = f"{'method':<12}{'rows':>9}{'seconds':>9}{'cpu s':>8}{'docs/s':>10}"
    print(f"{header}{'precision':>11}{'recall':>8}{'peak MB':>9}")
    for name, r in results.items():
        rate = r["rows"] / max(r["seconds"], 1e-9)
        quality = f"{r['precision']:>11.4f}{r['recall']:>8.4f}" if name != "read" else f"{'':>19}"
        print(
            f"{name:<12}{r['rows']:>9}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.2f}{rate:>10.0f}{quality}"
            f"{r['peak_mb']:>9.0f}"
        )
    if "synth" in results:
        print(
            f"synth precision, chance near-duplicates (true Jaccard >= 0.7) counted right: "
            f"{results['synth']['precision_true_jaccard']:.4f}"
        )
    summary: dict = {"rows": args.rows, "results": results}
    if "synth" in results and "datasketch" in results:
        s, d = results["synth"], results["datasketch"]
        speed = (s["rows"] / s["seconds"]) / (d["rows"] / d["seconds"])
        cpu = (s["rows"] / s["cpu_seconds"]) / (d["rows"] / d["cpu_seconds"])
        summary.update(throughput_ratio=speed, cpu_throughput_ratio=cpu, peak_ratio=s["peak_mb"] / d["peak_mb"])
        print(
            f"synth / datasketch: throughput {speed:.1f}x (per CPU second {cpu:.1f}x), "
            f"peak memory {s['peak_mb'] / d['peak_mb']:.2f}x"
        )
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    name = "dedup.json" if args.rows <= 100_000 else f"dedup-{args.rows}.json"
    (results_dir / name).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
