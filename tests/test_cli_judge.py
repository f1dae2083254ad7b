"""`synth judge` and `synth filter` as a user runs them."""

import json

import jsonschema
import pyarrow.parquet as pq

from synth.stages.judge import load_rubric
from tests.cards import flat
from tests.test_cli import synth

ROWS = [
    {"id": "a", "instruction": "What is the capital of France?", "response": "Paris is the capital of France."},
    {"id": "b", "instruction": "hello", "response": "Hi! How can I help you today?"},
]


def _source(tmp_path, rows=ROWS):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    return src


QUESTIONS = [
    {"id": "a", "instruction": "What is the capital of France?"},
    {"id": "b", "instruction": "Write a Python function that reverses a string."},
    {"id": "c", "instruction": "Solve for x: 2x + 3 = 11."},
]


def test_judge_with_the_embedded_model_writes_schema_valid_values_or_keeps_the_raw_answer(tmp_path) -> None:
    # The 270M model is a weak judge: check the schema and the statuses, not the labels. The
    # grammar holds it to the schema, and the category rubric's answer is short (two enums), so
    # 256 tokens leave room to finish: some row must parse.
    out = tmp_path / "judged"
    src = _source(tmp_path, QUESTIONS)
    done = synth("judge", str(src), "--out", str(out), "--rubric", "category", "--max-tokens", "256")
    assert done.returncode == 0, done.stderr
    assert "Wrote 3 rows" in done.stderr
    rows = pq.read_table(out / "data").to_pylist()
    rubric = load_rubric("category")
    statuses = [row["category_status"] for row in rows]
    assert "ok" in statuses, [row["category_raw"] for row in rows]
    for row in rows:
        assert row["judge_status"] == row["category_status"]
        assert row["category_status"] in {"ok", "truncated", "parse_error", "backend_error"}
        values = {field: row[column] for field, column in rubric.columns.items()}
        if row["category_status"] == "ok":
            jsonschema.validate(values, rubric.schema)
            assert row["category_raw"] is None
        else:
            assert row["category_raw"], row  # the raw answer is kept, for a look at what went wrong
            assert all(v is None for v in values.values())


def test_filter_cli_keeps_rejects_and_explains_a_bad_label(tmp_path) -> None:
    rows = [{**r, "input_quality": q} for r, q in zip(ROWS, ["good", "excellent"])]
    src = _source(tmp_path, rows)
    done = synth(
        "filter",
        str(src),
        "--out",
        str(tmp_path / "kept"),
        "--where",
        "input_quality >= good",
        "--rejects",
        str(tmp_path / "rej"),
    )
    assert done.returncode == 0, done.stderr
    assert "dropped: 1 greeting" in done.stderr
    assert pq.read_table(tmp_path / "kept/data").column("id").to_pylist() == ["a"]
    assert pq.read_table(tmp_path / "rej/data").column("rejected_by").to_pylist() == ["greeting"]

    bad = synth("filter", str(src), "--out", str(tmp_path / "k2"), "--where", "input_quality >= great")
    assert bad.returncode == 2
    assert "'great' is not a label of input_quality" in bad.stderr and "Traceback" not in bad.stderr


def test_several_judges_need_jury(tmp_path) -> None:
    done = synth("judge", str(_source(tmp_path)), "--out", str(tmp_path / "o"), "-m", "a.gguf", "-m", "b.gguf")
    assert done.returncode == 2 and "pass --jury" in done.stderr


def test_filter_where_on_a_missing_column_fails_before_the_output_is_made(tmp_path) -> None:
    src = _source(tmp_path, [{**r, "input_quality": "good"} for r in ROWS])
    out, rej = tmp_path / "kept", tmp_path / "rej"
    args = ["filter", str(src), "--out", str(out), "--rejects", str(rej), "--where"]
    for bad, message in [
        ("quality >= good", "no column 'quality'; it has id, instruction, response, input_quality"),
        ("instruction > abc", "no ordinal scale"),  # known only once the column's type is seen
    ]:
        done = synth(*args, bad)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (out / "data").exists() and not (rej / "data").exists()
    fixed = synth(*args, "input_quality >= good")  # the same command, corrected: no --overwrite needed
    assert fixed.returncode == 0, fixed.stderr
    assert pq.read_table(out / "data").column("id").to_pylist() == ["a"]


def test_judge_then_filter_on_a_faulty_judge_drops_exactly_the_poor_and_unjudged_rows(tmp_path, monkeypatch) -> None:
    # The double rates the capital question "very poor" and answers the string question in prose (twice):
    # `synth filter --where` must drop those two, name the rule, and keep the one judged "excellent".
    import sys

    from synth import cli
    from synth.io import read_provenance
    from tests.doubles import FormatBackend

    llm = FormatBackend(faults={"capital of France": "poor", "reverses a string": "judge_failed"})
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: llm)

    def run(*argv) -> int:
        monkeypatch.setattr(sys, "argv", ["synth", *map(str, argv)])
        try:
            cli.main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        return 0

    judged, kept, rejects = tmp_path / "judged", tmp_path / "kept", tmp_path / "rej"
    assert run("judge", _source(tmp_path, QUESTIONS), "--out", judged, "--rubric", "quality") == 0
    rows = pq.read_table(judged / "data").to_pylist()
    assert [(r["id"], r["input_quality"], r["quality_status"]) for r in rows] == [
        ("a", "very poor", "ok"),
        ("b", None, "parse_error"),
        ("c", "excellent", "ok"),
    ]
    assert rows[1]["quality_raw"] == "I would rate this one as fine overall."  # the raw answer is kept
    assert len(llm.calls) == 2 and len(llm.calls[1]) == 1  # the batch, then one retry of the failed row
    counts = flat(read_provenance(judged)["counts"])
    assert (counts["quality_ok"], counts["quality_parse_error"]) == (2, 1)
    where = "input_quality >= average"
    assert run("filter", judged / "data", "--out", kept, "--where", where, "--rejects", rejects) == 0
    assert pq.read_table(kept / "data").column("id").to_pylist() == ["c"]
    dropped = pq.read_table(rejects / "data").to_pylist()
    assert {(r["id"], r["rejected_by"]) for r in dropped} == {("a", where), ("b", where)}
    assert flat(read_provenance(kept)["counts"])[f"dropped_{where}"] == 2
