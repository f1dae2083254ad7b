"""`synth judge` and `synth filter` as a user runs them."""

import json

import jsonschema
import pyarrow.parquet as pq

from synth.stages.judge import load_rubric
from tests.test_cli import synth

ROWS = [
    {"id": "a", "instruction": "What is the capital of France?", "response": "Paris is the capital of France."},
    {"id": "b", "instruction": "hello", "response": "Hi! How can I help you today?"},
]


def _source(tmp_path, rows=ROWS):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    return src


def test_judge_with_the_embedded_model_writes_statuses_and_schema_valid_values(tmp_path) -> None:
    # The 270M model is a weak judge: check statuses and the schema, not the scores.
    out = tmp_path / "judged"
    done = synth("judge", str(_source(tmp_path)), "--out", str(out), "--rubric", "quality", "--max-tokens", "24")
    assert done.returncode == 0, done.stderr
    assert "Wrote 2 rows" in done.stderr
    rows = pq.read_table(out / "data").to_pylist()
    rubric = load_rubric("quality")
    for row in rows:
        assert row["judge_status"] == row["quality_status"]
        assert row["quality_status"] in {"ok", "truncated", "parse_error", "backend_error"}
        if row["quality_status"] == "ok":
            values = {"input_quality": row["input_quality"], "explanation": row["input_quality_explanation"]}
            jsonschema.validate(values, rubric.schema)
            assert row["quality_raw"] is None
        else:
            assert row["quality_raw"] is not None and row["input_quality"] is None


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
