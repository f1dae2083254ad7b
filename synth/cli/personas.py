"""The `synth personas` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synth import recipes
from synth.backends import Sampling
from synth.cli._shared import (
    DedupOpt,
    MaxErrorRateOpt,
    MaxTokensOpt,
    ModelOpt,
    OutOpt,
    PersonaColumnOpt,
    PersonasOpt,
    Saving,
    SeedOpt,
    Server,
    TemperatureOpt,
    TemplateOpt,
    app,
    shared_options,
)
from synth.stages import persona

personas_app = typer.Typer(
    help="Persona sets (Persona Hub): personas from text, related personas, persona-driven data.",
    no_args_is_help=True,
)
app.add_typer(personas_app, name="personas")


@personas_app.command("from-text")
@shared_options
def personas_from_text(
    source: Annotated[Path, typer.Argument(help="Documents: jsonl, parquet, csv, text files or a dataset folder.")],
    out: OutOpt = Path("data/personas"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: Annotated[str, typer.Option(help="Column holding the document text.")] = "text",
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Text-to-Persona: for each document, the person most likely to read, write, like or dislike it."""
    save.preflight(out, source, (column,))
    persona.check_documents(source, column)
    persona.dedup_personas(dedup)
    recipes.personas_from_text(
        server.load(model, template),
        source,
        out=out,
        column=column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        run=save.run(max_error_rate),
    )
    save.push(out)


@personas_app.command("expand")
@shared_options
def personas_expand(
    source: Annotated[str, typer.Argument(help="Persona set: starter, a file or folder, or a Hub id.")],
    out: OutOpt = Path("data/personas-expanded"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    hops: Annotated[int, typer.Option(min=1, help="Rounds of expansion; each expands the last round's personas.")] = 1,
    persona_column: PersonaColumnOpt = None,
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.9,
    max_tokens: MaxTokensOpt = 160,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Persona-to-Persona: people in close relationship with each persona, the relation kept."""
    save.preflight(out, inputs=(source,))
    persona.check_personas(source, persona_column)
    persona.dedup_personas(dedup)
    recipes.personas_expand(
        server.load(model, template),
        source,
        out=out,
        hops=hops,
        persona_column=persona_column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        run=save.run(max_error_rate),
    )
    save.push(out)


@personas_app.command("generate")
@shared_options
def personas_generate(
    personas: PersonasOpt = "starter",
    task: Annotated[
        str, typer.Option(help="What to write per persona: instruction, math, reasoning, knowledge, tool or npc.")
    ] = "instruction",
    out: OutOpt = Path("data/persona-data"),
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=0, help="Use the first N personas; 0: all.")] = 0,
    persona_column: PersonaColumnOpt = None,
    responses: Annotated[bool, typer.Option("--responses", help="Also answer each generated prompt.")] = False,
    diverse: Annotated[
        bool,
        typer.Option(
            "--diverse",
            help="Take the N personas from every cluster of the set, not its first N, and drop a text "
            "closer than cosine distance 0.15 to a kept one before it is answered (dropped_similar).",
        ),
    ] = False,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 512,
    response_temperature: TemperatureOpt = 0.7,
    response_max_tokens: MaxTokensOpt = 1024,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """One prompt, problem or text per persona, from the persona-driven templates."""
    save.preflight(out, inputs=(personas,))
    persona.load_template(task)
    persona.check_personas(personas, persona_column)
    recipes.personas_generate(
        server.load(model, template),
        personas,
        out=out,
        task=task,
        n=n or None,
        persona_column=persona_column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        responses=Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed)
        if responses
        else None,
        novelty=recipes.diversity.PERSONA_NOVELTY if diverse else None,
        spread=diverse,
        run=save.run(max_error_rate),
    )
    save.push(out)
