from synth import stats
from synth.core import from_rows
from synth.io import write


def test_stats_counts_lengths_labels_and_writes_a_report(tmp_path) -> None:
    rows = [
        {"id": "1", "instruction": "Say hi", "response": "hi", "difficulty": "easy", "score": 3},
        {"id": "2", "instruction": "say  HI", "response": "hello there", "difficulty": "hard", "score": 5},
        {"id": "3", "instruction": "Count", "response": "1 2 3", "difficulty": "easy", "score": 4},
    ]
    write([from_rows(rows)], tmp_path / "d", card={"counts": {"dropped_empty": 2}})
    figures = stats.collect(tmp_path / "d", count_tokens=lambda t: len(t.split()))
    assert figures["rows"] == 3
    assert figures["lengths"]["instruction"]["chars"] == [6, 7, 5]
    assert figures["lengths"]["response"]["tokens"] == [1, 2, 3]
    assert figures["labels"]["difficulty"] == {"easy": 2, "hard": 1}
    assert abs(figures["duplicate_rate"]["instruction"] - 1 / 3) < 1e-9
    assert figures["drops"] == {"dropped_empty": 2}
    files = stats.report(figures, tmp_path / "rep")
    names = {f.name for f in files}
    assert {"instruction_chars.png", "difficulty.png", "score.png", "report.md"} <= names
    assert all(f.stat().st_size > 0 for f in files)
    assert "![difficulty](difficulty.png)" in (tmp_path / "rep/report.md").read_text()


def test_near_duplicate_rate_counts_reworded_copies(tmp_path) -> None:
    base = "Explain how the ancient river library and the quiet harbour market shaped the coastal town"
    rows = [
        {"id": "a", "instruction": base},
        {"id": "b", "instruction": base.replace("quiet", "busy")},  # one word changed: a near copy
        {"id": "c", "instruction": "Write a haiku about frozen glaciers at dawn"},
        {"id": "d", "instruction": "List three uses of a spreadsheet for a small bakery"},
    ]
    write([from_rows(rows)], tmp_path / "d")
    figures = stats.collect(tmp_path / "d")
    assert figures["duplicate_rate"]["instruction"] == 0  # no exact copies
    assert figures["near_duplicate_rate"]["instruction"] == 0.25
    assert "near-duplicate rate (MinHash, Jaccard >= 0.7): 25.0%" in stats.table(figures)


def test_synth_stats_command_prints_the_table_and_writes_the_report(tmp_path) -> None:
    import subprocess
    import sys

    rows = [{"id": str(i), "instruction": f"Question number {i} about birds", "response": "ok"} for i in range(5)]
    write([from_rows(rows)], tmp_path / "d")
    done = subprocess.run(
        [sys.executable, "-m", "synth", "stats", str(tmp_path / "d"), "--out", str(tmp_path / "rep"), "--no-tokens"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "rows: 5" in done.stdout
    assert (tmp_path / "rep/report.md").is_file()
    assert (tmp_path / "rep/instruction_chars.png").stat().st_size > 0
    missing = subprocess.run(
        [sys.executable, "-m", "synth", "stats", str(tmp_path / "nope")], capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
