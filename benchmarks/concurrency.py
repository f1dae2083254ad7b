"""Rows per second through the Ollama backend at concurrency 1, 2, 4, 8, 16, as a ratio to 1.

The server is the test suite's fake Ollama answering every request after a fixed delay and
serving any number at once, so the ratio shows what the client side can reach: the goal is at
least 0.8 x K up to K = 8. Results are printed and written to benchmarks/results/concurrency.json.
Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/concurrency.py [--delay 0.1] [--rows 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from synth.backends import Sampling
from synth.backends.ollama import OllamaBackend
from tests.backends.ollama_server import LLAMA3_TEMPLATE, Model, delayed_echo, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the server takes per request")
    parser.add_argument("--rows", type=int, default=128, help="prompts per measurement")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "concurrency.json")
    args = parser.parse_args()
    runs = []
    with serve({"bench:latest": Model(delayed_echo(args.delay), template=LLAMA3_TEMPLATE)}) as server:
        base = None
        print(f"server delay {args.delay * 1000:.0f} ms, {args.rows} rows per run")
        print(f"{'K':>3} {'rows/s':>8} {'speed-up':>9} {'goal 0.8K':>10}")
        for k in (1, 2, 4, 8, 16):
            llm = OllamaBackend("bench:latest", host=server.url, concurrency=k)
            prompts = [f"prompt {i}" for i in range(args.rows)]
            llm.generate(prompts[:k], Sampling(max_tokens=8))  # warm the pool and connections
            start = time.perf_counter()
            out = llm.generate(prompts, Sampling(max_tokens=8))
            rate = len(out) / (time.perf_counter() - start)
            base = base or rate
            goal = "ok" if rate / base >= 0.8 * k or k > 8 else "MISSED"
            print(f"{k:>3} {rate:>8.1f} {rate / base:>8.2f}x {goal:>10}")
            runs.append(
                {"concurrency": k, "rows_per_s": round(rate, 2), "speedup": round(rate / base, 3), "goal": goal}
            )
            llm.pool.close()
    args.json.parent.mkdir(exist_ok=True)
    result = {"delay_s": args.delay, "rows": args.rows, "runs": runs, "goal": "speed-up >= 0.8 x K up to K = 8"}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
