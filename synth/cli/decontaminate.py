"""`synth decontaminate`: drop rows that hold evaluation benchmark items."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import recipes
from synth.backends import Sampling
from synth.benchmarks import Fields, catalogue_names
from synth.cli._shared import (
    ApiKeyEnvOpt,
    BackendOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    MaxErrorRateOpt,
    OutOpt,
    Saving,
    Server,
    SourceArg,
    TemplateOpt,
    VerboseOpt,
    app,
    shared_options,
)
from synth.core import SynthError
from synth.recipes.decontaminate import benchmarks as load_benchmarks

ListOpt = Optional[list[str]]  # noqa: UP045 - typer reads the annotation at runtime on Python 3.10


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for value in values or [] for v in value.split(",") if v.strip())


@app.command()
@shared_options
def decontaminate(
    source: SourceArg,
    against: Annotated[
        list[str],
        typer.Option(
            "--against",
            "-a",
            help=f"A benchmark: a name ({', '.join(catalogue_names())}), NAME=PATH for a local copy, a Hub id "
            "(owner/name[:config][@split]), or a file or folder. Repeatable.",
        ),
    ],
    out: OutOpt = Path("data/decontaminated"),
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows here, with contaminated_by.")] = None,  # noqa: UP045
    column: Annotated[
        ListOpt,
        typer.Option("--column", "-c", help="Text column(s) to check; repeatable. Default: instruction and response."),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="ngram, edit, embedding and llm, comma-separated; --model adds llm.")
    ] = "ngram,edit,embedding",
    ngram: Annotated[int, typer.Option(min=1, help="Words per n-gram of the copy check (ngram).")] = 13,
    ngram_threshold: Annotated[
        float, typer.Option(help="Share of a benchmark item's n-grams a row must hold to be dropped.")
    ] = 0.5,
    edit_ngram: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Words per n-gram of the edited-copy check (edit). Default: calibrated, 2."),
    ] = None,
    edit_threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="edit: weighted share of an item's question n-grams from which a row is dropped. "
            "Default: calibrated (filters/decontamination/thresholds.yaml)."
        ),
    ] = None,
    embedding_threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Cosine similarity to a benchmark question from which a row is dropped. "
            "Default: calibrated per embedder (filters/decontamination/thresholds.yaml)."
        ),
    ] = None,
    embedding_model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Embedder: minilm (default), static (fast), or a model name or path."),
    ] = None,
    question_field: Annotated[
        ListOpt, typer.Option(help="For a set not in the catalogue: its question field(s).")
    ] = None,
    answer_field: Annotated[ListOpt, typer.Option(help="... its answer field(s).")] = None,
    choices_field: Annotated[ListOpt, typer.Option(help="... its answer-choice field(s).")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="... its item id field.")] = None,  # noqa: UP045
    split: Annotated[Optional[str], typer.Option(help="Hub split (default: the catalogue's, else test).")] = None,  # noqa: UP045
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--model", "-m", help="LLM check: the model asked whether a close row is a rephrase."),
    ] = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    template: TemplateOpt = None,
    judge_floor: Annotated[float, typer.Option(help="LLM check: the cosine from which a row is asked about.")] = 0.6,
    rubric: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="LLM check: a copy of filters/decontamination/rephrase.yaml to use instead."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and checked at once.")] = 8192,
    max_error_rate: MaxErrorRateOpt = 0.05,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
    verbose: VerboseOpt = False,
) -> None:
    """Drop rows that hold evaluation benchmark items: n-gram overlap, embedding similarity, LLM check."""
    local = tuple(a.split("=", 1)[-1] for a in against)  # benchmark files on disk are inputs too
    save.preflight(out, source, inputs=local, sides={"--rejects": rejects})
    chosen = _split([methods])
    if "llm" in chosen and model is None:
        raise SynthError("--methods llm needs --model: the model that checks the embedding method's candidates")
    fields = Fields(_split(question_field), _split(answer_field), _split(choices_field), id_field)
    sets = load_benchmarks(against, fields, split)  # a bad --against fails before any model loads
    judge = None
    if model is not None:
        judge = Server(backend, base_url, api_key_env, concurrency, verbose=verbose).load(model, template)
    recipes.decontaminate(
        source,
        sets,
        out=out,
        rejects=rejects,
        columns=_split(column) or ("instruction", "response"),
        methods=chosen,
        judge=judge,
        batch_size=batch_size,
        run=save.run(max_error_rate),
        ngram=ngram,
        ngram_threshold=ngram_threshold,
        edit_ngram=edit_ngram,
        edit_threshold=edit_threshold,
        embedding_threshold=embedding_threshold,
        model=embedding_model,
        judge_floor=judge_floor,
        rubric=str(rubric) if rubric else None,
        judge_params=Sampling(max_tokens=32, temperature=0.0),
    )
    save.push(out)
