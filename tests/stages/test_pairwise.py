"""Pairwise judges: verdicts in both orders, MT-Bench's flip-is-a-tie rule, and its count in the card."""

import json

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Sampling
from synth.core import SynthError, from_rows
from synth.io import read_provenance
from synth.stages.judge import load_rubric
from synth.stages.pairwise import PairwiseJudge
from tests.cards import flat
from tests.conftest import ScriptedBackend


def _verdict(v: str) -> str:
    return json.dumps({"explanation": "because", "verdict": v})


def _pairs(n: int):
    return from_rows(
        [
            {"id": f"p{i}", "instruction": f"Q{i}?", "response_a": f"first {i}", "response_b": f"second {i}"}
            for i in range(n)
        ]
    )


def test_a_judge_that_always_answers_first_is_never_consistent_and_every_verdict_is_a_tie() -> None:
    llm = ScriptedBackend(replies=[_verdict("A")] * 8)
    stage = PairwiseJudge((llm,), load_rubric("pairwise"), swap=True)
    (out,) = stage([_pairs(4)])
    assert out["winner_forward"].to_pylist() == ["model_a"] * 4
    assert out["winner_swapped"].to_pylist() == ["model_b"] * 4  # "A" in the swapped order is response_b
    assert out["swap_consistent"].to_pylist() == [False] * 4
    assert out["winner"].to_pylist() == ["tie"] * 4
    assert stage.stats["pairwise_swap_inconsistent"] == 4 and stage.stats["pairwise_swap_consistent"] == 0
    # the second call put response_b first
    forward, swapped = llm.calls
    assert "first 0" in forward[0][-1]["content"].split("Assistant B")[0]
    assert "second 0" in swapped[0][-1]["content"].split("Assistant B")[0]


def test_a_consistent_judge_keeps_its_verdicts() -> None:
    # forward: A, B, tie; swapped (answers exchanged): B, A, tie -> the same winners
    llm = ScriptedBackend(replies=[_verdict(v) for v in ("A", "B", "tie", "B", "A", "tie")])
    stage = PairwiseJudge((llm,), load_rubric("pairwise"), swap=True)
    (out,) = stage([_pairs(3)])
    assert out["winner"].to_pylist() == ["model_a", "model_b", "tie"]
    assert out["swap_consistent"].to_pylist() == [True, True, True]
    assert out["winner_explanation"].to_pylist() == ["because"] * 3


def test_without_swap_the_forward_verdict_stands_and_a_failed_answer_is_unjudged() -> None:
    llm = ScriptedBackend(replies=[_verdict("B"), "no json", "still none"])
    (out,) = PairwiseJudge((llm,), load_rubric("pairwise"))([_pairs(2)])
    assert out["winner"].to_pylist() == ["model_b", None]
    assert out["pairwise_status"].to_pylist() == ["ok", "parse_error"]
    assert out["pairwise_raw"].to_pylist() == [None, "still none"]
    assert "swap_consistent" not in out.column_names


def test_judge_recipe_puts_the_swap_consistency_in_the_card(tmp_path) -> None:
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in _pairs(4).to_pylist()))
    first = ScriptedBackend(replies=[_verdict("A")] * 8)
    recipes.judge([first], src, out=tmp_path / "first", rubrics=["pairwise"], pairwise=True, swap=True)
    card = read_provenance(tmp_path / "first")
    assert card["swap"] == {"judged_both_ways": 4, "inconsistent": 4, "consistency": 0.0}
    rows = pq.read_table(tmp_path / "first/data").to_pylist()
    assert [r["winner"] for r in rows] == ["tie"] * 4 and {r["judge_status"] for r in rows} == {"ok"}

    # three of four hold when swapped: 75%
    fair = ScriptedBackend(replies=[_verdict(v) for v in ("A", "B", "A", "A", "B", "A", "B", "A")])
    recipes.judge([fair], src, out=tmp_path / "fair", rubrics=["pairwise"], pairwise=True, swap=True)
    assert read_provenance(tmp_path / "fair")["swap"]["consistency"] == 0.75


def test_prefs_pairwise_keeps_consistent_winners_and_drops_flips(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "instruction": "Name a colour."}))
    answerer = ScriptedBackend(replies=["red", "blue"], model="policy")
    judge = ScriptedBackend(replies=[_verdict("B"), _verdict("A")], model="judge")  # blue, both ways
    recipes.prefs(
        answerer,
        [judge],
        src,
        out=tmp_path / "o",
        k=2,
        rubric="pairwise",
        pairwise=True,
        swap=True,
        params=Sampling(max_tokens=8),
    )
    (row,) = pq.read_table(tmp_path / "o/data").to_pylist()
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Name a colour.", "blue", "red")
    assert read_provenance(tmp_path / "o")["swap"]["consistency"] == 1.0

    answerer = ScriptedBackend(replies=["red", "blue"])
    always_first = ScriptedBackend(replies=[_verdict("A"), _verdict("A")])
    recipes.prefs(
        answerer,
        [always_first],
        src,
        out=tmp_path / "bias",
        k=2,
        rubric="pairwise",
        pairwise=True,
        swap=True,
        params=Sampling(max_tokens=8),
    )
    assert pq.read_table(tmp_path / "bias/data").num_rows == 0
    card = read_provenance(tmp_path / "bias")
    assert card["swap"]["consistency"] == 0.0 and flat(card["counts"])["dropped_tie"] == 1


def test_pairwise_options_are_checked() -> None:
    llm = ScriptedBackend(replies=[])
    with pytest.raises(SynthError, match="needs --pairwise"):
        recipes.judge([llm], "x.jsonl", out="o", swap=True)
    with pytest.raises(SynthError, match="no field with the labels A, B and tie"):
        PairwiseJudge((llm,), load_rubric("quality"))
    with pytest.raises(SynthError, match="pass --k 2"):
        recipes.prefs(llm, [llm], "x.jsonl", out="o", k=4, rubric="pairwise", pairwise=True)


def test_swap_without_pairwise_fails_before_any_model_loads(tmp_path) -> None:
    from tests.test_cli import synth

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "instruction": "Hi"}))
    done = synth("judge", str(src), "--out", str(tmp_path / "o"), "--swap")
    assert done.returncode == 2 and "it needs --pairwise" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()
