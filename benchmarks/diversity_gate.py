"""Choosing `--diverse`'s novelty distance without a generation per setting: the gate is online and
changes nothing upstream of it (each attempt's seed follows its position, the same instructions
come out whatever the gate drops), so a run with more attempts than needed, replayed through
`NoveltyGate(distance)` in its order, gives exactly the rows the gated run would keep. Each
distance's first `--n` survivors are scored with an embedder other than the one that steers.

    python benchmarks/diversity.py --n 600 --methods plain,spread --no-judge --keep /tmp/div
    python benchmarks/diversity_gate.py /tmp/div/plain /tmp/div/spread --n 200

Per folder and distance: attempts the gate needs for n rows (of the rows Magpie kept), Vendi per
row, nearest-neighbour similarity and distinct-2 of the first n kept, against no gate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from synth.core import from_rows, pipe  # noqa: E402 - after the sys.path fix above
from synth.stages import diversity as div  # noqa: E402 - after the sys.path fix above


def replay(texts: list[str], distance: float | None, batch: int = 32) -> list[str]:
    """The rows `NoveltyGate(distance)` keeps from `texts`, fed in batches in their order."""
    if distance is None:
        return texts
    rows = [{"id": f"{i:06d}", "instruction": t} for i, t in enumerate(texts)]
    batches = [from_rows(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    return [t for b in pipe(batches, div.NoveltyGate(distance)) for t in b["instruction"].to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="Magpie outputs (their data/ read in id order).")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--distances", default="none,0.15,0.2,0.25,0.3,0.35,0.4")
    parser.add_argument("--scorer", default="minilm")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "diversity-gate.json")
    args = parser.parse_args()
    report = {}
    for folder in args.folders:
        table = pq.read_table(folder / "data").sort_by("id")
        texts = table["instruction"].to_pylist()
        rows = {}
        for d in args.distances.split(","):
            distance = None if d == "none" else float(d)
            kept = replay(texts, distance)
            first = kept[: args.n]
            used = texts.index(first[-1]) + 1 if len(first) == args.n else None
            scored = div.measure(first, args.scorer, k=10, seed=1)
            rows[d] = {
                "kept_of_magpie_rows": f"{len(kept)}/{len(texts)}",
                "magpie_rows_for_n": used,
                "vendi_per_row": round(scored["vendi_per_row"], 4),
                "nn_similarity": round(scored["nn_similarity"], 4),
                "distinct_2": round(scored["distinct_2"], 4),
                "scored_rows": len(first),
            }
            print(folder.name, d, json.dumps(rows[d]), flush=True)
        report[folder.name] = rows
    args.out.write_text(json.dumps({"n": args.n, "scorer": args.scorer, "folders": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
