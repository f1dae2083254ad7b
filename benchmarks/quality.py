"""What the default model's Magpie data is like: yield, stop rates, uniqueness, language, lengths,
judge verdicts and whole second exchanges, from real runs of the shipped commands.

    python benchmarks/quality.py                      # run the three commands, then report
    python benchmarks/quality.py --n 60 --turns-n 20  # smaller, where 2 shared cores are slow
    python benchmarks/quality.py --report-only        # report on runs already in --work

Runs (each timed, each under the default model unless --model is given):
    synth magpie --n N --seed 1 --out WORK/magpie
    synth judge WORK/magpie --rubric quality --out WORK/judged
    synth magpie --turns 2 --n TURNS_N --seed 1 --out WORK/turns

Writes benchmarks/results/quality.json and quality.md. Targets (issue 23) are listed beside
each figure; a figure short of its target is reported as it is.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TARGETS = {
    "yield": 0.8,
    "instruction_stop_rate": 0.95,
    "response_stop_rate": 0.85,
    "unique_exact": 0.95,
    "unique_minhash": 0.95,
    "judge_ok_share": 0.9,
    "two_whole_exchanges_share": 0.8,
}


def run(args: list[str], model: str | None) -> dict[str, Any]:
    """One synth command in a child process: its wall time, peak RSS and exit code."""
    argv = [sys.executable, "-m", "synth", *args, "--overwrite", "-q"]
    if model:
        argv += ["--model", model]
    print("$", shlex.join(["synth", *argv[3:]]), file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    tail = done.stderr.strip().splitlines()[-1:] or [""]
    print(tail[0], file=sys.stderr)
    if done.returncode:
        print(done.stderr, file=sys.stderr)
    return {
        "command": shlex.join(["synth", *args]),
        "seconds": round(seconds, 1),
        "rc": done.returncode,
        "peak_rss_mib_children": round(peak_kib / 1024),
        "summary": tail[0],
    }


def card(path: Path) -> dict[str, Any]:
    text = (path / "README.md").read_text()
    return json.loads(text[text.index("```json") + 7 : text.rindex("```")])


def rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path / "data").to_pylist()


def magpie_figures(path: Path) -> dict[str, Any]:
    from synth.card import counts_by_stage, drop_counts
    from synth.core import from_rows, pipe
    from synth.stages import dedup_minhash
    from synth.stages.magpie import instruction_key

    stages = counts_by_stage(card(path)["counts"])  # each stage's own counters
    magpie, respond = stages.get("Magpie", {}), stages.get("Respond", {})
    data = rows(path)
    attempts = magpie.get("attempts", 0)
    # An instruction ends on the end-of-turn token (stop) unless cut by the cap or failed.
    cut = magpie.get("dropped_truncated", 0) + magpie.get("dropped_error", 0)
    answered = {k.removeprefix("response_"): v for k, v in respond.items() if k.startswith("response_")}
    drops = drop_counts(stages)  # each reason summed over the stages that drop rows
    answers = sum(v for k, v in answered.items() if k in ("stop", "length"))
    instructions = [r["instruction"] for r in data]
    minhash = dedup_minhash("instruction")
    kept_minhash = sum(
        b.num_rows
        for b in pipe([from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(instructions)])], minhash)
    )
    return {
        "rows": len(data),
        "attempts": attempts,
        "yield": round(len(data) / attempts, 3) if attempts else None,
        "drops": {k.removeprefix("dropped_"): v for k, v in sorted(drops.items()) if k.startswith("dropped_")},
        "instruction_stop_rate": round(1 - cut / attempts, 3) if attempts else None,
        "response_stop_rate": round(answered.get("stop", 0) / answers, 3) if answers else None,
        "unique_exact": round(len({instruction_key(t) for t in instructions}) / len(data), 3) if data else None,
        "unique_minhash": round(kept_minhash / len(data), 3) if data else None,
        "english_share": round(english_share(instructions), 3) if data else None,
        "median_instruction_chars": statistics.median(len(t) for t in instructions) if data else None,
        "median_response_chars": statistics.median(len(r["response"]) for r in data) if data else None,
        "generated_tokens": card(path).get("generated_tokens"),
    }


def english_share(texts: list[str]) -> float:
    import py3langid

    return sum(py3langid.classify(t)[0] == "en" for t in texts) / len(texts)


def judge_figures(path: Path) -> dict[str, Any]:
    statuses = Counter(r["quality_status"] for r in rows(path))
    labels = Counter(r["input_quality"] for r in rows(path) if r["quality_status"] == "ok")
    total = sum(statuses.values())
    return {
        "judge_ok_share": round(statuses["ok"] / total, 3) if total else None,
        "statuses": dict(statuses),
        "labels": dict(labels),
    }


def turns_figures(path: Path) -> dict[str, Any]:
    from synth.card import counts_by_stage

    data = rows(path)
    counts = counts_by_stage(card(path)["counts"]).get("MultiTurn", {})
    whole = sum(r["turns"] == 2 for r in data)
    return {
        "turn_rows": len(data),
        "two_whole_exchanges_share": round(whole / len(data), 3) if data else None,
        "ended": {k: v for k, v in sorted(counts.items()) if k.startswith("ended_")},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Magpie quality on {report['model']}",
        "",
        f"{report['machine']}",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
    ]
    flat = {**report["magpie"], **report.get("judge", {}), **report.get("turns", {})}
    for key in [
        "rows",
        "attempts",
        "yield",
        "instruction_stop_rate",
        "response_stop_rate",
        "unique_exact",
        "unique_minhash",
        "english_share",
        "median_instruction_chars",
        "median_response_chars",
        "judge_ok_share",
        "two_whole_exchanges_share",
    ]:
        if key in flat:
            target = TARGETS.get(key)
            lines.append(f"| {key} | {flat[key]} | {'>= ' + str(target) if target else ''} |")
    lines += ["", f"Drops by reason: {report['magpie']['drops']}", ""]
    for step in report["runs"]:
        lines.append(f"- `{step['command']}`: {step['seconds']} s (rc {step['rc']}); {step['summary']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--turns-n", type=int, default=50)
    parser.add_argument("--model", default=None, help="Default: the embedded default model.")
    parser.add_argument("--work", type=Path, default=Path("data/bench-quality"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["judge", "turns"])
    args = parser.parse_args()
    magpie, judged, turns = args.work / "magpie", args.work / "judged", args.work / "turns"
    runs = []
    if not args.report_only:
        runs.append(run(["magpie", "--n", str(args.n), "--seed", "1", "--out", str(magpie)], args.model))
        if "judge" not in args.skip:
            runs.append(run(["judge", str(magpie), "--rubric", "quality", "--out", str(judged)], args.model))
        if "turns" not in args.skip:
            cmd = ["magpie", "--turns", "2", "--n", str(args.turns_n), "--seed", "1", "--out", str(turns)]
            runs.append(run(cmd, args.model))
    report: dict[str, Any] = {
        "model": card(magpie).get("model"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores (shared with other jobs)",
        "runs": runs,
        "magpie": magpie_figures(magpie),
    }
    if (judged / "README.md").exists():
        report["judge"] = judge_figures(judged)
    if (turns / "README.md").exists():
        report["turns"] = turns_figures(turns)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
