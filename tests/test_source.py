"""Source stage: every input kind, streamed in chunks, bad rows kept with a reason."""

import json
import os
import subprocess
import sys

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


# ----------------------------------------------------------------------------- every input shape

def read_rows(chunks) -> list[dict]:
    return [r for c in chunks for r in c.columns.to_pylist()]


TEXTS = ["good film", None, "très bien 😍", ""]


@pytest.mark.parametrize("column", [
    pa.array(TEXTS, pa.large_string()),
    pa.array(TEXTS, pa.string_view()),
    pa.array(TEXTS, pa.string()).dictionary_encode(),  # pandas category, Spark/Polars categoricals
    pa.array(TEXTS, pa.large_string()).dictionary_encode(),
    pa.array([t and t.encode() for t in TEXTS], pa.binary()),
    pa.array([t and t.encode() for t in TEXTS], pa.large_binary()),
    pa.array([t and t.encode() for t in TEXTS], pa.binary()).dictionary_encode(),
], ids=lambda a: str(a.type))
def test_parquet_text_column_of_every_string_like_type(tmp_path, column):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": column, "n": range(4)}), p)
    chunks, _ = read_all([p], chunk_rows=3)
    assert [t for c in chunks for t in c.texts] == TEXTS
    assert [e for c in chunks for e in c.read_errors] == [None] * 4
    assert {c.columns.schema.field("text").type for c in chunks} == {pa.string()}
    assert [r["text"] for r in read_rows(chunks)] == TEXTS


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.string()])
def test_parquet_invalid_utf8_is_a_row_error(tmp_path, kind):
    values = pa.array([b"ok", b"caf\xe9", None], pa.binary())
    # a string column can hold invalid UTF-8 too when its writer did not check
    column = values.view(pa.string()) if kind == pa.string() else values.cast(kind)
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": column}), p)
    (c,), _ = read_all([p])
    assert c.texts == ["ok", None, None]
    assert c.read_errors == [None, "invalid UTF-8", None]
    assert c.columns.column("text").to_pylist() == ["ok", None, None]


def test_jsonl_field_types_may_change_after_the_first_chunk(tmp_path):
    records = [
        {"text": "a", "n": 1, "late": None, "s": 1},
        {"text": "b", "n": 2, "late": None, "s": 2},
        {"text": "c", "n": 2.5, "late": "set", "s": "three"},  # int -> float, null -> set, int -> str
        {"text": 4, "n": 4, "late": None, "s": 4, "new": True},  # text not a string; a new field
        {"text": "e", "n": 5, "late": "x", "s": {"nested": [1]}},
        {"text": "f", "n": 6, "late": "y", "s": "six", "new": False},
    ]
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    chunks, stats = read_all([p], chunk_rows=2)
    assert stats.rows == 6 and [len(c) for c in chunks] == [2, 2, 2]
    assert [t for c in chunks for t in c.texts] == ["a", "b", "c", None, "e", "f"]
    assert [e for c in chunks for e in c.read_errors] == [None] * 3 + ["text is not a string (int)"] + [None] * 2
    rows = read_rows(chunks)
    assert [r["text"] for r in rows] == ["a", "b", "c", "4", "e", "f"]  # the bad value kept, as JSON
    assert [r["n"] for r in rows] == [1, 2, 2.5, 4, 5, 6]
    assert [r["late"] for r in rows] == [None, None, "set", None, "x", "y"]
    assert [r["s"] for r in rows] == [1, 2, "three", "4", '{"nested": [1]}', "six"]
    assert [r.get("new") for r in rows] == [None, None, None, True, None, False]  # never dropped
    # Widening: int then float gives float from then on; a column never loses its earlier type's values
    assert chunks[1].columns.schema.field("n").type == pa.float64()
    assert chunks[2].columns.schema.field("n").type == pa.float64()


