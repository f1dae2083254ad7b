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

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
LOAD = [round(v, 2) for v in os.getloadavg()]

from synth import recipes  # noqa: E402 - after the sys.path fix above
from synth.backends import Sampling, load_backend  # noqa: E402 - after the sys.path fix above
from synth.backends.defaults import for_backend  # noqa: E402 - after the sys.path fix above
from synth.core import StoppedShort  # noqa: E402 - after the sys.path fix above
from synth.recipes.diversity import DIVERSE  # noqa: E402 - after the sys.path fix above
from synth.stages import diversity as div  # noqa: E402 - after the sys.path fix above

METHODS = {
    "plain": {},
    "gate": {"novelty": DIVERSE["novelty"]},
    "spread": {"spread": DIVERSE["spread"]},
    "diverse": dict(DIVERSE),
}


def run(method: str, llm: object, args: argparse.Namespace, root: Path) -> dict:
    """One Magpie run with the method's settings; its kept instructions and what it cost."""
    out = root / method
    # The settings `synth magpie` runs with: the model family's file over synth's generic defaults.
    family = for_backend(llm)
    instruction = family.sampling("instruction", Sampling(max_tokens=256, temperature=1.0, seed=args.seed))
    response = None
    if args.response_max_tokens:
        generic = Sampling(args.response_max_tokens, 0.7, seed=args.seed)
        response = family.sampling("response", generic, {"max_tokens": args.response_max_tokens})
    started = time.perf_counter()
    try:
        result = recipes.magpie(
            llm,
            n=args.n,
            out=out,
            instruction=instruction,
            response=response,
            max_attempts=args.max_attempts,
            **METHODS[method],
        )
    except StoppedShort as short:
        result = getattr(short, "result", {"counts": {}})
    seconds = time.perf_counter() - started
    texts = pq.read_table(out / "data")["instruction"].to_pylist()
    judged = judge(out, llm, root / f"{method}-judged") if texts and args.judge else {}  # it reads the instruction
    return {"texts": texts, "seconds": seconds, "counts": result.get("counts", {}), **judged}


def judge(data: Path, llm: object, out: Path) -> dict:
    """The quality rubric on the kept rows (the same model judges every method): the share of rows
    whose verdict parsed (`ok`, as benchmarks/quality.py counts it) and the share rated good or
    excellent among those."""
    recipes.judge([llm], data, out=out, params=Sampling(max_tokens=256, temperature=0.0, seed=1))
    rows = pq.read_table(out / "data", columns=["quality_status", "input_quality"]).to_pylist()
    ok = [r for r in rows if r["quality_status"] == "ok"]
    good = sum(str(r["input_quality"]).lower() in ("good", "excellent") for r in ok)
    return {"judge_ok_share": round(len(ok) / len(rows), 3), "judge_good_share": round(good / max(len(ok), 1), 3)}


