"""What the card's diversity block costs a run: the same run of ROWS rows of real text written
with `--no-diversity` (the baseline) and with it (the default), each in a fresh process, and the
measure alone on the written output, cold (`synth.recipes.diversity.card_diversity`: the column
read, a uniform sample of 10,000, the static embedder, the figures and their intervals).

    python benchmarks/card_diversity.py --rows 100000

Rows: an `instruction` (a real sentence: stdlib docstrings, dpkg descriptions, man pages) and a
`response` (the next four sentences), so the output has the size of a Magpie run's. Per step: wall
seconds, CPU seconds and peak resident memory of its process; the ratios to the baseline. Written
to benchmarks/results/card-diversity.json. Needs the static embedder built once (`synth diversity`).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def real_rows(rows: int) -> list[dict[str, str]]:
    """`rows` Magpie-shaped rows of real text, numbered past the pool so no two are equal."""
    spec = importlib.util.spec_from_file_location("realtext", Path(__file__).with_name("realtext.py"))
    realtext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realtext)
    parts = [realtext.docstring_sentences(), realtext.dpkg_sentences(), realtext.man_sentences()]
    pool = [t for trio in itertools.zip_longest(*parts) for t in trio if t]
    out = []
    for i in range(rows):
        tag = f" ({i // len(pool)})" if i >= len(pool) else ""
        response = " ".join(pool[(i + j) % len(pool)] for j in range(1, 5))
        out.append({"id": f"r{i:07d}", "instruction": pool[i % len(pool)] + tag, "response": response})
    return out


def child(step: str, rows: int, folder: Path) -> dict:
    """One step in this (fresh) process: `off` and `on` write the rows; `measure` reads `off`'s output."""
    from synth import recipes
    from synth.core import from_rows
    from synth.io import read_provenance
    from synth.recipes.diversity import card_diversity

    batches = None
    if step in {"off", "on"}:
        made = real_rows(rows)
        batches = [from_rows(made[i : i + 1000]) for i in range(0, rows, 1000)]
        del made
    started, cpu = time.perf_counter(), time.process_time()
    if batches is not None:
        run = recipes.RunSettings(diversity=step == "on", command="benchmark")
        recipes.pipeline(iter(batches), out=folder / step, run=run)
        block = read_provenance(folder / step)["diversity"]
    else:
        block = card_diversity(sorted((folder / "off" / "data").glob("*.parquet")))
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "sample": block.get("sample"),
        "vendi": block.get("vendi"),
        "absent": block.get("absent"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--child", choices=["off", "on", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.folder)))
        return
    load = [round(v, 2) for v in os.getloadavg()]
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step in ("off", "on", "measure"):
            command = [sys.executable, __file__, "--rows", str(args.rows), "--child", step, "--folder", tmp]
            done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
            if done.returncode:
                raise SystemExit(done.stderr)
            steps[step] = json.loads(done.stdout.strip().splitlines()[-1])
            print(step, steps[step], file=sys.stderr)
    off, on = steps["off"], steps["on"]
    result = {
        "rows": args.rows,
        "baseline_no_diversity": off,
        "with_diversity": on,
        "measure_alone_cold": steps["measure"],
        "added_seconds": round(on["seconds"] - off["seconds"], 2),
        "added_cpu_seconds": round(on["cpu_seconds"] - off["cpu_seconds"], 2),
        "ratio_seconds": round(on["seconds"] / off["seconds"], 2),
        "ratio_cpu_seconds": round(on["cpu_seconds"] / off["cpu_seconds"], 2),
        "ratio_peak_rss": round(on["peak_rss_mb"] / off["peak_rss_mb"], 2),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    target = ROOT / "benchmarks" / "results" / "card-diversity.json"
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