def test_jsonl_values_parquet_cannot_hold_become_json_text(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a", "empty": {}, "big": 100000000000000000000000}\n')
    (c,), _ = read_all([p])
    assert c.columns.to_pylist() == [{"text": "a", "empty": "{}", "big": "100000000000000000000000"}]
    pq.write_table(c.columns, tmp_path / "out.parquet")  # a struct with no fields cannot be written


def test_jsonl_lone_surrogate_is_a_row_error_and_escaped_elsewhere(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "broken \\ud83d emoji"}\n{"text": "fine", "tag": "\\udc00x", "\\ud800": 1}\n')
    (c,), _ = read_all([p])
    assert c.texts == [None, "fine"]
    assert c.read_errors == ["invalid Unicode: a lone surrogate (\\ud83d) in field 'text'", None]
    assert c.columns.to_pylist()[1] == {"text": "fine", "tag": "\\udc00x", "\\ud800": 1}
    pa.array(c.columns.column("text").to_pylist(), pa.string())  # every string is encodable


def test_csv_invalid_utf8_and_wrong_field_counts_are_row_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b'id,text\n1,fine\n2,caf\xe9\n3,too,many\n4\n5,"multi\nline"\n6,last\n')
    chunks, stats = read_all([p], chunk_rows=100)
    texts = [t for c in chunks for t in c.texts]
    errors = [e for c in chunks for e in c.read_errors]
    assert stats.rows == 6 and len(texts) == 6
    got = sorted(zip(texts, errors), key=str)
    assert got == sorted([("fine", None), (None, "invalid UTF-8"),
                          (None, "wrong number of fields: expected 2, got 3 (line 4)"),
                          (None, "wrong number of fields: expected 2, got 1 (line 5)"),
                          ("multi\nline", None), ("last", None)], key=str)
    assert texts[:2] == ["fine", None]  # good rows keep their order


def test_csv_later_blocks_with_late_filled_long_and_multiline_values(tmp_path):
    rows = [("", f"row {i}") for i in range(3000)] + [("late", "x" * (2 << 20)), ("v", 'a "quoted"\nvalue')]
    p = tmp_path / "a.csv"
    p.write_text("extra,text\n" + "".join(f'{a},"{b.replace(chr(34), chr(34) * 2)}"\n' for a, b in rows))
    chunks, stats = read_all([p], chunk_rows=8192)
    assert stats.rows == len(rows)
    assert [t for c in chunks for t in c.texts] == [b for _, b in rows]
    assert [r["extra"] for r in read_rows(chunks)][-2:] == ["late", "v"]


def test_line_chunks_are_bounded_by_bytes(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps({"text": "x" * 1000}) + "\n" for _ in range(20)))
    stats = source.SourceStats()
    chunks = list(source.read_chunks(source.expand_inputs([str(p)]), "text", chunk_rows=8192,
                                     stats=stats, chunk_bytes=4000))
    assert stats.rows == 20 and max(len(c) for c in chunks) <= 4 and len(chunks) >= 5


def test_parquet_chunks_are_bounded_by_bytes(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"{i} " + "y" * 10_000 for i in range(100)]}), p)
    chunks = list(source.read_chunks(source.expand_inputs([str(p)]), "text", chunk_rows=8192,
                                     chunk_bytes=100_000))
    assert sum(len(c) for c in chunks) == 100 and max(len(c) for c in chunks) <= 10


def test_resume_skips_parquet_row_groups_without_reading_them(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(300)]}), p, row_group_size=100,
                   compression="none", use_dictionary=False)
    meta = pq.ParquetFile(p).metadata
    data = bytearray(p.read_bytes())
    for g in range(2):  # wreck the first two row groups' pages: reading them would fail
        chunk = meta.row_group(g).column(0)
        start = chunk.data_page_offset
        data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    p.write_bytes(bytes(data))
    stats = source.SourceStats()
    chunks = list(source.read_chunks(source.expand_inputs([str(p)]), "text", 64, stats, skip=210))
    assert [t for c in chunks for t in c.texts] == [f"row {i}" for i in range(210, 300)]
    assert chunks[0].offset == 210 and stats.rows == 300 and stats.rows_skipped == 210


