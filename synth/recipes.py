"""Short compositions of stages that the CLI calls; each is readable as a recipe."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth import report
from synth.backends import Backend, Metered, Sampling, template_of
from synth.core import Batch, Stage, SynthError, counter_source, pipe, take
from synth.io import Output, Sink, open_output, read, read_provenance, write
from synth.resources import data_file, read_choice
from synth.stages.filters import Filter, heuristic_rules, load_heuristics
from synth.stages.filters import where as where_rule
from synth.stages.judge import Judge, PreferencePairs, load_rubric, overall_status, shipped_scales
from synth.stages.magpie import Magpie, MultiTurn, Respond, instruction_key


class Interrupted(SynthError):
    """Ctrl-C: the rows in hand were written; the message says how to go on."""

    exit_code = 130


@dataclasses.dataclass
class Cursor:
    """Wraps a source and counts the rows it has handed out (the resume checkpoint)."""

    source: Iterable[Batch]
    position: int = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.source:
            self.position += batch.num_rows
            yield batch


def steering(task: str | None = None, system_prompt: str | None = None, language: str | None = None) -> str | None:
    """The system prompt for `--task`, `--system-prompt` and `--language`, from the shipped files."""
    parts = [read_choice("pipelines/tasks", task, "task")] if task else []
    parts += [system_prompt] if system_prompt else []
    if language:
        names = json.loads(data_file("pipelines/languages.json").read_text())
        template = data_file("pipelines/language.txt").read_text().strip()
        parts.append(template.format(language=names.get(language.lower(), language)))
    return "\n\n".join(parts) or None


def magpie(
    backend: Backend,
    *,
    n: int,
    out: str | Path,
    system_prompt: str | None = None,
    task: str | None = None,
    language: str | None = None,
    instruction: Sampling = Sampling(max_tokens=256, temperature=1.0),
    response: Sampling | None = Sampling(max_tokens=512, temperature=0.7),
    response_backend: Backend | None = None,
    turns: int = 1,
    exact_turns: bool = False,
    batch_size: int = 64,
    max_attempts: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Sample `n` kept Magpie conversations (instructions only if `response` is None) into `out`.

    `max_attempts` caps the instructions tried (resumed runs included), for a budget or a model
    that rarely yields a clean instruction.
    """
    llm, answerer = Metered(backend), Metered(response_backend or backend)
    if not getattr(backend, "chat_tuned", True) and "\n\n" not in instruction.stop:
        # A base model (the embedded default) never writes an end-of-turn token: end the
        # instruction at its first paragraph instead of dropping nearly all as truncated.
        instruction = instruction.with_stop("\n\n")
    system = steering(task, system_prompt, language)
    settings = {
        **_describe(backend),
        "system_prompt": system,
        "task": task,
        "language": language,
        "instruction_sampling": _plain(instruction),
        "response_sampling": _plain(response),
        "response_model": _describe(response_backend) if response_backend else None,
        "turns": turns,
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    start = output.checkpoint.get("attempts", 0)
    attempts = counter_source(batch_size, start=start)
    source = Cursor(take(max_attempts - start)(attempts) if max_attempts else attempts)
    tmpl = template_of(backend)
    gen = Magpie(llm, tmpl, instruction, seen=_seen_instructions(out) if output.rows else set())
    steer = {"system_prompt": system, "task": task, "language": language}
    stages: list[Stage] = [_constants({k: v for k, v in steer.items() if v}), gen]
    if response:
        stages.append(Respond(answerer, response))
    if response and turns > 1:
        stages.append(MultiTurn(llm, answerer, tmpl, turns, instruction, response, exact_turns))
    stages += [_constants({"model": settings["model"]}), take(n - output.rows)]
    return _run(source, stages, output, settings, command, n, meters=(llm, answerer), progress_stats=gen.stats)


def respond(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    column: str = "instruction",
    messages_column: str | None = None,
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7),
    n_responses: int = 1,
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Answer the last user turn of every row of `source`, keeping all its columns."""
    llm = Metered(backend)
    settings = {
        **_describe(backend),
        "input": str(source),
        "column": column,
        "messages_column": messages_column,
        "response_sampling": _plain(params),
        "n_responses": n_responses,
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    rows = _resumable(source, batch_size, output)
    stages: list[Stage] = [
        _require(messages_column or column),
        _repeat(n_responses),
        Respond(llm, params, column, messages_column),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, command, None, meters=(llm,))


def judge(
    backends: Sequence[Backend],
    source: str | Path,
    *,
    out: str | Path,
    rubrics: Sequence[str | Path] = ("quality",),
    inputs: Mapping[str, str] | None = None,
    params: Sampling = Sampling(max_tokens=512, temperature=0.0),
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Judge every row of `source` with each rubric; several backends make a jury."""
    jurors = tuple(Metered(b) for b in backends)
    loaded = [load_rubric(r) for r in rubrics]
    names = ", ".join(str(_describe(b)["model"]) for b in backends)
    settings = {
        "judges": [_describe(b) for b in backends],
        "input": str(source),
        "rubrics": [r.name for r in loaded],
        "inputs": dict(inputs or {}),
        "judge_sampling": _plain(params),
        "scales": {k: v for r in loaded for k, v in r.column_scales.items()},
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    stages: list[Stage] = [Judge(jurors, r, params, dict(inputs or {})) for r in loaded]
    stages += [overall_status([r.name for r in loaded]), _constants({"judge_model": names})]
    return _run(_resumable(source, batch_size, output), stages, output, settings, command, None, meters=jurors)


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
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
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
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    side = None
    if rejects:
        card = {"command": command, **settings, "rows": "dropped by synth filter; `rejected_by` names the rule"}
        side = Sink(open_output(rejects, settings, overwrite=overwrite, resume=resume), card)
    stages: list[Stage] = [Filter(tuple(rules), side.add if side else None)]
    try:
        return _run(_resumable(source, batch_size, output), stages, output, settings, command, None, meters=())
    finally:
        if side:
            side.close(complete=output.complete)


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
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Best-of-k: answer each instruction k times, judge the answers, keep the best and worst as a pair."""
    if k < 2:
        raise SynthError(f"--k is {k}; a preference pair needs at least 2 responses per instruction")
    scorer = load_rubric(rubric)
    if not scorer.score or "response" not in scorer.reads:
        raise SynthError(f"rubric {scorer.name!r} does not score a response; use one that reads it, e.g. response")
    llm, jurors = Metered(backend), tuple(Metered(j) for j in judges)
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
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    score_field = next(f for f, c in scorer.columns.items() if c == scorer.score)
    stages: list[Stage] = [
        _require(column),
        _repeat(k),
        Respond(llm, params, column),
        Judge(jurors, scorer, judge_params, {"instruction": column}),
        PreferencePairs(scorer.score, scorer.scales.get(score_field, ()), column),
        _constants({"model": settings["model"], "judge_model": ", ".join(str(j["model"]) for j in settings["judges"])}),
    ]
    return _run(_resumable(source, batch_size, output), stages, output, settings, command, None, meters=(llm, *jurors))


def _run(
    source: Cursor,
    stages: list[Stage],
    output: Output,
    settings: dict[str, Any],
    command: str,
    total: int | None,
    meters: tuple[Metered, ...],
    progress_stats: Counter[str] | None = None,
) -> dict[str, Any]:
    """Stream `source` through `stages` into `output` with progress, card, checkpoints and a summary."""
    previous = Counter(output.checkpoint.get("stats", {}))

    def stats() -> dict[str, int]:
        merged = previous.copy()
        for stage in stages:
            merged.update(getattr(stage, "stats", {}))
        return dict(merged)

    def tokens() -> int:
        return sum(m.completion_tokens for m in {id(m): m for m in meters}.values())

    def card() -> dict[str, Any]:
        return {
            "command": command,
            **settings,
            "stages": [repr(s) for s in stages],
            "counts": stats(),
            "generated_tokens": tokens(),
        }

    bar = report.progress(total, _Tokens(tokens), initial=output.rows, stats=progress_stats)
    started = time.monotonic()
    try:
        write(
            pipe(source, *stages, bar),
            output,
            card=card,
            checkpoint=lambda: {"attempts": source.position, "stats": stats()},
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {output.rows} rows are safe in {output.path}; run the same command with --resume to go on"
        ) from None
    seconds = time.monotonic() - started
    print(report.summary(output.rows, output.path, seconds, stats(), tokens()), file=sys.stderr)
    return {"rows": output.rows, "counts": stats(), "seconds": seconds, "tokens": tokens()}


@dataclasses.dataclass
class _Tokens:
    count: Callable[[], int]

    @property
    def completion_tokens(self) -> int:
        return self.count()


def _describe(backend: Backend) -> dict[str, Any]:
    describe = getattr(backend, "describe", None)
    info = describe() if describe else {"backend": type(backend).__name__}
    info.setdefault("model", getattr(backend, "model", "unknown"))
    return info


def _plain(params: Sampling | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def _constants(values: dict[str, Any]) -> Stage:
    """Adds a column per item, the same value on every row."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            for name, value in values.items():
                batch = batch.append_column(name, pa.array([value] * batch.num_rows, pa.string()))
            yield batch

    stage.__qualname__ = f"constants({', '.join(values)})"
    return stage


def _require(column: str) -> Stage:
    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if column not in batch.column_names:
                raise SynthError(
                    f"the input has no column {column!r} (it has {', '.join(batch.column_names)}); "
                    "name the right one with --column or --messages-column"
                )
            yield batch

    return stage


def _repeat(k: int) -> Stage:
    """Each row k times, ids `{id}-{j}` and `source_id` kept (for best-of-k and preference pairs)."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if k == 1:
                yield batch
                continue
            index = pa.array([i for i in range(batch.num_rows) for _ in range(k)])
            copies = batch.take(index)
            ids = [f"{i}-{j}" for i in batch["id"].to_pylist() for j in range(k)]
            copies = copies.set_column(copies.column_names.index("id"), "id", pa.array(ids, pa.string()))
            yield copies.append_column("source_id", batch["id"].take(index)).append_column(
                "response_index", pa.array([j for _ in range(batch.num_rows) for j in range(k)], pa.int32())
            )

    return stage


def _resumable(source: str | Path, batch_size: int, output: Output) -> Cursor:
    """Rows of `source`, past those a resumed run already handled."""
    done = output.checkpoint.get("attempts", 0)
    rows = Cursor(_skip(read(source, batch_size), done))
    rows.position = done
    return rows


def _input_scales(source: str | Path) -> dict[str, list[str]]:
    # A judge's output records its rubrics' scales in its card; custom rubrics' scales come from there.
    try:
        return dict(read_provenance(source).get("scales") or {})
    except (OSError, ValueError, KeyError):
        return {}


def _skip(batches: Iterable[Batch], rows: int) -> Iterator[Batch]:
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows)
        rows = 0


def _seen_instructions(out: str | Path) -> set[int]:
    # On resume, instructions already written still count as seen for the duplicate check.
    return {instruction_key(t) for b in read(out) for t in b["instruction"].to_pylist()}
