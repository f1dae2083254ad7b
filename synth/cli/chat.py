"""Commands that generate conversations: magpie, respond; and run, push, stats."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import recipes, report
from synth.backends import Sampling
from synth.backends.defaults import for_backend, from_family, recorded
from synth.cli._shared import (
    ActorsOpt,
    ColumnOpt,
    ExecutorOpt,
    MaxErrorRateOpt,
    ModelOpt,
    OutOpt,
    PersonaColumnOpt,
    QuietOpt,
    RayAddressOpt,
    Repetition,
    Saving,
    SeedOpt,
    Server,
    SourceArg,
    TemplateOpt,
    app,
    make_executor,
    push_out,
    shared_options,
)
from synth.core import SynthError
from synth.stages import persona

# Sampling options whose default comes from the model family's file (None: not given; the file, else generic).
InstructionTemperatureOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, help="Instructions' temperature. " + from_family(1.0)),
]
InstructionCapOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Instruction cap. " + from_family(256)),
]
InstructionMinPOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, max=1.0, help="Instructions' min-p. " + from_family(0.0)),
]
ResponseTemperatureOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, help="Answers' temperature. " + from_family(0.7)),
]
ResponseCapOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Answer cap. " + from_family(512)),
]
ResponseTopPOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, max=1.0, help="Answers' top-p. " + from_family(1.0)),
]
ResponseMinPOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, max=1.0, help="Answers' min-p. " + from_family(0.0)),
]
TemperatureOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, help="Sampling temperature. " + from_family(0.7)),
]
AnswerTokensOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Most tokens per answer. " + from_family(1024)),
]
TopPOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, max=1.0, help="Top-p. " + from_family(1.0)),
]
MinPOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.0, max=1.0, help="Min-p. " + from_family(0.0)),
]


@app.command()
@shared_options
def magpie(
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
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
    novelty: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Drop an instruction closer than this cosine distance to a kept one, before it is answered "
            "(dropped_similar)."
        ),
    ] = None,
    spread: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="topics|personas|tasks",
            help="Condition each attempt on an item drawn toward the clusters least represented among kept rows.",
        ),
    ] = None,
    topics: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="A `synth topics` output for --spread topics (default: the shipped taxonomy)."),
    ] = None,
    diverse: Annotated[
        bool, typer.Option("--diverse", help="Gate and spread as measured best: --novelty 0.3 --spread topics.")
    ] = False,
    instruction_temperature: InstructionTemperatureOpt = None,
    instruction_max_tokens: InstructionCapOpt = None,
    instruction_min_p: InstructionMinPOpt = None,
    response_temperature: ResponseTemperatureOpt = None,
    response_max_tokens: ResponseCapOpt = None,
    response_top_p: ResponseTopPOpt = None,
    response_min_p: ResponseMinPOpt = None,
    seed: SeedOpt = None,
    no_responses: Annotated[bool, typer.Option("--no-responses", help="Stop after the instructions.")] = False,
    max_attempts: Annotated[
        int,
        typer.Option(
            min=0, help="Cap on instructions tried; 0: no cap, but a run keeping almost nothing after 64 stops."
        ),
    ] = 0,
    keep_truncated: Annotated[
        bool,
        typer.Option("--keep-truncated", help="Keep answers cut off by max tokens or as looping (dropped by default)."),
    ] = False,
    repetition: Repetition = Repetition(),  # --repeat-penalty ... --no-loop-stop: @shared_options
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = 2,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
    quiet: QuietOpt = False,
) -> None:
    """Sample N instructions with Magpie, answer them, and write a Hugging Face dataset."""
    report.set_quiet(quiet)
    save.preflight(out, inputs=(personas,))
    recipes.chat.check_magpie(None if no_responses else Sampling(), turns)
    if personas:
        persona.check_personas(personas, persona_column)
    if diverse:
        novelty = recipes.diversity.DIVERSE["novelty"] if novelty is None else novelty
        spread = spread or recipes.diversity.DIVERSE["spread"]
    recipes.diversity.check_spread(spread, topics, novelty)
    llm = server.load(model, template)
    answerer = server.load(response_model) if response_model else None
    asks, answers = for_backend(llm), for_backend(answerer or llm)
    given = {"max_tokens": instruction_max_tokens, "temperature": instruction_temperature, "min_p": instruction_min_p}
    given.update(repetition.given())
    instruction = asks.sampling("instruction", Sampling(max_tokens=256, temperature=1.0, seed=seed), given)
    given = {"max_tokens": response_max_tokens, "temperature": response_temperature, **repetition.given()}
    given.update(top_p=response_top_p, min_p=response_min_p)
    response = answers.sampling("response", Sampling(max_tokens=512, temperature=0.7, seed=seed), given)
    recipes.magpie(
        llm,
        n=n,
        out=out,
        system_prompt=system_prompt,
        task=task,
        language=language,
        instruction=instruction,
        response=None if no_responses else response,
        response_backend=answerer,
        defaults=recorded((asks, "instruction"), *(() if no_responses else ((answers, "response"),))),
        turns=turns,
        exact_turns=exact_turns,
        personas=personas,
        persona_column=persona_column,
        novelty=novelty,
        spread=spread,
        topics=topics,
        max_attempts=max_attempts or None,
        keep_truncated=keep_truncated,
        make_backend=server.loader(model, template),
        make_response_backend=server.loader(response_model) if response_model else None,
        run=save.run(max_error_rate, make_executor(executor, ray_address, actors, llm)),
    )
    save.push(out)


@app.command()
@shared_options
def respond(
    source: SourceArg,
    out: OutOpt = Path("data/responses"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "instruction",
    messages_column: Annotated[Optional[str], typer.Option(help="Answer this conversation column instead.")] = None,  # noqa: UP045
    n_responses: Annotated[int, typer.Option(min=1, help="Responses per row, one row each.")] = 1,
    temperature: TemperatureOpt = None,
    max_tokens: AnswerTokensOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    seed: SeedOpt = None,
    repetition: Repetition = Repetition(),  # --repeat-penalty ... --no-loop-stop: @shared_options
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
    quiet: QuietOpt = False,
) -> None:
    """Answer the last user turn of every row of a dataset, keeping all its columns."""
    report.set_quiet(quiet)
    save.preflight(out, source, () if messages_column else (column,))
    recipes.chat.check_respond_input(source, column, messages_column)
    llm = server.load(model, template)
    family = for_backend(llm)
    given = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "min_p": min_p}
    params = family.sampling("response", Sampling(max_tokens=1024, temperature=0.7, seed=seed), given)
    recipes.respond(
        llm,
        source,
        out=out,
        column=column,
        messages_column=messages_column,
        params=repetition.apply(params),
        defaults=recorded((family, "response")),
        n_responses=n_responses,
        run=save.run(max_error_rate),
    )
    save.push(out)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="A pipeline script, e.g. pipelines/magpie_air.py.")],
) -> None:
    """Run a pipeline script; the arguments after it are the script's own (try --help)."""
    import runpy

    if not script.is_file():
        raise SynthError(f"pipeline script {script} does not exist; see the scripts in pipelines/")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="A finished synth output directory.")],
    repo: Annotated[str, typer.Option(help="The Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
) -> None:
    """Upload a dataset to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    push_out(path, repo, private)


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="A dataset synth reads.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write PNG plots and report.md here.")] = None,  # noqa: UP045
    tokens: Annotated[bool, typer.Option(help="Count tokens with the embedded model's tokenizer.")] = True,
    html: Annotated[
        bool, typer.Option("--html", help="Also write the `synth view` page (into --out, else beside PATH).")
    ] = False,
) -> None:
    """Counts, lengths, finish reasons, labels and duplicate rate of a dataset."""
    from synth import io
    from synth import stats as stats_

    io.check_input(path)
    if out:
        io.check_apart(out, [path])
    counter = None
    if tokens:
        from synth.backends.llamacpp import vocab_counter

        counter = vocab_counter()
    figures = stats_.collect(path, counter)
    print(stats_.table(figures))
    if out:
        print(f"synth: wrote {len(stats_.report(figures, out))} files to {out}", file=sys.stderr)
    if html:
        from synth import view

        print(f"synth: wrote {view.write_view(path, out / 'view.html' if out else None)}", file=sys.stderr)
