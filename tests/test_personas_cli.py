"""`synth personas ...` and `synth magpie --personas` as a user runs them, on the embedded model."""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.test_cli import _error, synth

FIXTURES = Path(__file__).parent / "fixtures" / "personas"
STATUSES = {"ok", "missing_prefix", "empty", "truncated", "repetition", "error"}


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "data").to_pylist()


def _starter_ids() -> list[str]:
    from synth.stages.persona import read_personas

    return [r["id"] for b in read_personas("starter") for r in b.to_pylist()]


@pytest.fixture
def double(monkeypatch):
    """The CLI, in-process, on a double that answers in the format asked for: every row must parse."""
    from synth import cli
    from tests.doubles import FormatBackend

    llm = FormatBackend()
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: llm)

    def run(*argv: str) -> None:
        monkeypatch.setattr(sys, "argv", ["synth", *argv])
        try:
            cli.main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code

    return run


def test_from_text_writes_one_persona_per_document(tmp_path, double) -> None:
    src = tmp_path / "docs.jsonl"
    docs = ["Prune apple trees in late winter.", "Cloud revenue grew 30 percent this quarter."]
    src.write_text("\n".join(json.dumps({"body": t}) for t in docs))
    out = tmp_path / "p"
    double("personas", "from-text", str(src), "--column", "body", "--out", str(out), "--max-tokens", "8")
    rows = _rows(out)
    assert [r["source_id"] for r in rows] == ["docs-000000000", "docs-000000001"]
    assert [r["id"] for r in rows] == ["docs-000000000-p", "docs-000000001-p"]
    for row in rows:
        assert row["persona_status"] == "ok" and row["persona"] and row["persona"] in row["persona_raw"]
        assert row["persona_finish_reason"] == "stop" and row["model"] == "format-model"


def test_from_text_on_the_embedded_model(tmp_path) -> None:
    """The real model at a small cap: whatever it writes is kept raw with its finish reason; a run
    that wrote no text at all, or failed requests, fails here."""
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"text": "Prune apple trees in late winter."}) + "\n")
    out = tmp_path / "p"
    done = synth("personas", "from-text", str(src), "--out", str(out), "--max-tokens", "16", "--seed", "1")
    assert done.returncode == 0, done.stderr
    (row,) = _rows(out)
    assert row["persona_finish_reason"] in {"stop", "length"} and row["persona_raw"].strip()
    assert row["persona_status"] in STATUSES and (row["persona"] is not None) == (row["persona_status"] == "ok")


def test_expand_links_each_new_persona_to_its_parent(tmp_path, double, monkeypatch) -> None:
    from synth import cli
    from tests.conftest import ScriptedBackend

    replies = ["Relation: her supplier\nPersona: A flour miller.", "Relation: his student\nPersona: A cadet."]
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: ScriptedBackend(replies=replies))
    out, seeds = tmp_path / "e", tmp_path / "seeds.jsonl"
    people = [("s1", "A baker."), ("s2", "A pilot.")]
    seeds.write_text("\n".join(json.dumps({"id": i, "persona": p}) for i, p in people))
    double("personas", "expand", str(seeds), "--out", str(out), "--max-tokens", "8", "--seed", "3")
    rows = _rows(out)
    assert [(r["id"], r["parent_id"], r["root_id"], r["hop"]) for r in rows] == [
        ("s1-r", "s1", "s1", 1),
        ("s2-r", "s2", "s2", 1),
    ]
    assert [(r["relation"], r["persona"], r["persona_status"]) for r in rows] == [
        ("her supplier", "A flour miller.", "ok"),
        ("his student", "A cadet.", "ok"),
    ]


def test_generate_math_with_responses_on_the_starter_set(tmp_path, double) -> None:
    out = tmp_path / "g"
    args = ["--task", "math", "--n", "2", "--max-tokens", "8", "--responses", "--response-max-tokens", "4"]
    double("personas", "generate", "--personas", "starter", *args, "--out", str(out))
    rows = _rows(out)
    ids = _starter_ids()
    assert [r["persona_id"] for r in rows] == ids[:2]
    assert [r["id"] for r in rows] == [f"{i}-math" for i in ids[:2]]
    for row in rows:
        assert row["task"] == "math" and row["instruction_status"] == "ok" and row["instruction"]
        assert row["response"] and row["response_finish_reason"] == "stop"
    assert '"task": "math"' in (out / "README.md").read_text()


def test_magpie_with_personas_records_persona_per_row(tmp_path, double) -> None:
    out = tmp_path / "m"
    fast = ["--instruction-max-tokens", "12", "--no-responses", "--seed", "5", "--max-attempts", "2"]
    double("magpie", "--personas", str(FIXTURES / "nemotron.jsonl"), "--n", "2", "--out", str(out), *fast)
    assert '"personas": "' in (out / "README.md").read_text() and '"attempts": 2' in (out / "README.md").read_text()
    rows = _rows(out)
    assert [r["persona_id"] for r in rows] == ["9f1c", "a07e"]
    for row in rows:
        assert row["persona"] in row["system_prompt"] and "years old" in row["persona"] and row["instruction"]


def test_magpie_with_personas_on_a_double_puts_each_persona_in_its_prompt_and_row(tmp_path) -> None:
    # The embedded base model may keep no row above; a double keeps every one, so the links can be checked.
    from synth import Sampling
    from synth.recipes import magpie
    from tests.conftest import ScriptedBackend

    llm = ScriptedBackend(
        replies=["Plan a week of cheap family dinners.", "How do I test a capacitor?", "Sort my bills."]
    )
    people = FIXTURES / "nemotron.jsonl"
    magpie(llm, n=3, out=tmp_path / "m", personas=people, response=None, instruction=Sampling(), batch_size=3)
    rows = _rows(tmp_path / "m")
    assert [r["instruction"] for r in rows] == [
        "Plan a week of cheap family dinners.",
        "How do I test a capacitor?",
        "Sort my bills.",
    ]
    assert [r["persona_id"] for r in rows] == ["9f1c", "a07e", "9f1c"]  # the set cycles
    (prompts,) = llm.calls
    for row, prompt in zip(rows, prompts):
        assert "years old" in row["persona"] and row["persona"] in row["system_prompt"]
        assert row["system_prompt"] in prompt  # the persona steered the instruction it is stored with


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["personas", "generate", "--personas", str(FIXTURES / "unknown.csv")], ["who, score", "--persona-column"]),
        (["personas", "generate", "--task", "poems"], ["unknown task 'poems'", "npc"]),
        (["personas", "expand", "nowhere/at/all"], ["not a file", "starter"]),
        (["personas", "from-text", str(FIXTURES / "unknown.csv")], ["no column 'text'", "--column"]),
        (["personas", "from-text", str(FIXTURES / "personahub.jsonl"), "--column", "persona", "--dedup", "x"], ["'x'"]),
        (["magpie", "--personas", str(FIXTURES / "unknown.csv"), "--n", "1"], ["--persona-column"]),
    ],
)
def test_bad_input_is_one_clear_line_before_any_model_loads(tmp_path, argv, words) -> None:
    err = _error(synth(*argv, "--out", str(tmp_path / "o")))
    assert all(w in err for w in words), err
    assert "backend llamacpp" not in err  # failed before loading the model


@pytest.mark.parametrize("argv", [["personas", "--help"], ["personas", "generate", "--help"]])
def test_personas_help_imports_no_heavy_module(argv) -> None:
    from tests.test_cli import test_help_imports_no_heavy_module

    test_help_imports_no_heavy_module(argv)
