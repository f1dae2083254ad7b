"""What synth may replace, and that `datasets.load_dataset` reads each output as written.

`--overwrite` replaces only a directory synth wrote; no output may be, hold or sit inside an
input (real paths, links followed); an empty result is still a dataset; a rerun into the same
folder, or another output in a folder of the same name, never loads another run's rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth import cli
from tests.cli_run import run_main


def _rows(n: int, tag: str = "") -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "instruction": f"Explain how item number {i} {tag} works, please.",
            "response": f"Item {i} works.",
        }
        for i in range(n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args} {kwargs}")

    monkeypatch.setattr(cli._shared, "load_backend", load)


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _project(tmp_path: Path) -> Path:
    """A user's own project: a `data/` folder of their files, notes, a README. No synth state."""
    project = tmp_path / "my-project"
    _jsonl(project / "data" / "train.jsonl", _rows(3))
    (project / "data" / "labels.parquet").write_bytes(b"PAR1 not really")
    (project / "README.md").write_text("# my project\n")
    (project / "notes.txt").write_text("keep me")
    return project


@pytest.mark.parametrize(
    "command",
    [
        ["magpie", "--n", "1"],
        ["filter", "{src}"],
        ["dedup", "{src}"],
        ["respond", "{src}"],
        ["judge", "{src}"],
        ["prefs", "{src}"],
        ["synthesize", "{src}", "--column", "instruction"],
    ],
    ids=lambda c: c[0],
)
def test_overwrite_refuses_a_folder_synth_did_not_write(command, tmp_path, monkeypatch, capsys) -> None:
    project = _project(tmp_path)
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    before = _hashes(project)
    argv = [a.format(src=src) for a in command]
    assert run_main([*argv, "--out", project, "--overwrite"], monkeypatch) == 2
    assert "synth did not write" in _error(capsys)
    assert _hashes(project) == before  # data/, README.md and notes all still there, unchanged


def test_overwrite_of_a_synth_output_keeps_the_users_own_files_beside_it(tmp_path, monkeypatch, capsys) -> None:
    src = _jsonl(tmp_path / "in.jsonl", _rows(4))
    out = tmp_path / "out"
    assert run_main(["filter", src, "--out", out, "--heuristics", "none"], monkeypatch) == 0
    (out / "notes.txt").write_text("mine")
    (out / "data" / "extra.csv").write_text("id\nx\n")
    _jsonl(src, _rows(2, "again"))
    assert run_main(["filter", src, "--out", out, "--heuristics", "none", "--overwrite"], monkeypatch) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "data" / "extra.csv").read_text() == "id\nx\n"
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["train-00000.parquet"]
    assert (
        pq.read_table(out / "data" / "train-00000.parquet")["instruction"]
        .to_pylist()[0]
        .endswith("again works, please.")
    )


def _synth_output(tmp_path: Path, monkeypatch) -> Path:
    """A finished synth output that the next command reads, plus a file of the user's inside it."""
    done = tmp_path / "data" / "x"
    assert run_main(["filter", _jsonl(tmp_path / "seed.jsonl", _rows(5)), "--out", done], monkeypatch) == 0
    (done / "notes.txt").write_text("mine")
    return done


SAME_PATH = {  # command -> (argv with {src}; where the output goes, relative to the input)
    "dedup out=in": (["dedup", "{src}", "--out", "{src}"], "is the input"),
    "dedup out inside": (["dedup", "{src}", "--out", "{src}/sub"], "sits inside the input"),
    "dedup out around": (["dedup", "{src}", "--out", "{parent}"], "holds the input"),
    "dedup rejects=in": (["dedup", "{src}", "--out", "{tmp}/o", "--rejects", "{src}"], "--rejects"),
    "dedup rejects=out": (["dedup", "{src}", "--out", "{tmp}/o", "--rejects", "{tmp}/o"], "--rejects"),
    "filter out=in": (["filter", "{src}", "--out", "{src}"], "is the input"),
    "filter rejects inside": (["filter", "{src}", "--out", "{tmp}/o", "--rejects", "{src}/r"], "--rejects"),
    "filter rejects inside out": (["filter", "{src}", "--out", "{tmp}/o", "--rejects", "{tmp}/o/r"], "--rejects"),
    "judge out=in": (["judge", "{src}", "--out", "{src}"], "is the input"),
    "respond out=in": (["respond", "{src}", "--out", "{src}"], "is the input"),
    "prefs out inside": (["prefs", "{src}", "--out", "{src}/data"], "sits inside"),
    "synthesize pretrain=in": (
        ["synthesize", "{src}", "--column", "instruction", "--out", "{tmp}/o", "--pretrain-out", "{src}"],
        "--pretrain-out",
    ),
    "synthesize out=in via a link": (["synthesize", "{src}", "--column", "instruction", "--out", "{link}"], "is the"),
    "respond input via a link": (["respond", "{link}", "--out", "{src}"], "is the input"),
    "think out=in": (["think", "{src}", "--column", "instruction", "--out", "{src}"], "is the input"),
    "personas from-text out=in": (
        ["personas", "from-text", "{src}", "--column", "instruction", "--out", "{src}"],
        "is",
    ),
}


