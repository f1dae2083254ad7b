"""Commands over raw corpora: synthesize, think."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import recipes
from synth.backends import Sampling
from synth.cli._shared import (
    ColumnOpt,
    MaxErrorRateOpt,
    ModelOpt,
    OutOpt,
    Saving,
    SeedOpt,
    Server,
    TemplateOpt,
    app,
    shared_options,
)

InputArg = Annotated[
    Path,
    typer.Argument(
        help="A raw corpus: a folder or glob of .txt/.md, HTML, PDF, DOCX, PPTX, EPUB or WARC/WET files "
        "(these need pip install 'synth[docs]'), jsonl, parquet, csv, a save_to_disk folder."
    ),
]
ContextOpt = Annotated[
    int, typer.Option("--context-tokens", min=0, help="Tokens the model's context holds; 0: ask the backend.")
]
PromptFileOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--prompt-file", exists=True, dir_okay=False, help="Your own prompt template; {text} is where the chunk goes."
    ),
]


class Mode(str, Enum):
    prompt = "prompt"
    instruction_pretrain = "instruction-pretrain"


class Check(str, Enum):
    grounded = "grounded"


@app.command()
@shared_options
def synthesize(
    source: InputArg,
    out: OutOpt = Path("data/synthesize"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "text",
    mode: Annotated[Mode, typer.Option(help="JSON from any instruct model, or <CON> format.")] = Mode.prompt,
    rounds: Annotated[int, typer.Option(min=1, help="instruction-pretrain: few-shot chaining rounds.")] = 2,
    pairs: Annotated[int, typer.Option(min=1, help="prompt: pairs to ask for per chunk.")] = 5,
    prompt_file: PromptFileOpt = None,
    check: Annotated[Optional[Check], typer.Option(help="grounded: a judge drops unsupported answers.")] = None,  # noqa: UP045
    pretrain_out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write instruction-augmented pre-training text here."),
    ] = None,
    context_tokens: ContextOpt = 0,
    chunk_tokens: Annotated[
        int, typer.Option(min=0, help="Tokens of text per chunk, by the model's tokenizer; 0: what the context leaves.")
    ] = 0,
    overlap_tokens: Annotated[
        int, typer.Option(min=0, help="Tokens each chunk repeats from the one before (whole sentences).")
    ] = 0,
    temperature: Optional[float] = None,  # noqa: UP045
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Instruction-response pairs grounded in each document of a raw corpus."""
    sides = {"--pretrain-out": pretrain_out}
    save.preflight(out, source, (column,), inputs=(prompt_file,), sides=sides)
    greedy = mode is Mode.instruction_pretrain  # the released synthesizer decodes greedily
    temp = temperature if temperature is not None else (0.0 if greedy else 0.7)
    recipes.synthesize(
        server.load(model, template),
        source,
        out=out,
        mode=mode.value,
        column=column,
        rounds=rounds,
        pairs=pairs,
        prompt_file=prompt_file,
        check=check.value if check else None,
        params=Sampling(max_tokens=max_tokens, temperature=temp, seed=seed),
        pretrain_out=pretrain_out,
        context_tokens=context_tokens or None,
        chunk_tokens=chunk_tokens or None,
        overlap_tokens=overlap_tokens,
        run=save.run(max_error_rate),
    )
    save.push(out)


@app.command()
@shared_options
def think(
    source: InputArg,
    out: OutOpt = Path("data/think"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "text",
    prompt_file: PromptFileOpt = None,
    context_tokens: ContextOpt = 0,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 2048,
    seed: SeedOpt = None,
    keep_truncated: Annotated[
        bool, typer.Option("--keep-truncated", help="Keep thinking cut off by --max-tokens (dropped by default).")
    ] = False,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Each document followed by an expert's generated thinking about it (thinking-augmented pre-training)."""
    save.preflight(out, source, (column,), inputs=(prompt_file,))
    recipes.think(
        server.load(model, template),
        source,
        out=out,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        prompt_file=prompt_file,
        keep_truncated=keep_truncated,
        context_tokens=context_tokens or None,
        run=save.run(max_error_rate),
    )
    save.push(out)
