"""Every script in pipelines/ runs end to end at tiny n on the embedded model (as CI does)."""

import subprocess
import sys
from pathlib import Path

import pytest

PIPELINES = Path(__file__).parents[1] / "pipelines"
CORPUS = Path(__file__).parent / "fixtures" / "corpus"
GSM8K = f"gsm8k={Path(__file__).parent / 'fixtures' / 'benchmarks' / 'gsm8k_test.jsonl'}"  # for --against
TINY = {
    "magpie_air.py": [
        "--n",
        "2",
        "--min-quality",
        "none",
        "--max-tokens",
        "96",
        "--judge-max-tokens",
        "48",
        "--max-attempts",
        "32",
        "--system-prompt",  # SmolLM2 answers at length: steered short, most answers end within the cap
        "Answer in one short sentence.",
        "--against",
        GSM8K,
        "--decontaminate-methods",
        "ngram",  # the embedder is loaded in the tests on the double below, in process
    ],
    "instruction_pretrain.py": ["--corpus", str(CORPUS), "--n", "2", "--max-tokens", "48"],
    "persona_math.py": ["--n", "2", "--max-tokens", "32", "--judge-max-tokens", "48", "--samples", "2"]
    + ["--against", GSM8K, "--decontaminate-methods", "ngram"],
    "code_instruct.py": ["--n", "2", "--max-tokens", "32", "--max-attempts", "2", "--batch-size", "2"],
}
# Rows each script keeps on any working model. magpie_air: at
# least one (with no quality bar, its dedup may still drop a near-repeat: 1 on Gemma 3 270M base).
# instruction_pretrain keeps only the pairs written in the synthesizer's <QUE>/<ANS> format, which a
# small general model rarely does: none may be kept here, its rows are checked on the double below.
# persona_math keeps only problems whose sampled solutions agree, and code_instruct only code that
# runs and passes: a small model may have none of either; both are checked on doubles too.
KEEPS = {
    "persona_math.py": (0, 2),
    "magpie_air.py": (1, 2),
    "instruction_pretrain.py": (0, 2),
    "code_instruct.py": (0, 2),
}


def test_every_pipeline_script_is_covered() -> None:
    assert sorted(p.name for p in PIPELINES.glob("*.py")) == sorted(TINY) == sorted(SCRIPTED)


@pytest.mark.parametrize("script", sorted(TINY))
def test_pipeline_runs_at_tiny_n(tmp_path, script) -> None:
    import os

    import datasets
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "synth", "run", str(PIPELINES / script), "--out", str(out), *TINY[script]],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},  # the verify cache
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(out / "data")
    rows = table.num_rows
    low, high = KEEPS[script]
    assert low <= rows <= high
    if "instruction" in table.column_names:  # every kept row has text: a failed request is never kept
        assert all(str(v).strip() for v in table["instruction"].to_pylist())
    # datasets streams an empty split; its non-streaming loader refuses one (see test_output_safety)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"), streaming=rows == 0)
    assert "id" in ds.features and sum(1 for _ in ds) == rows
    card = (out / "README.md").read_text()
    assert '"status": "complete"' in card and '"stages"' in card


SCRIPTED = {  # script -> (its arguments, columns every row must have)
    "magpie_air.py": (
        ["--n", "3", "--max-attempts", "16", "--against", GSM8K],  # the default --min-quality average
        {"instruction", "response", "input_quality", "difficulty", "dup_cluster", "messages"},
    ),
    "instruction_pretrain.py": (
        ["--corpus", str(CORPUS), "--n", "3"],
        {"source_id", "chunk", "instruction", "response"},
    ),
    "persona_math.py": (
        ["--n", "3", "--against", GSM8K],
        {"persona_id", "instruction", "response", "response_score", "dup_cluster", "answer", "answer_agreement"},
    ),
    "code_instruct.py": (
        ["--n", "3", "--max-attempts", "64", "--batch-size", "8"],
        {"instruction", "response", "verify_status", "verify_tests", "verify_seconds", "dup_cluster", "messages"},
    ),
}


@pytest.mark.parametrize("script", sorted(SCRIPTED))
def test_pipeline_on_a_format_following_double_writes_linked_rows(tmp_path, monkeypatch, script) -> None:
    import runpy

    import datasets

    import synth
    from tests.doubles import FormatBackend

    llm = FormatBackend()
    monkeypatch.setattr(synth, "load_backend", lambda *a, **k: llm)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the verify cache
    out = tmp_path / "out"
    argv, columns = SCRIPTED[script]
    if script == "code_instruct.py":
        argv = [*argv, "--rejects", str(tmp_path / "rejects")]
    monkeypatch.setattr(sys, "argv", [script, "--out", str(out), *argv])
    runpy.run_path(str(PIPELINES / script), run_name="__main__")
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf")).to_list()
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    assert all(columns <= set(r) and all(r[c] is not None for c in columns) for r in rows), rows[0]
    if script == "magpie_air.py":
        assert all(r["input_quality"] == "excellent" and r["messages"][0]["content"] == r["instruction"] for r in rows)
    if script == "instruction_pretrain.py":
        docs = {p.name for p in CORPUS.iterdir()}
        assert all(r["source_id"] in docs and r["id"].startswith(f"{r['source_id']}#{r['chunk']}-") for r in rows)
    if script == "persona_math.py":
        from synth.stages.persona import read_personas

        starter = {r["id"]: r["persona"] for b in read_personas("starter") for r in b.to_pylist()}
        assert all(starter[r["persona_id"]] == r["persona"] and r["instruction_status"] == "ok" for r in rows)
        assert all(r["answer_agreement"] == 1.0 and r["verify_status"] == "pass" for r in rows)
        assert all(f"\\boxed{{{r['answer']}}}" in r["response"] for r in rows)
    if script == "code_instruct.py":  # the double writes one wrong answer in four: they must all be gone
        import pyarrow.parquet as pq

        assert all(r["verify_status"] == "pass" and r["verify_tests"] == "asserts" for r in rows)
        assert all("return a + b" in r["response"] and r["messages"][0]["role"] == "system" for r in rows)
        rejected = pq.read_table(tmp_path / "rejects" / "data").to_pylist()
        assert rejected and all(r["verify_status"] == "fail" and "return a - b" in r["response"] for r in rejected)
    card = (out / "README.md").read_text()
    assert '"status": "complete"' in card and '"rows": 3' in card
    if script in {"magpie_air.py", "persona_math.py"}:  # decontaminated against --against, and counted
        assert '"stage": "Decontaminate"' in card and '"contamination_checked": ' in card
