import textwrap

import pyarrow.parquet as pq
from typer.testing import CliRunner

from synth import cli
from synth.core import SynthError
from synth.io import read_provenance

SCRIPT = textwrap.dedent("""
    import argparse

    from synth.backends import Metered
    from synth.core import counter_source
    from synth.recipes import pipeline
    from synth.stages import Magpie, Respond
    from synth.templates import builtin
    from tests.conftest import ScriptedBackend

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    llm = Metered(ScriptedBackend(replies=[f"Q{i}" for i in range(4)] + [f"A{i}" for i in range(4)]))

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
    assert [r["instruction"] for r in rows] == ["Q0", "Q1", "Q2"] and rows[0]["loud"] == "A0"
    prov = read_provenance(tmp_path / "o")
    assert prov["model"] == "scripted" and prov["counts"]["kept"] == 4
    # stages by name and settings, never repr() with memory addresses
    magpie = next(s for s in prov["stages"] if isinstance(s, dict) and s["stage"] == "Magpie")
    assert magpie["backend"] == "scripted-model" and magpie["template"]["family"] == "chatml"
    assert "shout" in prov["stages"] and " at 0x" not in (tmp_path / "o/README.md").read_text()
    assert prov["generated_tokens"] > 0


def test_synth_run_missing_script() -> None:
    result = CliRunner().invoke(cli.app, ["run", "nope.py"])
    assert isinstance(result.exception, SynthError) and "does not exist" in str(result.exception)
