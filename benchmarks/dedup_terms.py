"""MinHash dedup with and without its numbers-and-names check, in one process, taking turns.

    python benchmarks/dedup_terms.py [--rows 54209] [--repeat 5]

The same corpora as `benchmarks/dedup.py` (its template instructions with 10% planted copies, and
the standard library's docstring sentences planted the same way), read once into 8,192-row batches
as `synth dedup` reads them; each turn runs the stage with `check_terms` off, then on, so that a busy
spell on a shared host falls on both. Reports each side's median rows/s over the stage alone, the
ratio turn by turn, the rows dropped, and the peak of Python allocations (tracemalloc) per side.
`check_terms=False` is the stage as it was before the check.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

spec = importlib.util.spec_from_file_location("dedup_bench", Path(__file__).with_name("dedup.py"))
bench = importlib.util.module_from_spec(spec)
sys.modules["dedup_bench"] = bench
spec.loader.exec_module(bench)


def batches(texts: list[str], size: int = 8192) -> list:
    from synth.core import from_rows

    rows = [{"id": f"r{i}", "instruction": t} for i, t in enumerate(texts)]
    return [from_rows(rows[s : s + size]) for s in range(0, len(rows), size)]


def once(data: list, check: bool) -> tuple[float, int]:
    from synth.stages import dedup_minhash

    stage = dedup_minhash(check_terms=check)
    started = time.perf_counter()
    kept = sum(b.num_rows for b in stage(iter(data)))
    return time.perf_counter() - started, sum(b.num_rows for b in data) - kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=54_209)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import json

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "c.jsonl"
        bench.build(args.rows, corpus)
        templates = [json.loads(line)["instruction"] for line in corpus.open(encoding="utf-8")]
        bench.build_docstrings(min(args.rows, 12_000), corpus)
        docstrings = [json.loads(line)["instruction"] for line in corpus.open(encoding="utf-8")]
    for name, texts in (("templates", templates), ("docstrings", docstrings)):
        data = batches(texts)
        once(data, True)  # warm-up: imports, caches
        times: dict[bool, list[float]] = {False: [], True: []}
        drops: dict[bool, int] = {}
        for _ in range(args.repeat):
            for check in (False, True):
                seconds, drops[check] = once(data, check)
                times[check].append(seconds)
        peak = {}
        for check in (False, True):
            tracemalloc.start()
            once(data, check)
            peak[check] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        rate = {c: len(texts) / statistics.median(t) for c, t in times.items()}
        turns = sorted(a / b for a, b in zip(times[False], times[True]))
        print(
            f"{name}: {len(texts)} rows; off {rate[False]:,.0f} rows/s, on {rate[True]:,.0f} rows/s "
            f"({rate[True] / rate[False]:.2f}x; turn by turn {', '.join(f'{x:.2f}' for x in turns)}); "
            f"dropped off {drops[False]}, on {drops[True]}; peak Python allocations off {peak[False]:.0f} MB, "
            f"on {peak[True]:.0f} MB"
        )


if __name__ == "__main__":
    main()
