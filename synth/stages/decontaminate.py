"""Decontamination: drop rows that hold evaluation benchmark items, verbatim, edited or rephrased.

Four methods, in order, each on the rows the ones before it left:
- ngram: word n-grams (13 by default, as lm-evaluation-harness and NeMo Curator) of normalised text;
  a row's score against an item is the share of the item's n-grams it holds, taken over the item's
  question, its answer, and the two together (a row may copy the question alone). Catches copies.
- edit: a copy with words changed here and there keeps few 13-grams (with one word in seven changed,
  2-4% of real texts keep half of theirs), but most of the item's word pairs. The row's first column
  is scored by the share of the item question's 2-grams it holds, each weighted by how rare it is
  among the items (boilerplate such as "which of the following" weighs little); items with under 8
  such pairs are out of its reach. The threshold is calibrated on real text
  (filters/decontamination/thresholds.yaml).
- embedding: cosine similarity of the row's first column to each item's question, through semantic
  dedup's vector index over the benchmark; catches rephrasings, which share few words. The
  threshold is calibrated per embedder on real text. Where the item's question holds two or more
  numbers, the row must hold at least half of them too (also for edit): a rephrased problem keeps
  its quantities, while a new problem on the same topic (what synthetic math data is full of) scores
  as close but has numbers of its own.
- llm (only with a backend): the embedding method's candidates go to a model with a rubric asking
  "is this a rephrase of that?"; its answer decides (the LLM Decontaminator, arXiv 2311.04850). A
  row it gets no usable answer for falls to the embedding rule, and a judge that answers none (or
  fails past `max_error_rate`) stops the run.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synth.backends import Backend, Sampling
from synth.benchmarks import Benchmark
from synth.core import Batch, StoppedShort, SynthError, add_columns
from synth.resources import data_file
from synth.stages._ngrams import NgramIndex

METHODS = ("ngram", "edit", "embedding", "llm")
RUBRIC = "filters/decontamination/rephrase.yaml"
THRESHOLDS = "filters/decontamination/thresholds.yaml"
CONTAMINATED_BY = pa.struct(
    [("benchmark", pa.string()), ("item_id", pa.string()), ("method", pa.string()), ("score", pa.float32())]
)
STAT = "dropped_contaminated_"  # + f"{benchmark}_{method}": the summary and `synth stats` list `dropped_` counts


@lru_cache(maxsize=1)
def calibrated() -> dict[str, Any]:
    """The shipped defaults (`filters/decontamination/thresholds.yaml`), measured on real text."""
    import yaml

    return yaml.safe_load(data_file(THRESHOLDS).read_text(encoding="utf-8"))


def embedder_key(model: str | None) -> str:
    """The name an embedder's calibrated threshold is filed under: `minilm` (the default), `static`, or its own."""
    return "minilm" if model in (None, "minilm") else str(model)


def default_embedding_threshold(model: str | None) -> float:
    """The calibrated cosine from which the embedding method drops a row, for this embedder."""
    key = embedder_key(model)
    known = calibrated()["embedding"]
    if key not in known:
        raise SynthError(
            f"no calibrated --embedding-threshold for embedder {model!r} (synth has them for {', '.join(known)}); "
            "pass --embedding-threshold, measured with `python benchmarks/decontaminate.py --calibrate "
            f"--embedder {model}`: a cosine from another model means something else"
        )
    return float(known[key]["threshold"])


def _embed(texts: Sequence[str], model: str | None = None) -> np.ndarray:
    """Unit-length float32 embeddings from semantic dedup's embedder module. By default its MiniLM
    model: a benchmark is small, and catching rephrasings wants the stronger model; `model` may name
    `static` (the fast default of dedup) or any other embedder it takes."""
    from synth.stages.embed import MINILM, embed

    return np.ascontiguousarray(embed(list(texts), model or MINILM), np.float32)


# ---------------------------------------------------------------- embeddings


_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def numbers(text: str) -> frozenset[str]:
    """The numbers in `text`, written alike: `1,240` as `1240`, `4.50` as `4.5`."""
    found = (m.replace(",", "") for m in _NUMBER.findall(text or ""))
    return frozenset(n.rstrip("0").rstrip(".") if "." in n else n for n in found)


