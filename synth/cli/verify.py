"""`synth verify code` and `synth verify math`: keep only what checks out."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import recipes
from synth.backends import Sampling
from synth.cli._shared import (
    ModelOpt,
    OutOpt,
    Saving,
    SeedOpt,
    Server,
    SourceArg,
    TemplateOpt,
    app,
    shared_options,
)
from synth.core import SynthError
from synth.sandbox import Limits, Sandbox, default_cache

verify_app = typer.Typer(
    help="Keep rows whose code runs and passes, or whose math answers check out.",
    no_args_is_help=True,
)
app.add_typer(verify_app, name="verify")

RejectsOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="Write the rows that failed verification here, with verify_status."),
]


@verify_app.command("code")
@shared_options
def code(
    source: SourceArg,
    out: OutOpt = Path("data/verified"),
    column: Annotated[str, typer.Option("--column", "-c", help="Column holding code blocks.")] = "response",
    tests_column: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Column of tests run after the code. Default: the asserts in the answer."),
    ] = None,
    rejects: RejectsOpt = None,
    require_tests: Annotated[
        bool, typer.Option("--require-tests", help="Drop code that runs but tests nothing (verify_status untested).")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a program may run (wall clock and CPU).")] = 10.0,
    memory_mb: Annotated[int, typer.Option(min=16, help="Address space a program may use, MiB.")] = 1024,
    file_mb: Annotated[int, typer.Option(min=1, help="Largest file a program may write, MiB.")] = 16,
    processes: Annotated[int, typer.Option(min=2, help="Processes a program may have at once.")] = 64,
    jobs: Annotated[int, typer.Option(min=0, help="Programs run at once. Default 0: the CPU count.")] = 0,
    python: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Python the programs run with (their packages are its). Default: synth's own."),
    ] = None,
    cache: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Results cache directory. Default: ~/.cache/synth/verify."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every program, even those run before.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and run at a time.")] = 256,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Run the Python in each row in a sandbox with its tests; keep the rows that pass."""
    save.preflight(out, source, (column,), sides={"--rejects": rejects})
    limits = Limits(timeout=timeout, memory_mb=memory_mb, file_mb=file_mb, processes=processes)
    if python is not None and not shutil.which(python):
        raise SynthError(f"--python {python} is not an executable; pass the path of a Python interpreter")
    interpreter = (shutil.which(python) if python else None) or sys.executable  # which() found it, just above
    sandbox = Sandbox(limits, jobs=jobs, cache=None if no_cache else (cache or default_cache()), python=interpreter)
    recipes.verify_code(
        source,
        out=out,
        sandbox=sandbox,
        column=column,
        tests_column=tests_column,
        rejects=rejects,
        require_tests=require_tests,
        batch_size=batch_size,
        run=save.run(),
    )
    save.push(out)


@verify_app.command("math")
@shared_options
def math(
    source: SourceArg,
    out: OutOpt = Path("data/verified"),
    column: Annotated[str, typer.Option("--column", "-c", help="Column holding the solution.")] = "response",
    reference_column: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Column holding the expected answer (or a solution ending in one)."),
    ] = None,
    samples: Annotated[int, typer.Option(min=0, help="Ask the model K solutions per problem; keep the majority.")] = 0,
    min_agreement: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="With --samples: least share of samples agreeing.")
    ] = 0.5,
    problem_column: Annotated[str, typer.Option(help="With --samples: column holding the problem.")] = "instruction",
    prompt: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="With --samples: prompt file with {problem}. Default: pipelines/verify/math.txt."),
    ] = None,
    rejects: RejectsOpt = None,
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    template: TemplateOpt = None,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Keep rows whose final answer matches --reference-column, or that K samples agree on."""
    save.preflight(out, source, (column,), sides={"--rejects": rejects})
    llm = None
    if samples:
        recipes.verify.load_prompt(prompt)  # a bad prompt file fails before the model loads
        llm = server.load(model, template)
    recipes.verify_math(
        source,
        out=out,
        backend=llm,
        samples=samples,
        column=column,
        problem_column=problem_column,
        reference_column=reference_column,
        min_agreement=min_agreement,
        prompt=prompt,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        rejects=rejects,
        run=save.run(),
    )
    save.push(out)
