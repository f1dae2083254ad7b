"""Commands over raw corpora: synthesize, think."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import recipes
from synth.backends import Sampling
from synth.cli._shared import (
    ApiKeyEnvOpt,
    BackendOpt,
    BaseUrlOpt,
    BatchOpt,
    ColumnOpt,
    ConcurrencyOpt,
    GpuMemoryOpt,
    MaxErrorRateOpt,
    MaxModelLenOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    PrivateOpt,
    PushOpt,
    ResumeOpt,
    SeedOpt,
    TemplateOpt,
    TensorParallelOpt,
    VerboseOpt,
    app,
    command_line,
    open_backend,
    preflight,
    push_out,
    server_opts,
)

InputArg = Annotated[
    Path, typer.Argument(help="A raw corpus: a folder of .txt/.md files, jsonl, parquet, csv, a save_to_disk folder.")
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
def synthesize(
    source: InputArg,
    out: OutOpt = Path("data/synthesize"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
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
    temperature: Optional[float] = None,  # noqa: UP045
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Instruction-response pairs grounded in each document of a raw corpus."""
    sides = {"--pretrain-out": pretrain_out}
    preflight(
        out, overwrite, resume, push_to_hub, source, (column,), inputs=(prompt_file,), sides=sides, private=private
    )
    greedy = mode is Mode.instruction_pretrain  # the released synthesizer decodes greedily
    temp = temperature if temperature is not None else (0.0 if greedy else 0.7)
    server = server_opts(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.synthesize(
        open_backend(model, backend, template, server),
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
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=command_line(),
    )
    push_out(out, push_to_hub, private)


@app.command()
def think(
    source: InputArg,
    out: OutOpt = Path("data/think"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "text",
    prompt_file: PromptFileOpt = None,
    context_tokens: ContextOpt = 0,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 2048,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Each document followed by an expert's generated thinking about it (thinking-augmented pre-training)."""
    preflight(out, overwrite, resume, push_to_hub, source, (column,), inputs=(prompt_file,), private=private)
    server = server_opts(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.think(
        open_backend(model, backend, template, server),
        source,
        out=out,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        prompt_file=prompt_file,
        context_tokens=context_tokens or None,
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=command_line(),
    )
    push_out(out, push_to_hub, private)
