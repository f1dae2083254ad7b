"""Mutation check of the stages whose unit tests run in seconds (issue 36): a measurement, not CI.

mutmut 3 (`pip install mutmut`) in a copy of the checkout under a temporary folder, so that its
`mutants/` tree and cache never land in the repository. Each mutant runs only the fast unit tests
that cover the function it changes (mutmut's per-function test map), forked from a process that
imported everything once.

    nice -n 10 python benchmarks/mutation.py                 # copy, mutate, run every mutant, print the table
    nice -n 10 python benchmarks/mutation.py --again 'synth.stages.filters*'   # re-run some mutants
    python benchmarks/mutation.py --table                    # the table of the last run
    python benchmarks/mutation.py --survivors filters        # the surviving mutants' diffs, per module

`--work` (default /tmp/synth-mutation) keeps the copy between calls: `--again` refreshes the copy's
tests and sources (the mutants are made again where a source changed) and re-runs the mutants
named (globs); results are in benchmarks/results/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Module -> (the file mutated, the functions in scope or None for all, mutants sampled from it).
MODULES: dict[str, tuple[str, tuple[str, ...] | None, int]] = {
    "dedup/_exact": ("synth/stages/dedup/_exact.py", None, 60),
    "dedup/_minhash": ("synth/stages/dedup/_minhash.py", None, 100),
    "dedup/_shingles": ("synth/stages/dedup/_shingles.py", None, 60),
    "dedup/_index": ("synth/stages/dedup/_index.py", None, 80),
    "dedup/_stream": ("synth/stages/dedup/_stream.py", None, 50),
    "dedup/_readahead": ("synth/stages/dedup/_readahead.py", None, 40),
    "dedup/_semantic": ("synth/stages/dedup/_semantic.py", None, 60),
    "filters": ("synth/stages/filters.py", None, 80),
    "decontaminate": ("synth/stages/decontaminate.py", None, 60),
    "_ngrams": ("synth/stages/_ngrams.py", None, 50),
    "similarity": ("synth/stages/similarity.py", None, 80),
    # The judge's parsing and validation: rubrics read and checked, replies parsed, ballots combined.
    "judge (parsing)": (
        "synth/stages/judge.py",
        (
            "Rubric.parse",
            "Rubric._valid",
            "load_rubric",
            "rubric_from_dict",
            "shipped_scales",
            "_combine",
            "_json_object",
            "_closed",
            "_arrow_type",
        ),
        80,
    ),
}
TESTS = [
    "tests/stages/test_dedup.py",
    "tests/stages/test_dedup_minhash.py",
    "tests/stages/test_dedup_units.py",
    "tests/stages/test_filters.py",
    "tests/stages/test_filters_rules.py",
    "tests/test_decontaminate.py",
    "tests/stages/test_decontaminate_units.py",
    "tests/stages/test_judge.py",
    "tests/stages/test_judge_parsing.py",
    "tests/stages/test_similarity.py",
    "tests/stages/test_similarity_units.py",
    "tests/stages/test_decontaminate_fast.py",  # decontamination's embedding pass and LLM check, no model
    "tests/stages/test_ngrams_units.py",
    "tests/stages/test_dedup_vectors.py",  # semantic dedup and the vector index, with a fake embedder
    "tests/stages/test_dedup_shingles.py",
]
# Tests of many seconds each (a real embedder or GGUF model, a CLI run end to end): not per mutant.
SLOW = [
    "semantic",
    "test_all_methods_on_the_planted_pool",
    "judge_error_rate",
    "judge_that_fails",
    "judge_failures",
    "rejects_carry",
    "dead_judge",
    "llm_check",
    "embedder_without",
    "hub",
    "help_lists",
    "bad_input",
    "recipe",
    "cli",
]
COPY = ["synth", "tests", "benchmarks", "filters", "personas", "pipelines", "pyproject.toml", "README.md"]


def setup(work: Path, only: list[str] | None = None) -> None:
    """The checkout's sources and tests copied into `work`, with mutmut's config; with `only`,
    just those paths (say, the tests written since, and a source changed on purpose), so that
    the other modules' mutants stay as they were."""
    work.mkdir(parents=True, exist_ok=True)
    for name in COPY if only is None else only:
        src, dst = ROOT / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    tests = [t for t in TESTS if (work / t).exists()]
    deselect = " and ".join(f"not {k}" for k in SLOW)
    lines = ["[mutmut]", "source_paths=synth", "only_mutate="]
    lines += [f"    {path}" for path, _, _ in MODULES.values()]
    lines += ["pytest_add_cli_args_test_selection="] + [f"    {t}" for t in tests]
    lines += ["    -k", f"    {deselect}", "    -m", "    not slow"]
    lines += ["pytest_add_cli_args=", "    -p", "    no:cacheprovider", "    -q"]
    lines += ["also_copy=", "    benchmarks", "    filters", "    personas", "    pipelines"]
    # mutmut's CPU limit is (the tests' time + 1 s) x 2 x this, its wall limit half that. The
    # decontamination "timeouts" were no CPU limit: mutmut forks each mutant from a process that
    # had hashed n-grams on a thread pool, and the child waited on the pool's missing threads
    # (fixed in synth/stages/_ngrams.py, which now re-makes its pool after a fork).
    lines += ["timeout_multiplier=30.0", "use_git_change_detection=false"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")


def results(work: Path) -> dict[str, dict[str, int | None]]:
    """Per module: every mutant in scope and its exit code (None: not run), from mutmut's files."""
    out: dict[str, dict[str, int | None]] = {}
    for module, (path, scope, _) in MODULES.items():
        meta = work / "mutants" / (path + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        out[module] = {name: code for name, code in codes.items() if scope is None or function(name) in scope}
    return out


def function(mutant: str) -> str:
    """The function a mutant changes: "_json_object", "Rubric.parse"."""
    name = re.sub(r"__mutmut_\d+$", "", mutant).rsplit(".", 1)[-1]
    return name[2:] if name.startswith("x_") else name[1:].strip("\u01c1").replace("\u01c1", ".")


def sample(work: Path) -> dict[str, list[str]]:
    """Per module, the mutants measured: a fixed random sample (seed 0) of those in scope."""
    return {
        module: sorted(random.Random(0).sample(sorted(codes), min(MODULES[module][2], len(codes))))
        for module, codes in results(work).items()
    }


STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 36: "timeout", None: "not run"}


def table(work: Path) -> str:
    codes = results(work)
    lines = [
        "| module | killed | sampled | of | score | survived | no tests | timeout |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for module, names in sample(work).items():
        c = Counter(
            STATUS.get(codes[module][n], "timeout" if codes[module][n] in (-24, 24, 152, 255) else "other")
            for n in names
        )
        killed = c["killed"]  # a timeout is not counted as a kill: see timeout_multiplier
        score = f"{killed / len(names):.0%}" if names else "-"
        lines.append(
            f"| {module} | {killed} | {len(names)} | {len(codes[module])} | {score} | {c['survived']} | "
            f"{c['no tests']} | {c['timeout']} |" + (f" {c['not run']} not run" if c["not run"] else "")
        )
    return "\n".join(lines)


def survivors(work: Path, module: str) -> list[str]:
    codes = results(work)[module]
    return [n for n in sample(work)[module] if codes[n] in (0, 33, 5)]


def mutmut(work: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "synth-mutation")
    ap.add_argument(
        "--refresh", nargs="*", help="copy only these paths of the checkout again (none: keep the copy; default: all)"
    )
    ap.add_argument("--again", action="store_true", help="re-run the sampled mutants that survived")
    ap.add_argument("--table", action="store_true", help="print the table of the last run")
    ap.add_argument("--survivors", metavar="MODULE", help="print the diffs of a module's surviving sampled mutants")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--modules", nargs="*", help="run only these modules' sampled mutants (names as in the table)")
    args = ap.parse_args()
    if args.survivors:
        for name in survivors(args.work, args.survivors):
            print(
                subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", name], cwd=args.work, capture_output=True, text=True
                ).stdout
            )
        return
    if not args.table:
        setup(args.work, args.refresh)
        if not any(results(args.work).values()):  # mutants not made yet: make them (running one)
            mutmut(args.work, "run", "--max-children", "1", "synth.stages.dedup._stream.x_check_threshold__mutmut_1")
        stats = args.work / "mutants" / "mutmut-stats.json"
        if args.refresh and stats.exists():
            stats.unlink()  # new tests: map which tests cover which function again
        codes = results(args.work)
        todo = [
            n
            for module, names in sample(args.work).items()
            if not args.modules or module in args.modules
            for n in names
            if codes[module][n] is None or (args.again and codes[module][n] in (0, 33, 5, 36, -24, 24, 152, 255))
        ]
        for start in range(0, len(todo), 400):  # mutmut takes the names as arguments
            mutmut(args.work, "run", "--max-children", str(args.max_children), *todo[start : start + 400])
    print(table(args.work))


if __name__ == "__main__":
    main()
