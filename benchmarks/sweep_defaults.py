"""The sweep behind each embedded model's sampling defaults (filters/models/*.toml).

One variant per process (they run side by side), each one setting changed from today's defaults:

    today     instruction cap 256, temperature 1.0; answers temperature 0.7, top-p 1, min-p 0; no penalty
    rt0.4     answers at temperature 0.4
    minp0.1   answers with min-p 0.1
    topp0.9   answers with top-p 0.9
    rp1.1     repeat penalty 1.1 on instructions and answers

A variant does what Magpie does, with the same prompts, stops and per-row seeds: K instructions from
the pre-query template (kept: ended by the model, not empty, not a repeat), then answers to the kept
ones (kept: ended by the model, not cut off or looping), and records every generation's tokens and
finish reason. Variants that leave instructions alone write the same instructions as `today` (same
seeds), so only `today` and `rp1.1` are judged (the quality rubric, SmolLM2-135M-Instruct as judge)
and checked for uniqueness (MinHash). The instruction cap is swept without generating again: an
instruction that ended within C tokens is the same at cap C; one that did not costs C tokens.

From those counts, per kept row: tokens = (instruction tokens per attempt + answer tokens per
answered instruction x instruction yield) / (instruction yield x answer yield). Tokens per kept
row stand for seconds per kept row: on a machine shared by other jobs wall seconds swing, while a
token's cost hardly depends on these settings (wall seconds per token are recorded beside it).

    nice -n 10 env PYTHONPATH=$PWD python benchmarks/sweep_defaults.py smollm2 today --k 12
    nice -n 10 env PYTHONPATH=$PWD python benchmarks/sweep_defaults.py --report   # the table

Writes benchmarks/results/sweep-defaults/MODEL-VARIANT.json; --report writes sweep-defaults.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
FOLDER = RESULTS / "sweep-defaults"
TODAY = {"i_cap": 256, "i_temp": 1.0, "r_cap": 512, "r_temp": 0.7, "top_p": 1.0, "min_p": 0.0, "rp": 1.0}
VARIANTS = {
    "today": {},
    "rt0.4": {"r_temp": 0.4},
    "minp0.1": {"min_p": 0.1},
    "topp0.9": {"top_p": 0.9},
    "rp1.1": {"rp": 1.1},
}
CAPS = (256, 128, 96)


def load(model: str, threads: int) -> Any:
    from synth.backends import load_backend
    from synth.backends.llamacpp import base_model_path

    return load_backend(None if model == "smollm2" else base_model_path(), n_threads=threads, n_ctx=2048)


def generate(llm: Any, prompts: list[Any], params: Any, first_id: int) -> list[dict[str, Any]]:
    """Each prompt with Magpie's per-row seed (`_seeded`, one row per call)."""
    from synth.core import from_rows
    from synth.stages.magpie import _seeded

    out = []
    for i, prompt in enumerate(prompts):
        seeded = _seeded(params, from_rows([{"id": f"a{first_id + i}"}]))
        started = time.monotonic()
        (c,) = llm.generate([prompt], seeded)
        out.append(
            {
                "text": c.text.strip(),
                "finish": c.finish_reason,
                "tokens": c.completion_tokens,
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    return out


def run_variant(model: str, name: str, k: int, seed: int, threads: int) -> dict[str, Any]:
    from synth.backends import Sampling
    from synth.stages.magpie import _failure, instruction_key

    v = {**TODAY, **VARIANTS[name]}
    llm = load(model, threads)
    stops = (*llm.template.instruction_stop, *(() if getattr(llm, "chat_tuned", True) else ("\n\n",)))
    asks = Sampling(max_tokens=v["i_cap"], temperature=v["i_temp"], repeat_penalty=v["rp"], seed=seed, stop=stops)
    instructions = generate(llm, [llm.template.pre_query(None)] * k, asks, 0)
    seen: set[int] = set()
    for row in instructions:
        reason = _failure(row["text"], row["finish"])
        if reason is None:
            key = instruction_key(row["text"])
            reason = "duplicate" if key in seen else None
            seen.add(key)
        row["dropped"] = reason
    answers = Sampling(
        max_tokens=v["r_cap"], temperature=v["r_temp"], top_p=v["top_p"], min_p=v["min_p"], repeat_penalty=v["rp"]
    )
    answers = dataclasses.replace(answers, seed=seed)
    kept = [(i, r) for i, r in enumerate(instructions) if r["dropped"] is None]
    for i, row in kept:
        (row["answer"],) = generate(llm, [[{"role": "user", "content": row["text"]}]], answers, i)
    return {"model": model, "variant": name, "settings": v, "k": k, "seed": seed, "instructions": instructions}


def judge(texts: list[str], threads: int) -> list[str]:
    """The quality rubric's status per instruction (`ok`: the verdict parsed), SmolLM2 as judge."""
    import tempfile

    import pyarrow.parquet as pq

    from synth import recipes
    from synth.backends import load_backend
    from synth.core import from_rows
    from synth.io import write

    work = Path(tempfile.mkdtemp(prefix="sweep-judge-"))
    write([from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])], work / "in")
    recipes.judge([load_backend(None, n_threads=threads)], work / "in", out=work / "out", rubrics=("quality",))
    rows = pq.read_table(work / "out" / "data").to_pylist()
    return [f"{r['quality_status']}:{r.get('input_quality')}" for r in rows]


