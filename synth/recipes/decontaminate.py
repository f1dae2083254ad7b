"""Decontamination: copy a dataset without the rows that hold evaluation benchmark items."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synth.backends import Backend
from synth.benchmarks import Benchmark, Fields, load_benchmark
from synth.core import SynthError
from synth.recipes._runner import RunSettings, _describe, _resumable, _run
from synth.stages.decontaminate import Decontaminate, embedder_key


def benchmarks(
    specs: Sequence[str | Benchmark], fields: Fields = Fields(), split: str | None = None
) -> tuple[Benchmark, ...]:
    """Load each `--against` benchmark (a name, NAME=PATH, a Hub id or a path; see synth.benchmarks)."""
    return tuple(s if isinstance(s, Benchmark) else load_benchmark(s, fields, split) for s in specs)


def decontaminate(
    source: str | Path,
    against: Sequence[str | Benchmark],
    *,
    out: str | Path,
    rejects: str | Path | None = None,
    columns: Sequence[str] = ("instruction", "response"),
    methods: Sequence[str] = ("ngram", "embedding"),
    judge: Backend | None = None,
    fields: Fields = Fields(),
    split: str | None = None,
    batch_size: int = 8192,
    run: RunSettings = RunSettings(),
    **options: Any,
) -> dict[str, Any]:
    """Keep the rows of `source` that hold no item of the `against` benchmarks; dropped rows go to
    `rejects` (if given) with `contaminated_by`. `options` go to the stage: `ngram`, `ngram_threshold`,
    `edit_ngram`, `edit_threshold`, `embedding_threshold`, `model`, `judge_floor`, `rubric`, `judge_params`.
    The judge is metered like every model call: past `run.max_error_rate` failed requests, or with none
    answered, the run stops short (exit 3) and the card counts the failures.

    The stage judges each row on its own, so a resumed run skips the rows the output already covers.
    """
    from synth.io import jemalloc_for_arrow
    from synth.recipes.quality import _peek

    jemalloc_for_arrow()  # this process only reads, checks and writes: keep what it frees small
    if "llm" not in methods and judge is not None:
        methods = (*methods, "llm")
    given = {k: v for k, v in options.items() if v is not None}
    meter = run.meter(judge) if judge is not None else None
    stage = Decontaminate(
        benchmarks(against, fields, split),
        tuple(columns),
        tuple(methods),
        judge=meter,
        max_error_rate=run.max_error_rate,
        **given,
    )
    if rejects is not None and Path(rejects).resolve() == Path(out).resolve():
        raise SynthError("--rejects must be a different directory from --out")
    settings = {
        "input": str(source),
        "stage": repr(stage),
        "benchmarks": [repr(b) for b in stage.benchmarks],
        "embedder": embedder_key(stage.model) if stage.embedding_threshold is not None else None,
        "thresholds": thresholds(stage),
        "judge": _describe(judge) if judge is not None else None,
        "judge_sampling": str(stage.judge_params) if judge is not None else None,
    }
    first, batches = _peek(source, batch_size)
    if first is not None:  # a wrong --column fails before any output directory is made
        stage._texts(first.slice(0, 1))
    output = run.open(out, settings)
    with contextlib.ExitStack() as stack:
        if rejects:
            rows = "dropped by synth decontaminate; see `contaminated_by`"
            side = stack.enter_context(run.sink(rejects, settings, rows))
            stage = dataclasses.replace(stage, rejects=side)
        meters = (meter,) if meter is not None else ()
        return _run(_resumable(batches, output), [stage], output, settings, run, meters=meters)


def thresholds(stage: Decontaminate) -> dict[str, Any]:
    """The settings each method of `stage` drops a row at, for the card."""
    chosen = {
        "ngram": {"ngram": stage.ngram, "threshold": stage.ngram_threshold},
        "edit": {"ngram": stage.edit_ngram, "threshold": stage.edit_threshold, "weighted": "idf"},
        "embedding": {"threshold": stage.embedding_threshold, "match_numbers": stage.match_numbers},
        "llm": {"judge_floor": stage.judge_floor, "max_error_rate": stage.max_error_rate},
    }
    return {m: chosen[m] for m in stage.methods}
