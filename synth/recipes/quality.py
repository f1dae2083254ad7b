"""Judges, filters, preference pairs and dedup."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth import report
from synth.backends import Backend, Sampling
from synth.card import stage_record
from synth.core import Batch, Stage, SynthError, pipe
from synth.io import Sink, read, read_provenance, write
from synth.recipes._runner import (
    RunSettings,
    _constants,
    _describe,
    _plain,
    _repeat,
    _require,
    _resumable,
    _run,
    read_window,
)
from synth.stages.dedup import ExactDedup, MinHashDedup, SemanticDedup
from synth.stages.filters import Filter, heuristic_rules, load_heuristics
from synth.stages.filters import where as where_rule
from synth.stages.judge import Judge, PreferencePairs, load_rubric, overall_status, shipped_scales
from synth.stages.magpie import Respond
from synth.stages.pairwise import PairUp, PairwiseJudge, PairwisePreferences, consistency


def dedup(
    source: str | Path,
    *,
    out: str | Path,
    method: str = "minhash",
    column: str = "instruction",
    threshold: float | None = None,
    rejects: str | Path | None = None,
    batch_size: int = 8192,
    run: RunSettings = RunSettings(),
    **options: Any,
) -> dict[str, Any]:
    """Copy `source` to `out` without duplicates by `column`; dropped rows go to `rejects` if given.

    `options` go to the method's stage: `ignore_punctuation`; `ngram`, `num_perm`; `embedder`, `model`.
    A resumed run reads the input again from the start, because the stage must see every row
    kept before to judge the next; it writes only the kept (and rejected) rows past those the
    output already holds. The method is deterministic, so those are the rows the stopped run
    would have written next, wherever it stopped: none lost, none twice.
    """
    from synth.io import arrow_without_pandas, jemalloc_for_arrow
    from synth.recipes._runner import Interrupted, _skip, with_diversity

    jemalloc_for_arrow()  # this process only reads, judges and writes: keep what it frees small
    arrow_without_pandas()
    stage = dedup_stage(method, column, threshold, **options)
    if isinstance(stage, (MinHashDedup, SemanticDedup)):  # this resume reads the input again: it may read ahead
        stage = dataclasses.replace(stage, read_ahead=True)
    if rejects is not None and Path(rejects).resolve() == Path(out).resolve():
        raise SynthError("--rejects must be a different directory from --out")
    # batch_size is a setting: MinHash judges its shingle size on the first batch.
    settings = {"source": str(source), "stage": stage_record(stage), "batch_size": batch_size}
    batches = read(source, batch_size)
    first = next(batches, None)  # a wrong --column fails before any output directory is made
    if first is not None and column not in first.column_names:
        names = ", ".join(first.column_names)
        raise SynthError(f"column {column!r} is not in {source} (it has: {names}); pass one of these to --column")
    if first is None:  # nothing to read: still write the columns, so the output is an empty dataset
        first = pa.table({"id": pa.array([], pa.string()), column: pa.array([], pa.string())})
    batches = itertools.chain([first], batches)
    output = run.open(out, settings, inputs=(source,))
    sink = None
    if rejects:
        side = run.open(rejects, settings, inputs=(source,))
        sink = Sink(side, {"command": run.command})
        written = [side.rows]  # rejected rows the stopped run already wrote

        def set_aside(batch: pa.Table) -> None:
            skip = min(written[0], batch.num_rows)
            written[0] -= skip
            if batch.num_rows > skip:
                sink(batch.slice(skip))

        stage = dataclasses.replace(stage, rejects=set_aside)

    def card() -> dict[str, Any]:
        dropped = {method: stage.stats["dropped"]}  # rows each method dropped: one method a run here
        counts = dict(stage.stats)
        return {"command": run.command, **settings, "counts": counts, "dropped": dropped, "notes": stage.notes}

    started = time.monotonic()
    try:
        with sink or contextlib.nullcontext():
            kept = pipe(batches, report.progress(None, desc="dedup"), stage)
            write(_skip(kept, output.rows), output, card=card)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {output.rows} rows are safe in {out}; run the same command with --resume to go on"
        ) from None
    with_diversity(output, card, run, column)
    seconds = time.monotonic() - started
    print(report.dedup_summary(stage.stats, stage.notes, out, rejects, seconds), file=sys.stderr)
    return {"counts": dict(stage.stats), "notes": dict(stage.notes), "seconds": seconds}


def dedup_stage(
    method: str, column: str = "instruction", threshold: float | None = None, **options: Any
) -> ExactDedup | MinHashDedup | SemanticDedup:
    """The dedup stage for `method`; `threshold` None takes the method's default."""
    kinds = {"exact": ExactDedup, "minhash": MinHashDedup, "semantic": SemanticDedup}
    if method not in kinds:
        raise SynthError(f"unknown dedup method {method!r}; use exact, minhash or semantic")
    if method == "exact" and threshold is not None:
        raise SynthError("--threshold does not apply to --method exact; use minhash or semantic for near-duplicates")
    given = {k: v for k, v in options.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(kinds[method])}
    if set(given) - fields:
        wrong = ", ".join("--" + k.replace("_", "-") for k in sorted(set(given) - fields))
        raise SynthError(f"{wrong} does not apply to --method {method}")
    return kinds[method](column, **({"threshold": threshold} if threshold is not None else {}), **given)


