"""`synth view`: the dataset viewer, one HTML file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli._shared import app

SampleOpt = Annotated[int, typer.Option(min=1, help="Rows to browse in the page, stratified (charts use all rows).")]
MapOpt = Annotated[bool, typer.Option(help="Draw the 2-D map of instruction embeddings (the dedup embedder).")]


@app.command()
def view(
    path: Annotated[Path, typer.Argument(help="A dataset synth reads (a synth output folder shows its card too).")],
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="The HTML file to write. Default: DIR/view.html."),
    ] = None,
    rejects: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Rejected rows to show beside the kept ones (a --rejects output)."),
    ] = None,
    sample: SampleOpt = 2000,
    map_: Annotated[bool, typer.Option("--map/--no-map", help="Draw the 2-D embedding map.")] = True,
) -> None:
    """Write one self-contained HTML page to browse a dataset: card, funnel, charts, rows."""
    from synth import view as view_

    written = view_.write_view(path, out, rejects, sample, embed_map=map_)
    print(f"synth: wrote {written} (open it in a browser; it needs no server or network)", file=sys.stderr)
