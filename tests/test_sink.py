"""Sink stage: atomic part files, deterministic names, partitions."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer import sink
from scorer.modelid import ModelId
from tests.conftest import SAMPLE

MODEL_ID = ModelId(name="m", version="1", path="/models/m", checksum="abc")


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
    assert json.loads(meta[b"scorer.model"]) == MODEL_ID.to_json()


def test_a_resumed_writer_goes_on_numbering(tmp_path):
    w = sink.PartWriter(tmp_path, next_index={"": 1})
    w.write(table(2))
    w.commit()
    assert [p["file"] for p in w.parts] == ["part-00001.parquet"]


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


def test_every_partition_value_gets_its_partition_and_reads_back(tmp_path):
    import pyarrow.dataset as ds

    x = [1.0, float("nan"), None, 0.0, -0.0, 0.5, float("nan"), float("inf")]
    w = sink.PartWriter(tmp_path / "f", partition_by="x")
    w.write(pa.table({"x": x, "n": list(range(len(x)))}))
    w.commit()
    assert sum(p["rows"] for p in w.parts) == len(x)
    assert sorted(p["file"].split("/")[0] for p in w.parts) == sorted(
        ["x=1", "x=nan", "x=__HIVE_DEFAULT_PARTITION__", "x=0", "x=-0", "x=0.5", "x=inf"])
    back = ds.dataset(tmp_path / "f", partitioning="hive").to_table().sort_by("n")
    assert back.column("n").to_pylist() == list(range(len(x)))
    assert back.column("x").to_pylist() == ["1", "nan", None, "0", "-0", "0.5", "nan", "inf"]

    s = ["", None, "a/b", "ü é", "..", "%", "k=v", ".hidden", "_x", "plain"]
    w = sink.PartWriter(tmp_path / "s", partition_by="s")
    w.write(pa.table({"s": s, "n": list(range(len(s)))}))
    w.commit()
    back = ds.dataset(tmp_path / "s", partitioning=ds.HivePartitioning.discover(
        infer_dictionary=False)).to_table().sort_by("n")
    assert back.column("n").to_pylist() == list(range(len(s)))
    assert back.column("s").to_pylist() == s


def test_a_partition_column_name_is_escaped_too(tmp_path):
    import pyarrow.dataset as ds

    w = sink.PartWriter(tmp_path, partition_by="a/b=c")
    w.write(pa.table({"a/b=c": ["x", "y"], "n": [0, 1]}))
    w.commit()
    back = ds.dataset(tmp_path, partitioning="hive").to_table().sort_by("n")
    assert back.column("a/b=c").to_pylist() == ["x", "y"]
    w = sink.PartWriter(tmp_path / "u", partition_by="_x")  # readers skip _x=... directories
    w.write(pa.table({"_x": ["x", "y"], "n": [0, 1]}))
    w.commit()
    back = ds.dataset(tmp_path / "u", partitioning="hive").to_table().sort_by("n")
    assert back.column("_x").to_pylist() == ["x", "y"]


# --------------------------------------------------------------------------- through `scorer run`

def scorer_run(*args):
    from click.testing import CliRunner

    from scorer.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def odd_values(tmp_path):
    """Rows whose partition values are NaN, null, -0.0, empty, and characters unsafe in a path."""
    f = [0.5, float("nan"), None, -0.0, 0.0, float("nan"), 1e300]
    s = ["a", "", None, "x/../y", "%2F", "é ü", "k=v"]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(len(f))], "f": f, "s": s,
                             "n": list(range(len(f)))}), path)
    return path


@pytest.mark.parametrize("column", ["f", "s"])
def test_a_run_partitioned_by_odd_values_keeps_every_row(tiny_model, tmp_path, odd_values, column):
    import pyarrow.dataset as ds

    out = tmp_path / "out"
    r = scorer_run("run", odd_values, "-o", out, "--model", tiny_model, "--partition-by", column)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_out"] == sum(p["rows"] for p in m["parts"]) == 7
    back = ds.dataset(out, format="parquet", partitioning=ds.HivePartitioning.discover(
        infer_dictionary=False)).to_table().sort_by("n")
    assert back.column("n").to_pylist() == list(range(7))
    if column == "s":
        assert back.column("s").to_pylist() == ["a", "", None, "x/../y", "%2F", "é ü", "k=v"]


def test_parts_that_do_not_add_up_to_rows_out_fail_the_run_before_success(tiny_model, tmp_path,
                                                                          monkeypatch):
    write_to = sink.PartWriter._write_to
    monkeypatch.setattr(sink.PartWriter, "_write_to",
                        lambda self, part_dir, table: write_to(self, part_dir, table.slice(1)))
    out = tmp_path / "out"
    r = scorer_run("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model)
    assert r.exit_code == 5
    assert r.stderr.strip() == (f"error: {out}: its part files hold 299 rows but 300 were written "
                                "to them; the run is not marked complete")
    assert not (out / "_SUCCESS").exists() and not (out / "_manifest.json").exists()


def test_keep_columns_without_the_partition_column_still_partitions_by_it(tiny_model, tmp_path,
                                                                          odd_values):
    import pyarrow.dataset as ds

    out = tmp_path / "out"
    assert scorer_run("run", SAMPLE / "sst2_dev_sample.txt", "-o", out, "--model", tiny_model).exit_code == 0
    r = scorer_run("run", odd_values, "-o", out, "--model", tiny_model, "--overwrite",
                   "--keep-columns", "n", "--partition-by", "s")
    assert r.exit_code == 0, r.output
    back = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert back.num_rows == 7 and "text" not in back.column_names and "f" not in back.column_names


def test_a_column_that_cannot_name_a_directory_is_refused_before_the_output_is_touched(
        tiny_model, tmp_path):
    out = tmp_path / "out"
    assert scorer_run("run", SAMPLE / "sst2_dev_sample.txt", "-o", out, "--model", tiny_model).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    r = scorer_run("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model,
                   "--overwrite", "--partition-by", "probabilities")
    assert r.exit_code == 5
    assert r.stderr.strip() == ("error: --partition-by probabilities: a list column cannot name "
                                "directories; partition by a column of strings, numbers, booleans, "
                                "dates or times")
    assert sorted(p.name for p in out.iterdir()) == before


def test_every_directory_a_commit_touched_is_fsynced_before_the_checkpoint_lists_it(
        tiny_scorer, tmp_path, monkeypatch):
    """A power cut after a checkpoint must not lose a part: the renames (and new partition and
    dead-letter directories) are durable only once their directories are fsync'd."""
    from pathlib import Path

    from scorer import commit, fileio, pipeline

    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    texts[::7] = [""] * len(texts[::7])  # bad rows, for the dead letters
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    out, dead = tmp_path / "out", tmp_path / "nested" / "dead"
    synced: list[Path] = []
    fsync_dir = fileio.fsync_dir
    monkeypatch.setattr(fileio, "fsync_dir", lambda path: (synced.append(Path(path)), fsync_dir(path)))
    checkpoint = commit.OutputDir.checkpoint
    seen: set[tuple[Path, str]] = set()
    dirs_seen: set[Path] = set()

    def check_then_checkpoint(self, progress):
        listed = [(out, p["file"]) for p in progress.parts] + [(dead, p["file"]) for p in progress.dead_letter_parts]
        for root, file in listed:
            if (root, file) in seen:
                continue
            seen.add((root, file))
            part_dir = (root / file).parent
            assert part_dir in synced, f"{part_dir} not fsynced before the checkpoint listing {file}"
            if part_dir not in dirs_seen:  # a directory this run made: its own entry too
                dirs_seen.add(part_dir)
                assert part_dir.parent in synced, f"{part_dir.parent} (holding {part_dir.name}) not fsynced"
        synced.clear()
        checkpoint(self, progress)

    monkeypatch.setattr(commit.OutputDir, "checkpoint", check_then_checkpoint)
    pipeline.run([str(tmp_path / "in.parquet")], out, scorer_=tiny_scorer, partition_by="label",
                 dead_letter=str(dead), rows_per_file=100, chunk_rows=64)
    assert {f for r, f in seen if r == dead} and len({f for r, f in seen if r == out}) >= 3


