r"""Dedup benchmark, one run: synth's MinHash against rensa and datasketch; semantic embedders.

    python benchmarks/dedup.py                                  # 54,209 rows, every method
    python benchmarks/dedup.py --rows 1000000 --only synth      # the million-row MinHash run
    python benchmarks/dedup.py --only static --semantic-rows 200000 --static-rows 200000

Builds a corpus of short instructions with planted near-duplicates (exact copies, case and
punctuation noise, one word changed or added) as jsonl, and runs each side as its own whole
process (interpreter start, imports, reading, dedup, writing: wall time from the parent, peak
memory from the child's VmHWM), synth and rensa `--repeat` times after a warm-up, taking turns
(the median, and the median of the turn-by-turn ratios):
- synth: `synth dedup corpus.jsonl --out ...`, the command itself;
- rensa: a short script reading the jsonl (json module), RMinHash of lower-cased `\w+` words,
  RMinHashLSH, candidates verified at Jaccard 0.7, kept ids written out;
- datasketch: MinHash + MinHashLSH with synth's words and bands (slow: `--datasketch-rows`).
Precision, recall and F1 against the planted copies; speed and memory as ratios to rensa.

Semantic: `synth dedup --method semantic` with the static embedder and with `--embedder minilm`
(rows/s over dedup alone, model loading apart) on two corpora of `--semantic-rows` rows, and the
static path's recall of the (copy, kept row) pairs MiniLM finds on each:
- templates: the instructions above, built from 15 openers and 10 closers, so that many rows
  that are not copies share most of their words with others;
- docstrings: real sentences from the standard library's docstrings (the same on every install
  of a Python version), with near-copies planted as above.
Then the static path alone on `--static-rows` template rows, for rows/s and peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _realtext():  # type: ignore[no-untyped-def]
    """benchmarks/realtext.py, loaded by path: this folder must not be on sys.path, as its
    kernels.py would shadow the `kernels` package that transformers looks for."""
    spec = importlib.util.spec_from_file_location("realtext", Path(__file__).with_name("realtext.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["realtext"] = module
    spec.loader.exec_module(module)
    return module


sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
realtext = _realtext()
ADJS, NOUNS, near_copy = realtext.ADJS, realtext.NOUNS, realtext.near_copy
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


def build(
    rows: int, path: Path, dup_rate: float = 0.1, seed: int = 0, fresh: Callable[[random.Random], str] | None = None
) -> dict[str, str | None]:
    """`rows` texts as jsonl, new ones from `fresh` (default: an instruction) and `dup_rate` of them
    planted near-copies of earlier ones; returns id -> the id of the earlier row a copy copies."""
    rng, fresh = random.Random(seed), fresh or instruction
    originals: list[tuple[str, str]] = []
    truth: dict[str, str | None] = {}
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            if originals and rng.random() < dup_rate:
                source_id, source_text = rng.choice(originals)
                text, truth[f"r{i}"] = near_copy(source_text, rng), source_id
            else:
                text, truth[f"r{i}"] = fresh(rng), None
                if len(originals) < 200_000:
                    originals.append((f"r{i}", text))
            out.write(json.dumps({"id": f"r{i}", "instruction": text}) + "\n")
    return truth


def build_docstrings(rows: int, path: Path, seed: int = 0) -> dict[str, str | None]:
    """`build` with the standard library's docstring sentences as the new texts."""
    pool = realtext.docstring_sentences()
    random.Random(seed).shuffle(pool)
    if len(pool) < rows:
        raise SystemExit(f"the standard library gives {len(pool)} docstring sentences; ask for fewer rows")
    return build(rows, path, seed=seed, fresh=lambda _: pool.pop())


