"""The bad-input matrix: every kind of broken input, generated here, with its exact outcome.

Row-level problems: the run succeeds, the row is kept with null outputs and its reason (or goes
to --dead-letter), and rows in = rows out + dead letters. File-level, output and model problems:
one line on stderr naming the file and the cause, a distinct exit code, nothing that looks
complete (no _SUCCESS, no part file, no temp file).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO, SAMPLE

GOOD = "a warm, funny and moving film"

# (case, raw JSON line, expected error: None = scored)
JSONL_ROWS = [
    ("null text", b'{"text": null}', "null text"),
    ("empty text", b'{"text": ""}', "empty text"),
    ("white space only", b'{"text": " \\t\\n "}', "empty text"),
    ("text is an int", b'{"text": 42}', "text is not a string (int)"),
    ("text is a float", b'{"text": 4.5}', "text is not a string (float)"),
    ("text is a bool", b'{"text": true}', "text is not a string (bool)"),
    ("text is a list", b'{"text": ["a", "b"]}', "text is not a string (list)"),
    ("text is an object", b'{"text": {"a": 1}}', "text is not a string (dict)"),
    ("no text field", b'{"body": "hello"}', "no field 'text'"),
    ("truncated JSON", b'{"text": "cut sho', "malformed JSON: Unterminated string starting at at column 10"),
    ("trailing garbage", b'{"text": "a"} x', "malformed JSON: Extra data at column 15"),
    ("not JSON at all", b"hello there", "malformed JSON: Expecting value at column 1"),
    ("raw NUL byte in a string", b'{"text": "a\x00b"}', "malformed JSON: Invalid control character at at column 12"),
    ("a JSON array", b'["text", "x"]', "not a JSON object: a list"),
    ("a JSON string", b'"just a string"', "not a JSON object: a str"),
    ("a JSON null", b"null", "not a JSON object: a NoneType"),
    ("invalid UTF-8", b'{"text": "caf\xe9"}', "invalid UTF-8"),
    ("line over --max-line-bytes", b'{"text": "' + b"x" * 3000 + b'"}', "line too long: 3,012 bytes (limit 2,000; see --max-line-bytes)"),
    ("CJK", '{"text": "这部电影非常好看，演员表演出色"}'.encode(), None),
    ("emoji", '{"text": "loved it 😍🎬👍🏽"}'.encode(), None),
    ("right-to-left", '{"text": "فيلم رائع جدا שחקנים מצוינים"}'.encode(), None),
    ("combining marks", '{"text": "cafe\u0301 na\u0308ive Z\u0351\u0325algo"}'.encode(), None),
    ("escaped NUL and control characters", b'{"text": "a\\u0000b\\u0007c\\u001bd"}', None),
    ("only control characters", b'{"text": "\\u0001\\u0002"}', None),
    ("U+2028 and U+0085 inside a string", '{"text": "one\u2028two\u0085three\u2029four"}'.encode(), None),
    ("escaped line breaks", b'{"text": "one\\ntwo\\rthree"}', None),
    ("extra fields", b'{"text": "fine", "n": 1, "nested": {"a": [1, 2]}}', None),
    ("lone surrogate in the text", b'{"text": "broken \\ud83d emoji"}',
     "invalid Unicode: a lone surrogate (\\ud83d) in field 'text'"),
    ("lone surrogate in another field", b'{"text": "fine", "tag": "\\udc00"}', None),
    ("an empty object in another field", b'{"text": "fine", "meta": {}}', None),
]
TEXT_ROWS = [
    ("empty line", b"", "empty text"),
    ("invalid UTF-8", b"caf\xe9 au lait", "invalid UTF-8"),
    ("line over --max-line-bytes", b"y" * 2500, "line too long: 2,500 bytes (limit 2,000; see --max-line-bytes)"),
    ("CRLF line end", b"windows line\r", None),
    ("NUL and control characters", b"a\x00b\x07c", None),
    ("U+0085 and U+2028 in a text line", "one\u0085two\u2028three".encode(), None),
]
PARQUET_ROWS = [("null", None, "null text"), ("empty", "", "empty text"), ("spaces", "   ", "empty text"),
                ("fine", GOOD, None)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read(out) -> pa.Table:
    return ds.dataset(out, format="parquet").to_table()


def assert_nothing_complete(out):
    if out.exists():
        files = [p.name for p in out.rglob("*") if p.is_file()]
        assert "_SUCCESS" not in files and not [f for f in files if f.endswith((".parquet", ".tmp"))]


def one_error_line(r, code, message):
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


# --------------------------------------------------------------------------- row-level problems

@pytest.fixture(scope="module")
def row_runs(tiny_model, tmp_path_factory):
    """One run per format over a file holding every case between good rows; one with dead letters."""
    tmp = tmp_path_factory.mktemp("rows")
    lines = [json.dumps({"text": GOOD}).encode()]
    for _, line, _ in JSONL_ROWS:
        lines += [line, json.dumps({"text": GOOD}).encode()]
    (tmp / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    text_lines = [GOOD.encode()]
    for _, line, _ in TEXT_ROWS:
        text_lines += [line, GOOD.encode()]
    (tmp / "rows.txt").write_bytes(b"\n".join(text_lines) + b"\n")
    pq.write_table(pa.table({"text": [t for _, t, _ in PARQUET_ROWS]}), tmp / "rows.parquet")
    runs = {}
    for name, extra in [("jsonl", []), ("txt", []), ("parquet", []),
                        ("dead", ["--dead-letter", tmp / "dead-letters"])]:
        src = tmp / f"rows.{'jsonl' if name == 'dead' else name}"
        r = invoke("run", src, "-o", tmp / name, "--model", tiny_model, "--max-line-bytes", "2000", *extra)
        assert r.exit_code == 0, r.output
        runs[name] = (read(tmp / name).sort_by("row_id") if name != "dead" else read(tmp / name),
                      json.loads((tmp / name / "_manifest.json").read_text()), tmp)
    return runs


def row_at(table: pa.Table, source_name: str, position: int) -> dict:
    rows = [r for r in table.to_pylist() if r["row_id"].endswith(f"{source_name}:{position}")]
    assert len(rows) == 1
    return rows[0]


def check_row(row: dict, expected):
    assert row["error"] == expected
    if expected is None:
        assert row["label"] in ("negative", "positive") and 0.5 <= row["score"] <= 1
    else:
        assert row["label"] is None and row["score"] is None and row["probabilities"] is None


@pytest.mark.parametrize("i", range(len(JSONL_ROWS)), ids=[c for c, _, _ in JSONL_ROWS])
def test_jsonl_row(row_runs, i):
    table, manifest, _ = row_runs["jsonl"]
    check_row(row_at(table, "rows.jsonl", 2 * i + 1), JSONL_ROWS[i][2])


@pytest.mark.parametrize("i", range(len(TEXT_ROWS)), ids=[c for c, _, _ in TEXT_ROWS])
def test_text_row(row_runs, i):
    table, _, _ = row_runs["txt"]
    check_row(row_at(table, "rows.txt", 2 * i + 1), TEXT_ROWS[i][2])


@pytest.mark.parametrize("i", range(len(PARQUET_ROWS)), ids=[c for c, _, _ in PARQUET_ROWS])
def test_parquet_row(row_runs, i):
    table, _, _ = row_runs["parquet"]
    check_row(row_at(table, "rows.parquet", i), PARQUET_ROWS[i][2])


def test_rows_are_conserved_and_counted(row_runs):
    for name, cases in [("jsonl", JSONL_ROWS), ("txt", TEXT_ROWS), ("parquet", PARQUET_ROWS)]:
        table, m, _ = row_runs[name]
        bad = sum(1 for c in cases if c[2] is not None)
        rows = 2 * len(cases) + 1 if name != "parquet" else len(cases)
        assert m["rows_in"] == m["rows_out"] == table.num_rows == rows
        assert m["rows_with_error"] == table.num_rows - table.column("error").null_count == bad
        assert m["rows_scored"] == rows - bad and m["rows_dead_lettered"] == 0
        assert sum(m["error_reasons"].values()) == bad
    assert row_runs["jsonl"][1]["error_reasons"]["malformed JSON"] == 4


def test_dead_letters_hold_the_bad_rows_with_file_position_and_reason(row_runs):
    out_rows, m, tmp = row_runs["dead"]
    dead = read(tmp / "dead-letters").sort_by("position")
    bad = [(2 * i + 1, c) for i, c in enumerate(JSONL_ROWS) if c[2] is not None]
    assert dead.column_names == ["source", "position", "line", "error", "text", "raw"]
    assert dead.column("position").to_pylist() == [p for p, _ in bad]
    assert dead.column("line").to_pylist() == [p + 1 for p, _ in bad]  # no blank lines in this file
    # the bytes as read, to fix and replay (an over-long line: its first --max-line-bytes)
    assert dead.column("raw").to_pylist() == [c[1][:2000] for _, c in bad]
    assert dead.column("error").to_pylist() == [c[2] for _, c in bad]
    assert set(dead.column("source").to_pylist()) == {str(tmp / "rows.jsonl")}
    assert dead.column("text").to_pylist()[:3] == [None, "", " \t\n "]
    assert out_rows.column("error").null_count == out_rows.num_rows  # only good rows in the output
    assert m["rows_in"] == m["rows_out"] + m["rows_dead_lettered"] == 2 * len(JSONL_ROWS) + 1
    assert m["rows_dead_lettered"] == len(bad) and len(m["dead_letter"]["parts"]) == 1


def test_a_10_mb_line_is_truncated_not_a_memory_problem(tiny_model, tmp_path):
    big = "word " * 2_000_000  # 10 MB, under the default 16 MiB line limit
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": big}) + "\n" + json.dumps({"text": GOOD}) + "\n")
    code = (f"import resource, sys; from scorer.cli import main; sys.argv = ['scorer', 'run', "
            f"{str(tmp_path / 'big.jsonl')!r}, '-o', {str(tmp_path / 'o')!r}, '--model', {str(tiny_model)!r}]\n"
            "try:\n    main()\nfinally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "o" / "_manifest.json").read_text())
    assert m["rows_out"] == 2 and m["rows_truncated"] == 1 and m["rows_with_error"] == 0
    peak_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1500, peak_mb


def read_parts(out) -> list[dict]:
    """Every output row, part by part (parts may differ in schema when input columns change)."""
    parts = json.loads((out / "_manifest.json").read_text())["parts"]
    return [row for part in parts for row in pq.read_table(out / part["file"]).to_pylist()]


def test_parquet_text_of_any_string_like_type_scores(tiny_model, tmp_path):
    texts = [GOOD, None, "caf\xe9 au lait", GOOD]
    pq.write_table(pa.table({"text": pa.array(texts).dictionary_encode()}), tmp_path / "a-category.parquet")
    pq.write_table(pa.table({"text": pa.array([t and t.encode() for t in texts], pa.large_binary())}),
                   tmp_path / "b-binary.parquet")
    pq.write_table(pa.table({"text": pa.array([b"ok film", b"caf\xe9"], pa.binary())}), tmp_path / "c-bad.parquet")
    r = invoke("run", tmp_path / "*.parquet", "-o", tmp_path / "o", "--model", tiny_model)
    assert r.exit_code == 0, r.output
    rows = read_parts(tmp_path / "o")
    assert [x["error"] for x in rows] == [None, "null text", None, None] * 2 + [None, "invalid UTF-8"]
    assert [x["text"] for x in rows] == texts * 2 + ["ok film", None]


def test_jsonl_types_changing_after_the_first_chunk_never_stop_the_run(tiny_model, tmp_path):
    records = [{"text": GOOD, "n": 1, "late": None, "s": 1}, {"text": GOOD, "n": 2, "late": None, "s": 2},
               {"text": 3, "n": 2.5, "late": "set", "s": "three"}, {"text": GOOD, "n": 4, "s": 4},
               {"text": GOOD, "n": 5, "late": "x", "s": "five", "new": [1]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    r = invoke("run", tmp_path / "in.jsonl", "-o", tmp_path / "o", "--model", tiny_model,
               "--chunk-rows", "2", "--dead-letter", tmp_path / "dead")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "_manifest.json").read_text())
    assert m["rows_in"] == 5 and m["rows_out"] == 4 and m["rows_dead_lettered"] == 1
    assert m["error_reasons"] == {"text is not a string (int)": 1}
    rows = read_parts(tmp_path / "o")
    assert [x["n"] for x in rows] == [1, 2, 4, 5] and [x["s"] for x in rows] == [1, 2, "4", "five"]
    assert [x["late"] for x in rows] == [None, None, None, "x"] and rows[-1]["new"] == [1]
    assert len(m["parts"]) >= 2  # a changed column type starts a new part file
    dead = read(tmp_path / "dead").to_pylist()
    assert [(x["position"], x["error"]) for x in dead] == [(2, "text is not a string (int)")]


def test_csv_bad_rows_are_dead_letters_with_their_line(tiny_model, tmp_path):
    (tmp_path / "in.csv").write_bytes(b'id,text\n1,' + GOOD.encode().replace(b",", b"") + b'\n2,caf\xe9\n'
                                      b'3,too,many\n4,"multi\nline ' + GOOD.encode() + b'"\n5,x' + b"y" * (2 << 20) + b"\n")
    r = invoke("run", tmp_path / "in.csv", "-o", tmp_path / "o", "--model", tiny_model,
               "--dead-letter", tmp_path / "dead")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "_manifest.json").read_text())
    assert m["rows_in"] == 5 and m["rows_out"] == 3 and m["rows_dead_lettered"] == 2
    assert sorted(x["error"] for x in read(tmp_path / "dead").to_pylist()) == [
        "invalid UTF-8", "wrong number of fields: expected 2, got 3 (line 4)"]
    assert [x["id"] for x in read_parts(tmp_path / "o")] == [1, 4, 5]


# --------------------------------------------------------------------------- empty inputs

def test_empty_inputs_succeed_with_a_warning(tiny_model, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n  \n\n")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "empty.txt").write_bytes(b"")
    for name in ("empty.jsonl", "blank.jsonl", "empty.parquet", "empty.txt"):
        out = tmp_path / f"o-{name}"
        r = invoke("run", tmp_path / name, "-o", out, "--model", tiny_model)
        assert r.exit_code == 0, r.output
        assert f"warning: no input rows in {tmp_path / name}" in r.stderr
        m = json.loads((out / "_manifest.json").read_text())
        assert m["rows_in"] == m["rows_out"] == 0 and m["parts"] == [] and (out / "_SUCCESS").exists()
    assert json.loads((tmp_path / "o-blank.jsonl" / "_manifest.json").read_text())["blank_lines_skipped"] == 3


def test_fail_on_empty(tiny_model, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    r = invoke("run", tmp_path / "empty.jsonl", "-o", tmp_path / "o", "--model", tiny_model, "--fail-on-empty")
    one_error_line(r, 6, f"no input rows in {tmp_path / 'empty.jsonl'} (--fail-on-empty)")
    assert_nothing_complete(tmp_path / "o")


# --------------------------------------------------------------------------- --max-errors

@pytest.mark.parametrize("limit, code, message", [
    ("2", 6, "more than 2 bad rows (--max-errors)"),
    ("3", 0, None),
    ("0.5", 0, None),
    ("0.2", 6, "3 of 8 rows are bad (37.50%), more than --max-errors 0.2"),
    ("40%", 0, None),
    ("lots", 6, "--max-errors 'lots': give a row count"),
])
def test_max_errors(tiny_model, tmp_path, limit, code, message):
    lines = [GOOD, "", GOOD, "", GOOD, "", GOOD, GOOD]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    r = invoke("run", tmp_path / "in.txt", "-o", tmp_path / "o", "--model", tiny_model, "--max-errors", limit)
    if code == 0:
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / "o" / "_manifest.json").read_text())["rows_with_error"] == 3
    else:
        one_error_line(r, code, message)
        assert not (tmp_path / "o" / "_SUCCESS").exists()


def test_a_run_where_every_row_is_bad_fails_unless_max_errors_allows_it(tiny_model, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"caf\xe9\n\n\xff\xfe\n")
    out = tmp_path / "o"
    r = invoke("run", tmp_path / "in.txt", "-o", out, "--model", tiny_model)
    one_error_line(r, 6, "error: all 3 rows are bad (2 invalid UTF-8, 1 empty text): nothing was scored; "
                         "check --format and --text-column, or accept it with --max-errors")
    assert not (out / "_SUCCESS").exists()
    r = invoke("run", tmp_path / "in.txt", "-o", out, "--model", tiny_model, "--max-errors", "100%")
    assert r.exit_code == 0, r.output  # the same run, resumed and accepted
    assert re.fullmatch(rf"scored 0 of 3 rows into {out}/ in [\d.]+ s \(3 bad rows kept there with "
                        r"their error, [\d,]+ rows/s, model load [\d.]+ s, 1 part file, resumed after 3 committed "
                        r"rows\)\n", r.stderr), r.stderr


def test_the_summary_says_how_many_rows_were_scored_and_where_the_bad_ones_went(tiny_model, tmp_path):
    (tmp_path / "in.jsonl").write_text(f'{{"text": "{GOOD}"}}\n{{"text": 1}}\n{{"text": "{GOOD}"}}\n')
    r = invoke("run", tmp_path / "in.jsonl", "-o", f"{tmp_path / 'o'}/", "--model", tiny_model,
               "--dead-letter", f"{tmp_path / 'dl'}/")
    assert r.exit_code == 0, r.output
    assert re.fullmatch(rf"scored 2 of 3 rows into {tmp_path / 'o'}/, 1 bad row into {tmp_path / 'dl'}/ "
                        r"in [\d.]+ s \([\d,]+ rows/s, model load [\d.]+ s, 1 part file\)\n", r.stderr), r.stderr


# --------------------------------------------------------------------------- file-level problems

def write_truncated_parquet(path):
    full = path.with_name("full.parquet")
    pq.write_table(pa.table({"text": [GOOD] * 1000}), full)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_int_text_column(path):
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)


FILE_CASES = [
    # (case, how to make the input (None: not created), its name, extra args, exit code, message)
    ("missing file", None, "missing.parquet", [], 3, "missing.parquet: no such file or directory"),
    ("random bytes as Parquet", lambda p: p.write_bytes(os.urandom(4096)), "x.parquet", [], 3, "x.parquet: not readable as Parquet"),
    ("zero-byte Parquet", lambda p: p.write_bytes(b""), "x.parquet", [], 3, "x.parquet: not readable as Parquet"),
    ("truncated Parquet", write_truncated_parquet, "x.parquet", [], 3, "x.parquet: not readable as Parquet"),
    ("wrong text column", lambda p: pq.write_table(pa.table({"body": ["a"]}), p), "x.parquet", [], 3,
     "x.parquet: no column 'text' (columns: 'body'); pick one with --text-column"),
    ("text column not a string", write_int_text_column, "x.parquet", [], 3, "column 'text' is int64, not a string column"),
    ("glob with no match", None, "nothing-*.parquet", [], 3, "nothing-*.parquet: no files match"),
    ("empty directory", lambda p: p.mkdir(), "emptydir", [], 3, "emptydir: no Parquet files in this directory"),
    ("unknown extension", lambda p: p.write_text("a"), "x.xlsx", [], 3, "cannot tell the format from the extension '.xlsx'"),
    ("JSONL without the text field", lambda p: p.write_text('{"body": "a"}\n'), "x.jsonl", [], 3,
     "x.jsonl: no field 'text' in any record (fields: 'body')"),
    ("CSV without the text column", lambda p: p.write_text("body\na\n"), "x.csv", [], 3, "x.csv: no column 'text'"),
    ("stdin without --format", None, "-", [], 3, "reading stdin ('-') needs --format"),
    ("--max-errors malformed", lambda p: p.write_text("a\n"), "x.txt", ["--max-errors", "-1.5"], 6, "--max-errors '-1.5'"),
]


@pytest.mark.parametrize("case, make, name, extra, code, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_level_problem(tiny_model, tmp_path, case, make, name, extra, code, message):
    if make:
        make(tmp_path / name)
    r = invoke("run", tmp_path / name if name != "-" else "-", "-o", tmp_path / "o", "--model", tiny_model, *extra)
    one_error_line(r, code, message)
    assert not (tmp_path / "o").exists()  # nothing was created


OUTPUT_CASES = [
    ("output is a file", lambda o: o.write_text(""), "o: exists and is not a directory"),
    ("output holds other files", lambda o: (o.mkdir(), (o / "x").write_text("")),
     "o: the output directory holds files that are not a scorer output (x); --overwrite replaces only"),
    ("output holds parts", lambda o: (o.mkdir(), (o / "part-00000.parquet").write_text("")),
     "o: output directory is not empty; pass --overwrite to replace it"),
    ("output under a file", lambda o: (o.write_text(""), None), "cannot write there"),
    ("output holds another finished run", None,
     "holds a finished run of another command (its inputs were "),
]


@pytest.mark.parametrize("case, make, message", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_output_problem(tiny_model, tmp_path, case, make, message):
    out = tmp_path / "o"
    if make:
        make(out)
    else:
        assert invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model).exit_code == 0
    target = out / "sub" if case == "output under a file" else out
    r = invoke("run", SAMPLE / "sst2_dev_sample.txt", "-o", target, "--model", tiny_model)
    one_error_line(r, 5, message)


def test_disk_full_while_writing(tiny_model, tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the OS refuse writes as a full disk would."""
    texts = [f"{t} {os.urandom(24).hex()}"  # incompressible: the output outgrows the limit
             for t in pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist() * 20]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "o"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    proc = subprocess.run([sys.executable, "-m", "scorer.cli", "run", str(tmp_path / "in.parquet"),
                           "-o", str(out), "--model", str(tiny_model)],
                          capture_output=True, text=True, cwd=REPO, preexec_fn=limit, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"},
                               "SCORER_XLA_CACHE": "", "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 5, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and ".part-00000-00000.parquet.tmp: write failed (" in line and "File too large" in line
    assert_nothing_complete(out)


# --------------------------------------------------------------------------- model problems

def corrupt_weights(m):
    data = bytearray((m / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (m / "weights.safetensors").write_bytes(bytes(data))


def edit_spec(change):
    def edit(m):
        spec = json.loads((m / "scorer_model.json").read_text())
        change(spec)
        (m / "scorer_model.json").write_text(json.dumps(spec))
    return edit


MODEL_CASES = [
    ("missing directory", lambda m: shutil.rmtree(m), "model directory not found"),
    ("not a model directory", lambda m: (m / "scorer_model.json").unlink(), "is not a scorer model directory"),
    ("spec not JSON", lambda m: (m / "scorer_model.json").write_text("{oops"), "scorer_model.json: not readable JSON"),
    ("weights tampered", corrupt_weights, "weights.safetensors: sha256"),
    ("weights missing", lambda m: (m / "weights.safetensors").unlink(), "missing weights.safetensors"),
    ("tokenizer missing", lambda m: (m / "tokenizer.json").unlink(), "missing tokenizer.json"),
    ("labels missing", edit_spec(lambda s: s.pop("labels")), "scorer_model.json: missing labels"),
    ("checksum not recorded", edit_spec(lambda s: s["checksums"].pop("weights.safetensors")),
     "no checksum recorded for weights.safetensors"),
]


@pytest.mark.parametrize("case, damage, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_problem_stops_before_any_output(tiny_model, tmp_path, case, damage, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    damage(model)
    r = invoke("run", SAMPLE / "sst2_dev_sample.txt", "-o", tmp_path / "o", "--model", model)
    one_error_line(r, 4, message)
    assert not (tmp_path / "o").exists()
