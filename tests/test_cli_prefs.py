"""`synth prefs` end to end on the CLI: k responses, a judge's scores, one chosen/rejected pair per
instruction; ties and unscored instructions dropped and counted; an all-dropped run is an empty
dataset with the pair schema."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import pytest

from synth import cli
from synth.backends import Completion
from synth.io import read_provenance
from synth.templates import builtin
from tests.cards import flat

PAIR_COLUMNS = ["id", "prompt", "chosen", "rejected", "chosen_score", "rejected_score", "model", "judge_model"]


@dataclass
class Graded:
    """Answers `Reply to <instruction> #j` (j counts per instruction); as the judge, rates reply j
    3 + j, 5 for an instruction that says `tie`, and no JSON for one that says `unscored`."""

    name: str = "graded"
    model: str = "graded-model"
    template: object = field(default_factory=lambda: builtin("chatml"))
    asked: Counter = field(default_factory=Counter)

    def generate(self, prompts, params):
        return [self.reply(p[-1]["content"]) for p in prompts]

    def reply(self, text: str) -> Completion:
        if "impartial judge" not in text:  # a response
            self.asked[text] += 1
            return Completion(f"Reply to {text} #{self.asked[text]}", "stop", 3, 5)
        question = re.search(r"Reply to (.*?) #(\d+)", text)
        instruction, j = question.group(1), int(question.group(2))
        if "unscored" in instruction.lower():
            return Completion("I cannot rate this.", "stop", 3, 4)
        rating = 5 if "tie" in instruction else 3 + j
        return Completion(json.dumps({"explanation": "fine", "rating": rating}), "stop", 3, 6)


def run(argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["synth", *map(str, argv)])
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def graded(monkeypatch) -> Graded:
    llm = Graded()
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: llm)
    return llm


def _source(tmp_path, instructions: list[str]):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": t}) + "\n" for i, t in enumerate(instructions)))
    return path


def test_prefs_writes_one_pair_per_scored_instruction(tmp_path, monkeypatch, graded) -> None:
    src = _source(tmp_path, ["Name a river.", "Say a tie word.", "Be unscored.", "Name a hill."])
    out = tmp_path / "prefs"
    assert run(["prefs", src, "--out", out, "--k", "3", "--seed", "1"], monkeypatch) == 0
    rows = pq.read_table(out / "data").to_pylist()
    assert [r["prompt"] for r in rows] == ["Name a river.", "Name a hill."]
    for row in rows:  # best (#3, rated 6) over worst (#1, rated 4)
        assert row["chosen"] == f"Reply to {row['prompt']} #3" and row["rejected"] == f"Reply to {row['prompt']} #1"
        assert (row["chosen_score"], row["rejected_score"]) == (6, 4)
    assert list(rows[0]) == PAIR_COLUMNS
    counts = flat(read_provenance(out)["counts"])
    assert counts["pairs"] == 2 and counts["dropped_tie"] == 1 and counts["dropped_unscored"] == 1
    import datasets

    assert datasets.load_dataset(str(out), split="train")["prompt"] == ["Name a river.", "Name a hill."]


def test_prefs_with_no_pair_writes_an_empty_dataset_with_the_pair_columns(tmp_path, monkeypatch, graded) -> None:
    # the case: six rows, two ties and four unscored
    src = _source(tmp_path, ["A tie.", "Another tie."] + [f"Unscored {i}." for i in range(4)])
    out = tmp_path / "prefs"
    assert run(["prefs", src, "--out", out, "--k", "2", "--seed", "1"], monkeypatch) == 0
    table = pq.read_table(out / "data")
    assert table.num_rows == 0 and table.column_names == PAIR_COLUMNS
    import datasets

    streamed = datasets.load_dataset(str(out), split="train", streaming=True)
    assert list(streamed) == [] and list(streamed.features) == PAIR_COLUMNS
    counts = flat(read_provenance(out)["counts"])
    assert counts.get("pairs", 0) == 0 and counts["dropped_tie"] == 2 and counts["dropped_unscored"] == 4
