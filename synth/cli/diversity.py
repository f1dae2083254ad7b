"""Commands that measure and steer diversity: diversity, topics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.backends import Sampling
from synth.cli._shared import (
    MaxTokensOpt,
    ModelOpt,
    OverwriteOpt,
    SeedOpt,
    Server,
    SourceArg,
    TemperatureOpt,
    TemplateOpt,
    app,
    command_line,
    preflight,
    shared_options,
)


@app.command()
def diversity(
    source: SourceArg,
    column: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--column", "-c", help="The text column (default: instruction, text, prompt or response)."),
    ] = None,
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Another dataset: the share of its clusters this one covers, and the reverse."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="Write diversity.json and diversity.md here."),
    ] = None,
    embedder: Annotated[str, typer.Option(help="static (default, no torch), minilm, or a model path.")] = "static",
    sample: Annotated[int, typer.Option(min=2, help="Rows measured; a larger set is sampled uniformly.")] = 10_000,
    clusters: Annotated[int, typer.Option("--clusters", "-k", min=1, help="Clusters for the entropy.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the sample, the bootstrap and the clustering.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Vendi score, nearest-neighbour similarity, distinct-1/2 and cluster entropy of a text column."""
    from synth.recipes.diversity import diversity as measure
    from synth.stages.diversity import table

    figures = measure(
        source,
        column=column,
        reference=reference,
        out=out,
        embedder=embedder,
        sample=sample,
        k=clusters,
        seed=seed,
        overwrite=overwrite,
    )
    print(table(figures))
    if out:
        print(f"synth: wrote diversity.json and diversity.md to {out}", file=sys.stderr)


@app.command()
@shared_options
def topics(
    model: ModelOpt = None,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=1, help="Subtopics to keep (the taxonomy's leaves).")] = 200,
    per_topic: Annotated[int, typer.Option(min=2, help="Subtopics asked of each macro topic.")] = 10,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (rows topic, subtopic).")] = Path(
        "data/topics"
    ),
    temperature: TemperatureOpt = 0.9,
    max_tokens: MaxTokensOpt = 256,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a two-level topic taxonomy with the model (macro topics, then subtopics), for --spread topics."""
    from synth.recipes import RunSettings
    from synth.recipes.diversity import topics as write_topics

    preflight(out, overwrite, False, None)
    write_topics(
        server.load(model, template),
        n=n,
        out=out,
        per_topic=per_topic,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        run=RunSettings(overwrite=overwrite, max_error_rate=None, command=command_line()),
    )
