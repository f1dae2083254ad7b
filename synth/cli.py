"""The `synth` command: typed options in, a recipe call out. No logic lives here."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from synth import recipes
from synth.backends import Sampling, load_backend
from synth.core import SynthError

app = typer.Typer(
    help="Synthetic training data for language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Shared option aliases, one place.
ModelOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer reads the annotation at runtime on Python 3.10
    typer.Option("--model", "-m", help="A local .gguf path. Default: the embedded Gemma 3 270M."),
]
BackendOpt = Annotated[str, typer.Option(help="Backend: auto or llamacpp.")]
TemplateOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Chat template family (llama3, qwen2.5, chatml, gemma, phi3, phi4, mistral) or a .jinja file."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (a Hub dataset repo layout).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace what the output directory holds.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in the output directory.")]
BatchOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--batch-size",
        min=1,
        max=255,
        help="Sequences the backend decodes together, one token each per step. Default: 16 on llama.cpp.",
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend's own logs.")]


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Synthetic training data for language models."""
    if version:
        from synth import __version__

        print(__version__)
        raise typer.Exit()


@app.command()
def magpie(
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=1, help="Rows to keep (not attempts).")] = 1000,
    out: OutOpt = Path("data/magpie"),
    system_prompt: Annotated[Optional[str], typer.Option(help="System prompt to steer the instructions.")] = None,  # noqa: UP045
    instruction_temperature: float = 1.0,
    instruction_max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    response_temperature: float = 0.7,
    response_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling.")] = None,  # noqa: UP045
    no_responses: Annotated[bool, typer.Option("--no-responses", help="Stop after the instructions.")] = False,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Sample N instructions with Magpie, answer them, and write a Hugging Face dataset."""
    if overwrite and resume:
        raise SynthError("--overwrite and --resume exclude each other; pick one")
    llm = _backend(model, backend, template, batch_size, verbose)
    recipes.magpie(
        llm,
        n=n,
        out=out,
        system_prompt=system_prompt,
        instruction=Sampling(max_tokens=instruction_max_tokens, temperature=instruction_temperature, seed=seed),
        response=None
        if no_responses
        else Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed),
        overwrite=overwrite,
        resume=resume,
        command=shlex.join(["synth", *sys.argv[1:]]),
    )


@app.command()
def respond(
    source: Annotated[Path, typer.Argument(help="Rows to answer: a synth output, parquet, jsonl, csv or text files.")],
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    out: OutOpt = Path("data/respond"),
    column: Annotated[str, typer.Option(help="The column holding the instructions.")] = "instruction",
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling.")] = None,  # noqa: UP045
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Answer each row's instruction and write the rows with a `response` column."""
    llm = _backend(model, backend, template, batch_size, verbose)
    recipes.respond(
        llm,
        source,
        out=out,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        overwrite=overwrite,
        command=shlex.join(["synth", *sys.argv[1:]]),
    )


def _backend(model: str | None, kind: str, template: str | None, batch_size: int | None, verbose: bool) -> Any:
    options = {"verbose": verbose} | ({"batch_size": batch_size} if batch_size else {})
    llm = load_backend(model, kind, template=template, **options)
    print(f"synth: backend {llm.name}, model {llm.model}, template {llm.template.family}", file=sys.stderr)
    return llm


def main() -> None:
    """Entry point: a `SynthError` becomes one clear line on stderr and exit code 2."""
    try:
        app()
    except SynthError as exc:
        print(f"synth: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
