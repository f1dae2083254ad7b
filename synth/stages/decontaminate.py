"""Decontamination: drop rows that hold evaluation benchmark items, verbatim or rephrased.

Three methods, in order, each on the rows the ones before it left:
- n-grams: word n-grams (13 by default, as lm-evaluation-harness and NeMo Curator) of normalised text;
  a row's score against an item is the share of the item's n-grams it holds, taken over the item's
  question, its answer, and the two together (a row may copy the question alone). Hashes are
  polynomial rolling hashes over per-word hashes, whole batches at a time in numpy: no Python set
  per row. The benchmark's n-grams sit in one sorted array behind a bitmap of hash prefixes, so
  most of a row's n-grams (found in no item) cost one byte read.
- embedding: cosine similarity of the row's first column to each item's question, through a FAISS
  index over the benchmark; n-grams find 0% of rephrased items, embeddings most of them. Where the
  item's question holds two or more numbers, the row must hold at least half of them too: a rephrased
  problem keeps its quantities, while a new problem on the same topic (what synthetic math data is
  full of) scores as close but has numbers of its own.
- llm (only with a backend): the embedding method's candidates go to a model with a rubric asking
  "is this a rephrase of that?"; its answer decides (the LLM Decontaminator, arXiv 2311.04850).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from synth.backends import Backend, Sampling
from synth.benchmarks import Benchmark
from synth.core import Batch, SynthError, add_columns
from synth.resources import data_file

METHODS = ("ngram", "embedding", "llm")
RUBRIC = "filters/decontamination/rephrase.yaml"
CONTAMINATED_BY = pa.struct(
    [("benchmark", pa.string()), ("item_id", pa.string()), ("method", pa.string()), ("score", pa.float32())]
)
STAT = "dropped_contaminated_"  # + f"{benchmark}_{method}": the summary and `synth stats` list `dropped_` counts
_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64: a window's hash is independent of its position


def _embed(texts: Sequence[str], model: str | None = None) -> np.ndarray:
    """Unit-length float32 embeddings from semantic dedup's embedder module. By default its MiniLM
    model: a benchmark is small, and catching rephrasings wants the stronger model; `model` may name
    `static` (the fast default of dedup) or any other embedder it takes."""
    from synth.stages.embed import MINILM, embed

    return np.ascontiguousarray(embed(list(texts), model or MINILM), np.float32)


# ---------------------------------------------------------------- n-gram hashing


def normalised_words(texts: pa.Array) -> pa.Array:
    """Each text as a list of words: NFKC, lower case, punctuation and symbols as spaces."""
    norm = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(texts, ""), form="NFKC"))
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"[\p{P}\p{S}]+", " "))
    return pc.utf8_split_whitespace(spaced)  # trimmed first, or a text ending in "?" ends in an empty word


class _Powers:
    """BASE**i and BASE**-i modulo 2**64 for i below a size that grows as batches need."""

    def __init__(self) -> None:
        self.up = np.ones(1, np.uint64)
        self.down = np.ones(1, np.uint64)
        self.lock = threading.Lock()

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return self._upto(n)

    def _upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            with np.errstate(over="ignore"):
                self.up = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _BASE, np.uint64)], dtype=np.uint64)
                inverse = np.uint64(pow(_BASE, -1, 2**64))
                self.down = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, inverse, np.uint64)], dtype=np.uint64)
        return self.up[:n], self.down[:n]


_POWERS = _Powers()


def ngram_hashes(texts: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word n-grams (a text of fewer than n words has none), and the
    offsets of each text's hashes: text i's are `hashes[offsets[i]:offsets[i + 1]]`."""
    words = normalised_words(texts)
    offsets = words.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = words.flatten()
    lengths = np.diff(offsets)
    if len(flat) == 0:
        return np.zeros(0, np.uint64), np.zeros(len(lengths) + 1, np.int64)
    encoded = pc.dictionary_encode(flat)  # hash each distinct word of the batch once
    vocab = np.fromiter(
        (xxhash.xxh3_64_intdigest(w.encode()) for w in encoded.dictionary.to_pylist()),
        np.uint64,
        count=len(encoded.dictionary),
    )
    tokens = vocab[encoded.indices.to_numpy(zero_copy_only=False)]
    up, down = _POWERS.upto(len(tokens) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(tokens) + 1, np.uint64)
        np.cumsum(tokens * up[: len(tokens)], out=prefix[1:])
        row = np.repeat(np.arange(len(lengths)), lengths)
        start = np.flatnonzero(np.arange(len(tokens)) + n <= offsets[1:][row])
        hashes = (prefix[start + n] - prefix[start]) * down[start]  # sum of token[start + j] * BASE**j
        hashes ^= hashes >> np.uint64(31)  # a finaliser: the prefix bitmap reads the top bits
        hashes *= np.uint64(0xBF58476D1CE4E5B9)
        hashes ^= hashes >> np.uint64(29)
    counts = np.bincount(row[start], minlength=len(lengths))
    return hashes, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def ngram_hashes_threaded(texts: pa.Array, n: int, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes` on `threads` slices of `texts` at once: Arrow's string kernels and numpy
    release the GIL, so a batch is hashed on that many cores with no lookahead across batches."""
    if threads <= 1 or len(texts) < 2 * threads:
        return ngram_hashes(texts, n)
    step = -(-len(texts) // threads)
    parts = list(_pool(threads).map(lambda i: ngram_hashes(texts.slice(i, step), n), range(0, len(texts), step)))
    shifts = np.cumsum([0] + [len(h) for h, _ in parts[:-1]])
    offsets = np.concatenate([[0]] + [o[1:] + shift for (_, o), shift in zip(parts, shifts)])
    return np.concatenate([h for h, _ in parts]), offsets.astype(np.int64)


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="synth-ngrams")


class NgramIndex:
    """The n-grams of benchmark items' question, answer and question+answer spans, searchable by batch.

    Postings (`item`, `span`) are sorted by n-gram hash, `keys` holds each distinct hash once and
    `key_start` where its postings begin; `totals[s, item]` counts the distinct n-grams of span s of
    each item, the denominator of its score.
    """

    SPANS = ("question", "answer", "both")

    def __init__(
        self, questions: Sequence[str], answers: Sequence[str], n: int, filter_bits: int = 27, threads: int = 2
    ) -> None:
        self.n, self.filter_bits, self.threads = n, filter_bits, threads
        q, a = pa.array(questions, pa.string()), pa.array(answers, pa.string())
        both = pc.binary_join_element_wise(q, a, "\n")
        items = len(questions)
        self.totals = np.zeros((3, items), np.int64)
        parts = []
        for s, texts in enumerate((q, a, both)):
            hashes, offsets = ngram_hashes_threaded(texts, n, threads)
            item = np.repeat(np.arange(items, dtype=np.int32), np.diff(offsets))
            order = np.argsort(hashes, kind="stable")  # items were in order: now by hash, then item
            hashes, item = hashes[order], item[order]
            first = np.r_[True, (hashes[1:] != hashes[:-1]) | (item[1:] != item[:-1])][: len(hashes)]
            hashes, item = hashes[first], item[first]  # an n-gram twice in one item counts once
            self.totals[s] = np.bincount(item, minlength=items)
            parts.append((hashes, item, np.full(len(item), s, np.uint8)))
        # One posting per (n-gram, item, span), sorted by n-gram.
        hashes, item, span = (np.concatenate(p) for p in zip(*parts))
        order = np.argsort(hashes, kind="stable")
        hashes, self.item, self.span = hashes[order], item[order], span[order]
        first = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]][: len(hashes)])
        self.keys = hashes[first]
        self.key_start = np.r_[first, len(hashes)].astype(np.int64)
        self._filter = np.zeros(1 << (filter_bits - 3), np.uint8)
        prefix = (self.keys >> np.uint64(64 - filter_bits)).astype(np.int64)
        np.bitwise_or.at(self._filter, prefix >> 3, np.left_shift(1, prefix & 7).astype(np.uint8))

    @property
    def short_items(self) -> int:
        """Items with no n-gram in any span: fewer than n words, out of reach of this method."""
        return int((self.totals.sum(axis=0) == 0).sum())

    def best(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Per text, the item whose n-grams it holds the largest share of (-1 if none) and that share."""
        rows = len(texts)
        best_item, best_score = np.full(rows, -1, np.int64), np.zeros(rows)
        if len(self.keys) == 0:
            return best_item, best_score
        hashes, offsets = ngram_hashes_threaded(texts, self.n, self.threads)
        row = np.repeat(np.arange(rows), np.diff(offsets))
        prefix = (hashes >> np.uint64(64 - self.filter_bits)).astype(np.int64)
        maybe = np.flatnonzero((self._filter[prefix >> 3] >> (prefix & 7).astype(np.uint8)) & 1)
        hashes, row = hashes[maybe], row[maybe]
        key = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        hit = self.keys[key] == hashes
        pairs = np.unique(row[hit] * np.int64(len(self.keys)) + key[hit])  # a row's repeated n-gram counts once
        if len(pairs) == 0:
            return best_item, best_score
        row, key = pairs // len(self.keys), pairs % len(self.keys)
        count = self.key_start[key + 1] - self.key_start[key]
        posting = np.repeat(self.key_start[key] - np.cumsum(count) + count, count) + np.arange(count.sum())
        row, item, span = np.repeat(row, count), self.item[posting], self.span[posting]
        found, inverse = np.unique(row * np.int64(self.totals.shape[1]) + item, return_inverse=True)
        inverse = inverse.ravel()
        f_row, f_item = found // self.totals.shape[1], found % self.totals.shape[1]
        score = np.zeros(len(found))
        for s in range(3):
            held = np.bincount(inverse, weights=span == s, minlength=len(found))
            total = self.totals[s, f_item]
            score = np.maximum(score, np.where(total > 0, held / np.maximum(total, 1), 0.0))
        order = np.lexsort((-score, f_row))
        first = order[np.r_[True, f_row[order[1:]] != f_row[order[:-1]]]]
        best_item[f_row[first]], best_score[f_row[first]] = f_item[first], score[first]
        return best_item, best_score


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
    if "rephrase" not in spec["schema"].get("properties", {}):
        raise SynthError(f"{file}: its schema must define a boolean `rephrase`, the answer the check reads")
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
    methods: tuple[str, ...] = ("ngram", "embedding")
    ngram: int = 13
    ngram_threshold: float = 0.5
    embedding_threshold: float = 0.8
    match_numbers: bool = True  # embedding: a question's numbers must recur in the row (see the module's docstring)
    model: str | None = None  # the embedder; None: semantic dedup's default
    judge: Backend | None = field(default=None, repr=False)
    judge_floor: float = 0.6  # with a judge: the cosine from which the embedding method asks it
    judge_params: Sampling = Sampling(max_tokens=32, temperature=0.0)
    rubric: str | None = None
    rejects: Callable[[Batch], None] | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
        for name in ("ngram_threshold", "embedding_threshold", "judge_floor"):
            value = getattr(self, name)
            if not 0 < value <= 1:
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
        if "embedding" in self.methods or "llm" in self.methods:
            has_text = pc.fill_null(pc.utf8_length(first), 0).to_numpy(zero_copy_only=False) > 0
            open_rows = np.flatnonzero((method == 0) & has_text)
            near, sims = self._embeddings.best(first.take(pa.array(open_rows)).to_pylist())
            if "llm" in self.methods:
                asked = sims >= self.judge_floor
                said = self._ask(texts.take(pa.array(open_rows[asked])).to_pylist(), near[asked])
                fallback = "embedding" in self.methods and sims[asked] >= self.embedding_threshold
                chosen = np.zeros(len(open_rows), np.int8)
                chosen[np.flatnonzero(asked)] = np.where(said == 1, 3, np.where((said < 0) & fallback, 2, 0))
            else:
                close = sims >= self.embedding_threshold
                if self.match_numbers and close.any():
                    rows = first.take(pa.array(open_rows[close])).to_pylist()
                    close[close] = [self._same_numbers(r, i) for r, i in zip(rows, near[close])]
                chosen = np.where(close, 2, 0).astype(np.int8)
            hit = open_rows[chosen > 0]
            method[hit], item[hit], score[hit] = chosen[chosen > 0], near[chosen > 0], sims[chosen > 0]
        return self._describe(method, item, score)

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
        """The judge's answer per row: 1 a rephrase, 0 not, -1 no usable answer."""
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
        verdicts = _ask(self.judge, rubric, prompts, params)  # type: ignore[arg-type]
        self.stats["llm_asked"] += len(verdicts)
        answer = np.array([-1 if v.status != "ok" else int(bool(v.values["rephrase"])) for v in verdicts], np.int8)
        self.stats["llm_failed"] += int((answer < 0).sum())
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
