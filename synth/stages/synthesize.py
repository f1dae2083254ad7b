"""Instruction synthesis over raw corpora: instruction-response pairs grounded in each chunk.

Two ways to ask. `InstructionPretrain` speaks the format of the released instruction
synthesizer (Instruction Pre-Training, arXiv 2406.14491): the chunk goes between `<CON>` and
`</CON>`, the model answers `<QUE> q <ANS> a </END>` pairs, and in later rounds each chunk is
preceded by earlier chunks with their pairs as few-shot context. `PromptPairs` asks any
instruct model for JSON through structured output. Both write the same chunk-level columns
(`pairs`, `synthesis_raw`, `synthesis_finish_reason`, `round`, `chain`), so the SFT rows and
the instruction-augmented pre-training text are built the same way for both.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import xxhash

from synth.backends import Backend, Sampling
from synth.core import Batch, add_columns
from synth.stages.chunk import CARRY
from synth.stages.magpie import MESSAGES, instruction_key

Pair = dict[str, str]
PAIRS = pa.list_(pa.struct([("instruction", pa.string()), ("response", pa.string())]))


# ---------------------------------------------------------------- parsing


def parse_pairs(text: str) -> tuple[list[Pair], Counter[str]]:
    """Pairs from synthesizer output `<QUE> q <ANS> a </END>...`; drops counted by reason.

    A trailing pair without `</END>` was cut off by max tokens; questions repeated within the
    output (case and spacing aside) are kept once, the repeats counted as
    `dropped_pair_duplicate_in_answer`.
    """
    drops: Counter[str] = Counter()
    *pieces, tail = text.split("</END>")
    if "<QUE>" in tail or "<ANS>" in tail:
        drops["dropped_pair_truncated"] += 1
    pairs = []
    for piece in pieces:
        if piece.count("<ANS>") != 1 or "<QUE>" not in piece.split("<ANS>")[0]:
            drops["dropped_pair_malformed"] += 1
            continue
        question, answer = piece.split("<ANS>")
        pairs.append({"instruction": question[question.rindex("<QUE>") + 5 :].strip(), "response": answer.strip()})
    return _clean(pairs, drops)


def parse_json_pairs(text: str) -> tuple[list[Pair], Counter[str]]:
    """Pairs from `{"pairs": [{"instruction", "response"}, ...]}`; drops counted by reason.

    JSON cut off by max tokens still gives the pairs completed before the cut.
    """
    drops: Counter[str] = Counter()
    try:
        data = json.loads(text)
        items = data.get("pairs") if isinstance(data, dict) else data
    except json.JSONDecodeError:
        items = _salvage(text, drops)
    if not isinstance(items, list):
        drops["dropped_output_unparsed"] += 1
        return [], drops
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            drops["dropped_pair_malformed"] += 1
            continue
        question = item.get("instruction", item.get("question"))
        answer = item.get("response", item.get("answer"))
        if not isinstance(question, str) or not isinstance(answer, str):
            drops["dropped_pair_malformed"] += 1
            continue
        pairs.append({"instruction": question.strip(), "response": answer.strip()})
    return _clean(pairs, drops)


def _salvage(text: str, drops: Counter[str]) -> list[Any] | None:
    start = text.find("[")
    if start < 0:
        return None
    decoder, pos = json.JSONDecoder(), start + 1
    items: list[Any] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            drops["dropped_pair_truncated"] += 1
            return items
        items.append(item)


_WORD = re.compile(r"\w")  # an answer of only punctuation ("...") is as empty as no answer


def _clean(pairs: list[Pair], drops: Counter[str]) -> tuple[list[Pair], Counter[str]]:
    kept, seen = [], set()
    for pair in pairs:
        if not _WORD.search(pair["instruction"]) or not _WORD.search(pair["response"]):
            drops["dropped_pair_empty"] += 1
        elif instruction_key(pair["instruction"]) in seen:
            drops["dropped_pair_duplicate_in_answer"] += 1
        else:
            seen.add(instruction_key(pair["instruction"]))
            kept.append(pair)
    return kept, drops


# ---------------------------------------------------------------- generating


@dataclass(frozen=True)
class InstructionPretrain:
    """Reads `text` (chunks); adds `pairs`, `synthesis_raw`, `synthesis_finish_reason`, `round`, `chain`.

    Each input batch is one chaining window, split into `rounds` consecutive groups; group r's
    i-th chunk is preceded by the chain that group r-1's i-th chunk ended, with its pairs, when
    that chain produced pairs and the whole prompt still fits `context_tokens` by `count`.
    `chain` names the first chunk of the chain a chunk joined (itself when it starts one).
    """

    backend: Backend
    count: Callable[[str], int] = field(repr=False)
    context_tokens: int
    params: Sampling = Sampling(max_tokens=400, temperature=0.0)
    rounds: int = 2
    bos: str = "<s>"
    eos: str = "</s>"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def read(self, text: str) -> str:
        """The released synthesizer's prompt for one chunk; the leading space is part of it."""
        return f"{self.bos} <CON> {text} </CON>\n\n"

    def shown(self, text: str, pairs: Sequence[Mapping[str, str]]) -> str:
        """A chunk with its pairs, as few-shot context before a later chunk."""
        qa = "\n\n".join(f"<QUE> {p['instruction']} <ANS> {p['response']} </END>" for p in pairs)
        return self.read(text) + qa + self.eos

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = self.params.with_stop("<CON>")  # the model starting another document
        for batch in batches:
            texts, ids = batch["text"].to_pylist(), batch["id"].to_pylist()
            size = math.ceil(len(texts) / self.rounds)
            pairs: list[list[Pair]] = [[] for _ in texts]
            raw, finish, rounds = [""] * len(texts), [""] * len(texts), [0] * len(texts)
            chain = list(ids)
            open_chains: list[list[int]] = [[] for _ in range(size)]
            for r in range(self.rounds):
                group = list(range(r * size, min(len(texts), (r + 1) * size)))
                prompts = [self._prompt(open_chains[slot], i, texts, pairs) for slot, i in enumerate(group)]
                out = self.backend.generate([p for p, _ in prompts], seeded(params, ids[0], r))
                for slot, (i, (_, prefix), c) in enumerate(zip(group, prompts, out)):
                    pairs[i] = self._parse(c.text, c.finish_reason)
                    raw[i], finish[i], rounds[i] = c.text, c.finish_reason, r + 1
                    if prefix and pairs[i]:
                        chain[i] = chain[prefix[-1]]
                        open_chains[slot] = [*prefix, i]
                    else:
                        open_chains[slot] = [i]
            yield add_columns(
                batch,
                pairs=pa.array(pairs, PAIRS),
                synthesis_raw=pa.array(raw, pa.string()),
                synthesis_finish_reason=pa.array(finish, pa.string()),
                round=pa.array(rounds, pa.int32()),
                chain=pa.array(chain, pa.string()),
            )

    def _prompt(self, chain: list[int], i: int, texts: list[str], pairs: list[list[Pair]]) -> tuple[str, list[int]]:
        """The prompt for chunk i and the chain it extends (empty when it starts a new one)."""
        own = self.read(texts[i])
        if not chain or not pairs[chain[-1]]:
            return own, []
        prompt = "".join(self.shown(texts[j], pairs[j]) for j in chain) + own
        if self.count(prompt) + self.params.max_tokens > self.context_tokens:
            self.stats["chains_cut_by_context"] += 1
            return own, []
        return prompt, chain

    def _parse(self, text: str, finish_reason: str) -> list[Pair]:
        self.stats["chunks_generated"] += 1
        if finish_reason == "error":
            self.stats["dropped_chunk_error"] += 1
            return []
        found, drops = parse_pairs(text)
        self.stats.update(drops)
        self.stats["pairs"] += len(found)
        return found


