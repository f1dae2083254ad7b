"""jsonl through Arrow's JSON reader: the same rows, types and batches as the line-by-line path."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from synth.core import SynthError
from synth.io import read
from synth.io._reading import _jsonl_python


def rows_of(path, size: int) -> list[pa.Table]:
    return list(read(path, size))


def test_fast_path_gives_the_batches_and_rows_of_the_line_by_line_reader(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    rows = [{"id": f"r{i}", "text": f"row {i}", "n": i, "tags": ["x"] * (i % 3)} for i in range(100)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    fast = rows_of(path, 7)
    slow = list(_jsonl_python(path, 7, skip=0, kinds={}))
    assert [b.num_rows for b in fast] == [b.num_rows for b in slow] == [7] * 14 + [2]
    assert pa.concat_tables(fast).to_pylist() == pa.concat_tables(slow).to_pylist()


def test_dates_stay_text(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "when": "2020-01-01", "at": "2021-05-06 10:00:00"}\n')
    (batch,) = rows_of(path, 10)
    assert batch.to_pylist() == [{"id": "a", "when": "2020-01-01", "at": "2021-05-06 10:00:00"}]


def test_a_type_change_past_the_first_block_goes_on_line_by_line_with_nothing_lost(tmp_path) -> None:
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": f"r{i}", "v": f"v{i}", "pad": "x" * 200}) for i in range(8000)]  # past 1 MB
    lines += [json.dumps({"id": f"r{i}", "v": i, "pad": "y"}) for i in range(8000, 8010)]  # numbers: read as text
    path.write_text("\n".join(lines) + "\n")
    table = pa.concat_tables(rows_of(path, 1000))
    assert table["id"].to_pylist() == [f"r{i}" for i in range(8010)]
    assert table["v"].to_pylist()[7999:] == ["v7999", *(str(i) for i in range(8000, 8010))]


def test_numbers_then_text_past_the_first_block_names_the_line(tmp_path) -> None:
    path = tmp_path / "n.jsonl"
    lines = [json.dumps({"id": f"r{i}", "v": i, "pad": "x" * 200}) for i in range(8000)]
    path.write_text("\n".join([*lines, json.dumps({"id": "last", "v": "five"})]) + "\n")
    with pytest.raises(SynthError, match=r"n.jsonl:8001: column 'v' changes type here"):
        rows_of(path, 1000)