@pytest.mark.parametrize("case", list(SAME_PATH))
def test_an_output_overlapping_an_input_is_refused_even_with_overwrite(case, tmp_path, monkeypatch, capsys) -> None:
    src = _synth_output(tmp_path, monkeypatch)
    capsys.readouterr()
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    before = _hashes(tmp_path)
    template, says = SAME_PATH[case]
    where = {"src": src, "parent": src.parent, "tmp": tmp_path, "link": tmp_path / "link"}
    argv = [a.format(**where) for a in template]
    assert run_main([*argv, "--overwrite"], monkeypatch) == 2
    assert says in _error(capsys)
    assert _hashes(tmp_path) == before  # the input, the user's notes inside it: all byte-identical
    assert not (tmp_path / "o").exists()  # and no other output was claimed on the way


def _load(out: Path) -> list[str]:
    import datasets

    return datasets.load_dataset(str(out), split="train")["instruction"]


def test_a_rerun_into_the_same_folder_loads_its_own_rows_in_this_process_and_another(
    tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    first = _rows(3, "first")
    assert run_main(["filter", _jsonl(tmp_path / "a.jsonl", first), "--out", out], monkeypatch) == 0
    assert _load(out) == [r["instruction"] for r in first]
    second = _rows(5, "second")
    assert run_main(["filter", _jsonl(tmp_path / "b.jsonl", second), "--out", out, "--overwrite"], monkeypatch) == 0
    assert _load(out) == [r["instruction"] for r in second]  # not the first run's three rows
    code = "import datasets, sys; print(len(datasets.load_dataset(sys.argv[1], split='train')))"
    child = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == "5", child.stderr[-2000:]


def test_two_outputs_in_folders_of_the_same_name_each_load_their_own_rows(tmp_path, monkeypatch) -> None:
    a, b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    assert run_main(["filter", _jsonl(tmp_path / "a.jsonl", _rows(2, "A")), "--out", a], monkeypatch) == 0
    assert (
        run_main(["dedup", _jsonl(tmp_path / "b.jsonl", _rows(6, "B")), "--out", b, "--method", "exact"], monkeypatch)
        == 0
    )
    assert _load(a) == [r["instruction"] for r in _rows(2, "A")]
    assert _load(b) == [r["instruction"] for r in _rows(6, "B")]


def test_an_empty_result_is_a_dataset_with_the_full_schema(tmp_path, monkeypatch) -> None:
    """Every row dropped: the shard holds the columns and no row group. `datasets` streams it as 0
    rows; its non-streaming loader refuses any empty split ("corresponds to no data"), even one it
    wrote itself, so that is what the README says to use."""
    import datasets

    rows = [{"id": f"r{i}", "instruction": "hi", "response": "", "score": i} for i in range(4)]
    out = tmp_path / "out"
    assert run_main(["filter", _jsonl(tmp_path / "in.jsonl", rows), "--out", out], monkeypatch) == 0
    table = pq.read_table(out / "data")
    assert table.num_rows == 0 and table.column_names == ["id", "instruction", "response", "score"]
    streamed = datasets.load_dataset(str(out), split="train", streaming=True)
    assert list(streamed) == [] and list(streamed.features) == ["id", "instruction", "response", "score"]
    assert json.loads((out / ".synth" / "state.json").read_text())["complete"] is True
    assert "streaming=True" in (out / "README.md").read_text()  # the card says how to load it


def test_a_resumed_run_keeps_its_claim(tmp_path, monkeypatch, capsys) -> None:
    """--resume on a folder synth did not write is refused too, and leaves it alone."""
    project = _project(tmp_path)
    before = _hashes(project)
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    assert run_main(["filter", src, "--out", project, "--resume"], monkeypatch) == 2
    assert "nothing to resume" in _error(capsys)
    assert _hashes(project) == before
    assert os.listdir(project)


def test_resume_and_overwrite_leave_the_users_own_files_in_data_alone(tmp_path, monkeypatch) -> None:
    src = _jsonl(tmp_path / "in.jsonl", _rows(4))
    out = tmp_path / "out"
    argv = ["filter", src, "--out", out, "--heuristics", "none"]
    assert run_main(argv, monkeypatch) == 0
    (out / "data" / "mine.parquet").write_bytes(b"my own bytes")
    (out / "data" / ".mine.tmp").write_bytes(b"mine too")
    assert run_main([*argv, "--resume"], monkeypatch) == 0
    assert run_main([*argv, "--overwrite"], monkeypatch) == 0
    assert pq.read_table(out / "data" / "train-00000.parquet").num_rows == 4  # the run's own rows, all of them
    assert (out / "data" / "mine.parquet").read_bytes() == b"my own bytes"
    assert (out / "data" / ".mine.tmp").read_bytes() == b"mine too"
