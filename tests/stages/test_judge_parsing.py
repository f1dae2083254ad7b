"""The judge's parsing: a cut-off answer is kept only when what it holds is valid, juries combine
labels by majority, and the schema's types become the columns' types."""

from __future__ import annotations

import pyarrow as pa

from synth.backends import Completion
from synth.stages.judge import Rubric, Verdict, _arrow_type, _combine

SCHEMA = {
    "type": "object",
    "properties": {
        "quality": {"type": "string", "enum": ["poor", "good"]},
        "topic": {"type": "string", "enum": ["math", "code", "other"]},
        "note": {"type": "string"},
        "score": {"type": "integer"},
    },
    "required": ["quality"],
}
RUBRIC = Rubric("t", ("instruction",), "{{ instruction }}", SCHEMA, {f: f for f in SCHEMA["properties"]})


def test_a_cut_off_answer_is_ok_only_when_its_closed_fields_are_valid() -> None:
    whole = RUBRIC.parse(Completion('{"quality": "good", "note": "clear and', "length", 3, 9))
    assert whole.status == "ok" and whole.values == {"quality": "good", "note": "clear and"}
    bad_label = RUBRIC.parse(Completion('{"quality": "superb", "note": "clear and', "length", 3, 9))
    assert bad_label.status == "truncated" and bad_label.raw.startswith('{"quality": "superb"')
    assert RUBRIC.parse(Completion('{"quality": "superb"}', "stop", 3, 5)).status == "parse_error"


def test_a_jury_takes_the_majority_of_an_enum_and_the_first_free_text() -> None:
    ballots = [
        Verdict("ok", {"quality": "good", "topic": "math", "note": "first", "score": 4}),
        Verdict("ok", {"quality": "poor", "topic": "code", "note": "second", "score": 6}),
        Verdict("ok", {"quality": "good", "topic": "code", "note": "third", "score": 8}),
    ]
    out = _combine(RUBRIC, ballots)
    assert out.values == {"quality": "good", "topic": "code", "note": "first", "score": 6.0}
    assert out.votes == 3


def test_schema_types_become_column_types() -> None:
    assert _arrow_type({"type": "array", "items": {"type": "integer"}}) == pa.list_(pa.int64())
    assert _arrow_type({"type": "boolean"}) == pa.bool_()
    assert _arrow_type({"type": "no-such-type"}) == pa.string()
    assert _arrow_type({}) == pa.string()
