"""Short compositions of stages that the CLI calls; each is readable as a recipe."""

from __future__ import annotations

import dataclasses
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
from synth.io import open_output, read, write
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
    rows_per_call: int = 128,
    overwrite: bool = False,
    resume: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Sample `n` kept Magpie instructions (and responses unless `response` is None) into `out`.

    Each backend call gets `rows_per_call` prompts: a batching backend (llama.cpp, vLLM) keeps
    its slots full from these, so it needs several times its own batch size per call.
    """
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
    source = Cursor(counter_source(rows_per_call, start=output.checkpoint.get("attempts", 0)))
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


def respond(
    backend: Backend,
    source: str | Path,
    *,
    out: str | Path,
    column: str = "instruction",
    params: Sampling = Sampling(max_tokens=512, temperature=0.7),
    rows_per_call: int = 128,
    overwrite: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Answer every row's `column` of `source` and write the rows with `response` to `out`."""
    llm = Metered(backend)
    stage = Respond(llm, params, column=column)
    settings = {**_describe(backend), "column": column, "response_sampling": _plain(params)}
    output = open_output(out, settings, overwrite=overwrite)
    started = time.monotonic()
    card = {"command": command, **settings, "stages": [repr(stage)]}
    write(pipe(read(source, batch_size=rows_per_call), stage, report.progress(None, llm)), output, card=card)
    seconds = time.monotonic() - started
    print(report.summary(output.rows, out, seconds, dict(stage.stats), llm.completion_tokens), file=sys.stderr)
    return {"rows": output.rows, "counts": dict(stage.stats), "seconds": seconds, "tokens": llm.completion_tokens}


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
