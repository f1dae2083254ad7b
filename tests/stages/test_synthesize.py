"""Instruction synthesis and thinking augmentation: parsing, chunking, chaining, outputs."""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Completion, Sampling
from synth.core import SynthError, from_rows
from synth.io import read
from synth.stages.chunk import Chunk, split_text
from synth.stages.synthesize import (
    GroundedCheck,
    InstructionPretrain,
    SftRows,
    parse_json_pairs,
    parse_pairs,
    pretrain_rows,
)
from synth.stages.think import Think
from synth.tokens import context_size, token_counter
from tests.conftest import ScriptedBackend

CORPUS = Path(__file__).parent.parent / "fixtures" / "corpus"
LAYOUTS = json.loads((Path(__file__).parents[2] / "pipelines/synthesize/layouts.json").read_text())


def words(text: str) -> int:
    return len(text.split())


@dataclass
class CountingBackend(ScriptedBackend):
    """The scripted double plus a tokenizer (one token per word) and a context size."""

    context_size: int = 4096

    def count_tokens(self, text: str) -> int:
        return words(text)


# ---------------------------------------------------------------- parsing


def test_parse_pairs_complete_output() -> None:
    text = "<QUE> What splits water? <ANS> Light. </END>\n\n<QUE> Where? <ANS> In the thylakoids. </END>"
    pairs, drops = parse_pairs(text)
    assert pairs == [
        {"instruction": "What splits water?", "response": "Light."},
        {"instruction": "Where?", "response": "In the thylakoids."},
    ]
    assert not drops


def test_parse_pairs_drops_and_counts_the_pair_cut_by_max_tokens() -> None:
    pairs, drops = parse_pairs("<QUE> Q1? <ANS> A1. </END>\n\n<QUE> Q2? <ANS> half an ans")
    assert pairs == [{"instruction": "Q1?", "response": "A1."}]
    assert drops == {"dropped_pair_truncated": 1}


def test_parse_pairs_missing_ans_empty_answer_and_duplicates() -> None:
    text = (
        "<QUE> No answer marker here </END>"
        "<QUE> Empty? <ANS>   </END>"
        "<QUE> What year? <ANS> 1799. </END>"
        "<QUE>  what   YEAR? <ANS> 1802. </END>"
        "<QUE> Who? <ANS> Young <ANS> Champollion </END>"
    )
    pairs, drops = parse_pairs(text)
    assert pairs == [{"instruction": "What year?", "response": "1799."}]
    assert drops == {"dropped_pair_malformed": 2, "dropped_pair_empty": 1, "dropped_pair_duplicate_in_answer": 1}


def test_parse_json_pairs_salvages_pairs_finished_before_the_cut() -> None:
    text = '{"pairs": [{"instruction": "Q1?", "response": "A1."}, {"instruction": "Q2?", "resp'
    pairs, drops = parse_json_pairs(text)
    assert pairs == [{"instruction": "Q1?", "response": "A1."}]
    assert drops == {"dropped_pair_truncated": 1}
    assert parse_json_pairs('{"pairs": [{"instruction": "...", "response": "..."}]}') == (
        [],
        {"dropped_pair_empty": 1},
    )
    assert parse_json_pairs("no json at all")[1] == {"dropped_output_unparsed": 1}


# ---------------------------------------------------------------- chunking


def test_no_chunk_goes_over_the_budget_and_paragraphs_stay_whole_where_they_fit() -> None:
    paragraphs = [" ".join(f"w{p}x{i}." for i in range(n)) for p, n in enumerate([5, 7, 30, 4, 3])]
    pieces = split_text("\n\n".join(paragraphs), words, budget=12)
    assert all(words(p) <= 12 for p in pieces)
    assert pieces[0] == f"{paragraphs[0]}\n\n{paragraphs[1]}"  # 5 + 7 words: packed, exactly full
    assert [words(p) for p in pieces[1:4]] == [12, 12, 6]  # the 30-word paragraph, cut on sentences
    assert pieces[4] == f"{paragraphs[3]}\n\n{paragraphs[4]}"
    assert " ".join(pieces).split() == "\n\n".join(paragraphs).split()  # nothing lost or reordered


def test_a_budget_without_room_is_refused() -> None:
    with pytest.raises(SynthError, match="lower --max-tokens"):
        split_text("text", words, budget=0)