def _realtext():  # type: ignore[no-untyped-def]
    """benchmarks/realtext.py, loaded by path (this folder is kept off sys.path: its kernels.py
    would shadow the `kernels` package that transformers looks for)."""
    spec = importlib.util.spec_from_file_location("realtext", Path(__file__).with_name("realtext.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["realtext"] = module
    spec.loader.exec_module(module)
    return module


def real_rows(rows: int) -> tuple[list[str], int]:
    """`rows` rows of real text: stdlib docstring, dpkg description and man page sentences,
    interleaved, repeated past the pool with the repeat's number so that no two rows are equal."""
    realtext = _realtext()
    parts = [realtext.docstring_sentences(), realtext.dpkg_sentences(), realtext.man_sentences()]
    pool = [t for trio in itertools.zip_longest(*parts) for t in trio if t]
    return [pool[i % len(pool)] + (f" ({i // len(pool)})" if i >= len(pool) else "") for i in range(rows)], len(pool)


def scale(rows: int, out: str) -> None:
    """`synth diversity` on `rows` rows of real text (see `real_rows`), with the static embedder,
    as the command runs it (reading a jsonl file, sampling, embedding, the figures and intervals),
    against embedding every row (the least a tool that does not sample spends); seconds per step
    and peak memory (resident set: this process and its children)."""
    texts, pool = real_rows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        with path.open("w") as f:
            f.writelines(json.dumps({"instruction": t}) + "\n" for t in texts)
        del texts
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "synth", "diversity", str(path), "--out", str(Path(tmp) / "report")],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        ours = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(done.stderr)
        figures = json.loads((Path(tmp) / "report" / "diversity.json").read_text())
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_peak, child_cpu = round(child.ru_maxrss / 1024), child.ru_utime + child.ru_stime
        started = time.perf_counter()
        every, _ = recipes.diversity.sampled_texts(path, "instruction", rows)
        model = div.load_embedder()
        for i in range(0, len(every), 10_000):
            model.encode(every[i : i + 10_000])
        all_rows = time.perf_counter() - started
    print(done.stdout)
    result = {
        "rows": rows,
        "distinct_texts_in_pool": pool,
        "sample": figures["sample"],
        "embedder": figures["embedder"],
        "synth_diversity_seconds": round(ours, 1),
        "synth_diversity_cpu_seconds": round(child_cpu, 1),
        "synth_diversity_peak_rss_mb": child_peak,
        "embedding_every_row_seconds": round(all_rows, 1),
        "ratio_to_embedding_every_row": round(ours / all_rows, 2),
        "vendi": round(figures["vendi"], 2),
        "vendi_interval": [round(v, 2) for v in figures["vendi_interval"]],
        "cpus": os.cpu_count(),
        "load_average_at_start": LOAD,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")


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
    parser.add_argument("--no-judge", dest="judge", action="store_false", help="Skip the judge (slow on a busy CPU).")
    parser.add_argument("--scale", type=int, default=0, help="Time `synth diversity` on this many rows instead.")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores; 1 on a busy machine).")
    parser.add_argument("--keep", type=Path, help="Keep each dataset in this folder (default: temporary).")
    args = parser.parse_args()
    if args.scale:
        return scale(args.scale, args.out.replace("diversity.json", "diversity-scale.json"))
    llm = load_backend(args.model, n_threads=args.threads)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            done = run(method, llm, args, args.keep or Path(tmp))
            kept = len(done["texts"])
            scored = div.measure(done["texts"], args.scorer, k=10, seed=args.seed) if kept > 1 else {}
            figures[method] = {
                "kept": kept,
                "attempts": done["counts"].get("attempts"),
                "dropped_similar": done["counts"].get("dropped_similar", 0),
                "seconds": round(done["seconds"], 1),
                "seconds_per_kept_row": round(done["seconds"] / max(kept, 1), 2),
                "judge_ok_share": done.get("judge_ok_share"),
                "judge_good_share": done.get("judge_good_share"),
                **{k: scored.get(k) for k in ("vendi", "vendi_per_row", "nn_similarity", "distinct_2")},
                "entropy_normalised": scored.get("entropy_normalised"),
            }
            print(method, json.dumps(figures[method]), file=sys.stderr, flush=True)
    base = figures.get("plain", {})
    for row in figures.values():
        for key in ("vendi_per_row", "distinct_2", "seconds_per_kept_row", "judge_ok_share"):
            if base.get(key) and row.get(key) is not None:
                row[f"{key}_vs_plain"] = round(row[key] / base[key], 2)
    report = {
        "n": args.n,
        "seed": args.seed,
        "model": getattr(llm, "model", None),
        "scorer": args.scorer,
        "response_max_tokens": args.response_max_tokens,
        "sampling_defaults": for_backend(llm).record("instruction"),  # the family file the runs took
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "methods": figures,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("method   kept  Vendi/row  (x plain)  NN sim  distinct-2 (x plain)  judge ok  s/kept row (x plain)")
    for method, r in figures.items():
        print(
            f"{method:8} {r['kept']:4}  {r['vendi_per_row'] or 0:.3f}  ({r.get('vendi_per_row_vs_plain', '-')})"
            f"  {r['nn_similarity'] or 0:.3f}  {r['distinct_2'] or 0:.3f} ({r.get('distinct_2_vs_plain', '-')})"
            f"  {r['judge_ok_share']}  {r['seconds_per_kept_row']} ({r.get('seconds_per_kept_row_vs_plain', '-')})"
        )


if __name__ == "__main__":
    main()
