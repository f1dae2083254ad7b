"""`synth calibrate`: a judge's agreement with human labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth.cli._shared import OverwriteOpt, app


@app.command()
def calibrate(
    judged: Annotated[
        str, typer.Argument(help="Judged rows: a synth judge output, a file, or a Hub dataset OWNER/NAME:SPLIT.")
    ],
    labels: Annotated[
        str,
        typer.Option(help="Human labels: `id` plus one column per field, or MT-Bench's human votes (file or Hub id)."),
    ],
    field: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            help="A field to compare (default: every judge field the labels have); "
            "NAME=COL1,COL2 compares several judges' columns. Repeatable."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.md, report.json and the PNGs.")] = Path(
        "reports/calibration"
    ),
    resamples: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the 95% intervals (0: none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """A judge against people: accuracy, kappa, confusion matrix, per-label precision and recall, with 95% intervals."""
    from synth import agreement, io
    from synth import calibrate as calibration

    io.check_apart(out, [judged, labels])

    result = calibration.calibrate(
        judged, labels, out=out, fields=field or [], resamples=resamples, seed=seed, overwrite=overwrite
    )
    print(agreement.summary(result))