def test_chunk_stage_keeps_ids_and_skips_empty_and_binary_files() -> None:
    stage = Chunk(words, budget=60)
    chunks = [row for batch in stage(read(CORPUS)) for row in batch.to_pylist()]
    assert stage.stats["documents_empty"] == 1 and stage.stats["documents_binary"] == 1
    assert stage.stats["documents_text"] == 3
    assert {c["source_id"] for c in chunks} == {"photosynthesis.txt", "rosetta-stone.md", "tcp-handshake.txt"}
    assert all(c["id"] == f"{c['source_id']}#{c['chunk']}" and words(c["text"]) <= 60 for c in chunks)
    photo = [c for c in chunks if c["source_id"] == "photosynthesis.txt"]
    assert [c["chunk"] for c in photo] == list(range(len(photo))) and len(photo) >= 2
    original = (CORPUS / "photosynthesis.txt").read_text()
    assert " ".join(c["text"] for c in photo).split() == original.split()


def stdlib_text() -> str:
    """Real prose with paragraphs: docstrings of standard library modules."""
    import argparse
    import pickle
    import subprocess
    import tarfile
    import zipfile

    return "\n\n".join(m.__doc__ for m in (subprocess, argparse, pickle, tarfile, zipfile))


def test_overlapping_chunks_repeat_whole_sentences_of_the_one_before_and_lose_nothing() -> None:
    text = stdlib_text()
    pieces = split_text(text, words, budget=80, overlap=20)
    plain = split_text(text, words, budget=60)  # what the overlap is added to: chunks of 80 - 20
    assert len(pieces) == len(plain) >= 5 and all(words(p) <= 80 for p in pieces)
    assert pieces[0] == plain[0]
    at_sentence = 0
    for before, piece, own in zip(pieces, pieces[1:], plain[1:]):
        assert piece.endswith(own)
        head = piece[: -len(own)].rstrip("\n")
        assert 0 < words(head) <= 20 and before.endswith(head)
        cut = before[: -len(head)]
        assert cut == "" or cut[-1].isspace()  # the overlap starts at a word
        at_sentence += cut.rstrip().endswith((".", "!", "?")) or cut.endswith("\n\n")
    assert at_sentence >= 0.6 * (len(pieces) - 1)  # and mostly at a sentence or a paragraph
    assert " ".join(plain).split() == text.split()  # the chunks less their overlap: the text, nothing lost


