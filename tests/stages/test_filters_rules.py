"""Heuristic rules and --where on rows whose verdict is known: case, the end of a text, true/false columns."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from synth.core import SynthError, from_rows
from synth.stages.filters import Filter, heuristic_rules, load_heuristics, repetitive, where


def verdicts(rules, rows: list[dict]) -> dict[str, str | None]:
    """Row id -> the rule that dropped it (None: kept)."""
    rejected: list = []
    kept = [r for b in Filter(tuple(rules), rejects=rejected.append)([from_rows(rows)]) for r in b["id"].to_pylist()]
    out: dict[str, str | None] = dict.fromkeys(kept)
    for batch in rejected:
        out.update(zip(batch["id"].to_pylist(), batch["rejected_by"].to_pylist()))
    assert len(out) == len(rows)
    return out


def test_a_greeting_in_any_case_is_a_greeting() -> None:
    rows = [
        {"id": "a", "instruction": "HELLO THERE!"},
        {"id": "b", "instruction": "Good Morning everyone."},
        {"id": "c", "instruction": "Hello, can you explain how tides work?"},
    ]
    assert verdicts(heuristic_rules({"greeting": {}}), rows) == {"a": "greeting", "b": "greeting", "c": None}


def test_repetition_at_the_very_end_of_a_response_counts() -> None:
    words = ["".join(w) for w in itertools.product("abcdefgh", repeat=3)][:50]  # distinct, all 3 letters
    cfg = load_heuristics("default")["repetition"]
    # The first 8 words again at the end: 8 of 58 words (13.8%) lie in a repeated 7-gram (limit 13%).
    assert repetitive(" ".join(words + words[:8]), cfg)
    assert not repetitive(" ".join(words + words[:8:2]), cfg)  # the same words, no n-gram repeated


@pytest.mark.parametrize(
    ("expr", "kept"), [("ok == true", ["a"]), ("ok == FALSE", ["b"]), ("ok != true", ["b"]), ("ok = True", ["a"])]
)
def test_where_on_a_true_false_column(expr, kept) -> None:
    rows = [{"id": "a", "ok": True}, {"id": "b", "ok": False}, {"id": "c", "ok": None}]  # no value: fails all
    out = verdicts([where(expr)], rows)
    assert [k for k, v in out.items() if v is None] == kept


def test_bad_settings_and_conditions_name_what_is_wrong() -> None:
    with pytest.raises(SynthError, match=r"unknown section \[colour\]; known: .*greeting"):
        heuristic_rules({"colour": {}})
    batch = from_rows([{"id": "a", "tags": ["x"]}])
    with pytest.raises(SynthError, match=r"cannot compare a column of type list<item: string>"):
        where("tags == x").drops(batch)
    assert pa.types.is_list(batch["tags"].type)


def test_the_default_rules_are_all_there_in_order() -> None:
    names = [r.name for r in heuristic_rules(load_heuristics("default"))]
    assert names[:4] == ["greeting", "fragment", "instruction_length", "response_length"]
    assert {"refusal", "finish_length", "finish_error", "code_fence", "no_end_punctuation", "repetition"} <= set(names)


def test_cut_off_answers_are_dropped_by_the_rule_that_saw_the_cut() -> None:
    rules = heuristic_rules({"truncated": {}})
    answer = "Boil the water, add the pasta and stir it now and then until it is done."
    rows = [
        {"id": "len", "response": answer, "response_finish_reason": "length"},
        {"id": "rep", "response": answer, "response_finish_reason": "repetition"},
        {"id": "fence", "response": "Run this:\n```python\nprint('hi')\n", "response_finish_reason": "stop"},
        {"id": "ok", "response": answer, "response_finish_reason": "stop"},
    ]
    expected = {"len": "finish_length", "rep": "finish_length", "fence": "code_fence", "ok": None}
    assert verdicts(rules, rows) == expected


def test_one_long_line_repeated_is_repetition() -> None:
    cfg = load_heuristics("default")["repetition"]
    long = "Remember to water the tomatoes every morning before the sun gets too hot for them."
    text = "\n".join(["Garden notes.", long, "Pick the beans.", long])  # 1 line of 4 again: 25% of lines
    assert repetitive(text, cfg)  # but most of the characters
    assert not repetitive("\n".join(["Garden notes.", long, "Pick the beans.", "Rest."]), cfg)
