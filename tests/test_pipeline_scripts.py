"""Every script in pipelines/ runs end to end at tiny n on the embedded model (as CI does)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cards import flat

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
    "magpie_diverse.py": ["--n", "2", "--max-tokens", "128", "--max-attempts", "8"],
}
# Why a script may keep no row at tiny n on the embedded SmolLM2-135M-Instruct; each is run on the
# double below, where its rows are asserted. Measured 2026-12-07 with the arguments in TINY:
WHY_NONE = {
    # 3 chunks generated, 0 pairs: a general chat model does not write the synthesizer's <QUE>/<ANS> format.
    "instruction_pretrain.py": "SmolLM2 writes no <QUE>/<ANS> pair (dropped_chunk_without_pairs: 3 of 3)",
    # 2 problems, both cut off at 32 tokens (dropped_problem_cut_off: 2): a solution that ends with an
    # answer needs a few hundred tokens per sample, minutes per problem on 2 cores.
    "persona_math.py": "no problem ends within 32 tokens, and no solution would end with an answer",
    # 2 attempts: one instruction ran past Magpie's 256 tokens (dropped_truncated), one answer was cut
    # off at 32 tokens with its code fence open (dropped_cut_off, verify no_code). A kept row needs an
    # answer that ends within --max-tokens and holds code that runs: hundreds of tokens for this model.
    "code_instruct.py": "no answer ends within 32 tokens, and a cut-off answer is never kept",
}
# magpie_air keeps at least one row (with no quality bar; its dedup may still drop a near-repeat).
WANTED = {"magpie_air.py": 2, "instruction_pretrain.py": 2, "code_instruct.py": 2, "persona_math.py": None}
WANTED["magpie_diverse.py"] = 2  # SmolLM2 answers most topics within 128 tokens


def test_every_pipeline_script_is_covered() -> None:
    assert sorted(p.name for p in PIPELINES.glob("*.py")) == sorted(TINY) == sorted(SCRIPTED) == sorted(WANTED)


def _unaccounted(script: str, counts: dict, rows: int) -> int:
    """The rows that went into a script's run, less those written and those its card counts as dropped:
    0 when no row vanished without a count."""
    if script == "instruction_pretrain.py":  # rows are the pairs the chunks gave
        # a question repeated within one answer is dropped before `pairs` counts it; one repeated
        # across a document's chunks after
        across = counts.get("dropped_pair_duplicate_across_chunks", 0)
        return counts["pairs"] - rows - counts.get("dropped", 0) - counts.get("dropped_past_n", 0) - across
    went_in = counts.get("attempts") or sum(v for k, v in counts.items() if k.startswith("instruction_"))
    drops = ["dropped", *(k for k in counts if k.startswith("dropped_"))]  # "dropped": MinHash's
    return went_in - rows - sum(counts.get(k, 0) for k in drops)


@pytest.mark.parametrize("script", sorted(TINY))
def test_pipeline_runs_at_tiny_n(tmp_path, script) -> None:
    import os

    import datasets
    import pyarrow.parquet as pq

    from synth.io import read_provenance

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "synth", "run", str(PIPELINES / script), "--out", str(out), *TINY[script]],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},  # the verify cache
    )
    table = pq.read_table(out / "data")
    rows, wanted = table.num_rows, WANTED[script]
    if script not in WHY_NONE:
        assert rows >= 1, done.stderr[-3000:]
    short = wanted is not None and rows < wanted  # a run that keeps fewer rows than --n exits 3 and says so
    assert done.returncode == (3 if short else 0), done.stderr[-3000:]
    assert rows <= (wanted or 2) and ("stopped short" in done.stderr) == short
    prov = read_provenance(out)
    assert prov["status"] == ("incomplete" if short else "complete") and prov["rows"] == rows
    assert _unaccounted(script, flat(prov["counts"]), rows) == 0, prov["counts"]
    assert prov["generated_tokens"] > 0 and prov["stages"]
    if "instruction" in table.column_names:  # every kept row has text: a failed request is never kept
        assert all(str(v).strip() for v in table["instruction"].to_pylist())
    # datasets streams an empty split; its non-streaming loader refuses one (see test_output_safety)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"), streaming=rows == 0)
    assert "id" in ds.features and sum(1 for _ in ds) == rows


SCRIPTED = {"magpie_air.py", "instruction_pretrain.py", "persona_math.py", "code_instruct.py"}
SCRIPTED.add("magpie_diverse.py")  # run on the double


def _on_double(tmp_path, monkeypatch, script: str, argv: list, faults: dict) -> tuple[list[dict], dict, object]:
    """Run `script` in process on a FormatBackend planting `faults`; its rows (in order), counts and the double."""
    import runpy

    import datasets

    import synth
    from synth.io import read_provenance
    from tests.doubles import FormatBackend

    llm = FormatBackend(faults=faults)
    monkeypatch.setattr(synth, "load_backend", lambda *a, **k: llm)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the verify cache
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [script, "--out", str(out), *map(str, argv)])
    runpy.run_path(str(PIPELINES / script), run_name="__main__")
    rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf")).to_list()
    card = (out / "README.md").read_text()
    assert '"status": "complete"' in card and f'"rows": {len(rows)}' in card
    counts = flat(read_provenance(out)["counts"])
    assert _unaccounted(script, counts, len(rows)) == 0, counts  # every planted drop is counted
    return rows, counts, llm


def _ids(*ks: int) -> list[str]:
    return [f"{k:09d}" for k in ks]  # the attempt ids of counter_source


def test_magpie_air_on_the_double_drops_each_planted_fault_at_its_stage(tmp_path, monkeypatch) -> None:
    # 16 attempts; 8 carry a fault, each one that exactly one stage must catch; 8 rows are asked for.
    faults = {
        1: "instruction_cut",  # Magpie: dropped_truncated
        2: "instruction_failed",  # Magpie: dropped_error
        3: "contaminated",  # Decontaminate (n-grams): a copy of the first GSM8K item
        4: "answer_cut",  # heuristics: finish_length (its text ends in a full stop)
        5: "answer_failed",  # heuristics: finish_error (the words before the failure read as a whole answer)
        6: "poor",  # --min-quality average: input_quality "very poor"
        7: "judge_failed",  # the judge answers prose twice: no input_quality, dropped by the same rule
        9: "near_copy",  # MinHash: row 8 with another tag
    }
    argv = ["--n", 8, "--max-attempts", 16, "--against", GSM8K]
    rows, counts, llm = _on_double(tmp_path, monkeypatch, "magpie_air.py", argv, faults)
    assert [r["id"] for r in rows] == _ids(0, 8, 10, 11, 12, 13, 14, 15)
    assert [r["instruction"] for r in rows] == [llm.written[k] for k in (0, 8, 10, 11, 12, 13, 14, 15)]
    assert (counts["attempts"], counts["dropped_truncated"], counts["dropped_error"]) == (16, 1, 1)
    assert counts["contamination_checked"] == 14 and counts["dropped_contaminated_gsm8k_ngram"] == 1
    assert (counts["response_stop"], counts["response_length"], counts["response_error"]) == (12, 1, 1)
    assert (counts["quality_ok"], counts["quality_parse_error"]) == (13, 1)
    assert counts["dropped_finish_length"] == 1 and counts["dropped_finish_error"] == 1
    assert counts["dropped_input_quality >= average"] == 2
    assert counts["dropped"] == 1  # MinHash's count (its name is not its own: see the report)
    for row in rows:
        assert row["input_quality"] == "excellent" and row["response_finish_reason"] == "stop"
        assert row["messages"][0]["content"] == row["instruction"] and row["dup_cluster"] is not None
        assert {"difficulty", "quality_status"} <= set(row) and row["quality_status"] == "ok"


def test_persona_math_on_the_double_drops_each_planted_fault_at_its_stage(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from synth.stages.persona import read_personas

    faults = {
        0: "instruction_cut",  # the problem was cut off: dropped before it is solved
        1: "instruction_failed",  # the same
        2: "contaminated",  # Decontaminate, before any solution is sampled
        3: "disagree",  # four samples, four answers: low_agreement
        4: "answer_cut",  # every sample cut off: no answer
        5: "answer_failed",  # every sample failed: no answer
        6: "poor",  # the judge rates it 1: kept (the judge only rates here), with that score
        7: "judge_failed",  # kept, unrated
        9: "near_copy",  # MinHash: row 8 with another tag
    }
    argv = ["--n", 12, "--against", GSM8K, "--rejects", tmp_path / "rejects"]
    rows, counts, llm = _on_double(tmp_path, monkeypatch, "persona_math.py", argv, faults)
    people = [r for b in read_personas("starter") for r in b.to_pylist()][:12]
    ids = [f"{p['id']}-math" for p in people]
    assert [r["id"] for r in rows] == [ids[k] for k in (6, 7, 8, 10, 11)]
    rejected = {r["id"]: r["verify_status"] for r in pq.read_table(tmp_path / "rejects" / "data").to_pylist()}
    assert rejected == {ids[3]: "low_agreement", ids[4]: "no_answer", ids[5]: "no_answer"}
    # the cut-off problem is no problem (status truncated), the failed one none either (error)
    assert (counts["instruction_ok"], counts["instruction_truncated"], counts["instruction_error"]) == (10, 1, 1)
    assert counts["dropped_problem_cut_off"] == 2
    assert counts["contamination_checked"] == 10 and counts["dropped_contaminated_gsm8k_ngram"] == 1
    assert (counts["verify_pass"], counts["verify_no_answer"], counts["verify_low_agreement"]) == (6, 2, 1)
    assert counts["dropped_verify"] == 3 and counts["dropped"] == 1  # MinHash's count
    people = {p["id"]: p["persona"] for p in people}
    for row in rows:
        assert people[row["persona_id"]] == row["persona"] and row["instruction_status"] == "ok"
        assert row["answer_agreement"] == 1.0 and row["verify_status"] == "pass"
        assert f"\\boxed{{{row['answer']}}}" in row["response"]
    assert [r["instruction"] for r in rows] == [llm.written[k] for k in (6, 7, 8, 10, 11)]
    assert [r["response_score"] for r in rows] == [1, None, 10, 10, 10]
    assert [r["response_status"] for r in rows] == ["ok", "parse_error", "ok", "ok", "ok"]


@pytest.mark.parametrize("require_tests", [False, True])
def test_code_instruct_on_the_double_drops_each_planted_fault_at_its_stage(
    tmp_path, monkeypatch, require_tests
) -> None:
    import pyarrow.parquet as pq

    from synth.stages.verify import CODE_STATUSES

    untested = "untested" if "untested" in CODE_STATUSES else "pass"  # the status of code that asserts nothing
    faults = {
        1: "instruction_cut",  # Magpie: dropped_truncated
        2: "answer_cut",  # cut inside its code fence: cut_off
        3: "answer_failed",  # cut_off too (finish reason error)
        4: "wrong_code",  # its asserts fail: verify
        5: "untested_code",  # runs, asserts nothing: kept with verify_tests none; dropped with --require-tests
        7: "near_copy",  # MinHash: row 6 with another tag
    }
    kept = [0, 6, 8, 9, 10, 11] if require_tests else [0, 5, 6, 8, 9, 10, 11]
    argv = ["--n", len(kept), "--max-attempts", 12, "--batch-size", 12, "--rejects", tmp_path / "rejects"]
    argv += ["--require-tests"] if require_tests else []
    rows, counts, llm = _on_double(tmp_path, monkeypatch, "code_instruct.py", argv, faults)
    assert [r["id"] for r in rows] == _ids(*kept)
    rejects = pq.read_table(tmp_path / "rejects" / "data").to_pylist()
    expected = {_ids(2)[0]: ("cut_off", "no_code"), _ids(3)[0]: ("cut_off", "no_code"), _ids(4)[0]: ("verify", "fail")}
    if require_tests:
        expected[_ids(5)[0]] = ("untested", untested)
    assert {r["id"]: (r["rejected_by"], r["verify_status"]) for r in rejects} == expected
    assert (counts["attempts"], counts["dropped_truncated"], counts["dropped"]) == (12, 1, 1)
    assert counts["dropped_cut_off"] == 2 and counts["dropped_verify"] == 1
    assert counts.get("dropped_untested", 0) == require_tests
    verdicts = {"pass": 7, "fail": 1, "no_code": 2}
    verdicts[untested] = verdicts.get(untested, 0) + 1
    assert {k: v for k, v in counts.items() if k.startswith("verify_")} == {
        f"verify_{k}": v for k, v in verdicts.items()
    }
    for row in rows:
        five = row["id"] == _ids(5)[0]
        assert row["verify_status"] == (untested if five else "pass") and "return a + b" in row["response"]
        assert row["verify_tests"] == ("none" if five else "asserts") and row["response_finish_reason"] == "stop"
        assert row["messages"][0]["role"] == "system" and row["messages"][1]["content"] == row["instruction"]


@pytest.mark.parametrize(
    ("faults", "kept", "dropped"),
    [
        (  # prose gives no pair; an answer cut off keeps its first pair, the one it finished
            {"Photosynthesis is": "no_pairs", "Rosetta Stone is": "answer_cut"},
            ["rosetta-stone.md#0-0", "tcp-handshake.txt#0-0", "tcp-handshake.txt#0-1"],
            {"dropped_chunk_without_pairs": 1, "dropped_pair_truncated": 1},
        ),
        (  # a failed answer gives none, though it wrote a whole pair first; a repeated question is kept once
            {"three-way handshake": "answer_failed", "Rosetta Stone is": "repeated_pair"},
            ["photosynthesis.txt#0-0", "photosynthesis.txt#0-1", "rosetta-stone.md#0-0"],
            {"dropped_chunk_error": 1, "dropped_chunk_without_pairs": 1, "dropped_pair_duplicate_in_answer": 1},
        ),
    ],
)
def test_instruction_pretrain_on_the_double_keeps_only_whole_pairs(
    tmp_path, monkeypatch, faults, kept, dropped
) -> None:
    rows, counts, llm = _on_double(tmp_path, monkeypatch, "instruction_pretrain.py", ["--corpus", CORPUS], faults)
    assert sorted(r["id"] for r in rows) == kept
    assert {k: v for k, v in counts.items() if k.startswith("dropped_")} == dropped
    assert (counts["chunks"], counts["chunks_generated"], counts["pairs"]) == (3, 3, 3)
    assert counts["dropped"] == 0  # no question repeats across documents: the exact dedup drops none
    for row in rows:
        assert row["id"].startswith(f"{row['source_id']}#{row['chunk']}-") and row["finish_reason"] != "error"
        turns = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["response"]}]
        assert row["messages"] == turns and row["instruction"].startswith("Why does")


def test_magpie_diverse_on_the_double_drops_each_planted_fault(tmp_path, monkeypatch) -> None:
    faults = {1: "instruction_cut", 3: "near_copy", 4: "answer_cut", 5: "answer_failed"}
    argv = ["--n", 4, "--max-attempts", 8, "--novelty", 0.05]
    rows, counts, llm = _on_double(tmp_path, monkeypatch, "magpie_diverse.py", argv, faults)
    assert len(rows) == 4 and counts["dropped_truncated"] == 1
    assert (counts["dropped_response_truncated"], counts["dropped_failed_request"]) == (1, 1)
    assert all(r["spread_item"] and r["spread_item"] in r["system_prompt"] for r in rows)