def test_a_long_paragraph_without_sentence_ends_is_cut_between_words() -> None:
    text = " ".join(stdlib_text().replace(".", " ").replace("?", " ").split())  # one paragraph, no sentence end
    for count in (words, lambda t: len(t.encode()) // 4 + 1):  # by words, and by bytes like a BPE tokenizer
        pieces = split_text(text, count, budget=50)
        assert len(pieces) >= 10 and all(count(p) <= 50 for p in pieces)
        assert " ".join(pieces).split() == text.split()  # a word cut in two would not split back the same
    stats: Counter = Counter()
    assert split_text("x" * 400, lambda t: len(t) // 4 + 1, budget=50, stats=stats)  # no space anywhere: cut
    assert stats["words_cut_over_budget"] == 1


def test_chunks_and_sft_rows_carry_the_source_title_and_page() -> None:
    text = stdlib_text()
    docs = from_rows(
        [{"id": "a.pdf#page=3", "text": text, "source": "in/a.pdf", "title": "Doc", "page": 3, "url": None}]
    )
    (out,) = Chunk(words, budget=120, overlap=10)([docs])
    assert out.num_rows >= 5
    assert set(out["source"].to_pylist()) == {"in/a.pdf"} and set(out["page"].to_pylist()) == {3}
    assert set(out["title"].to_pylist()) == {"Doc"} and out.schema.field("page").type == docs.schema.field("page").type
    llm = ScriptedBackend(replies=[f"<QUE> Q{i}? <ANS> A{i}. </END>" for i in range(out.num_rows)])
    chunked = InstructionPretrain(llm, words, context_tokens=4096, params=Sampling(max_tokens=50), rounds=1)([out])
    sft = [row for batch in SftRows()(chunked) for row in batch.to_pylist()]
    assert len(sft) == out.num_rows
    assert all(r["source"] == "in/a.pdf" and r["page"] == 3 and r["title"] == "Doc" for r in sft)


def test_token_helpers_ask_the_backend_and_fail_clearly() -> None:
    assert token_counter(CountingBackend(replies=[]))("a b c") == 3
    assert token_counter(ScriptedBackend(replies=[]))("héllo") == 6  # UTF-8 bytes: an upper bound
    assert context_size(CountingBackend(replies=[], context_size=512)) == 512
    with pytest.raises(SynthError, match="--context-tokens"):
        context_size(ScriptedBackend(replies=[]))


# ---------------------------------------------------------------- chaining


def chunks(*texts: str):
    return from_rows([{"id": f"d{i}#0", "source_id": f"d{i}", "chunk": 0, "text": t} for i, t in enumerate(texts)])


def test_second_round_prompt_carries_the_first_round_chunk_and_its_pairs() -> None:
    llm = ScriptedBackend(
        replies=[
            "<QUE> What is A? <ANS> The first letter. </END>",  # round 1, chunk 0
            "no pairs at all",  # round 1, chunk 1
            "<QUE> What is C? <ANS> The third. </END>",  # round 2, chunk 2: chained after chunk 0
            "<QUE> What is D? <ANS> The fourth. </END>",  # round 2, chunk 3: chunk 1 had no pairs
        ]
    )
    stage = InstructionPretrain(llm, words, context_tokens=4096, params=Sampling(max_tokens=50), rounds=2)
    (out,) = stage([chunks("Text A.", "Text B.", "Text C.", "Text D.")])
    assert [len(call) for call in llm.calls] == [2, 2]  # one generate call per round, whole batches
    assert llm.calls[0] == ["<s> <CON> Text A. </CON>\n\n", "<s> <CON> Text B. </CON>\n\n"]
    chained, alone = llm.calls[1]
    assert chained == (
        "<s> <CON> Text A. </CON>\n\n<QUE> What is A? <ANS> The first letter. </END></s><s> <CON> Text C. </CON>\n\n"
    )
    assert alone == "<s> <CON> Text D. </CON>\n\n"
    assert out["chain"].to_pylist() == ["d0#0", "d1#0", "d0#0", "d3#0"]
    assert out["round"].to_pylist() == [1, 1, 2, 2]
    assert out["synthesis_raw"][1].as_py() == "no pairs at all"  # kept when parsing finds nothing


def test_chaining_stops_where_the_prompt_would_not_fit_the_context() -> None:
    llm = ScriptedBackend(replies=["<QUE> Q? <ANS> A. </END>"] * 2)
    long = " ".join(["word"] * 30)
    stage = InstructionPretrain(llm, words, context_tokens=60, params=Sampling(max_tokens=20), rounds=2)
    (out,) = stage([chunks(long, long)])
    assert "<QUE>" not in llm.calls[1][0]  # 2 x 30 words + 20 new tokens > 60
    assert stage.stats["chains_cut_by_context"] == 1
    assert out["chain"].to_pylist() == ["d0#0", "d1#0"]


# ---------------------------------------------------------------- outputs


def test_pretrain_rows_lay_out_each_chain_with_seeded_templates() -> None:
    llm = ScriptedBackend(replies=["<QUE> Q1? <ANS> A1. </END>", "", "<QUE> Q3? <ANS> A3. </END>", ""])
    stage = InstructionPretrain(llm, words, context_tokens=4096, params=Sampling(max_tokens=50), rounds=2)
    (batch,) = stage([chunks("Text A.", "Text B.", "Text C.", "Text D.")])
    rows = pretrain_rows(batch, LAYOUTS, seed=1).to_pylist()
    assert [r["id"] for r in rows] == ["d0#0", "d1#0", "d3#0"]
    first = rows[0]
    assert first["text"].startswith("Text A.\n\n") and "Q1?" in first["text"] and "A3." in first["text"]
    assert first["text"].index("Text C.") > first["text"].index("A1.")
    assert first["source_ids"] == ["d0", "d2"] and first["pairs"] == 2
    assert rows[1]["text"] == "Text B." and rows[1]["pairs"] == 0
    again = pretrain_rows(batch, LAYOUTS, seed=1).to_pylist()
    assert again == rows
    layouts = {pretrain_rows(batch, LAYOUTS, seed=s).to_pylist()[0]["layout"] for s in range(12)}
    assert len(layouts) > 1


def test_sft_rows_link_back_and_dedup_questions_across_a_documents_chunks() -> None:
    batch = from_rows(
        [
            {"id": "a#0", "source_id": "a", "chunk": 0, "pairs": [{"instruction": "Q?", "response": "1"}]},
            {"id": "a#1", "source_id": "a", "chunk": 1, "pairs": [{"instruction": "q?", "response": "2"}]},
            {"id": "b#0", "source_id": "b", "chunk": 0, "pairs": [{"instruction": "Q?", "response": "3"}]},
            {"id": "c#0", "source_id": "c", "chunk": 0, "pairs": []},
        ]
    ).append_column("synthesis_finish_reason", [["stop"] * 4])
    stage = SftRows()
    (out,) = stage([batch])
    rows = out.to_pylist()
    assert [(r["id"], r["source_id"], r["chunk"], r["response"]) for r in rows] == [
        ("a#0-0", "a", 0, "1"),
        ("b#0-0", "b", 0, "3"),
    ]
    assert rows[0]["messages"] == [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "1"}]
    assert stage.stats == {"dropped_pair_duplicate_across_chunks": 1, "dropped_chunk_without_pairs": 1, "kept": 2}


def test_grounded_check_drops_unsupported_and_unjudged_pairs_in_one_call() -> None:
    pairs = [{"instruction": f"Q{i}?", "response": f"A{i}"} for i in range(3)]
    batch = from_rows([{"id": "a#0", "text": "The text.", "pairs": pairs}])
    llm = ScriptedBackend(replies=['{"supported": true}', '{"supported": false}', "garbled"])
    stage = GroundedCheck(llm, "{text} | {instruction} | {response}")
    (out,) = stage([batch])
    assert out["pairs"].to_pylist() == [[pairs[0]]]
    assert len(llm.calls) == 1 and llm.calls[0][1] == [{"role": "user", "content": "The text. | Q1? | A1"}]
    assert llm.params[0].json_schema["required"] == ["supported"]
    assert stage.stats["dropped_pair_ungrounded"] == 1 and stage.stats["dropped_pair_unjudged"] == 1


def test_think_appends_the_trajectory_and_stops_at_the_closing_tag() -> None:
    llm = ScriptedBackend(replies=["<think>\nFirst, why light? Then water.", Completion("", "stop")])
    stage = Think(llm, "{text}\n\nThink.")
    (out,) = stage([from_rows([{"id": "a#0", "text": "Doc A."}, {"id": "b#0", "text": "Doc B."}])])
    assert "</think>" in llm.params[0].stop
    assert llm.calls[0][0] == [{"role": "user", "content": "Doc A.\n\nThink."}]
    row = out.to_pylist()
    assert len(row) == 1 and stage.stats["dropped_empty"] == 1
    assert row[0]["thinking"] == "First, why light? Then water."
    assert row[0]["text"] == "Doc A.\n\nFirst, why light? Then water."
    assert row[0]["thinking_tokens"] > 0 and row[0]["thinking_finish_reason"] == "stop"


@pytest.mark.parametrize("keep", [False, True])
def test_think_drops_cut_off_thinking_and_counts_it_unless_asked_to_keep(keep) -> None:
    replies = [Completion("Light first, then", "length"), Completion("Roots drink; leaves breathe.", "stop")]
    stage = Think(ScriptedBackend(replies=replies), "{text}\n\nThink.", keep_truncated=keep)
    (out,) = stage([from_rows([{"id": "a#0", "text": "Doc A."}, {"id": "b#0", "text": "Doc B."}])])
    rows = out.to_pylist()
    assert [r["thinking"] for r in rows] == (["Light first, then"] if keep else []) + ["Roots drink; leaves breathe."]
    assert stage.stats["kept"] == len(rows) == 1 + keep
    assert stage.stats["kept_truncated" if keep else "dropped_truncated"] == 1


# ---------------------------------------------------------------- recipes


def test_prompt_mode_recipe_writes_sft_rows_and_pretrain_text(tmp_path) -> None:
    reply = json.dumps({"pairs": [{"instruction": "When was it found?", "response": "In 1799."}]})
    llm = CountingBackend(replies=[reply] * 3)
    recipes.synthesize(
        llm, CORPUS, out=tmp_path / "sft", pretrain_out=tmp_path / "pt", pairs=1, batch_size=8, params=Sampling(seed=5)
    )
    assert len(llm.calls) == 1 and len(llm.calls[0]) == 3  # three documents, one batch
    schema = llm.params[0].json_schema
    assert schema["properties"]["pairs"]["maxItems"] == 1
    prompt = llm.calls[0][0][0]["content"]
    assert "photosynthesis" in prompt.lower() and "{text}" not in prompt
    rows = pq.read_table(tmp_path / "sft/data").to_pylist()
    assert {r["source_id"] for r in rows} == {"photosynthesis.txt", "rosetta-stone.md", "tcp-handshake.txt"}
    assert all(r["mode"] == "prompt" and r["model"] == "scripted-model" and r["task"] for r in rows)
    texts = pq.read_table(tmp_path / "pt/data").to_pylist()
    assert len(texts) == 3 and all("In 1799." in t["text"] for t in texts)
    photo = next(t for t in texts if t["source_ids"] == ["photosynthesis.txt"])
    assert photo["text"].startswith("Photosynthesis is the process")


def test_unknown_mode_is_refused(tmp_path) -> None:
    with pytest.raises(SynthError, match="unknown mode 'fancy'.*instruction-pretrain"):
        recipes.synthesize(CountingBackend(replies=[]), CORPUS, out=tmp_path / "o", mode="fancy")


def test_max_tokens_that_leave_no_room_for_text_fail_before_generating(tmp_path) -> None:
    llm = CountingBackend(replies=[], context_size=512)
    with pytest.raises(SynthError, match="lower --max-tokens or raise --context-tokens"):
        recipes.think(llm, CORPUS, out=tmp_path / "o", params=Sampling(max_tokens=500))
    assert llm.calls == [] and not (tmp_path / "o").exists()
