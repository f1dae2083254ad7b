"""Diversity: measure a dataset (`diversity`), write a topic taxonomy with a model (`topics`), and
build the spreading stage `synth magpie --spread` uses (`spread_stage`)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth.backends import Backend, Sampling
from synth.core import StoppedShort, SynthError, from_rows
from synth.io import check_apart, check_input, read, write
from synth.recipes._runner import RunSettings, _describe, _plain, with_diversity
from synth.resources import choices, data_file, read_choice
from synth.stages import diversity as div
from synth.stages.dedup import SemanticDedup
from synth.stages.embed import STATIC
from synth.stages.magpie import instruction_key

TEXT_COLUMNS = ("instruction", "text", "prompt", "response")
CARD_COLUMNS = ("instruction", "text", "prompt", "persona", "response")  # a card measures the first its data has
TOPICS = "pipelines/topics/default.jsonl"
SPREADS = ("topics", "personas", "tasks")
# The topic named twice, as the assistant's field and as what users ask about: SmolLM2-135M wrote
# about the topic drawn in about 16 of 24 attempts (seed 5, read one by one) against 5 of 24 with
# "You are a helpful AI assistant. The user will ask you a question or make a request about {item}.
# They write it the way a real person would." (which it mostly ignored: chess strategy -> cafés).
TOPIC_TEMPLATE = "You are an expert in {item}. Users ask you questions about {item}."
FILES = ("diversity.json", "diversity.md")
# `--diverse`: spreading over the shipped topics and the gate at cosine distance 0.3 (static
# embedder), the distance whose first 200 rows scored the highest Vendi per row with MiniLM among
# 0.2-0.4 on SmolLM2's spread Magpie (benchmarks/diversity_gate.py: 0.541 ungated, 0.547 at 0.3, at
# 1.24 attempts a row; results/diversity-gate.json). `synth personas generate --diverse` keeps 0.15
# (PERSONA_NOVELTY: its texts share a form, "As a chef, write..."; not tuned).
DIVERSE: dict[str, Any] = {"novelty": 0.3, "spread": "topics"}
PERSONA_NOVELTY = 0.15


def pick_column(source: str | Path, column: str | None) -> str:
    """`column`, else the first of instruction, text, prompt, response the source has."""
    first = check_input(source, (column,) if column else ())
    if column:
        return column
    found = next((c for c in TEXT_COLUMNS if c in first.column_names), None)
    if found is None:
        raise SynthError(
            f"{source} has none of the columns {', '.join(TEXT_COLUMNS)} (it has {', '.join(first.column_names)}); "
            "name the text column with --column"
        )
    return found


def sampled_texts(source: str | Path, column: str, sample: int, seed: int = 0) -> tuple[list[str], int]:
    """A uniform sample of at most `sample` texts of `column` (nulls and non-text skipped), and
    how many texts the column holds."""
    texts: list[str] = []
    for batch in read(source, 10_000):
        values = batch[column]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            texts += [t for t in values.to_pylist() if t]
    keep = div.sample_rows(len(texts), sample, seed)
    return [texts[i] for i in keep], len(texts)


def diversity(
    source: str | Path,
    *,
    column: str | None = None,
    reference: str | Path | None = None,
    reference_column: str | None = None,
    out: str | Path | None = None,
    embedder: str = STATIC,
    sample: int = div.SAMPLE,
    k: int = div.CLUSTERS,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The diversity figures of `source`'s `column` (see `synth.stages.diversity`), against
    `reference` if given; with `out`, written there as `diversity.json` and `diversity.md`."""
    column = pick_column(source, column)
    ref_column = pick_column(reference, reference_column) if reference is not None else None
    if out is not None:
        check_out(out, [source, reference], overwrite)
    texts, rows = sampled_texts(source, column, sample, seed)
    ref = sampled_texts(reference, ref_column, sample, seed)[0] if reference is not None and ref_column else None
    figures = div.measure(texts, embedder, k=k, seed=seed, reference=ref, rows=rows)
    figures.update(source=str(source), column=column, reference_source=None if reference is None else str(reference))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / FILES[0]).write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
        page = ["# Diversity", "", f"{source}, column `{column}`", "", "```text", div.table(figures), "```", ""]
        (out / FILES[1]).write_text("\n".join(page), encoding="utf-8")
    return figures


