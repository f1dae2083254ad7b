"""Does steering spread Magpie out? Plain Magpie, the novelty gate alone, spreading alone and
`--diverse` (gate + spread), one run each on the same model and seed, scored with an embedder
other than the one that steers (MiniLM, when the static embedder steers), so no method grades itself.

    python benchmarks/diversity.py --n 200 --seed 1                 # the issue's setting
    python benchmarks/diversity.py --n 20 --response-max-tokens 64  # what fits a busy 2-core machine
    python benchmarks/diversity.py --scale 100000   # `synth diversity` on 100,000 rows, static embedder

Per method: kept rows, attempts, Vendi score and Vendi per row, mean nearest-neighbour similarity,
distinct-2, cluster entropy, seconds per kept row, and the ratios to plain Magpie; peak memory of the
process. Written to benchmarks/results/diversity.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from synth import recipes
from synth.backends import Sampling, load_backend
from synth.core import StoppedShort
from synth.recipes.diversity import DIVERSE
from synth.stages import diversity as div

METHODS = {
    "plain": {},
    "gate": {"novelty": DIVERSE["novelty"]},
    "spread": {"spread": DIVERSE["spread"]},
    "diverse": dict(DIVERSE),
}


def run(method: str, llm: object, args: argparse.Namespace, root: Path) -> dict:
    """One Magpie run with the method's settings; its kept instructions and what it cost."""
    out = root / method
    response = None if args.response_max_tokens == 0 else Sampling(args.response_max_tokens, 0.7, seed=args.seed)
    started = time.perf_counter()
    try:
        result = recipes.magpie(
            llm,
            n=args.n,
            out=out,
            instruction=Sampling(max_tokens=128, temperature=1.0, seed=args.seed),
            response=response,
            max_attempts=args.max_attempts,
            **METHODS[method],
        )
    except StoppedShort as short:
        result = getattr(short, "result", {"counts": {}})
    seconds = time.perf_counter() - started
    texts = pq.read_table(out / "data")["instruction"].to_pylist()
    return {"texts": texts, "seconds": seconds, "counts": result.get("counts", {})}


def scale(rows: int) -> None:
    """`synth diversity` on `rows` rows of real text (stdlib docstring lines, each with its row
    number so no two are equal), against embedding every row (the least a tool that does not
    sample spends), with the static embedder; seconds and peak memory."""
    import pydoc

    lines = []
    for name in sorted(sys.stdlib_module_names)[:200]:
        try:
            module = __import__(name)
        except Exception:  # noqa: BLE001 - a module that cannot import here gives no text
            continue
        for attr in dir(module):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str) and len(doc.split()) > 4:
                lines.append(" ".join(pydoc.getdoc(getattr(module, attr)).split()[:40]))
    lines = sorted(set(lines))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with path.open("w") as f:
            for i in range(rows):
                f.write(json.dumps({"instruction": f"{lines[i % len(lines)]} ({i})"}) + "\n")
        div.load_embedder().encode(["warm up"])
        started = time.perf_counter()
        figures = recipes.diversity.diversity(path)
        ours = time.perf_counter() - started
        started = time.perf_counter()
        texts, _ = recipes.diversity.sampled_texts(path, "instruction", rows)
        for i in range(0, len(texts), 10_000):
            div.load_embedder().encode(texts[i : i + 10_000])
        every = time.perf_counter() - started
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(div.table(figures))
    print(
        f"synth diversity on {rows} rows ({len(lines)} distinct lines): {ours:.1f} s (sample {figures['sample']}); "
        f"embedding every row: {every:.1f} s ({every / ours:.2f}x); peak memory {peak} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default=None, help="Default: the embedded SmolLM2-135M-Instruct.")
    parser.add_argument("--response-max-tokens", type=int, default=256, help="0: instructions only.")
    parser.add_argument("--max-attempts", type=int, default=None)
    parser.add_argument("--scorer", default="minilm", help="The embedder that scores (not the one that steers).")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "diversity.json"))
    parser.add_argument("--scale", type=int, default=0, help="Time `synth diversity` on this many rows instead.")
    args = parser.parse_args()
    if args.scale:
        return scale(args.scale)
    llm = load_backend(args.model)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            done = run(method, llm, args, Path(tmp))
            kept = len(done["texts"])
            scored = div.measure(done["texts"], args.scorer, k=10, seed=args.seed) if kept > 1 else {}
            figures[method] = {
                "kept": kept,
                "attempts": done["counts"].get("attempts"),
                "dropped_similar": done["counts"].get("dropped_similar", 0),
                "seconds": round(done["seconds"], 1),
                "seconds_per_kept_row": round(done["seconds"] / max(kept, 1), 2),
                **{k: scored.get(k) for k in ("vendi", "vendi_per_row", "nn_similarity", "distinct_2")},
                "entropy_normalised": scored.get("entropy_normalised"),
            }
            print(method, json.dumps(figures[method]), file=sys.stderr, flush=True)
    base = figures.get("plain", {})
    for row in figures.values():
        for key in ("vendi_per_row", "distinct_2", "seconds_per_kept_row"):
            if base.get(key) and row.get(key) is not None:
                row[f"{key}_vs_plain"] = round(row[key] / base[key], 2)
    report = {
        "n": args.n,
        "seed": args.seed,
        "model": getattr(llm, "model", None),
        "scorer": args.scorer,
        "response_max_tokens": args.response_max_tokens,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "methods": figures,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("method   kept  Vendi/row  (x plain)  NN sim  distinct-2 (x plain)  s/kept row (x plain)")
    for method, r in figures.items():
        print(
            f"{method:8} {r['kept']:4}  {r['vendi_per_row'] or 0:.3f}  ({r.get('vendi_per_row_vs_plain', '-')})"
            f"  {r['nn_similarity'] or 0:.3f}  {r['distinct_2'] or 0:.3f} ({r.get('distinct_2_vs_plain', '-')})"
            f"  {r['seconds_per_kept_row']} ({r.get('seconds_per_kept_row_vs_plain', '-')})"
        )


if __name__ == "__main__":
    main()
