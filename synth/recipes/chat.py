"""Magpie and responses: instructions, answers, conversations."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth.backends import Backend, Metered, Sampling, template_of
from synth.core import Batch, Stage, SynthError, counter_source, pipe, take
from synth.distributed import RayExecutor
from synth.io import open_output, read
from synth.recipes._runner import (
    Cursor,
    _constants,
    _describe,
    _drop_failed,
    _plain,
    _repeat,
    _require,
    _resumable,
    _run,
)
from synth.resources import data_file, read_choice
from synth.stages.magpie import Magpie, MultiTurn, Respond, instruction_key
from synth.stages.persona import (
    with_personas,
)
from synth.templates import ChatTemplate


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
    batch_size: int = 128,
    max_attempts: int | None = None,
    shard_rows: int = 10_000,
    executor: RayExecutor | None = None,
    make_backend: Callable[[], Backend] | None = None,
    max_error_rate: float | None = 0.05,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Sample `n` kept Magpie conversations (instructions only if `response` is None) into `out`.

    Each backend call gets `batch_size` prompts: a batching backend (llama.cpp, vLLM) keeps its
    decode slots full from these, so it needs several times its own batch size per call.
    `max_attempts` caps the instructions tried (resumed runs included), for a budget or a model
    that rarely yields a clean instruction. With a Ray `executor`, the LLM stages run in Ray
    actors, each opening its own backend with `make_backend()` (and answering with it too).
    Requests that fail after their retries drop their rows; past `max_error_rate` the run stops.
    `personas` (a persona set) puts one persona per row into the system prompt, so the
    instructions spread as the set does.
    """
    llm = Metered(backend, max_error_rate=max_error_rate)
    answerer = Metered(response_backend, max_error_rate=max_error_rate) if response_backend else llm
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
    seen = _seen_instructions(out) if output.rows else set()
    talk = functools.partial(
        _conversations,
        template=template_of(backend),
        instruction=instruction,
        response=response,
        turns=turns,
        exact_turns=exact_turns,
        seen=seen,
    )
    steer = {"system_prompt": system, "task": task, "language": language}
    stages: list[Stage] = [_constants({k: v for k, v in steer.items() if v})]
    if personas is not None:
        stages.append(with_personas(personas, start, persona_column))
    if executor is None:
        stages += talk(llm, answerer)
    elif make_backend is None:
        raise SynthError("a Ray executor needs make_backend, to open a backend inside each actor")
    else:  # repeats are checked on the driver, in input order, as the local run does
        stages += [executor.map(functools.partial(_remote, talk, make_backend)), _drop_repeats(seen)]
    stages += [_drop_failed("response"), _constants({"model": settings["model"]}), take(n - output.rows)]
    progress = next((s.stats for s in stages if isinstance(s, Magpie)), None)
    return _run(source, stages, output, settings, command, n, (llm, answerer), progress, shard_rows)


def _conversations(
    ask: Backend,
    answer: Backend,
    *,
    template: ChatTemplate,
    instruction: Sampling,
    response: Sampling | None,
    turns: int,
    exact_turns: bool,
    seen: set[int] | None,
) -> list[Stage]:
    """Magpie's LLM stages: instruction, response, then further turns."""
    stages: list[Stage] = [Magpie(ask, template, instruction, seen=None if seen is None else set(seen))]
    if response:
        stages.append(Respond(answer, response))
    if response and turns > 1:
        stages.append(MultiTurn(ask, answer, template, turns, instruction, response, exact_turns))
    return stages


def _remote(talk: Callable[..., list[Stage]], make_backend: Callable[[], Backend]) -> Stage:
    """Runs inside a Ray actor: open the backend there, chain the LLM stages on it."""
    llm = make_backend()
    stages = talk(llm, llm, seen=None)  # which actor sees a repeat first is chance: the driver checks
    return lambda batches: pipe(batches, *stages)


def _drop_repeats(seen: set[int]) -> Stage:
    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            keep = []
            for text in batch["instruction"].to_pylist():
                key = instruction_key(text)
                keep.append(key not in seen)
                seen.add(key)
            yield batch.filter(pa.array(keep, pa.bool_()))

    return stage


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
    max_error_rate: float | None = 0.05,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Answer the last user turn of every row of `source`, keeping all its columns."""
    llm = Metered(backend, max_error_rate=max_error_rate)
    settings = {
        **_describe(backend),
        "input": str(source),
        "column": column,
        "messages_column": messages_column,
        "response_sampling": _plain(params),
        "n_responses": n_responses,
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    rows = _resumable(read(source, batch_size), output)
    stages: list[Stage] = [
        _require(messages_column or column),
        _repeat(n_responses),
        Respond(llm, params, column, messages_column),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, command, None, meters=(llm,))


def _seen_instructions(out: str | Path) -> set[int]:
    # On resume, instructions already written still count as seen for the duplicate check.
    return {instruction_key(t) for b in read(out) for t in b["instruction"].to_pylist()}