def card_diversity(files: Sequence[str | Path], column: str | None = None, *, seed: int = 0) -> dict[str, Any]:
    """The `diversity` block of a dataset card: the figures of `column` (default: the first of
    instruction, text, prompt, persona, response the parquet `files` hold) on the uniform sample
    `synth diversity` takes, with the static embedder; or, where there are none, `absent` saying
    why. Never raises: the run it ends has made its rows, and a measure is no reason to fail it."""
    import pyarrow.parquet as pq

    if not files:
        return {"column": column, "absent": "no rows to measure"}
    names = pq.read_schema(files[0]).names
    column = column or next((c for c in CARD_COLUMNS if c in names), None)
    if column is None or column not in names:
        return {"column": column, "absent": f"no text column to measure ({', '.join(CARD_COLUMNS)})"}
    missing = static_missing()
    if missing:
        return {"column": column, "absent": missing}
    texts: list[str] = []
    for file in files:
        values = pq.read_table(file, columns=[column])[column]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            texts += [t for t in values.to_pylist() if t]
    if len(texts) < 2:
        return {"column": column, "absent": f"fewer than 2 rows with text in {column}"}
    keep = div.sample_rows(len(texts), div.SAMPLE, seed)
    try:
        figures = div.measure([texts[i] for i in keep], k=div.CLUSTERS, seed=seed, rows=len(texts))
    except Exception as exc:  # any failure of the measure becomes the card's reason, not the run's
        return {"column": column, "absent": f"measuring failed: {type(exc).__name__}: {exc}"}
    return {"column": column, **figures}


def static_missing() -> str | None:
    """Why the static embedder cannot run here without minutes of work, or None where it can.
    It is distilled once (`synth diversity` does it, with torch): a run's card never waits for that."""
    import importlib.util

    if importlib.util.find_spec("model2vec") is None:
        return "the static embedder needs model2vec: pip install 'synth[embed]'"
    from synth.stages.embed import STATIC_DIR, cache_dir

    if not (cache_dir() / STATIC_DIR / "model.safetensors").is_file():
        return (
            "the static embedder is not built yet: `synth diversity` on this dataset builds it once "
            "(a few minutes; needs synth[embed-torch]) and measures it; later runs' cards then carry the figures"
        )
    return None


def check_out(out: str | Path, inputs: list[Any], overwrite: bool) -> None:
    """A report folder apart from the inputs, whose report files are replaced only on request."""
    check_apart(out, inputs)
    there = [name for name in FILES if (Path(out) / name).exists()]
    if there and not overwrite:
        raise SynthError(f"{out} already holds {', '.join(there)}; pass --overwrite to replace them, or another --out")
    if Path(out).exists() and not Path(out).is_dir():
        raise SynthError(f"--out {out} is a file; pass a directory")


# ---------------------------------------------------------------- spreading


def spread_stage(
    kind: str, *, topics: str | Path | None = None, personas: str | Path | None = None, seed: int = 0
) -> div.Spread:
    """The `Spread` for `--spread topics|personas|tasks`: the shipped taxonomy (or `topics`, a
    `synth topics` output), a persona set (`personas`, default the starter set), or the task list."""
    if kind == "topics":
        rows = [r for b in read(topics or data_file(TOPICS)) for r in b.select(["topic", "subtopic"]).to_pylist()]
        macro = sorted({r["topic"] for r in rows}, key=[r["topic"] for r in rows].index)
        items = [f"{r['subtopic']} ({r['topic']})" for r in rows]
        return div.Spread(kind, items, TOPIC_TEMPLATE, [macro.index(r["topic"]) for r in rows], macro, seed=seed)
    if kind == "personas":
        from synth.stages.persona import TEMPLATES, read_personas

        texts = [t for b in read_personas(personas or "starter") for t in b["persona"].to_pylist()][:10_000]
        template = data_file(f"{TEMPLATES}/magpie_system.txt").read_text(encoding="utf-8").strip()
        return div.Spread(kind, texts, template.replace("{persona}", "{item}"), seed=seed)
    if kind == "tasks":
        names = choices("pipelines/tasks")
        texts = [read_choice("pipelines/tasks", name, "task").replace("{", "{{").replace("}", "}}") for name in names]
        return div.Spread(kind, texts, "{item}", list(range(len(names))), names, seed=seed)
    raise SynthError(f"unknown --spread {kind!r}; choose one of: {', '.join(SPREADS)}")


