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
SourceArg = Annotated[Path, typer.Argument(help="Any dataset synth reads: a synth output, jsonl, parquet, csv.")]
ColumnOpt = Annotated[str, typer.Option(help="Column holding the instruction.")]
ResponseColumnOpt = Annotated[str, typer.Option(help="Column holding the response.")]
JudgesOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--model", "-m", help="Judge model, a local .gguf path; repeat with --jury. Default: embedded."),
]
JuryOpt = Annotated[bool, typer.Option("--jury", help="Several --model judges: average scores, majority labels.")]


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
        batch_size=batch_size,
        max_attempts=max_attempts or None,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@app.command()
def respond(
    source: SourceArg,
    out: OutOpt = Path("data/responses"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    column: ColumnOpt = "instruction",
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


@app.command()
def judge(
    source: SourceArg,
    out: OutOpt = Path("data/judged"),
    model: JudgesOpt = None,
    jury: JuryOpt = False,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    rubric: Annotated[str, typer.Option(help="Rubric names or .yaml files, comma-separated.")] = "quality",
    column: ColumnOpt = "instruction",
    response_column: ResponseColumnOpt = "response",
    text_column: Annotated[str, typer.Option(help="Column holding the text (edu, junk).")] = "text",
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    temperature: float = 0.0,
    batch_size: BatchOpt = 64,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Judge every row with LLM rubrics: one column per rubric field, and judge_status."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    recipes.judge(
        _judges(model, jury, backend, template, verbose),
        source,
        out=out,
        rubrics=[r.strip() for r in rubric.split(",") if r.strip()],
        inputs={"instruction": column, "response": response_column, "text": text_column},
        params=Sampling(max_tokens=max_tokens, temperature=temperature),
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@app.command("filter")
def filter_(
    source: SourceArg,
    out: OutOpt = Path("data/filtered"),
    where: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help='Keep rows where this holds, e.g. "input_quality >= good"; repeatable.'),
    ] = None,
    heuristics: Annotated[str, typer.Option(help="default, none, or a .toml rules file.")] = "default",
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows here, with rejected_by.")] = None,  # noqa: UP045
    column: ColumnOpt = "instruction",
    response_column: ResponseColumnOpt = "response",
    batch_size: BatchOpt = 1000,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Keep rows that pass the heuristic rules and every --where condition on judge columns."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    if rejects:
        io.preflight(rejects, overwrite=overwrite, resume=resume)
    recipes.filter_rows(
        source,
        out=out,
        where=where or [],
        heuristics=heuristics,
        rejects=rejects,
        instruction=column,
        response=response_column,
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


@app.command()
def prefs(
    source: SourceArg,
    out: OutOpt = Path("data/prefs"),
    model: ModelOpt = None,
    judge_model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Judge model(s); repeat with --jury. Default: the --model."),
    ] = None,
    jury: JuryOpt = False,
    backend: BackendOpt = "auto",
    template: TemplateOpt = None,
    k: Annotated[int, typer.Option(min=2, help="Responses sampled per instruction.")] = 4,
    rubric: Annotated[str, typer.Option(help="Rubric that scores a response.")] = "response",
    column: ColumnOpt = "instruction",
    temperature: float = 1.0,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    judge_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: SeedOpt = None,
    batch_size: BatchOpt = 16,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Best-of-k preference pairs: prompt, chosen, rejected, with the judge's scores."""
    io.preflight(out, overwrite=overwrite, resume=resume)
    llm = _open(model, backend, template, verbose)
    judges = _judges(judge_model, jury, backend, template, verbose) if judge_model else [llm]
    recipes.prefs(
        llm,
        judges,
        source,
        out=out,
        k=k,
        rubric=rubric,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        judge_params=Sampling(max_tokens=judge_max_tokens, temperature=0.0),
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )


def _judges(models: list[str] | None, jury: bool, backend: str, template: str | None, verbose: bool) -> list[Backend]:
    models = models or [None]  # type: ignore[list-item]
    if len(models) > 1 and not jury:
        raise SynthError(f"{len(models)} judge models given; pass --jury to combine them, or give one --model")
    return [_open(m, backend, template, verbose) for m in models]


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
