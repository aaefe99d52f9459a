"""Sink stage: atomic part files, deterministic names, partitions."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from scorer import sink

MODEL_ID = {"name": "m", "version": "1", "checksum": "abc"}


def table(n, start=0):
    return pa.table({"x": list(range(start, start + n)),
                     "label": ["pos" if i % 3 else "neg" for i in range(start, start + n)]})


def test_parts_are_committed_when_asked_and_carry_the_model_id(tmp_path):
    w = sink.PartWriter(tmp_path, model_id=MODEL_ID)
    w.write(table(3))
    w.write(table(6, start=3))
    w.commit()
    w.write(table(2, start=9))
    w.commit()
    assert w.parts == [{"file": "part-00000.parquet", "rows": 9}, {"file": "part-00001.parquet", "rows": 2}]
    back = pa.concat_tables(pq.read_table(tmp_path / p["file"]) for p in w.parts)
    assert back.column("x").to_pylist() == list(range(11))
    meta = pq.read_schema(tmp_path / "part-00000.parquet").metadata
    assert json.loads(meta[b"scorer.model"]) == MODEL_ID


def test_a_resumed_writer_goes_on_numbering(tmp_path):
    w = sink.PartWriter(tmp_path, parts=[{"file": "part-00000.parquet", "rows": 5}],
                        next_index={"": 1})
    w.write(table(2))
    w.commit()
    assert [p["file"] for p in w.parts] == ["part-00000.parquet", "part-00001.parquet"]


def test_a_part_is_invisible_until_complete(tmp_path):
    w = sink.PartWriter(tmp_path, model_id=MODEL_ID)
    w.write(table(3))
    assert sorted(os.listdir(tmp_path)) == [".part-00000.parquet.tmp"]
    w.commit()
    assert sorted(os.listdir(tmp_path)) == ["part-00000.parquet"]


def test_abort_removes_the_unfinished_part(tmp_path):
    w = sink.PartWriter(tmp_path, model_id=MODEL_ID)
    w.write(table(4))
    w.commit()
    w.write(table(2))
    w.abort()
    assert sorted(os.listdir(tmp_path)) == ["part-00000.parquet"]  # the committed one stays


def test_partition_by_writes_hive_directories(tmp_path):
    w = sink.PartWriter(tmp_path, model_id=MODEL_ID, partition_by="label")
    w.write(table(7))
    w.commit()
    assert sorted(p["file"] for p in w.parts) == ["label=neg/part-00000.parquet",
                                                  "label=pos/part-00000.parquet"]
    neg = pq.read_table(tmp_path / "label=neg" / "part-00000.parquet")
    assert neg.column_names == ["x"] and neg.column("x").to_pylist() == [0, 3, 6]
    import pyarrow.dataset as ds

    assert ds.dataset(tmp_path, partitioning="hive").to_table().num_rows == 7


def test_a_schema_change_starts_a_new_part(tmp_path):
    w = sink.PartWriter(tmp_path, model_id=MODEL_ID)
    w.write(table(3))
    w.write(pa.table({"x": [7]}))
    w.commit()
    assert [p["rows"] for p in w.parts] == [3, 1]
    assert pq.read_table(tmp_path / "part-00001.parquet").column_names == ["x"]
