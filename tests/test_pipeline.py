import textwrap

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth import cli
from synth.core import SynthError
from synth.io import read_provenance
from tests.cards import flat

SCRIPT = textwrap.dedent("""
    import argparse

    from synth.backends import Metered
    from synth.core import counter_source
    from synth.recipes import pipeline
    from synth.stages import Magpie, Respond
    from synth.templates import builtin
    from synth.backends import Completion
    from tests.conftest import ScriptedBackend

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    cut = Completion("Q1 is cut", "length")  # Magpie drops it: three rows from four attempts
    llm = Metered(ScriptedBackend(replies=["Q0", cut, "Q2", "Q3", "A0", "A2", "A3"]))

    def shout(batches):
        for b in batches:
            yield b.append_column("loud", b["response"].cast("string"))

    pipeline(counter_source(4), Magpie(llm, builtin("chatml")), Respond(llm), shout, out=args.out, n=args.n,
             settings={"model": "scripted"})
""")


def test_synth_run_executes_a_pipeline_script_with_its_own_arguments(tmp_path) -> None:
    script = tmp_path / "pipe.py"
    script.write_text(SCRIPT)
    result = CliRunner().invoke(cli.app, ["run", str(script), "--out", str(tmp_path / "o"), "--n", "3"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["id"] for r in rows] == ["000000000", "000000002", "000000003"]
    assert [r["instruction"] for r in rows] == ["Q0", "Q2", "Q3"] and [r["loud"] for r in rows] == ["A0", "A2", "A3"]
    prov = read_provenance(tmp_path / "o")
    assert (
        prov["model"] == "scripted"
        and flat(prov["counts"])["attempts"] == 4
        and flat(prov["counts"])["dropped_truncated"] == 1
    )
    # stages by name and settings, never repr() with memory addresses
    magpie = next(s for s in prov["stages"] if isinstance(s, dict) and s["stage"] == "Magpie")
    assert magpie["backend"] == "scripted-model" and magpie["template"]["family"] == "chatml"
    assert "shout" in prov["stages"] and " at 0x" not in (tmp_path / "o/README.md").read_text()
    assert prov["generated_tokens"] > 0


def test_synth_run_missing_script() -> None:
    result = CliRunner().invoke(cli.app, ["run", "nope.py"])
    assert isinstance(result.exception, SynthError) and "does not exist" in str(result.exception)


@pytest.mark.parametrize("keep_truncated", [False, True])
def test_magpie_recipe_drops_each_planted_fault_and_counts_it(tmp_path, keep_truncated) -> None:
    from synth import recipes
    from tests.doubles import FormatBackend

    faults = {1: "instruction_cut", 2: "instruction_failed", 3: "answer_cut", 4: "answer_failed"}
    llm = FormatBackend(faults=faults)
    kept = [0, 3, 5, 6, 7] if keep_truncated else [0, 5, 6, 7]
    recipes.magpie(llm, n=len(kept), out=tmp_path / "o", max_attempts=8, keep_truncated=keep_truncated)
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["id"] for r in rows] == [f"{k:09d}" for k in kept]
    assert [r["instruction"] for r in rows] == [llm.written[k] for k in kept]
    for row in rows:  # a kept answer cut off by max tokens is marked so, and still has its words
        assert row["response"].strip() and row["messages"][-1] == {"role": "assistant", "content": row["response"]}
        assert row["response_finish_reason"] == ("length" if row["id"] == "000000003" else "stop")
    counts = flat(read_provenance(tmp_path / "o")["counts"])
    assert (counts["attempts"], counts["dropped_truncated"], counts["dropped_error"]) == (8, 1, 1)
    assert counts["dropped_failed_request"] == 1  # the failed answer, whatever words it had
    assert counts.get("dropped_response_truncated", 0) == (not keep_truncated)
    assert counts.get("kept_response_truncated", 0) == keep_truncated
