"""Short compositions of stages that the CLI calls; each is readable as a recipe."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth import report
from synth.backends import Backend, Metered, Sampling, template_of
from synth.core import Batch, SynthError, counter_source, pipe, take
from synth.io import Sink, open_output, read, write
from synth.stages.dedup import ExactDedup, MinHashDedup, SemanticDedup
from synth.stages.magpie import Magpie, Respond, instruction_key


class Interrupted(SynthError):
    """Ctrl-C: the rows in hand were written; the message says how to go on."""

    exit_code = 130


@dataclasses.dataclass
class Cursor:
    """Wraps a source and counts the rows it has handed out (the resume checkpoint)."""

    source: Iterator[Batch]
    position: int = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.source:
            self.position += batch.num_rows
            yield batch


def magpie(
    backend: Backend,
    *,
    n: int,
    out: str | Path,
    system_prompt: str | None = None,
    instruction: Sampling = Sampling(max_tokens=256, temperature=1.0),
    response: Sampling | None = Sampling(max_tokens=512, temperature=0.7),
    batch_size: int = 64,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Sample `n` kept Magpie instructions (and responses unless `response` is None) into `out`."""
    llm = Metered(backend)
    info = _describe(backend)
    if not getattr(backend, "chat_tuned", True) and "\n\n" not in instruction.stop:
        # A base model (the embedded default) never writes an end-of-turn token: end the
        # instruction at its first paragraph instead of dropping nearly all as truncated.
        instruction = instruction.with_stop("\n\n")
    settings = {
        **info,
        "system_prompt": system_prompt,
        "instruction_sampling": _plain(instruction),
        "response_sampling": _plain(response) if response else None,
    }
    output = open_output(out, settings, overwrite=overwrite, resume=resume)
    previous = Counter(output.checkpoint.get("stats", {}))
    seen = _seen_instructions(out) if output.rows else set()
    source = Cursor(counter_source(batch_size, start=output.checkpoint.get("attempts", 0)))
    gen = Magpie(llm, template_of(backend), instruction, system_prompt, seen=seen)
    stages = [gen, *([Respond(llm, response)] if response else []), _constant("model", info["model"])]
    stages += [take(n - output.rows), report.progress(n, llm, initial=output.rows)]

    def stats() -> dict[str, int]:
        return dict(previous + gen.stats)

    def card() -> dict[str, Any]:
        return {
            "command": command,
            **settings,
            "stages": [repr(s) for s in stages[:-2]],
            "counts": stats(),
            "generated_tokens": llm.completion_tokens,
        }

    started = time.monotonic()
    try:
        write(
            pipe(source, *stages), output, card=card, checkpoint=lambda: {"attempts": source.position, "stats": stats()}
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {output.rows} rows are safe in {out}; run the same command with --resume to go on"
        ) from None
    seconds = time.monotonic() - started
    print(report.summary(output.rows, out, seconds, stats(), llm.completion_tokens), file=sys.stderr)
    return {"rows": output.rows, "counts": stats(), "seconds": seconds, "tokens": llm.completion_tokens}


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


def _plain(params: Sampling) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def _constant(name: str, value: str) -> Any:
    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield batch.append_column(name, pa.array([value] * batch.num_rows, pa.string()))

    stage.__qualname__ = f"constant({name}={value!r})"
    return stage


def _seen_instructions(out: str | Path) -> set[int]:
    # On resume, instructions already written still count as seen for the duplicate check.
    return {instruction_key(t) for b in read(out) for t in b["instruction"].to_pylist()}
