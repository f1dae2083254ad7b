"""The `synth` command: typed options in, a recipe call out. No logic lives here."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import io, recipes
from synth.backends import Backend, Sampling, load_backend
from synth.core import SynthError
from synth.stages import persona

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
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend's own logs.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling.")]  # noqa: UP045
PersonasOpt = Annotated[
    str, typer.Option("--personas", "-p", help="Persona set: starter (shipped), a file or folder, or a Hub id.")
]
PersonaColumnOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Column holding the persona text, for sets synth does not recognise."),
]
DedupOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Dedup the new personas: minhash, semantic, or both (MinHash then semantic)."),
]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")]
MaxTokensOpt = Annotated[int, typer.Option(min=1, help="Most tokens generated per row.")]


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
    task: Annotated[Optional[str], typer.Option(help="Steer with a shipped task prompt: math, code, ...")] = None,  # noqa: UP045
    language: Annotated[Optional[str], typer.Option(help="Ask for this language (a code like fr).")] = None,  # noqa: UP045
    turns: Annotated[int, typer.Option(min=1, help="User turns per conversation.")] = 1,
    exact_turns: Annotated[bool, typer.Option("--exact-turns", help="Drop conversations that end early.")] = False,
    response_model: Annotated[Optional[str], typer.Option(help="Another model for the responses.")] = None,  # noqa: UP045
    personas: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Put one persona per row in the system prompt: starter, a file or a Hub id."),
    ] = None,
    persona_column: PersonaColumnOpt = None,
    instruction_temperature: float = 1.0,
    instruction_max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    response_temperature: float = 0.7,
    response_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: SeedOpt = None,
    no_responses: Annotated[bool, typer.Option("--no-responses", help="Stop after the instructions.")] = False,
    batch_size: BatchOpt = 64,
    max_attempts: Annotated[int, typer.Option(min=0, help="Cap on instructions tried; 0: no cap.")] = 0,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Sample N instructions with Magpie, answer them, and write a Hugging Face dataset."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    if personas:
        persona.check_personas(personas, persona_column)
    llm = _open(model, backend, template, verbose)
    recipes.magpie(
        llm,
        n=n,
        out=out,
        system_prompt=system_prompt,
        task=task,
        language=language,
        instruction=Sampling(max_tokens=instruction_max_tokens, temperature=instruction_temperature, seed=seed),
        response=None
        if no_responses
        else Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed),
        response_backend=_open(response_model, backend, None, verbose) if response_model else None,
        turns=turns,
        exact_turns=exact_turns,
        personas=personas,
        persona_column=persona_column,
        batch_size=batch_size,
        max_attempts=max_attempts or None,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@app.command()
def respond(
    source: Annotated[Path, typer.Argument(help="Any dataset synth reads: a synth output, jsonl, parquet, csv.")],
    out: OutOpt = Path("data/responses"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    column: Annotated[str, typer.Option(help="Column holding the instruction.")] = "instruction",
    messages_column: Annotated[Optional[str], typer.Option(help="Answer this conversation column instead.")] = None,  # noqa: UP045
    n_responses: Annotated[int, typer.Option(min=1, help="Responses per row, one row each.")] = 1,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Answer the last user turn of every row of a dataset, keeping all its columns."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    recipes.respond(
        _open(model, backend, template, verbose),
        source,
        out=out,
        column=column,
        messages_column=messages_column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        n_responses=n_responses,
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


personas_app = typer.Typer(
    help="Persona sets (Persona Hub): personas from text, related personas, persona-driven data.",
    no_args_is_help=True,
)
app.add_typer(personas_app, name="personas")


@personas_app.command("from-text")
def personas_from_text(
    source: Annotated[Path, typer.Argument(help="Documents: jsonl, parquet, csv, text files or a dataset folder.")],
    out: OutOpt = Path("data/personas"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    column: Annotated[str, typer.Option(help="Column holding the document text.")] = "text",
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Text-to-Persona: for each document, the person most likely to read, write, like or dislike it."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    persona.check_documents(source, column)
    persona.dedup_personas(dedup)
    recipes.personas_from_text(
        _open(model, backend, template, verbose),
        source,
        out=out,
        column=column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@personas_app.command("expand")
def personas_expand(
    source: Annotated[str, typer.Argument(help="Persona set: starter, a file or folder, or a Hub id.")],
    out: OutOpt = Path("data/personas-expanded"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    hops: Annotated[int, typer.Option(min=1, help="Rounds of expansion; each expands the last round's personas.")] = 1,
    persona_column: PersonaColumnOpt = None,
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.9,
    max_tokens: MaxTokensOpt = 160,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Persona-to-Persona: people in close relationship with each persona, the relation kept."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    persona.check_personas(source, persona_column)
    persona.dedup_personas(dedup)
    recipes.personas_expand(
        _open(model, backend, template, verbose),
        source,
        out=out,
        hops=hops,
        persona_column=persona_column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@personas_app.command("generate")
def personas_generate(
    personas: PersonasOpt = "starter",
    task: Annotated[
        str, typer.Option(help="What to write per persona: instruction, math, reasoning, knowledge, tool or npc.")
    ] = "instruction",
    out: OutOpt = Path("data/persona-data"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=0, help="Use the first N personas; 0: all.")] = 0,
    persona_column: PersonaColumnOpt = None,
    responses: Annotated[bool, typer.Option("--responses", help="Also answer each generated prompt.")] = False,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 512,
    response_temperature: TemperatureOpt = 0.7,
    response_max_tokens: MaxTokensOpt = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """One prompt, problem or text per persona, from the persona-driven templates."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    persona.load_template(task)
    persona.check_personas(personas, persona_column)
    recipes.personas_generate(
        _open(model, backend, template, verbose),
        personas,
        out=out,
        task=task,
        n=n or None,
        persona_column=persona_column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        responses=Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed)
        if responses
        else None,
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


def _open(model: str | None, backend: str, template: str | None, verbose: bool) -> Backend:
    llm = load_backend(model, backend, template=template, verbose=verbose)
    print(f"synth: backend {llm.name}, model {llm.model}, template {llm.template.family}", file=sys.stderr)
    return llm


def _command() -> str:
    return shlex.join(["synth", *sys.argv[1:]])


def main() -> None:
    """Entry point: a `SynthError` becomes one clear line on stderr and exit code 2."""
    try:
        app()
    except SynthError as exc:
        print(f"synth: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
