"""Magpie and responses: instructions, answers, conversations."""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth import report
from synth.backends import Backend, Completion, Sampling, template_of
from synth.core import Batch, Stage, SynthError, counter_source, pipe, take
from synth.distributed import RayExecutor
from synth.io import Output, read
from synth.recipes._giveup import GiveUp
from synth.recipes._runner import (
    Asked,
    Cursor,
    RunSettings,
    _constants,
    _describe,
    _drop_failed,
    _plain,
    _repeat,
    _require,
    _resumable,
    _run,
    _written,
    read_window,
    up_to,
)
from synth.recipes.diversity import steered
from synth.resources import data_file, read_choice
from synth.stages.magpie import DropTruncated, KeySet, Magpie, MultiTurn, Respond, instruction_key
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
    novelty: float | None = None,
    spread: str | None = None,
    topics: str | Path | None = None,
    batch_size: int = 128,
    max_attempts: int | None = None,
    keep_truncated: bool = False,
    make_backend: Callable[[], Backend] | None = None,
    make_response_backend: Callable[[], Backend] | None = None,
    defaults: dict[str, Any] | None = None,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Sample `n` kept Magpie conversations (instructions only if `response` is None) into `out`.

    Each backend call gets `read_window(batch_size, ...)` prompts. `max_attempts` caps the
    instructions tried (resumed runs included); without it, a run whose yield stays near zero
    stops and names the fix (see `_giveup`). Answers cut off by max tokens are dropped and
    counted (`dropped_response_truncated`) unless `keep_truncated`. With a Ray `run.executor` the LLM stages run
    in Ray actors, each opening its backends with `make_backend()` and `make_response_backend()`.
    Requests that fail after their retries drop their rows; past `run.max_error_rate` the run stops.
    `personas` (a persona set) puts one persona per row into the system prompt. `novelty` drops an
    instruction closer than that cosine distance to a kept one before it is answered; `spread`
    (topics, personas, tasks; `topics` a `synth topics` output) conditions each attempt on an item
    drawn toward the clusters kept rows leave empty (`synth.stages.diversity`). `defaults`: where
    the sampling settings came from (a model family's file, `synth.backends.defaults.recorded`), for the card.
    """
    executor = run.executor
    check_magpie(response, turns, response_backend, executor, make_backend, make_response_backend)
    if executor is not None and novelty is not None:
        raise SynthError("--novelty checks each instruction before Ray actors answer it: use --executor local")
    template = template_of(backend)  # raw prompts need one: asked for before the output is claimed
    llm = run.meter(backend)
    answerer = run.meter(response_backend) if response_backend else llm
    instruction, response = _base_model_stops(backend, response_backend or backend, instruction, response, turns)
    steer = {"system_prompt": steering(task, system_prompt, language), "task": task, "language": language}
    settings = _magpie_settings(backend, response_backend, steer, instruction, response, turns, personas)
    settings.update(exact_turns=exact_turns, persona_column=persona_column, keep_truncated=keep_truncated)
    if defaults:  # absent otherwise: earlier runs still resume
        settings["sampling_defaults"] = defaults
    if novelty is not None or spread is not None:  # absent otherwise: earlier runs still resume
        settings.update(novelty=novelty, spread=spread, topics=None if topics is None else str(topics))
    output = run.open(out, settings)
    spreading, gate, feedback = steered(
        output, novelty=novelty, spread=spread, topics=topics, personas=personas, seed=instruction.seed or 0
    )
    start = output.checkpoint.get("attempts", 0)
    # No more attempts per call than a few times the rows asked for: `--n 20` need not pay for 128.
    window = min(read_window(batch_size, backend, response_backend), max(2 * n, 16))
    cap = up_to(n - output.rows)
    # Each next window sized by the yield so far (locally: a Ray run has windows in flight).
    need = cap.left if executor is None else None  # type: ignore[attr-defined]
    attempts = _ramped(window, start, need, floor=getattr(backend, "batch_size", None) or 1)
    source = Cursor(take(max_attempts - start)(attempts) if max_attempts else attempts)
    seen = _seen_instructions(output) if output.rows else KeySet()
    talk = functools.partial(
        _conversations,
        template=template,
        instruction=instruction,
        response=response,
        turns=turns,
        exact_turns=exact_turns,
        keep_truncated=keep_truncated,
        seen=seen,
        gate=gate,
    )
    stages: list[Stage] = [_constants({k: v for k, v in steer.items() if v})]
    if personas is not None and spread != "personas":  # --spread personas draws from the set instead
        stages.append(with_personas(personas, start, persona_column))
    stages += spreading
    remote = (make_backend, make_response_backend if response_backend else None)
    stages += _llm_stages(talk, llm, answerer, seen, executor, remote)
    stages += [_drop_failed("response"), _constants({"model": settings["model"]})]
    progress = next((s.stats for s in stages if isinstance(s, Magpie)), None)
    if progress is not None and max_attempts is None:
        stages.append(_give_up(stages, progress, instruction, response))
    stages.append(cap)
    stages += feedback
    # The source is the attempts: when they run out, the cap was reached.
    asked = Asked(
        n, f"--max-attempts {max_attempts} reached", "run the same command with --resume and a higher --max-attempts"
    )
    return _run(source, stages, output, settings, run, n, (llm, answerer), progress, asked=asked)


def _ramped(window: int, start: int, need: Callable[[], int] | None = None, floor: int = 1) -> Iterator[Batch]:
    """Attempt ids in windows of `window`, the first a quarter of that: the first rows (and the
    progress bar's rates and ETA) come within seconds rather than after a whole window.

    With `need` (rows still to keep, read as each window is asked for), each next window is what
    the yield so far says those rows take, plus a tenth, at least `floor` (a batching backend's
    slots) and at most `window`: the last windows no longer make a whole window of rows past `--n`
    (`dropped_past_n`). Ids stay consecutive and every row's seed comes from its id, so the rows
    made are the same; only fewer are thrown away."""
    size = window // 4 if window >= 16 else window  # a small window is quick already
    position, wanted = start, need() if need else 0
    while True:
        yield next(counter_source(size, start=position))
        position += size
        size = window if need is None else _next_window(window, floor, wanted - need(), position - start, need())


def _next_window(window: int, floor: int, kept: int, tried: int, left: int) -> int:
    """Attempts that should keep `left` more rows at the yield `kept` / `tried` so far (smoothed,
    so a first window that kept nothing asks for a whole window, not an endless one)."""
    rate = (kept + 1) / (tried + 2)
    return max(min(floor, window), min(window, math.ceil(left / rate * 1.1)))


def _give_up(stages: list[Stage], progress: Any, instruction: Sampling, response: Sampling | None) -> GiveUp:
    """Stops a run that keeps almost nothing, naming the setting behind its commonest drop."""

    def counts() -> Counter[str]:
        merged: Counter[str] = Counter()
        for stage in stages:
            merged.update(getattr(stage, "stats", {}))
        return merged

    answer_cap = response.max_tokens if response else 0
    fixes = {
        "truncated": f"no instruction ended within --instruction-max-tokens {instruction.max_tokens}: raise it, "
        "pass --template FAMILY if the model's template is not its own, or use a chat model",
        "response_truncated": f"answers run past --response-max-tokens {answer_cap}: raise it, "
        "or pass --keep-truncated to keep cut-off answers",
        "empty": "the model writes empty instructions: pass --template FAMILY, or use a chat model",
        "duplicate": "the model repeats itself: raise --instruction-temperature, or steer with --system-prompt "
        "or --task",
        "short": "conversations end early: drop --exact-turns, or raise --response-max-tokens",
        "similar": "the novelty gate drops nearly every instruction: lower --novelty, or add --spread",
    }
    return GiveUp(attempts=lambda: progress.get("attempts", 0), counts=counts, fixes=fixes)


def _magpie_settings(
    backend: Backend,
    response_backend: Backend | None,
    steer: dict[str, str | None],
    instruction: Sampling,
    response: Sampling | None,
    turns: int,
    personas: str | Path | None,
) -> dict[str, Any]:
    """What the card records and `--resume` must match."""
    return {
        **_describe(backend),
        **steer,
        "instruction_sampling": _plain(instruction),
        "response_sampling": _plain(response),
        "response_model": _describe(response_backend) if response_backend else None,
        "turns": turns,
        "personas": str(personas) if personas is not None else None,
    }


def _llm_stages(
    talk: Callable[..., list[Stage]],
    llm: Backend,
    answerer: Backend,
    seen: KeySet,
    executor: RayExecutor | None,
    remote: tuple[Callable[[], Backend] | None, Callable[[], Backend] | None],
) -> list[Stage]:
    """The LLM stages, here or in Ray actors (each opening its own backends with `remote`)."""
    if executor is None:
        return talk(llm, answerer)
    # Repeats are checked on the driver, in input order, as the local run does.
    # make_backend is not None with an executor: check_magpie refused that before the run began
    return [executor.map(functools.partial(_remote, talk, *remote)), _drop_repeats(seen)]  # type: ignore[arg-type]


def check_magpie(
    response: Sampling | None,
    turns: int,
    response_backend: Backend | None = None,
    executor: RayExecutor | None = None,
    make_backend: Callable[[], Backend] | None = None,
    make_response_backend: Callable[[], Backend] | None = None,
) -> None:
    """Refuse settings `magpie` cannot honour, before the output directory is claimed."""
    if response is None and turns > 1:
        raise SynthError(
            f"--turns {turns} needs responses (each next user turn follows the answers so far); "
            "drop --no-responses, or use --turns 1"
        )
    if executor is None:
        return
    if make_backend is None:
        raise SynthError("a Ray executor needs make_backend, to open a backend inside each actor")
    if response_backend is not None and response is not None and make_response_backend is None:
        raise SynthError(
            "a Ray executor with a response model needs make_response_backend, to open it inside each actor"
        )


def _base_model_stops(
    asker: Backend, answerer: Backend, instruction: Sampling, response: Sampling | None, turns: int
) -> tuple[Sampling, Sampling | None]:
    """A base model (no chat template in its GGUF) never writes an end-of-turn token: end its
    instructions at their first paragraph instead of dropping nearly all as truncated. In a
    multi-turn run a cut-off answer ends the conversation, so its answers end at their first
    line break (at a paragraph it writes on for hundreds of tokens and is nearly always cut off)."""
    if not getattr(asker, "chat_tuned", True) and "\n\n" not in instruction.stop:
        instruction = instruction.with_stop("\n\n")
    if response is not None and turns > 1 and not getattr(answerer, "chat_tuned", True) and "\n" not in response.stop:
        response = response.with_stop("\n")
    return instruction, response


def _conversations(
    ask: Backend,
    answer: Backend,
    *,
    template: ChatTemplate,
    instruction: Sampling,
    response: Sampling | None,
    turns: int,
    exact_turns: bool,
    seen: KeySet | None,
    keep_truncated: bool = False,
    gate: Stage | None = None,
) -> list[Stage]:
    """Magpie's LLM stages: instruction, response, then further turns. The last answer of each
    conversation moves the progress bar as it ends."""
    ends = functools.partial(_row_end, ("stop", "length", "repetition") if keep_truncated else ("stop",))
    keys = None if seen is None else KeySet(seen)
    stages: list[Stage] = [Magpie(ask, template, instruction, seen=keys, on_answer=None if response else ends)]
    stages += [gate] if gate is not None else []  # before any answer token is spent
    if response:
        stages += [Respond(answer, response, on_answer=ends if turns == 1 else None), DropTruncated(keep_truncated)]
    if response and turns > 1:
        stages.append(
            MultiTurn(ask, answer, template, turns, instruction, response, exact_turns, keep_truncated, on_answer=ends)
        )
    return stages


def _row_end(kept: tuple[str, ...], completion: Completion) -> None:
    if completion.finish_reason in kept and completion.text.strip():
        report.row_finished()


def _remote(
    talk: Callable[..., list[Stage]],
    make_backend: Callable[[], Backend],
    make_response_backend: Callable[[], Backend] | None = None,
) -> Stage:
    """Runs inside a Ray actor: open the backends there, chain the LLM stages on them."""
    llm = make_backend()
    answerer = make_response_backend() if make_response_backend else llm
    stages = talk(llm, answerer, seen=None)  # which actor sees a repeat first is chance: the driver checks
    return lambda batches: pipe(batches, *stages)


def _drop_repeats(seen: KeySet) -> Stage:
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
    defaults: dict[str, Any] | None = None,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Answer the last user turn of every row of `source`, keeping all its columns.

    Rows that could not be answered (a failed request, a null instruction) are kept, with
    finish reason `error` and the reason in `response_error`. `defaults`: as in `magpie`, for the card.
    """
    check_respond_input(source, column, messages_column)
    llm = run.meter(backend)
    settings = {
        **_describe(backend),
        "input": str(source),
        "column": column,
        "messages_column": messages_column,
        "response_sampling": _plain(params),
        "n_responses": n_responses,
        **({"sampling_defaults": defaults} if defaults else {}),
    }
    output = run.open(out, settings, inputs=(source,))
    rows = _resumable(read(source, read_window(batch_size, backend)), output)
    stages: list[Stage] = [
        _require(messages_column or column),
        _repeat(n_responses),
        # every row is kept, answered or failed: each answer's end moves the bar
        Respond(llm, params, column, messages_column, errors=True, on_answer=lambda _: report.row_finished()),
        _constants({"model": settings["model"]}),
    ]
    return _run(rows, stages, output, settings, run, meters=(llm,))


def check_respond_input(source: str | Path, column: str = "instruction", messages_column: str | None = None) -> None:
    """Fail fast, before the output is claimed or a model loads, if `respond` cannot read what
    it is to answer: `source` missing, no such column, or one of the wrong type."""
    first = next(iter(read(source, 1)), None)
    if first is None:
        return
    name = messages_column or column
    flag = "--messages-column" if messages_column else "--column"
    if name not in first.column_names:
        raise SynthError(
            f"{source} has no column {name!r} (it has {', '.join(first.column_names)}); name the right one with {flag}"
        )
    kind = first.schema.field(name).type
    if pa.types.is_null(kind) or (pa.types.is_list(kind) and pa.types.is_null(kind.value_type)):
        return  # a null or empty first value says nothing of the type; such rows are marked one by one
    if messages_column and not _is_conversation(kind):
        raise SynthError(
            f"column {name!r} of {source} holds {kind}, not conversations: --messages-column needs a list of "
            "{role, content} messages per row; answer a text column with --column instead"
        )
    if not messages_column and not _is_text(kind):
        raise SynthError(
            f"column {name!r} of {source} holds {kind}, not text; name a text column with --column, "
            "or a conversation column with --messages-column"
        )


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_conversation(kind: pa.DataType) -> bool:
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
        return False
    names = {kind.value_type.field(i).name for i in range(kind.value_type.num_fields)}
    return {"role", "content"} <= names


def _seen_instructions(output: Output) -> KeySet:
    # On resume, instructions already written (in the shards the state lists) still count as seen.
    return KeySet(instruction_key(t) for b in _written(output) for t in b["instruction"].to_pylist())
