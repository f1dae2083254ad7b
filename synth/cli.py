"""The `synth` command: typed options in, a recipe call out. No logic lives here."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

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
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Prompts handed to the backend at once.")]
ColumnOpt = Annotated[str, typer.Option("--column", "-c", help="The text column to compare.")]
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
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Sample N instructions with Magpie, answer them, and write a Hugging Face dataset."""
    if overwrite and resume:
        raise SynthError("--overwrite and --resume exclude each other; pick one")
    llm = load_backend(model, backend, template=template, verbose=verbose)
    print(f"synth: backend {llm.name}, model {llm.model}, template {llm.template.family}", file=sys.stderr)
    recipes.magpie(
        llm,
        n=n,
        out=out,
        system_prompt=system_prompt,
        instruction=Sampling(max_tokens=instruction_max_tokens, temperature=instruction_temperature, seed=seed),
        response=None
        if no_responses
        else Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed),
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=shlex.join(["synth", *sys.argv[1:]]),
    )


@app.command()
def dedup(
    source: Annotated[Path, typer.Argument(help="A synth output, parquet, jsonl, csv or save_to_disk folder.")],
    out: OutOpt = Path("data/dedup"),
    column: ColumnOpt = "instruction",
    method: Annotated[str, typer.Option(help="exact, minhash or semantic.")] = "minhash",
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="minhash: Jaccard similarity to drop at (0.7); semantic: cosine distance below (0.15)."),
    ] = None,
    ngram: Annotated[Optional[int], typer.Option(help="minhash: words per shingle (1; 5 for documents).")] = None,  # noqa: UP045
    num_perm: Annotated[Optional[int], typer.Option(help="minhash: permutations (128).")] = None,  # noqa: UP045
    ignore_punctuation: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--ignore-punctuation", help="exact: compare texts without their punctuation."),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="semantic: sentence-transformers model name or path.")] = None,  # noqa: UP045
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows (and what they duplicate) here.")] = None,  # noqa: UP045
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read at once.")] = 1000,
    overwrite: OverwriteOpt = False,
) -> None:
    """Drop duplicate rows: exact, MinHash near-duplicates, or semantic (embeddings)."""
    recipes.dedup(
        source,
        out=out,
        method=method,
        column=column,
        threshold=threshold,
        rejects=rejects,
        overwrite=overwrite,
        batch_size=batch_size,
        command=shlex.join(["synth", *sys.argv[1:]]),
        ngram=ngram,
        num_perm=num_perm,
        ignore_punctuation=ignore_punctuation,
        model=model,
    )


def main() -> None:
    """Entry point: a `SynthError` becomes one clear line on stderr and exit code 2."""
    try:
        app()
    except SynthError as exc:
        print(f"synth: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