# --------------------------------------------------------------------------- values too long to name
def test_a_value_too_long_for_a_directory_name_gets_a_short_distinct_name_and_keeps_its_rows(tmp_path):
    """A file name holds at most 255 bytes: longer encodings get a prefix, "!" and a hash of the
    value (deterministic, distinct per value), the exact value kept in the part's metadata."""
    import pyarrow.dataset as ds

    values = ["a" * 300, "a" * 300 + "b", "é" * 200, "x/" * 150, "ok", "a" * 251, None]
    rows = values * 2
    for run in ("one", "two"):
        w = sink.PartWriter(tmp_path / run, partition_by="p")
        w.write(pa.table({"p": rows, "n": list(range(len(rows)))}))
        w.commit()
    dirs = sorted(p["file"].split("/")[0] for p in w.parts)
    assert len(dirs) == len(set(dirs)) == len(values)  # one directory per value: none misfiled
    assert all(len(d.encode()) <= 255 for d in dirs)
    assert dirs == sorted(p.name for p in (tmp_path / "one").iterdir())  # deterministic
    assert "p=ok" in dirs and "p=" + "a" * 251 in dirs  # names that fit are unchanged
    back = ds.dataset(tmp_path / "two", partitioning=ds.HivePartitioning.discover(
        infer_dictionary=False)).to_table().sort_by("n")
    assert back.column("n").to_pylist() == list(range(len(rows)))  # no row lost
    seen = back.column("p").to_pylist()
    for value, read in zip(rows, seen):
        if value in (None, "ok", "a" * 251):  # the names that fit
            assert read == value
        else:  # readers see a marked prefix; the part file's metadata holds the exact value
            assert read != value and read[:-33] == value[:len(read) - 33] and read[-33] == "!"
    for part in w.parts:
        exact = pq.read_schema(tmp_path / "two" / part["file"]).metadata.get(sink.PARTITION_VALUE_KEY)
        name = part["file"].split("/")[0]
        if "!" in name:
            assert sink.partition_dir("p", exact.decode()) == name
        else:
            assert exact is None


