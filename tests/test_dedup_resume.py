"""`synth dedup --resume`: a run stopped anywhere (killed, or Ctrl-C) resumes to the unbroken run's output."""

from __future__ import annotations

import functools
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

import synth.recipes.quality as quality
from synth import io
from synth.cli import main
from tests.cards import flat

# 20 texts, each three times (as is, in capitals: an exact duplicate, and with one word changed: a
# near one), shuffled over 15 batches: a resume that forgot the rows kept before its stopping point
# would keep some of them again.
_rng = random.Random(0)
_BASES = [" ".join(_rng.sample([f"word{k}" for k in range(400)], 12)) for _ in range(20)]
_VARIANTS = [(b, v) for b in range(20) for v in range(3)]
_rng.shuffle(_VARIANTS)
ROWS = [
    {"instruction": [_BASES[b], _BASES[b].upper(), _BASES[b].rsplit(" ", 1)[0] + " other"][v], "n": i}
    for i, (b, v) in enumerate(_VARIANTS)
]
BATCH = 4


def synth(args: list, monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["synth", "dedup", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def rows_of(path: Path) -> list[dict]:
    if not list((path / "data").glob("*.parquet")):  # a stopped run may not have written a shard yet
        return []
    return [r for b in io.read(path) for r in b.to_pylist()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    return path


def _small_shards(monkeypatch) -> None:
    """Shards of 3 rows (output) and 2 rows (rejects), so a stopped run leaves several on disk."""
    monkeypatch.setattr(quality, "write", functools.partial(io.write, shard_rows=3))
    monkeypatch.setattr(quality, "Sink", functools.partial(io.Sink, shard_rows=2))


@pytest.fixture
def small_shards(monkeypatch):
    _small_shards(monkeypatch)
    return _small_shards


def _stop_after(monkeypatch, batches: int, then) -> None:
    """Replace dedup's progress stage with one that calls `then()` once `batches` batches have passed."""

    def progress(*args, **kwargs):
        def stage(stream):
            for i, batch in enumerate(stream):
                if i == batches:
                    then()
                yield batch

        return stage

    monkeypatch.setattr(quality.report, "progress", progress)


def _args(source: Path, out: Path, method: str) -> list:
    return [source, "--out", out / "kept", "--rejects", out / "dropped", "--method", method, "--batch-size", BATCH]


@pytest.fixture
def unbroken(source, tmp_path, monkeypatch, small_shards):
    def run(method: str) -> tuple[list[dict], list[dict]]:
        out = tmp_path / f"unbroken-{method}"
        assert synth(_args(source, out, method), monkeypatch) == 0
        return rows_of(out / "kept"), rows_of(out / "dropped")

    return run


@pytest.mark.parametrize("method", ["exact", "minhash"])
@pytest.mark.parametrize("stop", [2, 7, 12])  # batches in; 15 in all
def test_a_killed_dedup_resumes_to_the_unbroken_output(
    method, stop, source, tmp_path, monkeypatch, capsys, small_shards, unbroken
) -> None:
    kept, dropped = unbroken(method)
    assert 0 < len(dropped) and len(kept) + len(dropped) == len(ROWS)
    run, killed = tmp_path / "run", tmp_path / "killed"

    def snapshot() -> None:  # what a SIGKILL at this moment leaves on disk
        shutil.copytree(run, killed)

    _stop_after(monkeypatch, stop, snapshot)
    assert synth(_args(source, run, method), monkeypatch) == 0
    monkeypatch.undo()
    small_shards(monkeypatch)
    before = len(rows_of(killed / "kept")) + len(rows_of(killed / "dropped"))
    assert 0 < before < len(ROWS)  # complete shards are on disk, but not all of them
    assert synth([*_args(source, killed, method), "--resume"], monkeypatch) == 0
    assert rows_of(killed / "kept") == kept  # every row once, in order, with the same dup_cluster
    assert rows_of(killed / "dropped") == dropped
    card = io.read_provenance(killed / "kept")
    assert flat(card["counts"])["rows_in"] == len(ROWS) and flat(card["counts"])["kept"] == len(kept)
    assert card["status"] == "complete"


def test_ctrl_c_keeps_the_rows_and_resume_finishes(source, tmp_path, monkeypatch, capsys, small_shards, unbroken):
    kept, dropped = unbroken("exact")
    capsys.readouterr()
    out = tmp_path / "run"

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    _stop_after(monkeypatch, 6, ctrl_c)
    assert synth(_args(source, out, "exact"), monkeypatch) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "Traceback" not in err[0]
    assert 0 < len(rows_of(out / "kept")) < len(kept)
    monkeypatch.undo()
    small_shards(monkeypatch)
    assert synth([*_args(source, out, "exact"), "--resume"], monkeypatch) == 0
    assert rows_of(out / "kept") == kept and rows_of(out / "dropped") == dropped


def test_resume_with_other_settings_is_refused(source, tmp_path, monkeypatch, capsys, small_shards) -> None:
    out = tmp_path / "run"
    assert synth(_args(source, out, "exact"), monkeypatch) == 0
    capsys.readouterr()
    assert synth([*_args(source, out, "minhash"), "--resume"], monkeypatch) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_resume_of_a_finished_run_changes_nothing(source, tmp_path, monkeypatch, small_shards) -> None:
    out = tmp_path / "run"
    assert synth(_args(source, out, "exact"), monkeypatch) == 0
    kept, dropped = rows_of(out / "kept"), rows_of(out / "dropped")
    assert synth([*_args(source, out, "exact"), "--resume"], monkeypatch) == 0
    assert rows_of(out / "kept") == kept and rows_of(out / "dropped") == dropped