def check_spread(spread: str | None, topics: str | Path | None = None, novelty: float | None = None) -> None:
    """Refuse `--spread`, `--topics` and `--novelty` values a run cannot use, before a model loads."""
    if spread is not None and spread not in SPREADS:
        raise SynthError(f"unknown --spread {spread!r}; choose one of: {', '.join(SPREADS)}")
    if topics is not None:
        if spread != "topics":
            raise SynthError("--topics is the taxonomy for --spread topics; add --spread topics")
        check_input(topics, ("topic", "subtopic"), flag="--topics (a `synth topics` output)")
    if novelty is not None and not 0 < novelty <= 1:
        raise SynthError(f"--novelty {novelty} is outside (0, 1]; give a cosine distance such as 0.15")


# ---------------------------------------------------------------- synth topics

MACRO = (
    "List {k} broad, different topics that people ask an AI assistant about. "
    "Write one topic per line, two to four words each, with no numbering and nothing else."
)
SUB = (
    'List {k} specific subtopics of the topic "{topic}" that people ask an AI assistant about. '
    "Write one subtopic per line, two to six words each, with no numbering and nothing else."
)


_MARK = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|[a-zA-Z][.)])\s*")


def parse_list(text: str, max_words: int = 8) -> list[str]:
    """The items of a model's list: one a line, numbering, bullets, bold and trailing colons off;
    lines too long to be a topic dropped. Where some lines are numbered or bulleted, only those
    are items (not the "Here are 20 topics:" before them or the remark after)."""
    lines = text.splitlines()
    marked = [line for line in lines if _MARK.match(line) and _MARK.sub("", line).strip()]
    found = []
    for line in marked or lines:
        item = _MARK.sub("", line).strip().strip("*_\"'`").strip()
        item = item.split(":")[0].strip().rstrip(".").strip()
        if item and 1 <= len(item.split()) <= max_words and any(ch.isalpha() for ch in item):
            found.append(item)
    return found


