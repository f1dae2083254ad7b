"""Raw corpora: instruction synthesis (Instruction Pre-Training) and thinking augmentation (TPT)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.backends import Backend, Sampling
from synth.core import Batch, Stage, SynthError
from synth.io import read, tee
from synth.recipes._runner import RunSettings, _constants, _describe, _plain, _require, _resumable, _run, read_window
from synth.resources import choices, data_file, read_choice
from synth.stages.chunk import Chunk
from synth.stages.synthesize import GroundedCheck, InstructionPretrain, PromptPairs, SftRows, fill, pretrain_rows
from synth.stages.think import Think
from synth.tokens import context_size, token_counter


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
    chunk_tokens: int | None = None,
    overlap_tokens: int = 0,
    batch_size: int = 16,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Instruction-response pairs grounded in each chunk of a raw corpus, as SFT rows in `out`;
    with `pretrain_out`, also the instruction-augmented text, one row per chain of chunks.

    Chunks hold `chunk_tokens` of the model's tokens (default: what the context leaves), each
    starting with up to `overlap_tokens` of the one before. A read batch of `batch_size * rounds`
    documents is one chaining window (instruction-pretrain).
    """
    if mode not in MODES:
        raise SynthError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if check not in (None, "grounded"):
        raise SynthError(f"unknown check {check!r}; the one check is 'grounded'")
    llm, count = run.meter(backend), token_counter(backend)
    ctx = context_size(backend, context_tokens)
    settings = {
        **_describe(backend),
        **{"input": str(source), "mode": mode, "column": column, "rounds": rounds, "pairs": pairs, "check": check},
        **{"prompt_file": str(prompt_file or ""), "sampling": _plain(params), "context_tokens": ctx},
    }
    gen, overhead = _synthesizer(llm, count, ctx, mode, params, rounds, pairs, prompt_file)
    size = _chunk_size(_chunk_budget(ctx, params, overhead), chunk_tokens)
    settings.update(chunk_tokens=size, overlap_tokens=overlap_tokens)
    reading = ReadCounts()
    stages: list[Stage] = [reading, _require(column), Chunk(count, size, column, overlap_tokens), gen]
    output = run.open(out, settings, inputs=(source,))
    if check:
        stages.append(GroundedCheck(llm, data_file("pipelines/synthesize/checks/grounded.txt").read_text()))
    if pretrain_out:
        layouts = json.loads(data_file("pipelines/synthesize/layouts.json").read_text())
        side = run.open(pretrain_out, settings, inputs=(source,))
        card = {"command": run.command, **settings}
        stages.append(tee(side, lambda b: pretrain_rows(b, layouts, params.seed or 0), card=card))
    stages += [SftRows(), _constants({"mode": mode, "model": settings["model"]})]
    window = read_window(batch_size, backend) * (rounds if mode == "instruction-pretrain" else 1)
    rows = read(source, window, stats=reading.stats)
    return _run(_resumable(rows, output), stages, output, settings, run, meters=(llm,))


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
    keep_truncated: bool = False,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Each chunk of a raw corpus followed by a generated expert thinking trajectory (TPT); a
    thinking cut off by max tokens is dropped and counted (`dropped_truncated`) unless `keep_truncated`."""
    llm, count = run.meter(backend), token_counter(backend)
    ctx = context_size(backend, context_tokens)
    prompt = _prompt_text(prompt_file, "pipelines/think.txt")
    settings = {
        **_describe(backend),
        **{"input": str(source), "column": column, "prompt_file": str(prompt_file or "")},
        **{"sampling": _plain(params), "context_tokens": ctx},
    }
    if keep_truncated:  # recorded only when set: an output written before the option still resumes
        settings["keep_truncated"] = True
    gen = Think(llm, prompt, params, keep_truncated)
    overhead = _chat_tokens(backend, count, [{"role": "user", "content": fill(prompt, text="")}])
    reading = ReadCounts()
    stages: list[Stage] = [reading, _require(column), Chunk(count, _chunk_budget(ctx, params, overhead), column), gen]
    stages.append(_constants({"model": settings["model"]}))
    output = run.open(out, settings, inputs=(source,))
    rows = _resumable(read(source, read_window(batch_size, backend), stats=reading.stats), output)
    return _run(rows, stages, output, settings, run, meters=(llm,))


MODES = ("prompt", "instruction-pretrain")


@dataclass(frozen=True)
class ReadCounts:
    """Passes batches on; its `stats` are what reading the input counted (files by kind, documents
    skipped as unreadable, PDF pages without text), so they reach the card with the stages' counts."""

    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        yield from batches


def _chunk_size(budget: int, asked: int | None) -> int:
    if asked is not None and asked > budget:
        raise SynthError(f"--chunk-tokens {asked} is more than the {budget} tokens the context leaves for text")
    return asked or budget


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
