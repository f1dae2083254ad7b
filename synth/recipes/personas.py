"""Persona Hub: personas from text, related personas, persona-driven data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.backends import Backend, Sampling
from synth.core import Stage, take
from synth.io import Output, read
from synth.recipes._runner import Primed, RunSettings, _constants, _describe, _plain, _resumable, _run, _written
from synth.stages.diversity import NoveltyGate, spread_rows
from synth.stages.magpie import Respond
from synth.stages.persona import (
    AnswerParsed,
    ExpandPersonas,
    PersonaGenerate,
    TextToPersona,
    check_documents,
    dedup_personas,
    load_template,
    read_personas,
)


def personas_from_text(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    column: str = "text",
    dedup: str | None = None,
    params: Sampling = Sampling(max_tokens=128, temperature=0.7),
    batch_size: int = 64,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Text-to-Persona: one persona per document of `source`, linked by `source_id`."""
    check_documents(source, column)
    deduped = dedup_personas(dedup)  # bad input fails before the output directory is made
    llm = run.meter(backend)
    settings = {
        **_describe(backend),
        "input": str(source),
        "column": column,
        "dedup": dedup,
        "sampling": _plain(params),
    }
    output = run.open(out, settings, inputs=(source,))
    rows = _resumable(read(source, batch_size), output)
    stages: list[Stage] = [
        TextToPersona(llm, params, column, str(source)),
        *_resumed_dedup(deduped, output),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, run, meters=(llm,))


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
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Persona-to-Persona: `hops` rounds of related personas, each linked by `parent_id`."""
    people = read_personas(personas, persona_column, batch_size)  # a bad set fails before any output
    deduped = dedup_personas(dedup)
    llm = run.meter(backend)
    settings = {
        **_describe(backend),
        "personas": str(personas),
        "hops": hops,
        "dedup": dedup,
        "sampling": _plain(params),
    }
    output = run.open(out, settings, inputs=(personas,))
    rows = _resumable(people, output)
    stages: list[Stage] = [
        ExpandPersonas(llm, params, hops),
        *_resumed_dedup(deduped, output),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, run, meters=(llm,))


def _resumed_dedup(stages: list[Stage], output: Output) -> list[Stage]:
    """On resume, each dedup stage first sees the personas already written, so a persona after
    the restart is still checked against those before it (as magpie seeds its repeat check)."""
    if not output.rows:
        return stages
    return [Primed(stage, lambda: _written(output)) for stage in stages]


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
    novelty: float | None = None,
    spread: bool = False,
    batch_size: int = 64,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """One prompt, problem or text per persona (the first `n`) for `task`; `responses` answers
    the rows that parsed. `spread`: the `n` personas are taken in turn from the clusters of the
    set's first 10,000, not its first n; `novelty`: a text closer than that cosine distance to a
    kept one is dropped before it is answered (`dropped_similar`). `--diverse` turns on both."""
    template = load_template(task)
    people = read_personas(personas, persona_column, batch_size)
    llm = run.meter(backend)
    settings = {
        **_describe(backend),
        "personas": str(personas),
        "task": task,
        "sampling": _plain(params),
        "response_sampling": _plain(responses),
    }
    if novelty is not None or spread:  # absent otherwise: earlier runs still resume
        settings.update(novelty=novelty, spread=spread)
    output = run.open(out, settings, inputs=(personas,))
    if spread and n:
        people = spread_rows(people, "persona", n, seed=params.seed or 0, size=batch_size)
    rows = _resumable(take(n)(people) if n else people, output)
    stages: list[Stage] = [PersonaGenerate(llm, task, params)]
    if novelty is not None:  # on resume it first sees the rows written, as magpie's gate does
        gate = NoveltyGate(novelty, column=template.column)
        stages.append(Primed(gate, lambda: _written(output)) if output.rows else gate)
    if responses:
        stages.append(AnswerParsed(Respond(llm, responses, column=template.column)))
    stages.append(_constants({"model": settings["model"]}))
    return _run(rows, stages, output, settings, run, n, meters=(llm,))