def test_a_column_name_that_leaves_no_room_for_a_shortened_value_is_an_output_error():
    column = "c" * 230
    assert sink.partition_dir(column, "short") == f"{column}=short"  # fits: named as usual
    with pytest.raises(sink.OutputError, match=f"--partition-by {column}: its encoded name is 230 bytes"):
        sink.partition_dir(column, "v" * 30)


def test_a_run_partitioned_by_a_value_too_long_for_a_directory_name_keeps_every_row(tiny_model,
                                                                                   tmp_path):
    import pyarrow.dataset as ds

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["one", "two", "three"], "p": ["é" * 100, "é" * 100 + "!", "short"],
                             "n": [0, 1, 2]}), path)
    out = tmp_path / "out"
    r = scorer_run("run", path, "-o", out, "--model", tiny_model, "--partition-by", "p")
    assert r.exit_code == 0, r.output
    assert (out / "_SUCCESS").exists()
    back = ds.dataset(out, format="parquet", partitioning="hive").to_table().sort_by("n")
    assert back.column("n").to_pylist() == [0, 1, 2]
    assert len({p.name for p in out.iterdir() if p.name.startswith("p=")}) == 3


# --------------------------------------------------------------------------- a type change mid-run
@pytest.mark.parametrize("later", [pa.array([["x"], ["y", "z"]]), pa.array([{"k": 1}, {"k": 2}]),
                                   pa.array([b"x", b"\xff"])], ids=["list", "struct", "binary"])
def test_a_partition_column_that_later_cannot_name_directories_stops_the_run_in_one_line(
        tiny_model, tmp_path, later):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "p": ["x", "y"]}), first)
    pq.write_table(pa.table({"text": ["c", "d"], "p": later}), second)
    out = tmp_path / "out"
    r = scorer_run("run", first, second, "-o", out, "--model", tiny_model, "--partition-by", "p",
                   "--rows-per-file", "2")
    assert r.exit_code == 5, r.output
    kind = "list" if pa.types.is_list(later.type) else str(later.type)
    assert r.stderr.strip() == (
        f"error: --partition-by p: row {second}:0 has it as a {kind} column, which cannot name "
        "directories; none of that table's rows were written (partition by a column that is a "
        "string, number, boolean, date or time in every input)")
    assert not (out / "_SUCCESS").exists()
    progress = json.loads((out / "_scorer_run" / "progress.json").read_text())
    assert sum(p["rows"] for p in progress["parts"]) == 2  # a.parquet's rows, committed; none of b's
