"""Seconds per kept row on both embedded models: today's defaults (reproduced by flags) against the
sampling defaults each model family's file gives (filters/models/*.toml), on `synth magpie`.

    nice -n 10 env PYTHONPATH=$PWD python benchmarks/kept_rows.py            # --n 50, as issue 32 asks
    nice -n 10 env PYTHONPATH=$PWD python benchmarks/kept_rows.py --n 12     # where 2 shared cores are slow

Each arm, in a child process:
    synth magpie --n N --seed 1 --out WORK/MODEL-ARM [--model GEMMA] [today's flags]
    synth judge WORK/MODEL-ARM --rubric quality --out WORK/MODEL-ARM-judged    (judge: SmolLM2-135M-Instruct)
Figures: wall and CPU seconds per kept row (the magpie command, model load included), yield (kept /
attempts), generated tokens per kept row (the card's generated_tokens: instructions and answers,
kept or dropped), the judge's `ok` share (its verdict parsed; as benchmarks/quality.py), the share it
rated average or better, and instruction uniqueness (kept instructions left after MinHash dedup).
An arm already measured in WORK with the same command is read back, not rerun (--fresh reruns).
Writes benchmarks/results/kept_rows.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# synth magpie's defaults before filters/models/: every setting a family file may change, as flags.
TODAY = [
    "--instruction-temperature", "1.0", "--instruction-max-tokens", "256", "--instruction-min-p", "0.0",
    "--response-temperature", "0.7", "--response-max-tokens", "512",
    "--response-top-p", "1.0", "--response-min-p", "0.0",
    "--repeat-penalty", "1.0", "--presence-penalty", "0.0", "--frequency-penalty", "0.0",
    "--no-loop-stop",  # the loop detector came with issue 32 too
]  # fmt: skip
GOALS = {"seconds_per_kept_ratio": 0.5, "yield": 0.8}


def models() -> dict[str, list[str]]:
    from synth.backends.llamacpp import base_model_path

    return {"smollm2": [], "gemma3-base": ["--model", str(base_model_path())]}


def child(argv: list[str]) -> dict[str, Any]:
    """Run `synth ARGV` in a child process: wall seconds, the child's CPU seconds, exit code."""
    cmd = [sys.executable, "-m", "synth", *argv, "--overwrite", "-q"]
    print("$", shlex.join(["synth", *argv]), file=sys.stderr, flush=True)
    started, before = time.monotonic(), os.times()
    # Every arm on the shipped weights (SYNTH_NO_CONVERT=1: no Q8_0 copy), so the arms differ in sampling alone.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SYNTH_NO_CONVERT": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, after = time.monotonic() - started, os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    last = (done.stderr.strip().splitlines() or [""])[-1]
    print(last, file=sys.stderr, flush=True)
    return {"rc": done.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "summary": last}


def card(path: Path) -> dict[str, Any]:
    text = (path / "README.md").read_text()
    return json.loads(text[text.index("```json") + 7 : text.rindex("```")])


def arm(work: Path, model: str, name: str, n: int, seed: int, fresh: bool, threads: int | None) -> dict[str, Any]:
    out, judged = work / f"{model}-{name}", work / f"{model}-{name}-judged"
    argv = ["magpie", "--n", str(n), "--seed", str(seed), "--out", str(out), *models()[model]]
    argv += TODAY if name == "today" else []
    each = ["--threads", str(threads)] if threads else []  # the judge's too
    argv += each
    saved = work / f"{model}-{name}.json"
    if saved.exists() and not fresh and _key(json.loads(saved.read_text())["command"]) == _key(shlex.join(argv)):
        return json.loads(saved.read_text())
    run = child(argv)
    info = card(out)
    judge = child(["judge", str(out), "--rubric", "quality", "--out", str(judged), *each])
    kept = _rows(out)
    attempts = _attempts(info)
    tokens = info["generated_tokens"]
    row = {
        "model": model,
        "arm": name,
        "command": shlex.join(["synth", *argv]),
        "rc": run["rc"],
        "kept": kept,
        "attempts": attempts,
        "yield": round(kept / attempts, 3) if attempts else None,
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "wall_s_per_kept": round(run["wall_s"] / kept, 2) if kept else None,
        "cpu_s_per_kept": round(run["cpu_s"] / kept, 2) if kept else None,
        "tokens": tokens,
        "tokens_per_kept": round(tokens / kept) if kept else None,
        "judge_rc": judge["rc"],
        "sampling": {"instruction": info.get("instruction_sampling"), "response": info.get("response_sampling")},
        "sampling_defaults": info.get("sampling_defaults"),
        **figures(out, judged),
    }
    saved.write_text(json.dumps(row, indent=1) + "\n")
    return row