def topics(
    backend: Backend,
    *,
    n: int,
    out: str | Path,
    per_topic: int = 10,
    params: Sampling = Sampling(max_tokens=256, temperature=0.9),
    distance: float = 0.1,
    max_calls: int | None = None,
    run: RunSettings = RunSettings(max_error_rate=None),
) -> dict[str, Any]:
    """A two-level taxonomy of `n` subtopics under about n / `per_topic` macro topics, written by
    the model as Nemotron-4's pipeline does (macro topics, then subtopics of each), deduplicated
    (normalised text, then embeddings closer than `distance`), into `out` as rows `topic`, `subtopic`.
    Fewer than `n` within `max_calls` model calls (default 4 per macro topic): `StoppedShort`. A
    failed call counts as one that listed nothing (`run.max_error_rate` is None by default); a
    taxonomy is written whole, so it cannot `run.resume`."""
    if run.resume:
        raise SynthError("a taxonomy is written in one go and cannot resume; run it again with --overwrite")
    settings = {**_describe(backend), "n": n, "per_topic": per_topic, "sampling": _plain(params), "distance": distance}
    output = run.open(out, settings)
    llm = run.meter(backend)
    want = max(1, -(-n // per_topic))
    calls = {"left": max_calls or 4 * (want + 1) + 8}
    macro = _unique_items(llm, params, MACRO.format(k=want), want, calls, distance)
    rows: list[dict[str, str]] = []
    index = SemanticDedup(column="subtopic", threshold=distance)
    stream = _subtopics(llm, params, macro, n, per_topic, calls)
    for batch in index(stream):
        rows += batch.select(["topic", "subtopic"]).to_pylist()
        if len(rows) >= n:
            break
    rows = rows[:n]
    table = from_rows([{"id": f"topic-{i:05d}", **r} for i, r in enumerate(rows)]) if rows else None
    empty = pa.table(
        {"id": pa.array([], pa.string()), "topic": pa.array([], pa.string()), "subtopic": pa.array([], pa.string())}
    )
    card = {"command": run.command, **settings, "macro_topics": macro, "generated_tokens": llm.completion_tokens}
    write(iter([table if table is not None else empty]), output, card=lambda: card)
    with_diversity(output, lambda: card, run, "subtopic")
    print(f"synth: {len(rows)} subtopics under {len({r['topic'] for r in rows})} topics in {out}", file=sys.stderr)
    if len(rows) < n:
        raise StoppedShort(
            f"stopped short: {len(rows)} of {n} subtopics after the model calls allowed; the model repeats itself "
            "or writes no list: raise --temperature, use a larger --model, or ask for fewer with --n"
        )
    return {"rows": len(rows), "topics": macro}


def _ask(llm: Backend, params: Sampling, prompt: str, calls: dict[str, int], seed: int) -> str:
    if calls["left"] <= 0:
        return ""
    calls["left"] -= 1
    seeded = params if params.seed is None else dataclasses.replace(params, seed=params.seed + seed)
    (reply,) = llm.generate([[{"role": "user", "content": prompt}]], seeded)
    return reply.text if reply.finish_reason != "error" else ""


def _unique_items(
    llm: Backend, params: Sampling, prompt: str, want: int, calls: dict[str, int], distance: float
) -> list[str]:
    """Macro topics, asked for until `want` distinct ones (normalised text, then embeddings)."""
    seen: set[int] = set()

    def asked() -> Iterator[Any]:
        attempt = fruitless = 0
        budget = max(3, calls["left"] // 2)  # at least half the calls are left for the subtopics
        while calls["left"] > 0 and attempt < budget and fruitless < 3:
            items = []
            for item in parse_list(_ask(llm, params, prompt, calls, attempt), max_words=5):
                if instruction_key(item) not in seen:
                    seen.add(instruction_key(item))
                    items.append({"id": f"t{len(seen)}", "topic": item})
            attempt += 1
            fruitless = 0 if items else fruitless + 1  # a model that only repeats itself is not asked forever
            if items:
                yield from_rows(items)

    found: list[str] = []
    for batch in SemanticDedup(column="topic", threshold=distance)(asked()):
        found += batch["topic"].to_pylist()
        if len(found) >= want:
            break
    return found[:want]


def _subtopics(
    llm: Backend, params: Sampling, macro: list[str], n: int, per_topic: int, calls: dict[str, int]
) -> Iterator[Any]:
    """Batches of (topic, subtopic) rows, each macro topic asked in turn, round after round."""
    seen: set[int] = set()
    made = 0
    for round_ in range(4):
        for t, topic in enumerate(macro):
            reply = _ask(llm, params, SUB.format(k=per_topic, topic=topic), calls, 1000 * (round_ + 1) + t)
            rows: list[dict[str, str]] = []
            for item in parse_list(reply)[:per_topic]:
                key = instruction_key(item)
                if key not in seen and instruction_key(topic) != key:
                    seen.add(key)
                    rows.append({"id": f"s{made + len(rows)}", "topic": topic, "subtopic": item})
            made += len(rows)
            if rows:
                yield from_rows(rows)
            if calls["left"] <= 0:
                return
        if made >= n * 1.2:
            return


def steered(
    output: Any,
    *,
    novelty: float | None,
    spread: str | None,
    topics: str | Path | None = None,
    personas: str | Path | None = None,
    seed: int = 0,
) -> tuple[list[Any], Any, list[Any]]:
    """Magpie's diversity stages: (before the instruction: the `Spread`; the `NoveltyGate` between
    instruction and answer; after the last drop: the spread's feedback). On resume the gate and
    the feedback first see the rows `output` holds, so they know what was kept."""
    from synth.recipes._runner import Primed, _written

    def primed(stage: Any) -> Any:
        return Primed(stage, seed=lambda: _written(output)) if output.rows else stage

    gate = primed(div.NoveltyGate(novelty)) if novelty is not None else None
    if spread is None:
        return [], gate, []
    spreader = spread_stage(spread, topics=topics, personas=personas, seed=seed)
    return [spreader], gate, [primed(spreader.observe())]