def pairs_schema(k: int) -> dict[str, Any]:
    """The JSON schema `PromptPairs` constrains replies to: up to `k` pairs of non-empty strings."""
    text = {"type": "string", "minLength": 1}
    pair = {
        "type": "object",
        "properties": {"instruction": text, "response": text},
        "required": ["instruction", "response"],
    }
    array = {"type": "array", "items": pair, "minItems": 1, "maxItems": k}
    return {"type": "object", "properties": {"pairs": array}, "required": ["pairs"]}


@dataclass(frozen=True)
class PromptPairs:
    """Reads `text` (chunks); adds `task`, `pairs`, `synthesis_raw`, `synthesis_finish_reason`, `round`, `chain`.

    Each chunk gets one of `templates` (task name, prompt), picked from its id so a rerun asks
    the same; the reply is JSON constrained by `pairs_schema` where the backend can.
    """

    backend: Backend
    templates: tuple[tuple[str, str], ...] = field(repr=False)
    pairs: int = 5
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def prompt(self, task: int, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": fill(self.templates[task][1], text=text, pairs=str(self.pairs))}]

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = replace(self.params, json_schema=pairs_schema(self.pairs))
        for batch in batches:
            ids, texts = batch["id"].to_pylist(), batch["text"].to_pylist()
            tasks = [xxhash.xxh32_intdigest(i.encode()) % len(self.templates) for i in ids]
            out = self.backend.generate([self.prompt(t, x) for t, x in zip(tasks, texts)], seeded(params, ids[0]))
            found = []
            for c in out:
                self.stats["chunks_generated"] += 1
                if c.finish_reason == "error":
                    self.stats["dropped_chunk_error"] += 1
                pairs, drops = parse_json_pairs(c.text) if c.finish_reason != "error" else ([], Counter())
                self.stats.update(drops)
                self.stats["pairs"] += len(pairs)
                found.append(pairs[: self.pairs])
            yield add_columns(
                batch,
                task=pa.array([self.templates[t][0] for t in tasks], pa.string()),
                pairs=pa.array(found, PAIRS),
                synthesis_raw=pa.array([c.text for c in out], pa.string()),
                synthesis_finish_reason=pa.array([c.finish_reason for c in out], pa.string()),
                round=pa.array([1] * len(ids), pa.int32()),
                chain=pa.array(ids, pa.string()),
            )


VERDICT = {"type": "object", "properties": {"supported": {"type": "boolean"}}, "required": ["supported"]}


@dataclass(frozen=True)
class GroundedCheck:
    """Reads `text`, `pairs`; keeps only the pairs a judge finds supported by `text`.

    One rubric call per pair, all pairs of a batch in one `generate` call; a verdict that
    does not parse drops the pair, counted apart from the ones judged unsupported.
    """

    backend: Backend
    prompt: str = field(repr=False)
    params: Sampling = Sampling(max_tokens=32, temperature=0.0, json_schema=VERDICT)

    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            texts, pairs = batch["text"].to_pylist(), batch["pairs"].to_pylist()
            flat = [(i, p) for i, ps in enumerate(pairs) for p in ps]
            prompts = [[{"role": "user", "content": fill(self.prompt, text=texts[i], **p)}] for i, p in flat]
            out = self.backend.generate(prompts, seeded(self.params, batch["id"][0].as_py())) if flat else []
            kept: list[list[Pair]] = [[] for _ in pairs]
            for (i, pair), c in zip(flat, out):
                verdict = _verdict(c.text) if c.finish_reason != "error" else None
                self.stats["pairs_checked"] += 1
                if verdict is None:
                    self.stats["dropped_pair_unjudged"] += 1
                elif not verdict:
                    self.stats["dropped_pair_ungrounded"] += 1
                else:
                    kept[i].append(pair)
            yield add_columns(batch, pairs=pa.array(kept, PAIRS))


def _verdict(text: str) -> bool | None:
    try:
        value = json.loads(text).get("supported")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SftRows:
    """Reads chunk rows with `pairs`; yields one row per pair: `id`, `source_id`, `chunk`,
    `instruction`, `response`, `messages`, `finish_reason` (and `task`, and the chunk's `source`,
    `url`, `title`, `page`, `offset`, `date` where present, so a pair traces back to its page).

    Questions are de-duplicated per source document, across its chunks (chunks of a document
    arrive together), the repeats counted as `dropped_pair_duplicate_across_chunks` (repeats
    within one answer were dropped when it was parsed, as `dropped_pair_duplicate_in_answer`).
    Chunks without pairs keep their raw output upstream, in `synthesis_raw`.
    """

    stats: Counter[str] = field(default_factory=Counter, compare=False)
    _seen: dict[str, set[int]] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            rows = []
            tasks = batch["task"].to_pylist() if "task" in batch.column_names else [None] * batch.num_rows
            carried = [batch.schema.field(name) for name in CARRY if name in batch.column_names]
            columns = ["id", "source_id", "chunk", "pairs", "synthesis_finish_reason"]
            chunks = batch.select(columns + [f.name for f in carried]).to_pylist()
            for chunk, task in zip(chunks, tasks):
                seen = self._document(chunk["source_id"])
                self.stats["dropped_chunk_without_pairs"] += not chunk["pairs"]
                for k, pair in enumerate(chunk["pairs"]):
                    key = instruction_key(pair["instruction"])
                    if key in seen:
                        self.stats["dropped_pair_duplicate_across_chunks"] += 1
                        continue
                    seen.add(key)
                    origin = {f.name: chunk[f.name] for f in carried}
                    rows.append({**_sft_row(chunk, k, pair, task), **origin})
            self.stats["kept"] += len(rows)
            # no pairs: still a batch with the columns, so a run that keeps none writes its full schema
            task = any(r.get("task") for r in rows) if rows else "task" in batch.column_names
            yield pa.Table.from_pylist(rows, pa.schema([*_sft_schema(task_column=task), *carried]))

    def _document(self, source_id: str) -> set[int]:
        if source_id not in self._seen:
            self._seen.clear()  # the previous document is finished
            self._seen[source_id] = set()
        return self._seen[source_id]


def _sft_row(chunk: Mapping[str, Any], k: int, pair: Pair, task: str | None) -> dict[str, Any]:
    row = {
        "id": f"{chunk['id']}-{k}",
        "source_id": chunk["source_id"],
        "chunk": chunk["chunk"],
        "instruction": pair["instruction"],
        "response": pair["response"],
        "messages": [_turn("user", pair["instruction"]), _turn("assistant", pair["response"])],
        "finish_reason": chunk["synthesis_finish_reason"],
    }
    return {**row, "task": task} if task else row


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _sft_schema(task_column: bool) -> pa.Schema:
    fields = [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("chunk", pa.int32()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("messages", MESSAGES),
        ("finish_reason", pa.string()),
    ]
    return pa.schema(fields + ([("task", pa.string())] if task_column else []))


def pretrain_rows(batch: Batch, layouts: Mapping[str, Any], seed: int = 0) -> Batch:
    """One row per chain of `batch` (chunk rows with `pairs` and `chain`): `id`, `text`, `source_ids`,
    `pairs`, `layout`. `text` is each chunk followed by its pairs, chunks in chain order, laid out
    with a layout and separator drawn per chain from `layouts` by an RNG seeded with `seed` and the chain.
    """
    chains: dict[str, list[dict[str, Any]]] = {}
    for row in batch.select(["id", "source_id", "text", "pairs", "chain"]).to_pylist():
        chains.setdefault(row["chain"], []).append(row)
    out = []
    for chain_id, links in chains.items():
        rng = random.Random(seed * 1_000_003 + xxhash.xxh32_intdigest(chain_id.encode()))
        layout, separator = rng.choice(layouts["layouts"]), rng.choice(layouts["separators"])
        parts = [link["text"] + (f"\n\n{lay_out(layout, link['pairs'])}" if link["pairs"] else "") for link in links]
        out.append(
            {
                "id": chain_id,
                "text": separator.join(parts),
                "source_ids": list(dict.fromkeys(link["source_id"] for link in links)),
                "pairs": sum(len(link["pairs"]) for link in links),
                "layout": layout["name"],
            }
        )
    schema = [("id", pa.string()), ("text", pa.string()), ("source_ids", pa.list_(pa.string()))]
    return pa.Table.from_pylist(out, pa.schema([*schema, ("pairs", pa.int32()), ("layout", pa.string())]))


def lay_out(layout: Mapping[str, str], pairs: Sequence[Mapping[str, str]]) -> str:
    """Pairs as text in `layout`: one `pair` template each, or numbered questions then answers."""
    head = [layout["head"]] if layout.get("head") else []
    if "pair" in layout:
        body = [fill(layout["pair"], question=p["instruction"], answer=p["response"]) for p in pairs]
        return layout["join"].join(head + body)
    questions = [fill(layout["question"], n=str(n), question=p["instruction"]) for n, p in enumerate(pairs, 1)]
    answers = [fill(layout["answer"], n=str(n), answer=p["response"]) for n, p in enumerate(pairs, 1)]
    join = layout["join"]
    return join.join(head + questions) + "\n\n" + join.join([layout["answers_head"], *answers])


# ---------------------------------------------------------------- helpers


def fill(template: str, **values: str) -> str:
    """Replace `{name}` placeholders in one pass, so braces inside the values are left alone."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def seeded(params: Sampling, key: str, step: int = 0) -> Sampling:
    """`params` with a seed fixed by the batch's first id and the step, so reruns sample the same."""
    if params.seed is None:
        return params
    return replace(params, seed=(params.seed + xxhash.xxh32_intdigest(key.encode()) + 7919 * step) % 2**31)
