"""Short compositions of stages that the CLI calls; each is readable as a recipe."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth import report
from synth.backends import Backend, Metered, Sampling, template_of
from synth.core import Batch, Stage, SynthError, counter_source, pipe, take
from synth.distributed import RayExecutor
from synth.io import Output, Sink, open_output, read, read_provenance, tee, write
from synth.resources import choices, data_file, read_choice
from synth.stages.chunk import Chunk
from synth.stages.dedup import ExactDedup, MinHashDedup, SemanticDedup
from synth.stages.filters import Filter, heuristic_rules, load_heuristics
from synth.stages.filters import where as where_rule
from synth.stages.judge import Judge, PreferencePairs, load_rubric, overall_status, shipped_scales
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
from synth.stages.synthesize import GroundedCheck, InstructionPretrain, PromptPairs, SftRows, fill, pretrain_rows
from synth.stages.think import Think
from synth.templates import ChatTemplate
from synth.tokens import context_size, token_counter


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


def _drop_failed(column: str) -> Stage:
    """Drops rows whose `column` request failed for good (their reasons are in the card)."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            reason = f"{column}_finish_reason"
            yield batch if reason not in batch.column_names else batch.filter(pc.not_equal(batch[reason], "error"))

    return stage


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


def pipeline(
    source: Iterable[Batch],
    *stages: Stage,
    out: str | Path,
    settings: dict[str, Any] | None = None,
    n: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Run any chain of stages into a dataset directory, with the card, progress and resume
    that the built-in commands get. `settings` (models, prompts, sampling) go into the card and
    must match on `--resume`; each stage's repr and counters are recorded too.
    """
    settings = {"stages": [repr(s) for s in stages], **(settings or {})}
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    rows = _resumable(source, output)
    meters = tuple(m for s in stages for m in getattr(s, "__dict__", {}).values() if isinstance(m, Metered))
    tail = [take(n - output.rows)] if n else []
    return _run(rows, [*stages, *tail], output, settings, command or _argv(), n, meters)


def _argv() -> str:
    import shlex

    return shlex.join([sys.argv[0], *sys.argv[1:]])


def _run(
    source: Cursor,
    stages: list[Stage],
    output: Output,
    settings: dict[str, Any],
    command: str,
    total: int | None,
    meters: tuple[Metered, ...],
    progress_stats: Counter[str] | None = None,
    shard_rows: int = 10_000,
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
            "failed_requests": _failures(meters),
        }

    bar = report.progress(total, _Tokens(tokens), initial=output.rows, stats=progress_stats)
    started = time.monotonic()
    try:
        write(
            pipe(source, *stages, bar),
            output,
            card=card,
            shard_rows=shard_rows,
            checkpoint=lambda: {"attempts": source.position, "stats": stats()},
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {output.rows} rows are safe in {output.path}; run the same command with --resume to go on"
        ) from None
    seconds = time.monotonic() - started
    print(report.summary(output.rows, output.path, seconds, stats(), tokens()), file=sys.stderr)
    return {"rows": output.rows, "counts": stats(), "seconds": seconds, "tokens": tokens()}


def _failures(meters: tuple[Metered, ...]) -> dict[str, Any]:
    unique = {id(m): m for m in meters}.values()
    reasons: Counter[str] = Counter()
    for meter in unique:
        reasons.update(meter.errors)
    return {
        "count": sum(reasons.values()),
        "of": sum(m.requests for m in unique),
        "reasons": dict(reasons.most_common(10)),
    }


@dataclasses.dataclass
class _Tokens:
    count: Callable[[], int]

    @property
    def completion_tokens(self) -> int:
        return self.count()


def dedup(
    source: str | Path,
    *,
    out: str | Path,
    method: str = "minhash",
    column: str = "instruction",
    threshold: float | None = None,
    rejects: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 1000,
    command: str = "",
    **options: Any,
) -> dict[str, Any]:
    """Copy `source` to `out` without duplicates by `column`; dropped rows go to `rejects` if given.

    `options` go to the method's stage: `ignore_punctuation`; `ngram`, `num_perm`; `model`.
    """
    stage = dedup_stage(method, column, threshold, **options)
    if rejects is not None and Path(rejects).resolve() == Path(out).resolve():
        raise SynthError("--rejects must be a different directory from --out")
    settings = {"source": str(source), "stage": repr(stage)}
    batches = read(source, batch_size)
    first = next(batches, None)  # a wrong --column fails before any output directory is made
    if first is not None and column not in first.column_names:
        names = ", ".join(first.column_names)
        raise SynthError(f"column {column!r} is not in {source} (it has: {names}); pass one of these to --column")
    if first is None:  # nothing to read: still write the columns, so the output is an empty dataset
        first = pa.table({"id": pa.array([], pa.string()), column: pa.array([], pa.string())})
    batches = itertools.chain([first], batches)
    output = open_output(out, settings, overwrite=overwrite)
    sink = Sink(open_output(rejects, settings, overwrite=overwrite), {"command": command}) if rejects else None
    stage = dataclasses.replace(stage, rejects=sink)

    def card() -> dict[str, Any]:
        return {"command": command, **settings, "counts": dict(stage.stats), "notes": stage.notes}

    started = time.monotonic()
    with sink or contextlib.nullcontext():
        write(pipe(batches, report.progress(None, desc="dedup"), stage), output, card=card)
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


def synthesize(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    mode: str = "prompt",
    column: str = "text",
    rounds: int = 2,
    pairs: int = 5,
    prompt_file: str | Path | None = None,
    check: str | None = None,
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7),
    pretrain_out: str | Path | None = None,
    context_tokens: int | None = None,
    batch_size: int = 16,
    max_error_rate: float | None = 0.05,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Instruction-response pairs grounded in each chunk of a raw corpus, as SFT rows in `out`;
    with `pretrain_out`, also the instruction-augmented text, one row per chain of chunks.

    A read batch of `batch_size * rounds` documents is one chaining window (instruction-pretrain).
    """
    if mode not in MODES:
        raise SynthError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if check not in (None, "grounded"):
        raise SynthError(f"unknown check {check!r}; the one check is 'grounded'")
    llm, count = Metered(backend, max_error_rate=max_error_rate), token_counter(backend)
    ctx = context_size(backend, context_tokens)
    settings = {
        **_describe(backend),
        **{"input": str(source), "mode": mode, "column": column, "rounds": rounds, "pairs": pairs, "check": check},
        **{"prompt_file": str(prompt_file or ""), "sampling": _plain(params), "context_tokens": ctx},
    }
    gen, overhead = _synthesizer(llm, count, ctx, mode, params, rounds, pairs, prompt_file)
    stages: list[Stage] = [_require(column), Chunk(count, _chunk_budget(ctx, params, overhead), column), gen]
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    if check:
        stages.append(GroundedCheck(llm, data_file("pipelines/synthesize/checks/grounded.txt").read_text()))
    if pretrain_out:
        layouts = json.loads(data_file("pipelines/synthesize/layouts.json").read_text())
        side = open_output(pretrain_out, settings, overwrite=overwrite, resume=resume)
        card = {"command": command, **settings}
        stages.append(tee(side, lambda b: pretrain_rows(b, layouts, params.seed or 0), card=card))
    stages += [SftRows(), _constants({"mode": mode, "model": settings["model"]})]
    window = batch_size * (rounds if mode == "instruction-pretrain" else 1)
    return _run(_resumable(read(source, window), output), stages, output, settings, command, None, meters=(llm,))


def _synthesizer(
    llm: Backend,
    count: Callable[[str], int],
    ctx: int,
    mode: str,
    params: Sampling,
    rounds: int,
    pairs: int,
    prompt_file: str | Path | None,
) -> tuple[Stage, int]:
    """The generating stage of `mode` and the tokens its prompt takes around a chunk."""
    if mode == "instruction-pretrain":
        tmpl = getattr(llm, "template", None)
        bos, eos = getattr(tmpl, "bos_token", "<s>"), getattr(tmpl, "eos_token", "</s>")
        gen = InstructionPretrain(llm, count, ctx, params, rounds, bos=bos, eos=eos)
        return gen, count(gen.read(""))
    templates = _pair_templates(prompt_file)
    prompts = PromptPairs(llm, templates, pairs, params)
    return prompts, max(_chat_tokens(llm, count, prompts.prompt(t, "")) for t in range(len(templates)))


def think(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    column: str = "text",
    params: Sampling = Sampling(max_tokens=2048, temperature=0.7),
    prompt_file: str | Path | None = None,
    context_tokens: int | None = None,
    batch_size: int = 16,
    max_error_rate: float | None = 0.05,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Each chunk of a raw corpus followed by a generated expert thinking trajectory (TPT)."""
    llm, count = Metered(backend, max_error_rate=max_error_rate), token_counter(backend)
    ctx = context_size(backend, context_tokens)
    prompt = _prompt_text(prompt_file, "pipelines/think.txt")
    settings = {
        **_describe(backend),
        **{"input": str(source), "column": column, "prompt_file": str(prompt_file or "")},
        **{"sampling": _plain(params), "context_tokens": ctx},
    }
    gen = Think(llm, prompt, params)
    overhead = _chat_tokens(backend, count, [{"role": "user", "content": fill(prompt, text="")}])
    stages = [_require(column), Chunk(count, _chunk_budget(ctx, params, overhead), column), gen]
    stages.append(_constants({"model": settings["model"]}))
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    return _run(_resumable(read(source, batch_size), output), stages, output, settings, command, None, meters=(llm,))


MODES = ("prompt", "instruction-pretrain")


def _chunk_budget(ctx: int, params: Sampling, overhead: int, least: int = 64) -> int:
    """Tokens of text a chunk may hold: the context less the reply and the prompt around the text.

    8 tokens of slack, since a chunk is counted alone and may merge with the text around it.
    """
    budget = ctx - params.max_tokens - overhead - 8
    if budget < least:
        raise SynthError(
            f"a context of {ctx} tokens leaves {max(budget, 0)} for text after {params.max_tokens} new tokens "
            f"and a {overhead}-token prompt; lower --max-tokens or raise --context-tokens"
        )
    return budget


def _resumable(batches: Iterable[Batch], output: Output) -> Cursor:
    """`batches` minus the rows a resumed run already handled, counted for the next checkpoint."""
    done = output.checkpoint.get("attempts", 0)
    return Cursor(_skip(batches, done), position=done)


def _pair_templates(prompt_file: str | Path | None) -> tuple[tuple[str, str], ...]:
    if prompt_file:
        return ((Path(prompt_file).stem, _prompt_text(prompt_file, "")),)
    return tuple((name, read_choice("pipelines/synthesize", name, "task")) for name in choices("pipelines/synthesize"))


def _prompt_text(prompt_file: str | Path | None, shipped: str) -> str:
    if not prompt_file:
        return data_file(shipped).read_text(encoding="utf-8")
    try:
        text = Path(prompt_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise SynthError(f"cannot read --prompt-file {prompt_file} ({exc.strerror}); pass a text file") from None
    if "{text}" not in text:
        raise SynthError(f"--prompt-file {prompt_file} has no {{text}} placeholder; put {{text}} where the chunk goes")
    return text


def _chat_tokens(backend: Backend, count: Callable[[str], int], messages: list[dict[str, str]]) -> int:
    """Tokens a chat prompt takes once the backend's chat template wraps it."""
    template = getattr(backend, "template", None)
    text = template.render(messages) if template else "\n".join(m["content"] for m in messages)
    return count(text) + (0 if template else 16)  # no template known: leave room for one


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
    return _run(_resumable(read(source, batch_size), output), stages, output, settings, command, None, meters=jurors)


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
    with contextlib.ExitStack() as stack:
        side = None
        if rejects:
            card = {"command": command, **settings, "rows": "dropped by synth filter; `rejected_by` names the rule"}
            side = stack.enter_context(Sink(open_output(rejects, settings, overwrite=overwrite, resume=resume), card))
        stages: list[Stage] = [Filter(tuple(rules), side)]
        return _run(_resumable(read(source, batch_size), output), stages, output, settings, command, None, meters=())


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
    return _run(
        _resumable(read(source, batch_size), output), stages, output, settings, command, None, meters=(llm, *jurors)
    )


def _input_scales(source: str | Path) -> dict[str, list[str]]:
    # A judge's output records its rubrics' scales in its card; custom rubrics' scales come from there.
    try:
        return dict(read_provenance(source).get("scales") or {})
    except (OSError, ValueError, KeyError):
        return {}


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
    rows = _resumable(take(n)(people) if n else people, output)
    stages: list[Stage] = [PersonaGenerate(llm, task, params)]
    if responses:
        stages.append(AnswerParsed(Respond(llm, responses, column=template.column)))
    stages.append(_constants({"model": settings["model"]}))
    return _run(rows, stages, output, settings, command, n, meters=(llm,))
