"""Peak memory of `synth magpie` as --n grows, against a collect-then-write baseline, in one run.

Both sides talk to `fast_server.py` (answers at once, so the figures are synth's own): synth
streams rows to parquet shards; the baseline does what many scripts do, keeping every row in
a list and writing once at the end. Peak RSS of each child process comes from `os.wait4`.

    python benchmarks/memory.py --sizes 10000 100000 300000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent

BASELINE = """
import sys, pyarrow as pa, pyarrow.parquet as pq
from synth.backends import Sampling, load_backend
n, url, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
llm = load_backend("fast", "openai", base_url=url, template="llama3", concurrency=8)
rows = []
while len(rows) < n:
    qs = llm.generate([llm.template.pre_query()] * 256, Sampling(max_tokens=64, seed=len(rows)))
    asks = [[{"role": "user", "content": q.text}] for q in qs]
    ans = llm.generate(asks, Sampling(max_tokens=64, seed=len(rows)))
    for q, a, m in zip(qs, ans, asks):
        rows.append({"id": str(len(rows)), "instruction": q.text, "response": a.text,
                     "messages": [*m, {"role": "assistant", "content": a.text}]})
pq.write_table(pa.Table.from_pylist(rows[:n]), out + ".parquet")
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """Run a child; return (peak RSS in MiB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {' '.join(argv)}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-max", type=int, default=None, help="run the baseline only up to this n")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "memory.json")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(HERE / "fast_server.py"), "--port", "8799"], stdout=subprocess.PIPE)
    server.stdout.readline()
    url = "http://127.0.0.1:8799/v1"
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.sizes:
                synth = [
                    sys.executable,
                    "-m",
                    "synth",
                    "magpie",
                    "--backend",
                    "openai",
                    "--base-url",
                    url,
                    "--model",
                    "fast",
                    "--template",
                    "llama3",
                    "--n",
                    str(n),
                    "--out",
                    f"{tmp}/s{n}",
                    "--concurrency",
                    "8",
                    "--seed",
                    "1",
                ]
                peak, secs = measure(synth)
                row = {"n": n, "synth_peak_mib": round(peak, 1), "synth_seconds": round(secs, 1)}
                if not args.no_baseline and (args.baseline_max is None or n <= args.baseline_max):
                    peak_b, secs_b = measure([sys.executable, "-c", BASELINE, str(n), url, f"{tmp}/b{n}"])
                    row.update(baseline_peak_mib=round(peak_b, 1), baseline_seconds=round(secs_b, 1))
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.terminate()
    first, last = results[0], results[-1]
    growth = last["synth_peak_mib"] / first["synth_peak_mib"] - 1
    print(f"synth peak memory growth from n={first['n']} to n={last['n']}: {growth:+.1%}")
    compared = [r for r in results if "baseline_peak_mib" in r]
    if compared:
        top = compared[-1]
        print(
            f"baseline growth from n={first['n']} to n={top['n']}: "
            f"{top['baseline_peak_mib'] / compared[0]['baseline_peak_mib'] - 1:+.1%}; "
            f"synth / baseline peak at n={top['n']}: {top['synth_peak_mib'] / top['baseline_peak_mib']:.2f}"
        )
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps({"runs": results, "synth_growth": growth}, indent=1))


if __name__ == "__main__":
    main()
