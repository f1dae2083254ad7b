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
