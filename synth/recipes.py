"""Short compositions of stages that the CLI calls; each is readable as a recipe."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth import report
from synth.backends import Backend, Metered, Sampling, template_of
from synth.core import Batch, Stage, SynthError, counter_source, pipe, take
from synth.io import Output, open_output, read, write
from synth.resources import data_file, read_choice
from synth.stages.magpie import Magpie, MultiTurn, Respond, instruction_key
from synth.stages.persona import (
    AnswerParsed,
    ExpandPersonas,
    PersonaGenerate,
    TextToPersona,
    check_documents,
    dedup_personas,
    load_template,
    read_personas,
    with_personas,
)


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
    personas: str | Path | None = None,
    persona_column: str | None = None,
    batch_size: int = 64,
    max_attempts: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Sample `n` kept Magpie conversations (instructions only if `response` is None) into `out`.

    `max_attempts` caps the instructions tried (resumed runs included), for a budget or a model
    that rarely yields a clean instruction. `personas` (a persona set) puts one persona per row
    into the system prompt, so the instructions spread as the set does.
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
        "personas": str(personas) if personas is not None else None,
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    start = output.checkpoint.get("attempts", 0)
    attempts = counter_source(batch_size, start=start)
    source = Cursor(take(max_attempts - start)(attempts) if max_attempts else attempts)
    tmpl = template_of(backend)
    gen = Magpie(llm, tmpl, instruction, seen=_seen_instructions(out) if output.rows else set())
    steer = {"system_prompt": system, "task": task, "language": language}
    stages: list[Stage] = [_constants({k: v for k, v in steer.items() if v}), gen]
    if personas is not None:
        stages.insert(1, with_personas(personas, start, persona_column))
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
    rows = Cursor(_skip(read(source, batch_size), output.checkpoint.get("attempts", 0)))
    rows.position = output.checkpoint.get("attempts", 0)
    stages: list[Stage] = [
        _require(messages_column or column),
        _repeat(n_responses),
        Respond(llm, params, column, messages_column),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, command, None, meters=(llm,))


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


# ---------------------------------------------------------------- personas (Persona Hub)


def personas_from_text(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    column: str = "text",
    dedup: str | None = None,
    params: Sampling = Sampling(max_tokens=128, temperature=0.7),
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Text-to-Persona: one persona per document of `source`, linked by `source_id`."""
    check_documents(source, column)
    deduped = dedup_personas(dedup)  # bad input fails before the output directory is made
    llm = Metered(backend)
    settings = {
        **_describe(backend),
        "input": str(source),
        "column": column,
        "dedup": dedup,
        "sampling": _plain(params),
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    done = output.checkpoint.get("attempts", 0)
    rows = Cursor(_skip(read(source, batch_size), done), position=done)
    stages: list[Stage] = [
        TextToPersona(llm, params, column, str(source)),
        *deduped,
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, command, None, meters=(llm,))


def personas_expand(
    backend: Backend,
    personas: str | Path,
    *,
    out: str | Path,
    hops: int = 1,
    persona_column: str | None = None,
    dedup: str | None = None,
    params: Sampling = Sampling(max_tokens=160, temperature=0.9),
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Persona-to-Persona: `hops` rounds of related personas, each linked by `parent_id`."""
    people = read_personas(personas, persona_column, batch_size)  # a bad set fails before any output
    deduped = dedup_personas(dedup)
    llm = Metered(backend)
    settings = {
        **_describe(backend),
        "personas": str(personas),
        "hops": hops,
        "dedup": dedup,
        "sampling": _plain(params),
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    done = output.checkpoint.get("attempts", 0)
    rows = Cursor(_skip(people, done), position=done)
    stages: list[Stage] = [
        ExpandPersonas(llm, params, hops),
        *deduped,
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, command, None, meters=(llm,))


def personas_generate(
    backend: Backend,
    personas: str | Path,
    *,
    out: str | Path,
    task: str = "instruction",
    n: int | None = None,
    persona_column: str | None = None,
    params: Sampling = Sampling(max_tokens=512, temperature=0.7),
    responses: Sampling | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """One prompt, problem or text per persona (the first `n`) for `task`; `responses` answers
    the rows that parsed."""
    template = load_template(task)
    people = read_personas(personas, persona_column, batch_size)
    llm = Metered(backend)
    settings = {
        **_describe(backend),
        "personas": str(personas),
        "task": task,
        "sampling": _plain(params),
        "response_sampling": _plain(responses),
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    done = output.checkpoint.get("attempts", 0)
    rows = Cursor(_skip(take(n)(people) if n else people, done), position=done)
    stages: list[Stage] = [PersonaGenerate(llm, task, params)]
    if responses:
        stages.append(AnswerParsed(Respond(llm, responses, column=template.column)))
    stages.append(_constants({"model": settings["model"]}))
    return _run(rows, stages, output, settings, command, n, meters=(llm,))
