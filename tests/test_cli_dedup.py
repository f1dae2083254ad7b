"""`synth dedup` end to end: files in, a dataset (and its rejects) out, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synth.cli import main
from synth.io import read, read_provenance

ROWS = [
    {"instruction": "Write a haiku about autumn leaves falling in the park.", "source": "a"},
    {"instruction": "write a HAIKU about autumn leaves falling in the park!", "source": "b"},
    {"instruction": "Summarise the causes of the French Revolution in three bullet points.", "source": "c"},
    {"instruction": None, "source": "d"},
    {"instruction": "Write a haiku about autumn leaves falling in a park.", "source": "e"},
]


def synth(args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["synth", "dedup", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def rows_of(path: Path) -> list[dict]:
    return [r for b in read(path) for r in b.to_pylist()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    return path


def test_minhash_writes_kept_rows_rejects_and_a_summary(source, tmp_path, monkeypatch, capsys) -> None:
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    assert synth([source, "--out", out, "--rejects", rejects], monkeypatch) == 0
    kept = rows_of(out)
    assert [r["source"] for r in kept] == ["a", "c", "d"]
    assert [r["dup_cluster"] for r in kept] == [kept[0]["id"], kept[1]["id"], None]
    dropped = rows_of(rejects)
    assert [(r["source"], r["dup_cluster"]) for r in dropped] == [("b", kept[0]["id"]), ("e", kept[0]["id"])]
    assert all(0.7 <= r["dup_similarity"] <= 1 for r in dropped)
    err = capsys.readouterr().err
    assert "5 rows in, 3 kept, 2 dropped" in err and "1 rows with a null" in err
    card = read_provenance(out)
    assert card["counts"]["dropped"] == 2 and card["notes"]["bands"] * card["notes"]["rows_per_band"] <= 128


def test_exact_reads_a_synth_output_and_parquet(source, tmp_path, monkeypatch) -> None:
    first = tmp_path / "first"
    assert synth([source, "--out", first, "--method", "exact"], monkeypatch) == 0
    assert [r["source"] for r in rows_of(first)] == ["a", "b", "c", "d", "e"]
    again = tmp_path / "again"
    assert synth([first, "--out", again, "--method", "exact", "--ignore-punctuation"], monkeypatch) == 0
    assert [r["source"] for r in rows_of(again)] == ["a", "c", "d", "e"]
    parquet = next((first / "data").glob("*.parquet"))
    assert synth([parquet, "--out", tmp_path / "p", "--method", "exact", "-c", "source"], monkeypatch) == 0
    assert len(rows_of(tmp_path / "p")) == 5


def test_semantic_from_the_command_line(source, tmp_path, monkeypatch, capsys) -> None:
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    args = [source, "--out", out, "--method", "semantic", "--embedder", "minilm", "--rejects", rejects]
    assert synth(args, monkeypatch) == 0
    kept = rows_of(out)
    assert [r["source"] for r in kept] == ["a", "c", "d"]
    assert kept[0]["min_neighbor_distance"] is None and kept[1]["min_neighbor_distance"] > 0.15
    assert "index exact (numpy inner products)" in capsys.readouterr().err
    dropped = rows_of(rejects)  # each with the row it repeats and the score, to check in one look
    assert [(r["source"], r["dup_cluster"]) for r in dropped] == [("b", kept[0]["id"]), ("e", kept[0]["id"])]
    assert all(1 - r["dup_similarity"] == pytest.approx(r["min_neighbor_distance"], abs=1e-4) for r in dropped)
    assert all(r["min_neighbor_distance"] < 0.09 for r in dropped)
    card = read_provenance(out)
    assert card["dropped"] == {"semantic": 2} and card["counts"]["dropped"] == 2
    notes = card["notes"]
    assert notes["embedder"].startswith("all-MiniLM-L6-v2") and notes["threshold"] == 0.09
    assert notes["threshold_from"].startswith("calibrated for minilm")


def test_a_given_threshold_wins_over_the_calibrated_one(source, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    args = [source, "--out", out, "--method", "semantic", "--embedder", "minilm", "--threshold", "0.001"]
    assert synth(args, monkeypatch) == 0
    assert {"a", "c", "d", "e"} <= {r["source"] for r in rows_of(out)}  # "a park" / "the park": not that close
    assert read_provenance(out)["notes"]["threshold"] == 0.001
    assert read_provenance(out)["notes"]["threshold_from"] == "given"


def test_empty_input_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert synth([empty, "--out", tmp_path / "out"], monkeypatch) == 2
    assert "holds no rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--column", "text"], "has no column 'text'"),
        (["--method", "fuzzy"], "unknown dedup method 'fuzzy'; use exact, minhash or semantic"),
        (["--threshold", "1.5"], "--threshold 1.5 is outside (0, 1]"),
        (["--threshold", "0"], "--threshold 0.0 is outside (0, 1]"),
        (["--method", "exact", "--threshold", "0.5"], "--threshold does not apply to --method exact"),
        (["--method", "exact", "--num-perm", "64"], "--num-perm does not apply to --method exact"),
    ],
)
def test_bad_input_exits_2_with_a_clear_line(source, tmp_path, monkeypatch, capsys, args, message) -> None:
    out = tmp_path / "out"
    assert synth([source, "--out", out, *args], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("synth: error: ") and message in err and "Traceback" not in err
    assert not out.exists()  # nothing half-made to clean up before the next try


def test_help_does_not_import_torch() -> None:
    code = "import sys; from synth.cli import app; from typer.testing import CliRunner; "
    code += "r = CliRunner().invoke(app, ['dedup', '--help']); assert r.exit_code == 0, r.output; "
    code += "assert '--method' in r.output; heavy = ('torch', 'usearch', 'model2vec', 'sentence_transformers'); "
    code += "print(sorted(m for m in heavy if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
