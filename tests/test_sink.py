"""Sink stage: atomic part files, deterministic names, partitions, refusing to mix outputs."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer import sink
from scorer.errors import OutputError

MODEL_ID = {"name": "m", "version": "1", "checksum": "abc"}


def table(n, start=0):
    return pa.table({"x": list(range(start, start + n)),
                     "label": ["pos" if i % 3 else "neg" for i in range(start, start + n)]})


def test_parts_are_split_by_rows_per_file_and_carry_the_model_id(tmp_path):
    w = sink.PartWriter(tmp_path, rows_per_file=4, model_id=MODEL_ID)
    w.write(table(3))
    w.write(table(6, start=3))
    w.close()
    assert [p["file"] for p in w.parts] == ["part-00000.parquet", "part-00001.parquet",
                                            "part-00002.parquet"]
    assert [p["rows"] for p in w.parts] == [4, 4, 1]
    back = pa.concat_tables(pq.read_table(tmp_path / p["file"]) for p in w.parts)
    assert back.column("x").to_pylist() == list(range(9))
    meta = pq.read_schema(tmp_path / "part-00000.parquet").metadata
    assert json.loads(meta[b"scorer.model"]) == MODEL_ID


def test_a_part_is_invisible_until_complete(tmp_path):
    w = sink.PartWriter(tmp_path, rows_per_file=10, model_id=MODEL_ID)
    w.write(table(3))
    assert sorted(os.listdir(tmp_path)) == [".part-00000.parquet.tmp"]
    w.close()
    assert sorted(os.listdir(tmp_path)) == ["part-00000.parquet"]


def test_abort_removes_the_unfinished_part(tmp_path):
    w = sink.PartWriter(tmp_path, rows_per_file=4, model_id=MODEL_ID)
    w.write(table(6))
    w.abort()
    assert sorted(os.listdir(tmp_path)) == ["part-00000.parquet"]  # the committed one stays


def test_partition_by_writes_hive_directories(tmp_path):
    w = sink.PartWriter(tmp_path, rows_per_file=100, model_id=MODEL_ID, partition_by="label")
    w.write(table(7))
    w.close()
    assert sorted(p["file"] for p in w.parts) == ["label=neg/part-00000.parquet",
                                                  "label=pos/part-00000.parquet"]
    neg = pq.read_table(tmp_path / "label=neg" / "part-00000.parquet")
    assert neg.column_names == ["x"] and neg.column("x").to_pylist() == [0, 3, 6]
    import pyarrow.dataset as ds

    assert ds.dataset(tmp_path, partitioning="hive").to_table().num_rows == 7


def test_output_directory_rules(tmp_path):
    out = tmp_path / "out"
    sink.prepare_output(out, overwrite=False)  # created
    (out / "old.parquet").write_bytes(b"x")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        sink.prepare_output(out, overwrite=False)
    sink.prepare_output(out, overwrite=True)
    assert list(out.iterdir()) == []
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        sink.prepare_output(f, overwrite=False)


def test_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a file
            target = tmp_path / "afile" / "out"
            (tmp_path / "afile").write_text("")
        else:
            target = ro / "out"
        with pytest.raises(OutputError, match="cannot write there"):
            sink.prepare_output(target, overwrite=False)
    finally:
        ro.chmod(0o700)


def test_finish_writes_manifest_then_success(tmp_path):
    sink.finish(tmp_path, {"rows_out": 3})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"rows_out": 3}
    assert (tmp_path / "_SUCCESS").exists()


def test_a_schema_change_starts_a_new_part(tmp_path):
    w = sink.PartWriter(tmp_path, rows_per_file=100, model_id=MODEL_ID)
    w.write(table(3))
    w.write(pa.table({"x": [7]}))
    w.close()
    assert [p["rows"] for p in w.parts] == [3, 1]
    assert pq.read_table(tmp_path / "part-00001.parquet").column_names == ["x"]
