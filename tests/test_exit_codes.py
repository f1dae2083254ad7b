"""Exit codes that tell the truth, the same for every command: 0 when the work asked for is done,
3 when a run stops short (what it kept is on disk, a dataset that loads, its card `incomplete` with
the reason and the way on), 2 for bad input; and the summary's last line says how short."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth import read, recipes
from synth.backends import Completion, Prompt, Sampling
from synth.core import EXIT_STOPPED_SHORT, StoppedShort
from synth.io import read_provenance
from synth.templates import ChatTemplate, builtin
from tests.cards import flat
from tests.cli_run import run_main

ASKED = 4
ATTEMPTS = 32


@dataclass
class Capped:
    """Magpie's instructions always end; of the answers, the first `whole` end and every later one
    runs to its length cap, as a small model that never stops talking does. `fail`: every request
    fails instead, as against a server that refuses them all."""

    whole: int = 0
    fail: bool = False
    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    name: str = "capped"
    model: str = "capped-model:1b"
    answered: int = 0
    calls: list[list[Prompt]] = field(default_factory=list)

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            if self.fail:
                out.append(Completion("", "error", error="server answered 400"))
            elif isinstance(prompt, str):  # a pre-query template: an instruction, a new one each time
                out.append(Completion(f"Explain topic number {len(self.calls)}-{len(out)} briefly?", "stop", 3, 6))
            else:
                self.answered += 1
                whole = self.answered <= self.whole
                out.append(
                    Completion("A whole answer.", "stop", 5, 4) if whole else Completion("It goes on", "length", 5, 9)
                )
        return out


def magpie(out: Path, *extra: str) -> list[str]:
    return ["magpie", "--n", str(ASKED), "--out", str(out), "-q", "--max-attempts", str(ATTEMPTS), *extra]


def on_disk(out: Path) -> int:
    """Rows as a reader sees them: synth.read and `datasets` (streaming, which also reads an empty split)."""
    import datasets

    rows = sum(b.num_rows for b in read(out))
    streamed = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train", streaming=True)
    assert sum(1 for _ in streamed) == rows and "instruction" in streamed.features  # the columns are there
    assert pq.read_table(out / "data").num_rows == rows
    return rows


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("whole", "kept", "code"),
    [(0, 0, EXIT_STOPPED_SHORT), (3, 3, EXIT_STOPPED_SHORT), (100, ASKED, 0)],
    ids=["keeps nothing", "keeps 3 of 4", "keeps 4 of 4"],
)
def test_magpie_exit_code_card_and_last_lines(whole, kept, code, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    assert run_main(magpie(out), monkeypatch, Capped(whole)) == code
    err = lines(capsys)
    assert on_disk(out) == kept
    card = read_provenance(out)
    state = json.loads((out / ".synth" / "state.json").read_text())
    assert "Traceback" not in "\n".join(err)
    if code == 0:
        assert card["status"] == "complete" and "reason" not in card and state["complete"] is True
        assert err[-1].startswith(f"Wrote {ASKED} rows") and "stopped short" not in "\n".join(err)
        return
    assert card["status"] == "incomplete" and state["complete"] is False
    assert f"--max-attempts {ATTEMPTS} reached" in card["reason"] and "--resume" in card["reason"]
    assert card["rows"] == kept and flat(card["counts"])["attempts"] == ATTEMPTS
    assert err[-2] == f"stopped short: {kept} of {ASKED} rows."  # the summary's last line
    assert err[-1].startswith("synth: error: stopped short: ") and f"{kept} of {ASKED} rows are in" in err[-1]
    assert "--resume and a higher --max-attempts" in err[-1]


def test_a_short_run_goes_on_with_resume_and_then_completes(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    llm = Capped(whole=0)
    assert run_main(magpie(out), monkeypatch, llm) == EXIT_STOPPED_SHORT
    assert on_disk(out) == 0
    llm.whole = llm.answered + ASKED  # the model answers whole from now on
    resumed = ["magpie", "--n", str(ASKED), "--out", str(out), "-q", "--max-attempts", "64", "--resume"]
    assert run_main(resumed, monkeypatch, llm) == 0
    assert on_disk(out) == ASKED and read_provenance(out)["status"] == "complete"
    ids = [r["id"] for b in read(out) for r in b.to_pylist()]
    assert len(set(ids)) == ASKED and all(int(i) >= ATTEMPTS for i in ids)  # new attempts, none twice


def test_bad_input_exits_2_and_claims_no_output(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    assert run_main(magpie(out, "--turns", "2", "--no-responses"), monkeypatch, Capped(100)) == 2
    err = lines(capsys)
    assert len(err) == 1 and err[0].startswith("synth: error: ") and "--turns 2 needs responses" in err[0]
    assert not out.exists()  # no card at all: nothing was started


def test_the_yield_stop_exits_3_with_the_fix(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    argv = ["magpie", "--n", str(ASKED), "--out", str(out), "-q"]  # no --max-attempts: the yield stop judges
    assert run_main(argv, monkeypatch, Capped(0)) == EXIT_STOPPED_SHORT
    err = lines(capsys)
    assert err[-2] == f"stopped short: 0 of {ASKED} rows."
    assert "giving up: 0 rows kept" in err[-1] and "--response-max-tokens" in err[-1] and "--resume" in err[-1]
    assert on_disk(out) == 0
    card = read_provenance(out)
    assert card["status"] == "incomplete" and "giving up" in card["reason"]


def test_every_request_failing_exits_3_with_an_incomplete_card(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    assert run_main(magpie(out), monkeypatch, Capped(fail=True)) == EXIT_STOPPED_SHORT
    err = lines(capsys)
    assert "requests failed" in err[-1] and "server answered 400" in err[-1]
    assert err[-2] == f"stopped short: 0 of {ASKED} rows."
    assert on_disk(out) == 0
    card = read_provenance(out)
    assert card["status"] == "incomplete" and "requests failed" in card["reason"]
    assert flat(card["counts"])["dropped_error"] == ATTEMPTS and card["failed_requests"]["count"] == ATTEMPTS


def test_an_input_run_past_the_error_rate_stops_short_and_one_that_answers_all_completes(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"Q{i}?"}) + "\n" for i in range(60)))
    with pytest.raises(StoppedShort, match=r"requests failed.*over the allowed 5\.0%") as info:
        recipes.respond(Capped(fail=True), src, out=tmp_path / "a")
    assert info.value.exit_code == EXIT_STOPPED_SHORT and "--resume" in str(info.value)
    card = read_provenance(tmp_path / "a")
    assert card["status"] == "incomplete" and "over the allowed" in card["reason"]
    assert sum(b.num_rows for b in read(tmp_path / "a")) < 60  # it stopped before the input was done

    result = recipes.respond(Capped(whole=1000), src, out=tmp_path / "b")  # every input row answered
    assert result["rows"] == 60 and read_provenance(tmp_path / "b")["status"] == "complete"


def test_a_pipeline_whose_source_runs_out_before_n_stops_short(tmp_path) -> None:
    from synth.core import from_rows

    rows = [from_rows([{"id": f"r{i}", "instruction": f"Q{i}"} for i in range(3)])]
    with pytest.raises(StoppedShort, match=r"ran out .* before 5 rows were kept; 3 of 5 rows are in") as info:
        recipes.pipeline(rows, out=tmp_path / "p", n=5, run=recipes.RunSettings(command="test"))
    assert info.value.result["rows"] == 3  # what the run did, for a caller in Python
    assert read_provenance(tmp_path / "p")["status"] == "incomplete"
    done = recipes.pipeline(rows, out=tmp_path / "q", n=3, run=recipes.RunSettings(command="test"))
    assert done["rows"] == 3 and read_provenance(tmp_path / "q")["status"] == "complete"
