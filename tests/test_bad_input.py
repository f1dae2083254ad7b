"""Every command against a table of bad inputs: exit code 2, one line on stderr, no traceback, no
model loaded, nothing written, and every input file byte-identical afterwards.

Where a case is not an error for a command (stats describes whatever columns a file has), the
table says so and the test asserts that documented behaviour instead.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from synth import cli
from tests.cli_run import run_main

GOOD = {"id": "a", "instruction": "Why is the sky blue?", "response": "Rayleigh scattering.", "text": "Sky notes."}
PERSONA = {"persona": "A lighthouse keeper who reads tide tables."}


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _good_rows() -> list[dict]:
    return [{**GOOD, **PERSONA, "id": f"r{i}"} for i in range(3)]


def _big() -> bytes:
    """A 50 MB line: a JSON string that never closes."""
    return b'{"id": "big", "instruction": "' + b"x" * (50 << 20)


def _case_files(case: str, folder: Path) -> Path:
    """Writes the input of `case` into `folder`; returns the path a command is given."""
    folder.mkdir(parents=True)
    rows = _good_rows()
    if case == "empty file":
        (folder / "in.jsonl").write_bytes(b"")
    elif case == "binary file":
        (folder / "in.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(4096))
    elif case == "missing column":
        (folder / "in.jsonl").write_text(_jsonl([{"id": r["id"], "other": "x"} for r in rows]))
    elif case == "wrong type":
        (folder / "in.jsonl").write_text(_jsonl([{k: (5 if k != "id" else v) for k, v in r.items()} for r in rows]))
    elif case == "null ids":
        (folder / "in.jsonl").write_text(_jsonl([{**r, "id": None} for r in rows]))
    elif case == "duplicate ids":
        (folder / "in.jsonl").write_text(_jsonl([{**r, "id": "same"} for r in rows]))
    elif case == "non-UTF-8 line":
        lines = _jsonl(rows).encode().splitlines(keepends=True)
        (folder / "in.jsonl").write_bytes(lines[0] + b'{"id": "b", "instruction": "caf\xe9"}\n' + lines[1])
    elif case == "50 MB single line":
        (folder / "in.jsonl").write_bytes(_big())
    elif case == "nested JSON":
        nested = [{k: (v if k == "id" else {"value": v, "tags": [1, 2]}) for k, v in r.items()} for r in rows]
        (folder / "in.jsonl").write_text(_jsonl(nested))
    elif case == "mixed folder":
        (folder / "a.jsonl").write_text(_jsonl(rows))
        (folder / "b.csv").write_text("id,instruction\nc1,Hello there\n")
        return folder
    elif case in ("output = input", "output inside input"):
        (folder / "in.jsonl").write_text(_jsonl(rows))
        (folder / "notes.txt").write_text("the user's own notes")
        return folder
    else:
        raise AssertionError(case)
    return folder / "in.jsonl"


CASES = [
    "empty file",
    "binary file",
    "missing column",
    "wrong type",
    "null ids",
    "duplicate ids",
    "non-UTF-8 line",
    "50 MB single line",
    "nested JSON",
    "mixed folder",
    "output = input",
    "output inside input",
]

# command -> argv with {src} and {out}; every command that reads an input
COMMANDS = {
    "magpie": ["magpie", "--personas", "{src}", "--persona-column", "persona", "--n", "1", "--out", "{out}"],
    "respond": ["respond", "{src}", "--out", "{out}"],
    "judge": ["judge", "{src}", "--out", "{out}"],
    "filter": ["filter", "{src}", "--out", "{out}"],
    "prefs": ["prefs", "{src}", "--out", "{out}"],
    "dedup": ["dedup", "{src}", "--out", "{out}"],
    "synthesize": ["synthesize", "{src}", "--out", "{out}"],
    "think": ["think", "{src}", "--out", "{out}"],
    "personas from-text": ["personas", "from-text", "{src}", "--out", "{out}"],
    "personas expand": ["personas", "expand", "{src}", "--persona-column", "persona", "--out", "{out}"],
    "personas generate": [
        "personas",
        "generate",
        "--personas",
        "{src}",
        "--persona-column",
        "persona",
        "--out",
        "{out}",
    ],
    "stats": ["stats", "{src}", "--no-tokens", "--out", "{out}"],
    "push": ["push", "{src}", "--repo", "me/set"],
}

# (command, case) pairs that are not errors, with what the command does instead.
NOT_ERRORS = {
    # stats describes the columns a file has, whichever they are: it needs no particular one
    ("stats", "missing column"): "describes the columns it finds",
    ("stats", "wrong type"): "describes the columns it finds",
    ("stats", "nested JSON"): "describes the columns it finds",
}
NO_OUTPUT = {"push"}  # reads a folder, writes nothing local: the output cases do not apply


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """A command that gets as far as loading a model fails the test: the checks come first."""

    def load(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args} {kwargs}")

    monkeypatch.setattr(cli._shared, "load_backend", load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


PAIRS = [(c, k) for c in COMMANDS for k in CASES if not (c in NO_OUTPUT and k.startswith("output"))]


@pytest.mark.parametrize("command,case", PAIRS, ids=[f"{c}: {k}" for c, k in PAIRS])
def test_bad_input(command, case, tmp_path, monkeypatch, capsys) -> None:
    src = _case_files(case, tmp_path / "input")
    out = {"output = input": src, "output inside input": src / "sub"}.get(case, tmp_path / "out")
    before = _hashes(tmp_path / "input")
    argv = [a.format(src=src, out=out) for a in COMMANDS[command]]
    if case.startswith("output") and command != "stats":  # stats has no --overwrite: it writes plots
        argv.append("--overwrite")  # not even --overwrite lets an output touch its input
    code = run_main(argv, monkeypatch)
    err = capsys.readouterr().err
    assert _hashes(tmp_path / "input") == before  # every input byte-identical
    if (command, case) in NOT_ERRORS:
        assert code == 0, err
        assert (out / "report.md").is_file()  # stats wrote its report
        return
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("synth: error: "), lines
    assert "Traceback" not in err
    if not case.startswith("output"):
        assert not out.exists()  # nothing written, not even the directory
    else:
        assert "the input" in lines[0]  # refused for the overlap, not for some other reason
        assert not (src / "sub").exists() and not (src / "data").exists()
