"""Adaptive concurrency, rate limits and faults against the real llama-cpp-python server, in one run.

(a) Throughput of `--concurrency auto` against each fixed concurrency 1..16, then against the
best of them taking turns (goal: auto >= 0.9x the best fixed). (b) Against a proxy admitting R
requests a second and answering 429 (with Retry-After) beyond it, R half the best fixed rate
(goal: >= 0.9 R achieved, zero failed rows).
(c) Each fault scenario of tests/backends/test_resilience.py, wall time against the fault-free run
through the same proxy. The server serves the embedded SmolLM2-135M-Instruct with `--threads`
threads; the prompts are questions about the first lines of the standard library's docstrings.
Results are printed and written to benchmarks/results/resilience.json. From the repository root:

    PYTHONPATH=$PWD python benchmarks/resilience.py [--rows 64] [--max-tokens 16] [--threads 1] [--turns 3]
"""

from __future__ import annotations

import argparse
import json
import pkgutil
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.backends import Sampling, load_backend  # noqa: E402
from tests.backends.fault_proxy import PASS, FaultProxy, ServerProcess  # noqa: E402
from tests.backends.test_resilience import Burst, every  # noqa: E402


def prompts(n: int) -> list[list[dict[str, str]]]:
    """Questions on real text: the first line of standard-library modules' docstrings."""
    import importlib

    lines: list[str] = []
    for module in sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")):
        if len(lines) >= n:
            break
        try:
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()
        except Exception:  # noqa: BLE001 - a module that will not import here says nothing
            continue
        if doc and len(doc[0]) > 20:
            lines.append(doc[0])
    lines = (lines * (n // max(len(lines), 1) + 1))[:n]
    return [[{"role": "user", "content": f"Explain in one sentence: {line}"}] for line in lines]


def run(url: str, asks: list[Any], params: Sampling, concurrency: Any, window: int = 64, **options: Any) -> dict:
    """The prompts through the OpenAI-compatible backend in windows of `window`, as `synth respond` sends them."""
    llm = load_backend(None, base_url=f"{url}/v1", concurrency=concurrency, **options)
    start = time.perf_counter()
    out = []
    for i in range(0, len(asks), window):
        out += llm.generate(asks[i : i + window], params)
    seconds = time.perf_counter() - start
    llm.pool.close()
    failed = sum(c.finish_reason == "error" for c in out)
    record = llm.describe()["server_requests"]
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round((len(out) - failed) / seconds, 2),
        "tokens_per_s": round(sum(c.completion_tokens for c in out) / seconds, 1),
        "failed": failed,
        "retries": record.get("retries", 0),
        "settled_concurrency": record.get("settled_concurrency"),
    }


def throughput(url: str, asks: list[Any], params: Sampling, fixed: list[int], turns: int) -> dict:
    """A sweep of auto and each fixed value; then auto and the sweep's best fixed value taking
    turns, the median of the turn-by-turn ratios (a busy spell on the shared host falls on both)."""
    rows = {}
    for k in ["auto", *fixed]:
        rows[str(k)] = run(url, asks, params, k)
        print(f"  concurrency {k!s:>4}: {rows[str(k)]}", flush=True)
    best = max(fixed, key=lambda k: rows[str(k)]["tokens_per_s"])
    pairs = []
    for turn in range(turns):
        first, second = ("auto", best) if turn % 2 else (best, "auto")
        one, two = run(url, asks, params, first), run(url, asks, params, second)
        auto, other = (one, two) if first == "auto" else (two, one)
        pairs.append({"auto": auto, "fixed": other, "ratio": round(auto["tokens_per_s"] / other["tokens_per_s"], 3)})
        print(f"  turn {turn + 1}: auto {auto['tokens_per_s']} vs {best}: {other['tokens_per_s']} tok/s", flush=True)
    ratios = sorted(p["ratio"] for p in pairs)
    return {
        "sweep": rows,
        "best_fixed": best,
        "sweep_auto_vs_best": round(rows["auto"]["tokens_per_s"] / rows[str(best)]["tokens_per_s"], 3),
        "turns": pairs,
        "auto_vs_best": ratios[len(ratios) // 2] if ratios else None,
        "goal": "auto >= 0.9x best fixed (median of turns)",
    }


def rate_limited(url: str, asks: list[Any], params: Sampling, rate: float) -> dict:
    with FaultProxy(url, rate=rate) as proxy:
        result = run(proxy.url, asks, params, "auto")
        refused = sum(e.status == 429 for e in proxy.generations())
    achieved = result["rows_per_s"]
    return {
        "R": round(rate, 2),
        **result,
        "refused_429": refused,
        "achieved_vs_R": round(achieved / rate, 3),
        "goal": ">= 0.9 R, no failed rows",
    }


def faults(server: ServerProcess, asks: list[Any], params: Sampling) -> dict:
    def kill_restart(proxy: FaultProxy) -> None:
        proxy.down()
        server.kill()
        time.sleep(3)
        server.start()
        proxy.up()

    scenarios: dict[str, Any] = {
        "fault-free": lambda n, p, b: PASS,
        "resets": lambda n, p, b: ("reset",) if n % 8 == 2 else ("reset_after",) if n % 8 == 6 else PASS,
        "429 every third, Retry-After 1": every(3, ("status", 429, 1.0), first=1),
        "503 burst, 3 s": Burst(4, 3.0, 503),
        "slow answers (1 in 4 +1 s)": every(4, ("slow", 1.0)),
        "truncated bodies (1 in 8)": every(8, ("truncate",)),
        "killed, back after 3 s": None,
    }
    out = {}
    for name, script in scenarios.items():
        proxy = FaultProxy(server.url, script)
        killer = threading.Thread(target=kill_restart, args=(proxy,))
        if script is None:  # the server killed a third of the way in
            proxy.script = lambda n, p, b, k=killer: (k.start(), PASS)[1] if n == len(asks) // 3 else PASS
        with proxy:
            out[name] = run(proxy.url, asks, params, "auto")
            if killer.ident is not None:
                killer.join()
        out[name]["vs_fault_free"] = round(out[name]["seconds"] / out["fault-free"]["seconds"], 2)
        print(f"  {name}: {out[name]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="prompts per measurement")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="the server's threads (the client and proxy: the rest)")
    parser.add_argument("--fixed", default="1-16", help="fixed concurrencies to compare, e.g. 1-16 or 1,2,4,8,16")
    parser.add_argument("--turns", type=int, default=3, help="auto and the best fixed value, taking turns")
    parser.add_argument("--parts", default="abc", help="which parts to run; the others' results are kept")
    parser.add_argument("--rate", type=float, help="R for (b), when (a) is not run")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "resilience.json")
    args = parser.parse_args()
    if "-" in args.fixed:
        low, high = map(int, args.fixed.split("-"))
        fixed = list(range(low, high + 1))
    else:
        fixed = [int(k) for k in args.fixed.split(",")]
    asks, params = prompts(args.rows), Sampling(max_tokens=args.max_tokens, temperature=0.0)
    result = json.loads(args.json.read_text()) if args.json.exists() and args.parts != "abc" else {}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess("openai", Path(tmp) / "server.log", threads=args.threads).start()
        try:
            run(server.url, asks[:8], params, 2)  # warm: the model's first requests are slower
            if "a" in args.parts:
                print("(a) throughput, auto against fixed", flush=True)
                result["throughput"] = throughput(server.url, asks, params, fixed, args.turns)
            if "b" in args.parts:
                a = result["throughput"]
                rate = args.rate or round(0.5 * a["sweep"][str(a["best_fixed"])]["rows_per_s"], 2)
                print(f"(b) a proxy admitting R = {rate} requests/s, 429 beyond", flush=True)
                result["rate_limited"] = rate_limited(server.url, asks, params, rate)
                print(f"  {result['rate_limited']}")
            if "c" in args.parts:
                print("(c) faults, wall time against the fault-free run", flush=True)
                result["faults"] = faults(server, asks, params)
        finally:
            server.kill()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(rows=args.rows, max_tokens=args.max_tokens, server_threads=args.threads)
    result[f"client_peak_rss_mb_{args.parts}"] = round(peak, 1)
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