def test_parquet_one_huge_row_group_is_not_decoded_whole(tmp_path):
    """Peak Arrow memory while reading a 96 MB row group in 4 MB chunks (own process: the
    memory pool's peak is per process)."""
    p = tmp_path / "one_group.parquet"
    texts = pa.array([os.urandom(1500).hex() for _ in range(32_000)], pa.string())  # 3000 chars each
    pq.write_table(pa.table({"text": texts}), p, row_group_size=len(texts))
    del texts
    code = ("import pyarrow as pa, sys\nfrom scorer import source\n"
            f"n = sum(len(c) for c in source.read_chunks(source.expand_inputs([{str(p)!r}]), 'text',"
            " chunk_bytes=4 << 20))\n"
            "print(n, pa.default_memory_pool().max_memory())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, peak = map(int, proc.stdout.split())
    assert rows == 32_000
    assert peak < 40e6, f"peak Arrow memory {peak / 1e6:.0f} MB for a 96 MB row group"


# --------------------------------------------------------------------------- compressed inputs

def _compressed(data: bytes, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


COMPRESSED = [("gzip", ".gz"), ("zstd", ".zst"), ("bz2", ".bz2")]
PLAIN = {
    "jsonl": b'{"text": "one"}\n\n{"text": 2}\nnot json\n{"text": "five"}\n',
    "csv": b'id,text\n007,one\n8,"two, quoted"\n',
    "txt": b"one\n\xff\nthree\n",
}


@pytest.mark.parametrize("codec, suffix", COMPRESSED)
@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_compressed_line_formats_read_as_the_plain_file(tmp_path, codec, suffix, kind):
    plain, packed = tmp_path / f"x.{kind}", tmp_path / f"x.{kind}{suffix}"
    plain.write_bytes(PLAIN[kind])
    packed.write_bytes(_compressed(PLAIN[kind], codec))
    want, _ = read_all([plain], chunk_rows=2)
    got, stats = read_all([packed], chunk_rows=2)
    assert [(c.offset, c.texts, c.read_errors, c.columns.to_pylist()) for c in got] == \
        [(c.offset, c.texts, c.read_errors, c.columns.to_pylist()) for c in want]
    assert stats.rows == sum(len(c) for c in want) > 0
    skipped = list(source.read_chunks(source.expand_inputs([str(packed)]), "text", 2, skip=2))
    assert [t for c in skipped for t in c.texts] == [t for c in want for t in c.texts][2:]  # resume


def test_the_format_of_a_compressed_file_is_its_inner_extension(tmp_path):
    assert source.detect_format("in/x.JSONL.GZ", "auto") == "jsonl"
    assert source.detect_format("x.csv.zst", "auto") == "csv"
    with pytest.raises(InputError, match=r"x.gz: cannot tell the format from the extension '.gz'; pass --format"):
        source.detect_format("x.gz", "auto")
    (tmp_path / "x.gz").write_bytes(_compressed(b"one\ntwo\n", "gzip"))  # --format with a bare .gz
    chunks, _ = read_all([tmp_path / "x.gz"], fmt="text")
    assert chunks[0].texts == ["one", "two"]
    (tmp_path / "x.parquet.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="a compressed Parquet file"):
        source.expand_inputs([str(tmp_path / "x.parquet.gz")])


def test_a_corrupt_compressed_file_is_a_file_error(tmp_path):
    (tmp_path / "x.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match=r"x.jsonl.gz: not readable as gzip \("):
        read_all([tmp_path / "x.jsonl.gz"])


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bz2", None])
def test_stdin_is_decompressed_by_its_first_bytes(codec):
    data = b'{"text": "one"}\n{"text": "two"}\n'
    code = ("import sys; from scorer import source; "
            "print([t for c in source.read_chunks([source.Input('-', 'jsonl')], 'text') for t in c.texts])")
    proc = subprocess.run([sys.executable, "-c", code], input=_compressed(data, codec) if codec else data,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.decode().strip() == "['one', 'two']", proc.stderr.decode()


def test_stdin_shorter_than_a_magic_number_is_read_as_it_is():
    code = ("from scorer import source; "
            "print([t for c in source.read_chunks([source.Input('-', 'text')], 'text') for t in c.texts])")
    proc = subprocess.run([sys.executable, "-c", code], input=b"a\nb", capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.decode().strip() == "['a', 'b']", proc.stderr.decode()


# --------------------------------------------------------------------------- real tools' files

@pytest.mark.parametrize("name, data", [
    ("x.csv", b"\xef\xbb\xbfid,text\r\n1,one\r\n"),
    ("x.jsonl", b'\xef\xbb\xbf{"id": 1, "text": "one"}\n'),
    ("x.txt", b"\xef\xbb\xbfone\n"),
])
def test_a_utf8_byte_order_mark_is_dropped(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    chunks, _ = read_all([tmp_path / name])
    assert chunks[0].texts == ["one"]
    assert chunks[0].columns.column_names[0] in ("id", "text")


def test_a_file_holding_only_a_byte_order_mark_has_no_rows(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"\xef\xbb\xbf")
    assert read_all([tmp_path / "x.txt"])[1].rows == 0


def test_no_column_errors_show_invisible_characters(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"\xe2\x80\x8bid,body\n1,a\n")  # a zero-width space
    with pytest.raises(InputError, match=r"no column 'text' \(columns: '\\u200bid', 'body'\)"):
        read_all([tmp_path / "x.csv"])


def csv_columns(tmp_path, data: bytes, **kwargs) -> dict:
    (tmp_path / "x.csv").write_bytes(data)
    chunks = list(source.read_chunks(source.expand_inputs([str(tmp_path / "x.csv")]), "text", **kwargs))
    return pa.concat_tables(c.columns for c in chunks).to_pydict()


def test_csv_ids_text_and_leading_zeros_stay_text(tmp_path):
    data = b"acct,zip,n,ok,text\n007,02139,1,true,42\n8,10001,2,false,0.5\n"
    got = csv_columns(tmp_path, data, id_column="acct")
    assert got == {"acct": ["007", "8"], "zip": ["02139", "10001"], "n": [1, 2], "ok": [True, False],
                   "text": ["42", "0.5"]}
    assert csv_columns(tmp_path, data, id_column="acct", csv_types="none")["n"] == ["1", "2"]
    assert csv_columns(tmp_path, b"id,text\n0,a\n-0.5,b\n")["id"] == [0.0, -0.5]  # a lone 0 is a number


def test_bad_rows_of_line_formats_keep_their_bytes_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "fine"}\n\n{"text": ["a"], "id": 7}\nnot json\n'
                                       b'{"text": null}\n' + b'{"text": "' + b"y" * 50 + b'"}\n')
    chunks = list(source.read_chunks(source.expand_inputs([str(tmp_path / "x.jsonl")]), "text",
                                     max_line_bytes=30))
    rows = [(p, line, raw) for c in chunks for p, line, raw in zip(range(c.offset, c.offset + len(c)), c.lines, c.raw)]
    assert rows == [(0, 1, None), (1, 3, b'{"text": ["a"], "id": 7}'), (2, 4, b"not json"),
                    (3, 5, b'{"text": null}'), (4, 6, b'{"text": "' + b"y" * 20)]
    (tmp_path / "x.csv").write_bytes(b'id,text\n1,fine\n2,"multi\nline",extra\n3,caf\xe9\n')
    chunks, _ = read_all([tmp_path / "x.csv"])
    assert [(x, y) for c in chunks for x, y in zip(c.lines, c.raw)] == [
        (2, None), (3, b'2,"multi\nline",extra'), (5, b"3,caf\xe9")]
    skipped = list(source.read_chunks(source.expand_inputs([str(tmp_path / "x.csv")]), "text", skip=2))
    assert skipped[0].lines == [5] and skipped[0].offset == 2  # resume counts lines too