def figures(result: dict[str, Any], cap: int, judged: dict[str, Any] | None) -> dict[str, Any]:
    """Tokens per kept row at instruction cap `cap` (<= the cap generated at), from the recorded rows."""
    rows = result["instructions"]
    i_tokens = sum(min(r["tokens"], cap) for r in rows)
    kept_i = [r for r in rows if r["dropped"] is None and r["tokens"] <= cap]
    answered = [r for r in kept_i if "answer" in r]
    r_tokens = sum(r["answer"]["tokens"] for r in answered)
    finishes = Counter(r["answer"]["finish"] for r in answered)
    kept = sum(1 for r in answered if r["answer"]["finish"] == "stop" and r["answer"]["text"])
    tokens = i_tokens + r_tokens
    seconds = sum(r["seconds"] for r in rows) + sum(r["answer"]["seconds"] for r in answered)
    out = {
        "variant": result["variant"],
        "instruction_cap": cap,
        "attempts": len(rows),
        "instructions_kept": len(kept_i),
        "kept": kept,
        "yield": round(kept / len(rows), 3),
        "answer_finishes": dict(finishes),
        "tokens_per_kept": round(tokens / kept) if kept else None,
        "seconds_per_token": round(seconds / tokens, 3) if tokens else None,
    }
    if judged is not None:
        texts = {r["text"] for r in kept_i}
        statuses = [s for t, s in judged.items() if t in texts]
        ok = sum(s.startswith("ok:") for s in statuses)
        out["judge_ok_share"] = round(ok / len(statuses), 3) if statuses else None
        out["unique_minhash"] = unique([r["text"] for r in kept_i])
    return out


def unique(texts: list[str]) -> float | None:
    from synth.core import from_rows, pipe
    from synth.stages import dedup_minhash

    if not texts:
        return None
    batch = from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])
    return round(sum(b.num_rows for b in pipe([batch], dedup_minhash("instruction"))) / len(texts), 3)


def report() -> str:
    lines = []
    for path in sorted(FOLDER.glob("*.json")):
        result = json.loads(path.read_text())
        rows = result["instructions"]
        kept = [r for r in rows if r["dropped"] is None]
        judged = dict(zip([r["text"] for r in kept], result["judge"])) if "judge" in result else None
        if judged is None:  # same instructions as `today`: its verdicts hold
            today = FOLDER / f"{result['model']}-today.json"
            if today.exists():
                base = json.loads(today.read_text())
                base_kept = [r for r in base["instructions"] if r["dropped"] is None]
                judged = dict(zip([r["text"] for r in base_kept], base.get("judge", [])))
        for cap in CAPS:
            f = figures(result, cap, judged)
            lines.append(
                f"| {result['model']} | {f['variant']} | {cap} | {f['kept']}/{f['attempts']} | {f['yield']} "
                f"| {f['tokens_per_kept']} | {f['answer_finishes']} | {f.get('judge_ok_share')} "
                f"| {f.get('unique_minhash')} | {f['seconds_per_token']} |"
            )
    head = "| model | variant | instr. cap | kept/attempts | yield | tokens/kept | answers' finish | judge ok | unique "
    head += "| s/token |"
    return "\n".join([head, "|" + "---|" * 10, *lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", choices=["smollm2", "gemma3-base"])
    parser.add_argument("variant", nargs="?", choices=list(VARIANTS))
    parser.add_argument("--k", type=int, default=12, help="instructions tried")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="one: on a shared machine a second mostly waits")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        table = report()
        (RESULTS / "sweep-defaults.md").write_text(table)
        print(table)
        return
    FOLDER.mkdir(parents=True, exist_ok=True)
    path = FOLDER / f"{args.model}-{args.variant}.json"
    result = run_variant(args.model, args.variant, args.k, args.seed, args.threads)
    path.write_text(json.dumps(result, indent=1) + "\n")
    if args.variant in ("today", "rp1.1"):  # the others write today's instructions
        result["judge"] = judge([r["text"] for r in result["instructions"] if r["dropped"] is None], args.threads)
        path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