def score(dropped: set[str], truth: dict[str, str | None]) -> dict[str, float]:
    planted = {k for k, v in truth.items() if v is not None}
    hits = len(dropped & planted)
    precision, recall = hits / max(len(dropped), 1), hits / max(len(planted), 1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def peak_mb() -> float:
    """This process's peak RSS since exec (VmHWM): ru_maxrss would carry a forking parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no /proc/self/status: this benchmark needs Linux")


RENSA = r"""
import json, re, sys
from rensa import RMinHash, RMinHashLSH
WORD = re.compile(r"\w+")
lsh, sigs, kept = RMinHashLSH(threshold=0.7, num_perm=128, num_bands=16), {}, []
with open(sys.argv[1], encoding="utf-8") as f:
    for i, line in enumerate(f):
        row = json.loads(line)
        m = RMinHash(num_perm=128, seed=42)
        m.update(WORD.findall(row["instruction"].lower()))
        if not any(m.jaccard(sigs[c]) >= 0.7 for c in lsh.query(m)):
            lsh.insert(i, m)
            sigs[i] = m
            kept.append(row["id"])
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write("\n".join(kept))
"""


def worker(method: str, corpus: Path, out: Path, rows: int) -> dict:
    """Runs in the child: one side, then what it kept (or dropped) and its peak memory."""
    if method == "rensa":
        sys.argv = ["rensa", str(corpus), str(out / "kept.txt")]
        exec(compile(RENSA, "rensa_baseline", "exec"), {"__name__": "__main__"})
        return {"kept_file": str(out / "kept.txt"), "peak_mb": peak_mb()}
    if method == "datasketch":
        dropped = _datasketch(corpus, rows)
        return {"dropped": sorted(dropped), "peak_mb": peak_mb()}
    if method == "synth":
        from synth.cli import main

        sys.argv = ["synth", "dedup", str(corpus), "--out", str(out / "synth"), "--method", "minhash"]
        main()
        return {"kept_dir": str(out / "synth"), "peak_mb": peak_mb()}
    return _semantic(method, corpus, rows)


def _semantic(embedder: str, corpus: Path, rows: int) -> dict:
    """`synth dedup --method semantic` on the first `rows` rows, timed apart from loading the model."""
    from synth.core import pipe, take
    from synth.io import arrow_without_pandas, jemalloc_for_arrow, read
    from synth.stages import dedup_semantic
    from synth.stages.embed import load_embedder

    jemalloc_for_arrow(), arrow_without_pandas()  # as `synth dedup` does
    load_embedder(embedder)
    pairs: list[list[str]] = []
    stage = dedup_semantic(  # reading ahead, as `synth dedup` does
        embedder=embedder,
        read_ahead=True,
        rejects=lambda b: pairs.extend(zip(b["id"].to_pylist(), b["dup_cluster"].to_pylist())),
    )
    started, done = time.perf_counter(), 0
    for batch in pipe(read(corpus, 8192), take(rows), stage):
        done += batch.num_rows
    seconds = time.perf_counter() - started
    return {
        "rows": done + len(pairs),
        "seconds": seconds,
        "pairs": pairs,
        "peak_mb": peak_mb(),
        "index": stage.notes["index"],
    }


def _datasketch(corpus: Path, rows: int) -> set[str]:
    """The slow baseline: datasketch MinHash + MinHashLSH, greedy, with synth's words and bands."""
    import pyarrow as pa
    from datasketch import MinHash, MinHashLSH

    from synth.stages.dedup import _words, lsh_params

    lsh, dropped = MinHashLSH(num_perm=128, params=lsh_params(0.7, 128)), set()
    with corpus.open(encoding="utf-8") as f:
        records = [json.loads(line) for line, _ in zip(f, range(rows))]
    words = _words(pa.array([r["instruction"] for r in records])).to_pylist()
    for record, tokens in zip(records, words):
        m = MinHash(num_perm=128)
        m.update_batch([t.encode() for t in set(tokens)])
        if lsh.query(m):
            dropped.add(record["id"])
        else:
            lsh.insert(record["id"], m)
    return dropped


def run(method: str, corpus: Path, rows: int, threads: int = 2) -> dict:
    """One side in its own process; wall time is the whole process's, start to exit.

    Bytecode is cached as for an installed package (pip compiles it at install time): a
    PYTHONDONTWRITEBYTECODE in this shell would have every run compile synth's modules again.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, __file__, "--worker", method, "--input", str(corpus), "--out", tmp, "--rows", str(rows)]
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"{method}: {done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if "kept_file" in result:
            result["kept"] = Path(result.pop("kept_file")).read_text(encoding="utf-8").split("\n")
        if "kept_dir" in result:
            import pyarrow.parquet as pq

            result["kept"] = pq.read_table(Path(result.pop("kept_dir")) / "data", columns=["id"])["id"].to_pylist()
    result.setdefault("seconds", wall)
    result["wall_seconds"] = wall
    return result


def minhash_sides(
    methods: list[str], corpus: Path, rows: int, truth: dict[str, str | None], repeat: int = 1
) -> dict[str, dict]:
    """`repeat` whole-process runs of each method after one warm-up (bytecode, page cache), the
    methods taking turns (synth, rensa, synth, rensa, ...) so that a busy spell on a shared host
    falls on both: each one's median wall time and largest peak memory, and the median of the
    ratios of rensa's time to synth's, turn by turn."""
    turns = [{m: run(m, corpus, rows) for m in methods} for _ in range(repeat + (repeat > 1))][repeat > 1 :]
    out = {}
    for method in methods:
        runs = [turn[method] for turn in turns]
        r = sorted(runs, key=lambda x: x["wall_seconds"])[len(runs) // 2]
        ids = [f"r{i}" for i in range(rows)]
        dropped = set(r.pop("dropped")) if "dropped" in r else set(ids) - set(r.pop("kept"))
        out[method] = {
            "method": method,
            "rows": rows,
            "seconds": r["wall_seconds"],
            "runs": [round(x["wall_seconds"], 3) for x in runs],
            "peak_mb": max(x["peak_mb"] for x in runs),
            **score(dropped, {k: truth[k] for k in ids}),
        }
    if {"synth", "rensa"} <= set(methods):
        ratios = sorted(t["rensa"]["wall_seconds"] / t["synth"]["wall_seconds"] for t in turns)
        out["synth"]["speed_vs_rensa_by_turn"] = [round(x, 3) for x in ratios]
    return out


def semantic_sides(
    corpora: dict[str, tuple[Path, dict[str, str | None]]], rows: int, static_rows: int, only: set[str]
) -> dict:
    """Both embedders on each corpus's first `rows` rows: the copies each finds of those planted,
    the rows each drops that are no planted copy, and the static path's recall of MiniLM's (copy,
    kept row) pairs; then the static path alone on `static_rows` rows of the first corpus."""
    out: dict = {}
    for name, (corpus, truth) in corpora.items():
        sides = {e: run(e, corpus, rows) for e in ("minilm", "static") if e in only}
        planted = {k for k, v in truth.items() if v is not None and int(k[1:]) < rows}
        for r in sides.values():
            dropped = {p[0] for p in r["pairs"]}
            r["planted_found"] = len(dropped & planted) / max(len(planted), 1)
            r["unplanted_drops"] = len(dropped - planted)
        if {"minilm", "static"} <= only:
            theirs = {tuple(p) for p in sides["minilm"]["pairs"]}
            ours = {tuple(p) for p in sides["static"]["pairs"]}
            dropped = {p[0] for p in ours}
            sides["static_recall_of_minilm_pairs"] = len(theirs & ours) / max(len(theirs), 1)
            sides["static_recall_of_minilm_drops"] = len({p[0] for p in theirs} & dropped) / max(len(theirs), 1)
            sides["static_extra_drops"] = len(dropped - {p[0] for p in theirs})
        for r in sides.values():
            if isinstance(r, dict):
                r["pairs_found"] = len(r.pop("pairs", []))
                r["rows_per_second"] = r["rows"] / r["seconds"]
        if sides:
            out[name] = sides
    if "static" in only and static_rows > rows:
        big = run("static", next(iter(corpora.values()))[0], static_rows)
        big["pairs_found"] = len(big.pop("pairs"))
        big["rows_per_second"] = big["rows"] / big["seconds"]
        out["static_large"] = big
    return out


SEMANTIC_GRID = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12, 0.15)
MINHASH_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)


def calibration_corpora(rows: int, seed: int = 1) -> dict[str, tuple[list[str], list[int | None]]]:
    """Real text (docstrings, package descriptions, man pages) and the template instructions, each
    cleaned of its own near-copies and planted with 10% near-copies: (texts, what each copies)."""
    rng = random.Random(seed)
    pools = {
        "docstrings": realtext.docstring_sentences(),
        "dpkg": realtext.dpkg_sentences(),
        "man": realtext.man_sentences(),
        "templates": [instruction(rng) for _ in range(2 * rows)],
    }
    out = {}
    for name, pool in pools.items():
        pool = realtext.distinct(pool, 0.5 if name != "templates" else 0.999)
        if len(pool) >= 200:
            out[name] = realtext.plant(pool, min(rows, int(len(pool) * 1.05)), seed)
    return out


def held_out_corpus(rows: int, seed: int = 1) -> dict[str, tuple[list[str], list[int | None]]]:
    """The Python documentation's HTML paragraphs (python3.11-doc), planted as the others: reported
    beside them, never used to choose."""
    pool = realtext.distinct(realtext.pydoc_sentences(), 0.5)
    return {"pydoc": realtext.plant(pool, min(rows, int(len(pool) * 1.05)), seed)} if len(pool) >= 200 else {}


LEXICAL_WITHIN = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
LEXICAL_JACCARD = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8)


def lexical_curve(
    threshold: float, corpora: dict, held_out: dict, vectors: dict, looks: dict[str, tuple[list[str], np.ndarray]]
) -> dict:
    """The lexical confirmation on top of an embedder's `threshold` (`synth.stages.dedup._lexical`):
    for each bound (`within`, `jaccard`), precision and recall on each corpus and the held-out one,
    and the share of look-alikes and package labels dropped. The choice: the best mean recall with
    precision >= 0.95 on every corpus and <= 1% of look-alikes dropped; within 0.005 of it, the
    highest Jaccard bound, then the nearest `within` (the fewest pairs confirmed on words alone).
    The first point is the threshold alone."""
    from synth.stages.dedup._lexical import Lexical

    curve = []
    for within, jaccard in [(None, None)] + [(w, j) for w in LEXICAL_WITHIN for j in LEXICAL_JACCARD]:
        lexical = None if within is None else Lexical(within, jaccard)
        point = {"within": within, "jaccard": jaccard}  # None: the threshold alone
        for corpus, (texts, truth) in {**corpora, **held_out}.items():
            drops = semantic_drops(vectors[corpus], texts, threshold, True, lexical)
            point[corpus] = [round(x, 3) for x in _score(drops, truth)]
        for kind, (texts, emb) in looks.items():
            drops = semantic_drops(emb, texts, threshold, True, lexical)
            point[f"{kind}_dropped"] = round(len(drops) / len(texts), 4)
        curve.append(point)
    ok = [p for p in curve if all(p[c][0] >= 0.95 for c in corpora) and p["look_alikes_dropped"] <= 0.01]
    ok = [p for p in ok if p["within"] is not None]
    recall = lambda p: sum(p[c][1] for c in corpora) / len(corpora)  # noqa: E731
    best = max(map(recall, ok), default=None)
    near = [p for p in ok if best is not None and recall(p) >= best - 0.005]
    chosen = max(near, key=lambda p: (p["jaccard"], -p["within"]), default=None)
    print(f"\n  lexical confirmation at {threshold}: within, Jaccard, then precision/recall per corpus (* chosen)")
    for p in curve:
        cells = "  ".join(f"{c} {p[c][0]:.3f}/{p[c][1]:.3f}" for c in {**corpora, **held_out})
        mark = "*" if p is chosen else " "
        alike, labels = p["look_alikes_dropped"], p["package_labels_dropped"]
        bounds = f"{p['within'] or '-':<5}{p['jaccard'] or '-':<5}"
        print(f"  {mark} {bounds} {cells}  alike {alike:.2%} (labels {labels:.0%})")
    chosen_bounds = None if chosen is None else [chosen["within"], chosen["jaccard"]]
    return {"threshold": threshold, "curve": curve, "chosen": chosen_bounds}


def _score(dropped: np.ndarray, truth: list[int | None]) -> tuple[float, float]:
    planted = {i for i, t in enumerate(truth) if t is not None}
    hits = len(planted.intersection(dropped.tolist()))
    return hits / max(len(dropped), 1), hits / max(len(planted), 1)


def semantic_drops(
    emb: np.ndarray, texts: list[str], threshold: float, check_terms: bool = True, lexical: Any = None
) -> np.ndarray:
    """Rows the semantic stage drops (with or without its numbers-and-names check, with a lexical
    confirmation `synth.stages.dedup._lexical.Lexical` or none), as one batch: its own matching,
    on embeddings made once."""
    import pyarrow as pa

    from synth.stages.dedup import _match_semantic, _VectorIndex
    from synth.stages.dedup._lexical import CopyCheck, word_sketches
    from synth.stages.similarity import TermsGuard, key_terms

    terms = TermsGuard(key_terms(pa.array(texts)), lambda i: i, 0) if check_terms else None
    sketches = word_sketches(pa.array(texts)) if lexical is not None else None
    guard = CopyCheck(threshold, lexical, sketches, lambda i: i, terms) if terms or lexical else None
    return np.flatnonzero(~_match_semantic(emb, _VectorIndex(emb.shape[1], len(emb) + 1), threshold, guard=guard).keep)


def minhash_drops(texts: list[str], threshold: float, check_terms: bool = True) -> np.ndarray:
    """Rows the MinHash stage drops (with or without its numbers-and-names check), as one batch."""
    from synth.core import from_rows
    from synth.stages import dedup_minhash

    kept = set()
    for batch in dedup_minhash(threshold=threshold, check_terms=check_terms)(
        [from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])]
    ):
        kept.update(int(i) for i in batch["id"].to_pylist())
    return np.array(sorted(set(range(len(texts))) - kept), int)


def calibrate(rows: int, embedders: list[str]) -> dict:
    """Precision and recall of planted copies on each corpus, and the share of distinct look-alike
    rows dropped, per threshold, for each embedder (with and without the numbers check) and MinHash;
    the default each would get: the best mean recall with precision >= 0.95 on every corpus and at
    most 1% of the look-alikes dropped. Then each embedder's self-calibration, as an unknown one gets,
    and its lexical confirmation's curve at the threshold chosen (`lexical_curve`), with a corpus
    held out of the choice."""
    from synth.stages.embed import load_embedder
    from synth.stages.similarity import self_calibrate

    corpora, looks, held_out = calibration_corpora(rows), realtext.distinct_requests(), held_out_corpus(rows)
    alike = [t for kind, texts in looks.items() if kind != "package_labels" for t in texts]
    labels = looks["package_labels"]
    print(f"calibration: {', '.join(f'{k} {len(v[0])} rows' for k, v in corpora.items())}; {len(alike)} look-alikes")
    out: dict = {
        "corpora": {k: len(v[0]) for k, v in corpora.items()},
        "look_alikes": {k: len(v) for k, v in looks.items()},
    }
    sides = [(e, True) for e in embedders] + [(e, False) for e in embedders] + [("minhash", True), ("minhash", False)]
    for name, check in sides:
        embed = None if name == "minhash" else load_embedder(name).encode
        vectors = {} if embed is None else {k: embed(v[0]) for k, v in corpora.items()}
        alike_emb = None if embed is None else embed(alike)
        labels_emb = None if embed is None else embed(labels)
        curve = []
        for t in MINHASH_GRID if embed is None else SEMANTIC_GRID:
            point: dict = {"threshold": t}
            for corpus, (texts, truth) in corpora.items():
                if embed is None:
                    drops = minhash_drops(texts, t, check)
                else:
                    drops = semantic_drops(vectors[corpus], texts, t, check)
                point[corpus] = [round(x, 3) for x in _score(drops, truth)]
            wrong = minhash_drops(alike, t, check) if embed is None else semantic_drops(alike_emb, alike, t, check)
            point["look_alikes_dropped"] = round(len(wrong) / len(alike), 4)
            wrong = minhash_drops(labels, t, check) if embed is None else semantic_drops(labels_emb, labels, t, check)
            point["package_labels_dropped"] = round(len(wrong) / max(len(labels), 1), 4)
            curve.append(point)
        ok = [p for p in curve if all(p[c][0] >= 0.95 for c in corpora) and p["look_alikes_dropped"] <= 0.01]
        recall = lambda p: sum(p[c][1] for c in corpora) / len(corpora)  # noqa: E731
        chosen = max(ok, key=recall)["threshold"] if ok else None
        key = f"{name}{' + terms' if check else ''}"
        out[key] = {"curve": curve, "chosen": chosen}
        print(f"\n{key}: threshold, then precision/recall per corpus, then look-alikes dropped (* chosen)")
        for p in curve:
            cells = "  ".join(f"{c} {p[c][0]:.3f}/{p[c][1]:.3f}" for c in corpora)
            mark = "*" if p["threshold"] == chosen else " "
            alike_share, labels_share = p["look_alikes_dropped"], p["package_labels_dropped"]
            print(f"{mark} {p['threshold']:<5} {cells}  alike {alike_share:.2%} (labels {labels_share:.0%})")
        if embed is not None and check:
            for corpus, (texts, truth) in corpora.items():
                t, how = self_calibrate(texts[:8192], embed, name)
                p, r = _score(semantic_drops(vectors[corpus], texts, t), truth)
                out[key].setdefault("self_calibrated", {})[corpus] = [round(t, 4), round(p, 3), round(r, 3)]
                print(f"  self-calibrated on {corpus}: {t:.4f}, precision {p:.3f} recall {r:.3f}")
        if embed is not None and check and chosen is not None:
            vectors.update({k: embed(v[0]) for k, v in held_out.items()})
            sets = {"look_alikes": (alike, alike_emb), "package_labels": (labels, labels_emb)}
            out[key]["lexical"] = lexical_curve(chosen, corpora, held_out, vectors, sets)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=54_209)
    parser.add_argument("--datasketch-rows", type=int, default=20_000)
    parser.add_argument("--semantic-rows", type=int, default=2_000, help="rows both embedders dedup (MiniLM: ~200/s)")
    parser.add_argument("--static-rows", type=int, default=54_209, help="rows of the larger static-only run")
    parser.add_argument("--repeat", type=int, default=5, help="whole-process runs of synth and rensa (median)")
    parser.add_argument("--only", choices=["synth", "rensa", "datasketch", "static", "minilm"], action="append")
    parser.add_argument("--calibrate", action="store_true", help="threshold curves on real text, then stop")
    parser.add_argument("--calibration-rows", type=int, default=4000)
    parser.add_argument("--worker"), parser.add_argument("--input"), parser.add_argument("--out")
    args = parser.parse_args()
    if args.calibrate:
        embedders = [e for e in ("static", "minilm") if e in (args.only or ["static", "minilm"])]
        result = calibrate(args.calibration_rows, embedders)
        name = "dedup-calibration.json" if embedders else "dedup-calibration-minhash.json"  # --only synth: MinHash
        (Path(__file__).parent / "results" / name).write_text(json.dumps(result, indent=1) + "\n")
        return
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.input), Path(args.out), args.rows)))
        return
    only = set(args.only or ["synth", "rensa", "datasketch", "static", "minilm"])
    with tempfile.TemporaryDirectory() as tmp:
        corpus, semantic_corpus = Path(tmp) / "corpus.jsonl", Path(tmp) / "semantic.jsonl"
        truth = build(args.rows, corpus)  # the same generator: a longer corpus begins with this one
        total = max(args.semantic_rows, args.static_rows if "static" in only else 0)
        corpora: dict[str, tuple[Path, dict[str, str | None]]] = {}
        if only & {"static", "minilm"}:
            corpora["templates"] = semantic_corpus, build(total, semantic_corpus)
            docstrings = Path(tmp) / "docstrings.jsonl"
            corpora["docstrings"] = docstrings, build_docstrings(args.semantic_rows, docstrings)
        print(f"corpus: {args.rows} rows, 10% planted copies, jsonl; machine: {os.cpu_count()} cores")
        results: dict = {}
        pair = [m for m in ("synth", "rensa") if m in only]
        results.update(minhash_sides(pair, corpus, args.rows, truth, args.repeat))
        if "datasketch" in only:
            results.update(minhash_sides(["datasketch"], corpus, min(args.rows, args.datasketch_rows), truth))
        semantic = semantic_sides(corpora, args.semantic_rows, args.static_rows, only)
    print(f"{'minhash':<12}{'rows':>9}{'wall s':>9}{'rows/s':>10}{'precision':>11}{'recall':>8}{'F1':>8}{'peak MB':>9}")
    for name, r in results.items():
        rate = r["rows"] / r["seconds"]
        print(
            f"{name:<12}{r['rows']:>9}{r['seconds']:>9.2f}{rate:>10.0f}{r['precision']:>11.4f}{r['recall']:>8.4f}"
            f"{r['f1']:>8.4f}{r['peak_mb']:>9.0f}"
        )
    summary: dict = {"rows": args.rows, "cores": os.cpu_count(), "minhash": results, "semantic": semantic}
    if "synth" in results and "rensa" in results:
        s, b = results["synth"], results["rensa"]
        speed, memory = b["seconds"] / s["seconds"], s["peak_mb"] / b["peak_mb"]
        by_turn = s["speed_vs_rensa_by_turn"]
        middle = by_turn[len(by_turn) // 2]
        summary["synth_vs_rensa"] = {"speed": speed, "memory": memory, "speed_by_turn_median": middle}
        print(
            f"synth / rensa: {speed:.2f}x the speed (turn by turn: {', '.join(f'{x:.2f}' for x in by_turn)}), "
            f"{memory:.2f}x the memory"
        )
    for corpus_name, sides in semantic.items():
        for name, r in sides.items() if corpus_name != "static_large" else [("static", sides)]:
            if isinstance(r, dict):
                print(
                    f"semantic {corpus_name:<11}{name:<7}{r['rows']:>8} rows {r['seconds']:>8.2f} s "
                    f"{r['rows_per_second']:>8.0f} rows/s {r['pairs_found']:>6} pairs, peak {r['peak_mb']:.0f} MB, "
                    f"index {r['index']}; planted copies found {r.get('planted_found', float('nan')):.3f}, "
                    f"other rows dropped {r.get('unplanted_drops', '-')}"
                )
        if "static_recall_of_minilm_pairs" in sides:
            print(
                f"{corpus_name}: static recall of MiniLM's pairs {sides['static_recall_of_minilm_pairs']:.3f} "
                f"(of its dropped rows {sides['static_recall_of_minilm_drops']:.3f}); "
                f"rows only static drops: {sides['static_extra_drops']}"
            )
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    if only & {"synth", "rensa", "datasketch"}:
        name = "dedup.json" if args.rows <= 100_000 else f"dedup-{args.rows}.json"
    else:
        name = f"dedup-semantic-{max(args.semantic_rows, args.static_rows)}.json"
    (results_dir / name).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