def judge(
    backends: Sequence[Backend],
    source: str | Path,
    *,
    out: str | Path,
    rubrics: Sequence[str | Path] = ("quality",),
    inputs: Mapping[str, str] | None = None,
    params: Sampling = Sampling(max_tokens=512, temperature=0.0),
    batch_size: int = 64,
    pairwise: bool = False,
    swap: bool = False,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Judge every row of `source` with each rubric; several backends make a jury. `pairwise`: one
    pairwise rubric compares `response_a` with `response_b`; `swap` asks again in the other order.
    Past `run.max_error_rate` failed requests (or with every request failed) the run stops."""
    if swap and not pairwise:
        raise SynthError("--swap judges a pair in both orders; it needs --pairwise")
    jurors = tuple(run.meter(b) for b in backends)
    loaded = [load_rubric(r) for r in rubrics]
    if pairwise and len(loaded) != 1:
        raise SynthError(f"--pairwise takes one pairwise rubric, not {len(loaded)}; pass --rubric pairwise")
    names = ", ".join(str(_describe(b)["model"]) for b in backends)
    settings: dict[str, Any] = {
        "judges": [_describe(b) for b in backends],
        "input": str(source),
        "rubrics": [r.name for r in loaded],
        "inputs": dict(inputs or {}),
        "judge_sampling": _plain(params),
        "scales": {k: v for r in loaded for k, v in r.column_scales.items()},
    }
    if pairwise:
        settings.update(pairwise=True, swap=swap)  # only then: earlier runs' settings stay as they were
        judges: list[Any] = [PairwiseJudge(jurors, loaded[0], params, dict(inputs or {}), swap)]
    else:
        judges = [Judge(jurors, r, params, dict(inputs or {})) for r in loaded]
    first, batches = _peek(source, batch_size)
    if first is not None:  # a missing input column fails before any output directory is made
        for stage in judges:
            if isinstance(stage, Judge):
                stage._prompts(first.slice(0, 0))
            else:
                stage.check(first)
    output = run.open(out, settings, inputs=(source,))
    stages: list[Stage] = [*judges, overall_status([r.name for r in loaded]), _constants({"judge_model": names})]

    def notes(counts: dict[str, int]) -> dict[str, Any]:
        figures = consistency(counts, loaded[0].name) if pairwise else {}
        if len(jurors) > 1 and not pairwise and output.complete:  # read back once, from every row written
            from synth.calibrate import jury_figures

            files = [output.path / "data" / shard["file"] for shard in output.shards]
            figures["jury_agreement"] = jury_figures(files, loaded)
        return figures

    return _run(_resumable(batches, output), stages, output, settings, run, meters=jurors, notes=notes)


def judge_columns(rubrics: Sequence[str | Path], inputs: Mapping[str, str]) -> tuple[str, ...]:
    """The input columns the rubrics read, named through `inputs` (slot -> column)."""
    slots = dict.fromkeys(slot for r in rubrics for slot in load_rubric(r).reads)
    return tuple(inputs.get(slot, slot) for slot in slots)


def filter_rows(
    source: str | Path,
    *,
    out: str | Path,
    where: Sequence[str] = (),
    heuristics: str | Path = "default",
    rejects: str | Path | None = None,
    instruction: str = "instruction",
    response: str = "response",
    batch_size: int = 1000,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Keep the rows of `source` that pass the heuristics and every `where` condition."""
    scales = {**shipped_scales(), **_input_scales(source)}
    rules = heuristic_rules(load_heuristics(heuristics), instruction, response)
    rules += [where_rule(expr, scales) for expr in where]
    settings = {
        "input": str(source),
        "heuristics": str(heuristics),
        "where": list(where),
        "columns": {"instruction": instruction, "response": response},
        "scales": scales,
    }
    first, batches = _peek(source, batch_size)
    if first is not None:  # a --where on a missing column, or of the wrong kind, fails before any output is made
        _check_filter_input(first, source, instruction, response, heuristics != "none" and not where)
        for expr in where:
            where_rule(expr, scales).drops(first)
    output = run.open(out, settings, inputs=(source,))
    with contextlib.ExitStack() as stack:
        side = None
        if rejects:
            rows = "dropped by synth filter; `rejected_by` names the rule"
            side = stack.enter_context(run.sink(rejects, settings, rows, inputs=(source,)))
        stages: list[Stage] = [Filter(tuple(rules), side)]
        return _run(_resumable(batches, output), stages, output, settings, run)


def _check_filter_input(first: Batch, source: str | Path, instruction: str, response: str, needed: bool) -> None:
    """The heuristics read the instruction and response columns where they exist: present, they must be
    text; both absent with no --where, no rule would apply and every row would pass unread."""
    present = [c for c in (instruction, response) if c in first.column_names]
    for name in present:
        kind = first.schema.field(name).type
        if not (pa.types.is_null(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise SynthError(f"column {name!r} of {source} holds {kind}, not text; name a text column with --column")
    if needed and not present:
        raise SynthError(
            f"{source} has neither {instruction!r} nor {response!r} (it has {', '.join(first.column_names)}), "
            "so no heuristic would apply; name them with --column and --response-column, or filter with --where"
        )


def prefs(
    backend: Backend,
    judges: Sequence[Backend],
    source: str | Path,
    *,
    out: str | Path,
    k: int = 4,
    rubric: str | Path = "response",
    column: str = "instruction",
    params: Sampling = Sampling(max_tokens=1024, temperature=1.0),
    judge_params: Sampling = Sampling(max_tokens=512, temperature=0.0),
    batch_size: int = 16,
    pairwise: bool = False,
    swap: bool = False,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Best-of-k: answer each instruction k times, judge the answers, keep the best and worst as a pair.
    `pairwise`: answer twice and ask a pairwise rubric which answer is better (`swap`: in both orders)."""
    if k < 2:
        raise SynthError(f"--k is {k}; a preference pair needs at least 2 responses per instruction")
    if swap and not pairwise:
        raise SynthError("--swap judges a pair in both orders; it needs --pairwise")
    if pairwise and k != 2:
        raise SynthError(f"--pairwise compares two responses per instruction; pass --k 2, not {k}")
    scorer = load_rubric(rubric)
    if not pairwise and (not scorer.score or "response" not in scorer.reads):
        raise SynthError(f"rubric {scorer.name!r} does not score a response; use one that reads it, e.g. response")
    llm = run.meter(backend)
    jurors = tuple(run.meter(j) for j in judges)
    settings = {
        **_describe(backend),
        "judges": [_describe(j) for j in judges],
        "input": str(source),
        "column": column,
        "k": k,
        "rubric": scorer.name,
        "response_sampling": _plain(params),
        "judge_sampling": _plain(judge_params),
    }
    if pairwise:
        settings.update(pairwise=True, swap=swap)
        ranking: list[Stage] = [
            PairUp(column),
            PairwiseJudge(jurors, scorer, judge_params, {"instruction": column}, swap),
            PairwisePreferences(column),
        ]
    else:
        score_field = next(f for f, c in scorer.columns.items() if c == scorer.score)
        ranking = [
            Judge(jurors, scorer, judge_params, {"instruction": column}),
            # scorer.score is not None: a rubric without one was refused above when not pairwise
            PreferencePairs(scorer.score, scorer.scales.get(score_field, ()), column),  # type: ignore[arg-type]
        ]
    first, batches = _peek(source, max(batch_size, read_window(batch_size, backend) // k))
    if first is not None:  # a wrong --column fails before any output directory is made
        next(_require(column)([first]))
    output = run.open(out, settings, inputs=(source,))
    models = {"model": settings["model"], "judge_model": ", ".join(str(j["model"]) for j in settings["judges"])}
    stages: list[Stage] = [_require(column), _repeat(k), Respond(llm, params, column), *ranking, _constants(models)]

    def notes(counts: dict[str, int]) -> dict[str, Any]:
        return consistency(counts, scorer.name) if pairwise else {}

    return _run(_resumable(batches, output), stages, output, settings, run, meters=(llm, *jurors), notes=notes)


def _peek(source: str | Path, batch_size: int) -> tuple[Batch | None, Iterator[Batch]]:
    """The first batch of `source` (None if it has none), and all of its batches, that one included:
    a recipe checks its columns before it claims the output directory, so a typo needs no --overwrite."""
    batches = read(source, batch_size)
    first = next(batches, None)
    return first, (itertools.chain([first], batches) if first is not None else iter(()))


def _input_scales(source: str | Path) -> dict[str, list[str]]:
    # A judge's output records its rubrics' scales in its card; custom rubrics' scales come from there.
    try:
        return dict(read_provenance(source).get("scales") or {})
    except (OSError, ValueError, KeyError):
        return {}
