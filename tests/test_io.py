import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core import SynthError, from_rows
from synth.io import open_output, read, read_provenance, write


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "text": f"t{i}"} for i in range(start, start + n)]


def test_write_makes_a_hub_dataset_that_datasets_and_polars_load(tmp_path) -> None:
    import datasets
    import polars as pl

    batches = [from_rows(_rows(3)), from_rows(_rows(3, 3))]
    write(batches, tmp_path / "out", card={"model": "m"}, shard_rows=3)
    assert sorted(p.name for p in (tmp_path / "out/data").iterdir()) == ["train-00000.parquet", "train-00001.parquet"]
    ds = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert ds["id"] == [f"r{i}" for i in range(6)]
    assert pl.scan_parquet(str(tmp_path / "out/data/*.parquet")).collect().height == 6
    card = (tmp_path / "out/README.md").read_text()
    assert card.startswith("---\nconfigs:") and "synthetic" in card and "n<1K" in card
    prov = read_provenance(tmp_path / "out")
    assert prov["rows"] == 6 and prov["model"] == "m" and prov["status"] == "complete"


def test_interrupt_flushes_rows_in_hand(tmp_path) -> None:
    def source():
        yield from_rows(_rows(2))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(source(), tmp_path / "out")
    assert pq.read_table(tmp_path / "out/data").num_rows == 2
    assert not list((tmp_path / "out/data").glob(".*.tmp"))


def test_existing_run_needs_resume_or_overwrite(tmp_path) -> None:
    write([from_rows(_rows(2))], open_output(tmp_path, {"model": "a"}))
    with pytest.raises(SynthError, match="--resume.*--overwrite"):
        open_output(tmp_path, {"model": "a"})
    with pytest.raises(SynthError, match="model: was 'a', now 'b'"):
        open_output(tmp_path, {"model": "b"}, resume=True)
    resumed = open_output(tmp_path, {"model": "a"}, resume=True)
    assert resumed.rows == 2
    write([from_rows(_rows(1, 2))], resumed)
    assert pq.read_table(tmp_path / "data")["id"].to_pylist() == ["r0", "r1", "r2"]
    fresh = open_output(tmp_path, {"model": "b"}, overwrite=True)
    assert fresh.rows == 0 and not list((tmp_path / "data").glob("*.parquet"))


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not a synth dataset"):
        open_output(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_null_columns_get_a_stable_type_across_shards(tmp_path) -> None:
    a = pa.table({"id": ["1"], "x": pa.array([None], pa.null())})
    b = pa.table({"id": ["2"], "x": ["v"]})
    write([a, b], tmp_path / "o", shard_rows=1)
    assert pq.read_table(tmp_path / "o/data")["x"].to_pylist() == [None, "v"]


def test_read_jsonl_csv_parquet_text_and_save_to_disk(tmp_path) -> None:
    import datasets

    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": f"j{i}"}) for i in range(5)))
    (tmp_path / "b.csv").write_text("id,text\nx,c0\ny,c1\n")
    pq.write_table(pa.table({"text": ["p0"]}), tmp_path / "c.parquet")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/one.txt").write_text("hello")
    datasets.Dataset.from_dict({"text": ["s0", "s1"]}).save_to_disk(str(tmp_path / "saved"))

    jsonl = list(read(tmp_path / "a.jsonl", batch_size=2))
    assert [b.num_rows for b in jsonl] == [2, 2, 1]
    assert jsonl[0]["id"].to_pylist() == ["a-000000000", "a-000000001"]
    assert [r["id"] for b in read(tmp_path / "b.csv") for r in b.to_pylist()] == ["x", "y"]
    assert next(read(tmp_path / "c.parquet"))["text"].to_pylist() == ["p0"]
    assert next(read(tmp_path / "docs")).to_pylist() == [{"id": "one.txt", "text": "hello"}]
    assert next(read(tmp_path / "saved"))["text"].to_pylist() == ["s0", "s1"]


def test_read_reports_bad_input_clearly(tmp_path) -> None:
    with pytest.raises(SynthError, match="does not exist"):
        read(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(SynthError, match="bad.jsonl:2 is not valid JSON"):
        list(read(tmp_path / "bad.jsonl"))


def test_no_rows_at_all_still_makes_a_readable_dataset(tmp_path) -> None:
    import polars as pl

    write([], tmp_path / "none")
    assert pl.scan_parquet(str(tmp_path / "none/data/*.parquet")).collect().height == 0
    assert pq.read_table(tmp_path / "none/data").column_names == ["id"]