class EmbeddingIndex:
    """Benchmark items' unit embeddings in semantic dedup's vector index: exact inner products, then
    an HNSW graph (usearch) past `exact_limit` items."""

    def __init__(self, texts: Sequence[str], model: str | None = None, exact_limit: int = 100_000) -> None:
        from synth.stages.dedup import _VectorIndex

        self.model = model
        vectors = _embed(texts, model)
        self.index = _VectorIndex(vectors.shape[1], exact_limit)
        self.index.add(vectors)
        self.kind = self.index.kind

    def best(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per text, the most similar item and the cosine similarity to it."""
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0)
        sims, found = self.index.search(_embed(texts, self.model))
        return found.astype(np.int64), sims.astype(np.float64)


# ---------------------------------------------------------------- the stage


def load_check_rubric(path: str | Path | None = None) -> Any:
    """The rubric of the LLM check: the shipped `rephrase.yaml`, or a copy of it the user edited."""
    import yaml

    from synth.stages.judge import Rubric

    file = Path(path) if path else data_file(RUBRIC)
    if not file.is_file():
        raise SynthError(f"rubric file {file} does not exist; pass a copy of {RUBRIC}")
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SynthError(f"rubric file {file} is not valid YAML ({exc}); fix it") from None
    if not isinstance(spec, dict) or not {"name", "prompt", "schema"} <= set(spec):
        raise SynthError(f"{file} needs name, prompt and schema, as {RUBRIC} has")
    schema = spec["schema"] if isinstance(spec["schema"], dict) else {}
    answer, required = (schema.get("properties") or {}).get("rephrase"), schema.get("required") or []
    # Anything else and a valid answer could lack it (a crash) or be the string "no" (read as true).
    if not isinstance(answer, dict) or answer.get("type") != "boolean" or "rephrase" not in required:
        raise SynthError(
            f"{file}: its schema must define a boolean `rephrase` and list it in `required`: the answer the check reads"
        )
    return Rubric(spec["name"], ("text", "benchmark"), spec["prompt"], spec["schema"], {"rephrase": "rephrase"})


@dataclass(frozen=True)
class Decontaminate:
    """Reads `columns` (those the batch has); drops rows that hold a benchmark item. Dropped rows go to
    `rejects` with `contaminated_by` (benchmark, item_id, method, score); `stats` counts them per
    benchmark and method as `dropped_contaminated_{benchmark}_{method}`.

    n-grams compare all the columns joined (a question copied into the instruction, its answer into
    the response); embeddings compare the first column with each item's question.
    """

    benchmarks: tuple[Benchmark, ...]
    columns: tuple[str, ...] = ("instruction", "response")
    methods: tuple[str, ...] = ("ngram", "edit", "embedding")
    ngram: int = 13
    ngram_threshold: float = 0.5
    edit_ngram: int | None = None  # None: the calibrated default (filters/decontamination/thresholds.yaml)
    edit_threshold: float | None = None  # ditto
    embedding_threshold: float | None = None  # None: the calibrated default for `model`
    match_numbers: bool = True  # embedding: a question's numbers must recur in the row (see the module's docstring)
    model: str | None = None  # the embedder; None: all-MiniLM-L6-v2 (`minilm`)
    judge: Backend | None = field(default=None, repr=False)
    judge_floor: float = 0.6  # with a judge: the cosine from which the embedding method asks it
    judge_params: Sampling = Sampling(max_tokens=32, temperature=0.0)
    rubric: str | None = None
    max_error_rate: float | None = 0.05  # llm: past this share of unusable answers (after 50 asked) the run stops
    rejects: Callable[[Batch], None] | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    failures: Counter[str] = field(default_factory=Counter, compare=False, repr=False)  # the judge's, by reason

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise SynthError(f"unknown decontamination method(s) {sorted(unknown)}; use {', '.join(METHODS)}")
        if "llm" in self.methods and self.judge is None:
            raise SynthError("the llm method needs a model to ask: pass --model (or drop llm from --methods)")
        if not self.benchmarks:
            raise SynthError("nothing to decontaminate against; pass at least one --against")
        if self.ngram < 1:
            raise SynthError(f"--ngram {self.ngram} must be at least 1 (13 is the usual)")
        edits = calibrated()["edit"]
        if self.edit_ngram is None:
            object.__setattr__(self, "edit_ngram", int(edits["ngram"]))
        if self.edit_threshold is None:
            object.__setattr__(self, "edit_threshold", float(edits["threshold"]))
        if self.edit_ngram < 1:  # type: ignore[operator]  # not None: set just above (frozen, so by __setattr__)
            raise SynthError(f"--edit-ngram {self.edit_ngram} must be at least 1 (2 is the calibrated default)")
        if self.embedding_threshold is None and ("embedding" in self.methods or "llm" in self.methods):
            object.__setattr__(self, "embedding_threshold", default_embedding_threshold(self.model))
        for name in ("ngram_threshold", "edit_threshold", "embedding_threshold", "judge_floor"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise SynthError(f"--{name.replace('_', '-')} {value} is outside (0, 1]")
        if "embedding" in self.methods or "llm" in self.methods:
            import importlib.util

            need = ("model2vec",) if self.model == "static" else ("sentence_transformers",)
            missing = [m for m in need if importlib.util.find_spec(m) is None]
            if missing:
                raise SynthError(f"the embedding method needs {missing[0]}: pip install 'synth[embed-torch]'")
        if "llm" in self.methods:
            load_check_rubric(self.rubric)  # a bad rubric fails before any row is read

    @cached_property
    def _items(self) -> tuple[np.ndarray, list[str], list[str], list[str]]:
        """Per item of all benchmarks together: its benchmark's index, id, question and answer."""
        owner = np.repeat(np.arange(len(self.benchmarks)), [len(b) for b in self.benchmarks])
        ids = [i for b in self.benchmarks for i in b.ids]
        return (
            owner,
            ids,
            [q for b in self.benchmarks for q in b.questions],
            [a for b in self.benchmarks for a in b.answers],
        )

    @cached_property
    def _ngrams(self) -> NgramIndex:
        _, _, questions, answers = self._items
        index = NgramIndex(questions, answers, self.ngram)
        self.notes["items_without_ngrams"] = index.short_items
        return index

    @cached_property
    def _edits(self) -> NgramIndex:
        _, _, questions, _ = self._items
        minimum = int(calibrated()["edit"]["min_ngrams"])
        # edit_ngram is never None after __post_init__ (mypy cannot see the frozen dataclass's __setattr__)
        return NgramIndex(questions, None, self.edit_ngram, weighted=True, min_ngrams=minimum)  # type: ignore[arg-type]

    @cached_property
    def _embeddings(self) -> EmbeddingIndex:
        _, _, questions, answers = self._items
        index = EmbeddingIndex([q or a for q, a in zip(questions, answers)], self.model)
        self.notes["embedding_index"] = index.kind
        return index

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        self.notes.update(benchmarks={b.name: len(b) for b in self.benchmarks}, methods=list(self.methods))
        for batch in batches:
            # Counts with names of their own: a pipeline's card adds up every stage's counts.
            self.stats["contamination_checked"] += batch.num_rows
            found = self.check(batch)
            dropped = found.is_valid()
            gone = int(pc.sum(dropped).as_py() or 0)
            if gone:
                for row in found.filter(dropped).to_pylist():
                    self.stats[f"{STAT}{row['benchmark']}_{row['method']}"] += 1
                if self.rejects is not None:
                    self.rejects(add_columns(batch.filter(dropped), contaminated_by=found.filter(dropped)))
            yield batch.filter(pc.invert(dropped))

    def check(self, batch: Batch) -> pa.StructArray:
        """Per row, what it is contaminated by (benchmark, item_id, method, score), or null."""
        texts, first = self._texts(batch)
        method = np.zeros(batch.num_rows, np.int8)  # 1 + index in METHODS; 0: clean
        item, score = np.full(batch.num_rows, -1, np.int64), np.zeros(batch.num_rows)
        if "ngram" in self.methods:
            item, score = self._ngrams.best(texts)
            method[(item >= 0) & (score >= self.ngram_threshold)] = 1
        if "edit" in self.methods:
            open_rows = np.flatnonzero(method == 0)
            near, share = self._edits.best(first.take(pa.array(open_rows)))
            close = (near >= 0) & (share >= self.edit_threshold)
            self._numbers_agree(first, open_rows, near, close)
            hit = open_rows[close]
            method[hit], item[hit], score[hit] = 2, near[close], share[close]
        if "embedding" in self.methods or "llm" in self.methods:
            has_text = pc.fill_null(pc.utf8_length(first), 0).to_numpy(zero_copy_only=False) > 0
            open_rows = np.flatnonzero((method == 0) & has_text)
            near, sims = self._embeddings.best(first.take(pa.array(open_rows)).to_pylist())
            close = sims >= self.embedding_threshold
            chosen = np.where(close, 3, 0).astype(np.int8)
            if "llm" in self.methods:
                asked = sims >= self.judge_floor
                said = self._ask(texts.take(pa.array(open_rows[asked])).to_pylist(), near[asked])
                # A row the judge could not answer for falls to the embedding rule: never passed unchecked.
                chosen[asked] = np.where(said == 1, 4, np.where((said < 0) & close[asked], 3, 0))
            else:
                self._numbers_agree(first, open_rows, near, close)
                chosen = np.where(close, 3, 0).astype(np.int8)
            hit = open_rows[chosen > 0]
            method[hit], item[hit], score[hit] = chosen[chosen > 0], near[chosen > 0], sims[chosen > 0]
        return self._describe(method, item, score)

    def _numbers_agree(self, first: pa.Array, rows: np.ndarray, near: np.ndarray, close: np.ndarray) -> None:
        """Clears `close` where the item's question has numbers the row lacks (in place)."""
        if self.match_numbers and close.any():
            texts = first.take(pa.array(rows[close])).to_pylist()
            close[close] = [self._same_numbers(t, i) for t, i in zip(texts, near[close])]

    def _same_numbers(self, text: str, item: int) -> bool:
        """Whether `text` holds at least half the distinct numbers of the item's question (if it has two or more)."""
        wanted = self._numbers[item]
        return len(wanted) < 2 or 2 * len(wanted & numbers(text)) >= len(wanted)

    @cached_property
    def _numbers(self) -> list[frozenset[str]]:
        return [numbers(q) for q in self._items[2]]

    def _texts(self, batch: Batch) -> tuple[pa.Array, pa.Array]:
        present = [c for c in self.columns if c in batch.column_names]
        if not present:
            raise SynthError(
                f"the input has none of the columns {', '.join(self.columns)} "
                f"(it has {', '.join(batch.column_names)}); name the text to check with --column"
            )
        parts = []
        for name in present:
            values = batch[name].combine_chunks()
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise SynthError(f"column {name!r} holds {values.type}, not text; name a text column with --column")
            parts.append(pc.fill_null(values.cast(pa.string()), ""))
        joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\n")
        return joined, parts[0]

    def _ask(self, texts: list[str], items: np.ndarray) -> np.ndarray:
        """The judge's answer per row: 1 a rephrase, 0 not, -1 no usable answer. Stops the run
        (`StoppedShort`) before the batch is kept when no answer so far was usable, or past
        `max_error_rate` unusable ones after 50 asked."""
        if not texts:
            return np.zeros(0, np.int8)
        from synth.stages.judge import _ask

        rubric = load_check_rubric(self.rubric)
        _, _, questions, answers = self._items
        prompts = [
            rubric.messages({"text": t[:4000], "benchmark": f"{questions[i]}\n{answers[i]}".strip()[:4000]})
            for t, i in zip(texts, items)
        ]
        params = dataclasses.replace(self.judge_params, json_schema=rubric.schema)
        verdicts = _ask(self.judge, rubric, prompts, params)  # type: ignore[arg-type]  # __post_init__: llm needs a judge
        answer = np.array(
            [-1 if v.status != "ok" else int(bool((v.values or {})["rephrase"])) for v in verdicts], np.int8
        )
        self.stats["llm_asked"] += len(verdicts)
        self.stats["llm_failed"] += int((answer < 0).sum())
        self.failures.update(f"{v.status}: {(v.raw or '')[:80]}".rstrip(": ") for v in verdicts if v.status != "ok")
        asked, failed = self.stats["llm_asked"], self.stats["llm_failed"]
        over = self.max_error_rate is not None and asked >= 50 and failed > self.max_error_rate * asked
        if failed == asked or over:
            reason, count = self.failures.most_common(1)[0]
            limit = "" if failed == asked else f", over the allowed {self.max_error_rate:.1%}"
            raise StoppedShort(
                f"the LLM check had no usable answer for {failed} of the {asked} rows it asked about{limit} "
                f"(commonest, {count}x: {reason}); the batch in hand was not kept. Fix the judge (its server's log "
                "says more), raise --max-error-rate, or leave llm out of --methods"
            )
        return answer

    def _describe(self, method: np.ndarray, item: np.ndarray, score: np.ndarray) -> pa.StructArray:
        owner, ids, _, _ = self._items
        flagged = method > 0
        at = pa.array(np.where(flagged, item, 0))  # the mask below hides the clean rows' values
        return pa.StructArray.from_arrays(
            [
                pa.array([b.name for b in self.benchmarks], pa.string()).take(pa.array(owner).take(at)),
                pa.array(ids, pa.string()).take(at),
                pa.array(["", *METHODS], pa.string()).take(pa.array(method)),
                pa.array(np.round(score, 4), pa.float32()),
            ],
            fields=list(CONTAMINATED_BY),
            mask=pa.array(~flagged),
        )