def figures(magpie: Path, judged: Path) -> dict[str, Any]:
    """Judge `ok` share (the verdict parsed), the labels, and instruction uniqueness after MinHash."""
    import pyarrow.parquet as pq

    from synth.core import from_rows, pipe
    from synth.stages import dedup_minhash

    rows = pq.read_table(judged / "data").to_pylist()
    statuses = Counter(r["quality_status"] for r in rows)
    labels = Counter(r["input_quality"] for r in rows if r["quality_status"] == "ok")
    texts = [r["instruction"] for r in pq.read_table(magpie / "data").to_pylist()]
    batch = from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])
    unique = sum(b.num_rows for b in pipe([batch], dedup_minhash("instruction"))) if texts else 0
    good = sum(v for k, v in labels.items() if k in ("average", "good", "excellent"))
    return {
        "judge_ok_share": round(statuses["ok"] / len(rows), 3) if rows else None,
        "judged_average_or_better": round(good / len(rows), 3) if rows else None,
        "labels": dict(labels),
        "unique_minhash": round(unique / len(texts), 3) if texts else None,
    }


def _key(command: str) -> list[str]:
    """A command without `synth` and its --out folder: an arm measured in another --work still counts."""
    words = shlex.split(command)
    words = words[1:] if words[:1] == ["synth"] else words
    at = words.index("--out") if "--out" in words else len(words)
    return words[:at] + words[at + 2 :]


def _rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(out / "data").num_rows


def _attempts(info: dict[str, Any]) -> int:
    """Instructions tried: the Magpie stage's `attempts` counter in the card."""
    return max((c.get("attempts", 0) for c in info.get("counts", {}).values()), default=0)


def markdown(rows: list[dict[str, Any]], n: int) -> str:
    head = "| model | arm | kept/attempts | yield | wall s/kept | CPU s/kept | tokens/kept | judge ok | avg+ | unique |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['arm']} | {r['kept']}/{r['attempts']} | {r['yield']} | {r['wall_s_per_kept']} "
            f"| {r['cpu_s_per_kept']} | {r['tokens_per_kept']} | {r['judge_ok_share']} "
            f"| {r['judged_average_or_better']} | {r['unique_minhash']} |"
        )
    lines.append("")
    for model in dict.fromkeys(r["model"] for r in rows):
        today, new = (next((r for r in rows if r["model"] == model and r["arm"] == a), None) for a in ("today", "new"))
        if today and new and today["kept"] and new["kept"]:
            lines.append(
                f"- {model}: new/today wall s per kept row {new['wall_s_per_kept'] / today['wall_s_per_kept']:.2f}x, "
                f"CPU s {new['cpu_s_per_kept'] / today['cpu_s_per_kept']:.2f}x, "
                f"tokens {new['tokens_per_kept'] / today['tokens_per_kept']:.2f}x (goal <= 0.5x on smollm2); "
                f"yield {today['yield']} -> {new['yield']} (goal >= 0.8); "
                f"judge ok {today['judge_ok_share']} -> {new['judge_ok_share']} (goal: not lower)"
            )
    lines.append(f"\n`synth magpie --n {n} --seed 1`, judge SmolLM2-135M-Instruct with the quality rubric.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/synth-kept-rows"))
    parser.add_argument("--only", action="append", help="model-arm to run (e.g. smollm2-today); default all four")
    parser.add_argument("--fresh", action="store_true", help="rerun arms already measured in --work")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (1 on a busy machine)")
    parser.add_argument("--model", action="append", choices=["smollm2", "gemma3-base"], help="default: both")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.model or models():
        for name in ("today", "new"):
            if args.only and f"{model}-{name}" not in args.only:
                continue
            rows.append(arm(args.work, model, name, args.n, args.seed, args.fresh, args.threads))
    load = [round(v, 1) for v in os.getloadavg()]
    report = {"n": args.n, "seed": args.seed, "threads": args.threads, "load_at_end": load, "rows": rows}
    if args.model:  # a partial run names its models
        report["models"] = args.model
    if not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "kept_rows.json").write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / "kept_rows.md").write_text(markdown(rows, args.n))
    print(markdown(rows, args.n))


if __name__ == "__main__":
    main()
