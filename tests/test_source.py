"""Source stage: every input kind, streamed in chunks, bad rows kept with a reason."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer import source
from scorer.errors import InputError


def read_all(paths, text_column="text", chunk_rows=4, fmt="auto"):
    stats = source.SourceStats()
    chunks = list(source.read_chunks(source.expand_inputs([str(p) for p in paths], fmt),
                                     text_column, chunk_rows, stats))
    return chunks, stats


def test_parquet_file_is_read_in_bounded_chunks(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(10)], "n": list(range(10))}), p,
                   row_group_size=3)
    chunks, stats = read_all([p], chunk_rows=4)
    assert all(len(c) <= 4 for c in chunks)
    assert [t for c in chunks for t in c.texts] == [f"t{i}" for i in range(10)]
    assert [c.offset for c in chunks] == [sum(len(x) for x in chunks[:i]) for i in range(len(chunks))]
    assert stats.rows == 10 and chunks[0].columns.column_names == ["text", "n"]


def test_hive_partitioned_directory_and_glob(tmp_path):
    for label in ("neg", "pos"):
        d = tmp_path / "ds" / f"split={label}"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"text": [f"{label}-1", f"{label}-2"]}), d / "p.parquet")
    chunks, _ = read_all([tmp_path / "ds"])
    rows = [r for c in chunks for r in c.columns.to_pylist()]
    assert rows == [{"text": "neg-1", "split": "neg"}, {"text": "neg-2", "split": "neg"},
                    {"text": "pos-1", "split": "pos"}, {"text": "pos-2", "split": "pos"}]
    chunks, _ = read_all([tmp_path / "ds" / "*" / "*.parquet"])
    assert [t for c in chunks for t in c.texts] == ["neg-1", "neg-2", "pos-1", "pos-2"]


def test_jsonl_bad_lines_are_kept_with_a_reason(tmp_path):
    p = tmp_path / "a.jsonl"
    lines = [json.dumps({"text": "ok", "k": 1}).encode(), b"{not json", b"[1, 2]",
             json.dumps({"text": 5, "k": 2}).encode(), json.dumps({"other": "x", "k": 3}).encode(),
             b"\xff\xfe bad utf8", b"   ", json.dumps({"text": "line\u2028sep\u0085nel", "k": 4}).encode()]
    p.write_bytes(b"\n".join(lines) + b"\n")
    chunks, stats = read_all([p], chunk_rows=100)
    (c,) = chunks
    assert c.texts == ["ok", None, None, None, None, None, "line\u2028sep\u0085nel"]
    assert c.read_errors[0] is None and c.read_errors[-1] is None
    assert c.read_errors[1].startswith("malformed JSON")
    assert c.read_errors[2] == "not a JSON object: a list"
    assert c.read_errors[3] == "text is not a string (int)"
    assert c.read_errors[4] == "no field 'text'"
    assert c.read_errors[5] == "invalid UTF-8"
    assert stats.blank_lines == 1 and stats.rows == 7


def test_jsonl_wrong_text_field_is_a_file_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match="no field 'text' in any record.*body"):
        read_all([p])


def test_text_lines_keep_positions_and_flag_invalid_utf8(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"first\r\n\nthird \xff\nlast")
    (c,), _ = read_all([p], chunk_rows=10)
    assert c.texts == ["first", "", None, "last"]
    assert c.read_errors == [None, None, "invalid UTF-8", None]


def test_csv_text_column_is_read_as_string(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('id,text\n1,"hello, world"\n2,123\n3,\n')
    (c,), _ = read_all([p], chunk_rows=10)
    assert c.texts == ["hello, world", "123", ""]  # an empty field is an empty text, scored as an error
    assert c.columns.column("id").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize("name, make, message", [
    ("missing.parquet", None, "no such file"),
    ("x/*.parquet", None, "no files match"),
    ("corrupt.parquet", lambda p: p.write_bytes(b"PAR1 not really"), "not readable as Parquet"),
    ("noext", lambda p: p.write_text("x"), "cannot tell the format"),
    ("num.parquet", lambda p: pq.write_table(pa.table({"text": [1, 2]}), p), "int64, not a string"),
    ("other.parquet", lambda p: pq.write_table(pa.table({"body": ["a"]}), p), "no column 'text'"),
])
def test_file_level_problems_are_one_line_errors(tmp_path, name, make, message):
    p = tmp_path / name
    if make:
        make(p)
    with pytest.raises(InputError, match=message) as e:
        read_all([p])
    assert "\n" not in str(e.value)


def test_stdin_needs_a_format():
    with pytest.raises(InputError, match="needs --format"):
        source.expand_inputs(["-"])
