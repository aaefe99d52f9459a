"""The CLI, driven with click's CliRunner on the tiny model: outputs, schema, exit codes."""

import io
import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import SAMPLE, wait_for_port

OUTPUT_COLUMNS = ["label", "label_id", "score", "probabilities", "windows", "error"]


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def read_output(out):
    parts = sorted(out.rglob("part-*.parquet"))
    return pa.concat_tables(pq.read_table(p) for p in parts) if parts else None


def test_parquet_in_parquet_out(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert f"scored 300 rows into {out}/" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "_manifest.json", "part-00000-00000.parquet"]
    t = read_output(out)
    assert t.column_names == ["id", "text", "gold_label", "row_id"] + OUTPUT_COLUMNS
    src = pq.read_table(SAMPLE / "sst2_dev_sample.parquet")
    assert t.column("id").to_pylist() == src.column("id").to_pylist()  # input order kept
    assert t.column("row_id").to_pylist()[:2] == [f"{SAMPLE}/sst2_dev_sample.parquet:0",
                                                  f"{SAMPLE}/sst2_dev_sample.parquet:1"]
    assert t.schema.field("label_id").type == pa.int32()
    assert t.schema.field("score").type == pa.float32()
    assert t.schema.field("probabilities").type == pa.list_(pa.float32())
    assert set(t.column("label").to_pylist()) <= {"negative", "positive"}
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == m["rows_out"] == m["rows_scored"] == 300 and m["rows_with_error"] == 0
    assert m["model"]["name"] == "tiny" and [(p["file"], p["rows"]) for p in m["parts"]] == [
        ("part-00000-00000.parquet", 300)]
    assert set(m["timing"]) >= {"read_seconds", "encode_seconds", "infer_seconds",
                                "compile_seconds", "write_seconds"}
    assert 0 <= m["padding_fraction"] < 1


def test_several_inputs_of_different_formats(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", SAMPLE / "sst2_dev_sample.jsonl", SAMPLE / "sst2_dev_sample.txt", "-o", out,
               "--model", tiny_model, "--keep-columns", "text", "--rows-per-file", "250")
    assert r.exit_code == 0, r.output
    t = read_output(out)
    assert t.num_rows == 572
    assert [p.name for p in sorted(out.glob("part-*"))] == [  # each file cut every 250 rows
        "part-00000-00000.parquet", "part-00001-00000.parquet", "part-00002-00000.parquet",
        "part-00003-00000.parquet"]
    lines = (SAMPLE / "sst2_dev_sample.txt").read_text().splitlines()
    assert t.column("text").to_pylist()[300:] == lines
    assert t.column("row_id").to_pylist()[300].endswith("sst2_dev_sample.txt:0")


def test_stdin_text_and_errors_are_recorded_not_dropped(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", "-", "--format", "text", "-o", out, "--model", tiny_model,
               input="a fine film\n\nanother one\n")
    assert r.exit_code == 0, r.output
    rows = read_output(out).to_pylist()
    assert [r["text"] for r in rows] == ["a fine film", "", "another one"]
    assert [r["error"] for r in rows] == [None, "empty text", None]
    assert rows[1]["label"] is None and rows[1]["probabilities"] is None
    assert [r["row_id"] for r in rows] == ["-:0", "-:1", "-:2"]
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_with_error"] == 1 and m["error_reasons"] == {"empty text": 1}


def test_id_column_drop_text_and_prefix(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model,
               "--id-column", "id", "--drop-text", "--output-prefix", "pred_")
    assert r.exit_code == 0, r.output
    assert read_output(out).column_names == ["id", "gold_label"] + ["pred_" + c for c in OUTPUT_COLUMNS]


def test_long_texts_are_scored_as_windows_by_default(tiny_model, tmp_path):
    long_review = "a slow start, then a film of real grace and wit; " * 30  # over the tiny model's 64 tokens
    lines = f"{long_review}\nshort and sweet\n"
    r = invoke("run", "-", "--format", "text", "-o", tmp_path / "w", "--model", tiny_model, input=lines)
    assert r.exit_code == 0, r.output
    windows = read_output(tmp_path / "w").column("windows").to_pylist()
    assert windows[0] > 1 and windows[1] == 1
    m = json.loads((tmp_path / "w" / "_manifest.json").read_text())
    assert m["rows_windowed"] == 1 and m["rows_truncated"] == 0
    # --long-text truncate: cut at the max length, counted, and no windows column
    r = invoke("run", "-", "--format", "text", "-o", tmp_path / "t", "--model", tiny_model,
               "--long-text", "truncate", input=lines)
    assert r.exit_code == 0, r.output
    assert "windows" not in read_output(tmp_path / "t").column_names
    m = json.loads((tmp_path / "t" / "_manifest.json").read_text())
    assert m["rows_windowed"] == 0 and m["rows_truncated"] == 1
    help_text = " ".join(invoke("run", "--help").output.split())
    long_text_help = help_text[help_text.index("--long-text [truncate|window]"):help_text.index("--max-windows")]
    assert "[default: window]" in long_text_help


def test_partition_by_predicted_label(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model,
               "--partition-by", "label")
    assert r.exit_code == 0, r.output
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs and set(dirs) <= {"label=negative", "label=positive"}
    assert ds.dataset(out, format="parquet", partitioning="hive",
                      exclude_invalid_files=True).to_table().num_rows == 300


def test_rerun_gives_identical_files(tiny_model, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model,
                      "--rows-per-file", "128").exit_code == 0
    names = sorted(p.name for p in a.glob("part-*"))
    assert names == sorted(p.name for p in b.glob("part-*")) and len(names) == 3
    for n in names:
        assert pq.read_table(a / n).equals(pq.read_table(b / n))


def test_a_labelled_file_keeps_its_label_as_input_label(tiny_model, tmp_path):
    """Every labelled JSON Lines file has a `label`: it scores on the first try, the input's
    column kept as input_label, with a warning and the manifest saying so."""
    src = tmp_path / "labelled.jsonl"
    src.write_text("".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in [("a fine film", 1),
                                                                                  ("dull", 0)]))
    out = tmp_path / "out"
    r = invoke("run", src, "-o", out, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: input column 'label' is kept as 'input_label': the output column "
                        "'label' has its name (--output-prefix names the output columns instead)"]
    t = read_output(out)
    assert t.column_names == ["text", "input_label", "row_id"] + OUTPUT_COLUMNS
    assert t.column("input_label").to_pylist() == [1, 0]
    m = json.loads((out / "_manifest.json").read_text())
    assert m["input_columns_renamed"] == {"label": "input_label"} and m["warnings"] == [warnings[0][9:]]
    # --output-prefix: the input's label stays as it is
    r = invoke("run", src, "-o", tmp_path / "pred", "--model", tiny_model, "--output-prefix", "pred_")
    assert r.exit_code == 0 and "warning:" not in r.stderr, r.output
    assert read_output(tmp_path / "pred").column_names[:2] == ["text", "label"]
    # --partition-by input_label: the input's column; --partition-by label: the prediction
    r = invoke("run", src, "-o", tmp_path / "parts", "--model", tiny_model, "--partition-by", "input_label")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "parts").glob("input_label=*")) == ["input_label=0",
                                                                               "input_label=1"]


def test_an_input_label_that_is_taken_too_is_refused_before_anything_is_touched(tiny_model, tmp_path):
    src = tmp_path / "labelled.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1], "input_label": [1, 1]}), src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_text("x")  # a previous output's
    r = invoke("run", src, "-o", out, "--model", tiny_model, "--overwrite")
    assert r.exit_code == 5
    assert r.stderr.strip() == (
        "error: input column 'label' has the name of an output column and would be kept as "
        "'input_label', but 'input_label' is taken too; name the output columns with --output-prefix "
        "(e.g. --output-prefix pred_ gives pred_label) or leave one out with --keep-columns")
    assert (out / "part-00000.parquet").read_text() == "x"  # nothing was touched
    r = invoke("run", src, "-o", out, "--model", tiny_model, "--overwrite", "--keep-columns", "text,label")
    assert r.exit_code == 0, r.output
    assert read_output(out).column_names[:2] == ["text", "input_label"]
    r = invoke("run", src, "-o", out, "--model", tiny_model, "--overwrite", "--output-prefix", "pred_")
    assert r.exit_code == 0
    assert read_output(out).column_names[:3] == ["text", "label", "input_label"]


def test_rows_per_second_is_the_scoring_rate_and_the_model_load_is_given_apart(tiny_model, tmp_path):
    """rows/s counted the model load and start-up in (issue 21: 300 rows said 6 rows/s)."""
    out = tmp_path / "out"
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", out, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "_manifest.json").read_text())
    line = (f"scored 300 rows into {out}/ in {m['scoring_seconds']:.1f} s ({m['rows_per_second']:,.0f} "
            f"rows/s, model load {m['timing']['load_seconds']:.1f} s, 1 part file)")
    assert r.stderr.strip() == line
    assert 0 < m["scoring_seconds"] < m["timing"]["total_seconds"] - m["timing"]["load_seconds"]
    assert m["rows_per_second"] == pytest.approx(300 / m["scoring_seconds"], rel=0.01)
    assert m["rows_per_second_overall"] == pytest.approx(300 / m["timing"]["total_seconds"], rel=0.01)
    assert m["timing"]["load_seconds"] > 0


def test_info_on_a_missing_model_is_one_line_exit_4(tmp_path):
    r = CliRunner().invoke(main, ["info", "--model", str(tmp_path / "nomodel")])
    assert r.exit_code == 4
    assert r.stderr.strip() == f"error: model directory not found: {tmp_path / 'nomodel'}"


def json_lines(stderr: str) -> list[dict]:
    """Every line on stderr, each a JSON object with a level and a message."""
    objects = [json.loads(line) for line in stderr.splitlines()]
    assert all(o["level"] in ("error", "warning", "info") and isinstance(o["message"], str) for o in objects)
    return objects


def test_json_log_says_everything_as_json_lines_and_ends_with_the_summary(tiny_model, tmp_path):
    """--log-format json printed its summary only: warnings stayed text, failures printed no
    JSON, and the summary lacked the exit code, rows_scored and drift (issue 21)."""
    src = tmp_path / "labelled.jsonl"
    src.write_text('{"text": "a fine film", "label": 1}\n{"text": 7}\n')
    out = tmp_path / "o"
    r = invoke("run", src, "-o", out, "--model", tiny_model, "--log-format", "json")
    assert r.exit_code == 0, r.output
    lines = json_lines(r.stderr)
    assert [o["message"] for o in lines if o["level"] == "warning"] == [
        "input column 'label' is kept as 'input_label': the output column 'label' has its name "
        "(--output-prefix names the output columns instead)"]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["level"] == "info" and summary["exit_code"] == 0
    assert summary["message"].startswith(f"scored 1 of 2 rows into {out}/ in ")
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_with_error"], summary["parts"]) == (2, 1, 1, 1)
    assert summary["output"] == str(out) and summary["rows_per_second"] > 0
    assert set(summary["drift"]) == {"max_psi", "too_few_rows", "rows"}  # the tiny model has no reference
    # a failure: the error as JSON with its exit code, then the summary with it
    r = invoke("run", tmp_path / "missing.jsonl", "-o", tmp_path / "o2", "--model", tiny_model,
               "--log-format", "json")
    assert r.exit_code == 3
    error, summary = json_lines(r.stderr)
    assert error["level"] == "error" and error["exit_code"] == 3 and "missing.jsonl" in error["message"]
    assert summary["event"] == "summary" and summary["exit_code"] == 3 and summary["level"] == "error"
    # already complete
    r = invoke("run", src, "-o", out, "--model", tiny_model, "--log-format", "json")
    (summary,) = json_lines(r.stderr)
    assert summary["already_complete"] is True and summary["exit_code"] == 0 and summary["rows_out"] == 2


def test_json_log_with_follow(tiny_model, tmp_path):
    """--follow --log-format json was refused (exit 2); its entry failures are JSON errors too."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.jsonl").write_text('{"text": "a fine film"}\n')
    pq.write_table(pa.table({"body": ["no text column"]}), landing / "b.parquet")
    r = invoke("run", "--follow", landing, "-o", tmp_path / "o", "--model", tiny_model, "--once",
               "--settle-seconds", "0", "--log-format", "json")
    assert r.exit_code == 7, r.output
    lines = json_lines(r.stderr)
    assert [o["level"] for o in lines if "entry b.parquet failed" in o["message"]] == ["error"]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 7
    assert summary["files_scored_now"] == ["a.jsonl"] and summary["files_failed_now"] == ["b.parquet"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_line_ended_before_a_warning():
    """The last progress line had no newline, so the next warning: ran onto it (issue 21)."""
    from scorer.cli import Messages

    terminal = FakeTerminal()
    messages = Messages(stream=terminal)
    messages.progress(12345, 2.0)
    messages.progress(20000, 4.0)
    messages.warning("no input rows")
    messages.summary("scored 20,000 rows into o/", 0)
    assert terminal.getvalue() == ("\r\x1b[Kscored 12,345 rows (6,172 rows/s)"
                                   "\r\x1b[Kscored 20,000 rows (5,000 rows/s)\n"
                                   "warning: no input rows\nscored 20,000 rows into o/\n")
    # not a terminal: no progress at all
    plain = io.StringIO()
    Messages(stream=plain).progress(12345, 2.0)
    assert plain.getvalue() == ""


def test_something_moves_on_a_terminal_while_the_model_loads():
    import re
    import threading

    from scorer.cli import Messages

    terminal = FakeTerminal()
    messages = Messages(stream=terminal)
    drawn = threading.Event()
    with messages.loading("tiny"):
        while terminal.getvalue().count("loading model tiny") < 2:  # drawn, then redrawn
            drawn.wait(0.1)
    messages.progress(10, 1.0)
    assert re.fullmatch(r"(\r\x1b\[Kloading model tiny \.\.\. \d+ s){2,}\r\x1b\[Kscored 10 rows \(10 rows/s\)",
                        terminal.getvalue()), terminal.getvalue()


def test_info_shows_labels_base_and_checksums(tiny_model):
    r = invoke("info", "--model", tiny_model)
    assert r.exit_code == 0
    assert "labels:       0=negative, 1=positive" in r.output
    assert "base encoder: config BertBackbone" in r.output
    assert "weights.safetensors:" in r.output
    spec = json.loads(invoke("info", "--model", tiny_model, "--json").output)
    assert spec["labels"] == ["negative", "positive"] and spec["max_length"] == 64
    assert "windowed:" not in r.output  # no windowed temperature


def test_info_shows_the_windowed_temperature(tiny_model, tmp_path):
    import shutil

    model = shutil.copytree(tiny_model, tmp_path / "m")
    spec = json.loads((model / "scorer_model.json").read_text())
    (model / "scorer_model.json").write_text(json.dumps({**spec, "temperature": 1.5,
                                                         "windowed_temperature": 0.8}))
    r = invoke("info", "--model", model)
    assert r.exit_code == 0, r.output
    assert "temperature:  1.5 (calibrated on the validation set)" in r.output
    assert "windowed:     temperature 0.8 for a text of several windows" in r.output


@pytest.mark.parametrize("command", [[], ["run"], ["info"]])
def test_every_help_has_an_example(command):
    r = invoke(*command, "--help")
    assert r.exit_code == 0 and "Example" in r.output and "scorer " in r.output


def test_one_scorer_serves_several_runs_with_separate_counts(tiny_scorer, tmp_path):
    from scorer import run

    a = run([str(SAMPLE / "sst2_dev_sample.txt")], tmp_path / "a", scorer_=tiny_scorer)
    b = run([str(SAMPLE / "sst2_dev_sample.parquet")], tmp_path / "b", scorer_=tiny_scorer)
    assert a.manifest["rows_scored"] == 272 and b.manifest["rows_scored"] == 300
    assert b.manifest["rows_with_error"] == 0 and b.manifest["rows_in"] == 300


# --------------------------------------------------------------------------- errors, not tracebacks

def one_error_line(r, code: int, *fragments: str) -> None:
    """The run failed with exactly one `error:` line on stderr naming each fragment."""
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("field, value", [
    ("base", "x"), ("base", {"kind": "config", "architecture": "BertBackbone", "config": []}),
    ("labels", "negative"), ("labels", ["a", 1]), ("name", 3), ("max_length", "64"),
    ("threshold", "high"), ("dropout", None), ("lora_rank", "8"), ("lora_targets", "query"),
    ("checksums", []), ("checksums", {"weights.safetensors": 5}), ("lora_targets", [1]), ("training", "x"), ("metrics", 1), ("format_version", "2"),
    ("weights_file", 7), ("tokenizer_file", ["tokenizer.json"]), ("version", [1]),
])
def test_a_spec_field_of_the_wrong_type_is_a_model_error(tiny_model, tmp_path, field, value):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    spec = json.loads((d / "scorer_model.json").read_text())
    spec[field] = value
    (d / "scorer_model.json").write_text(json.dumps(spec))
    for command in (["info"], ["run", SAMPLE / "sst2_dev_sample.txt", "-o", tmp_path / "o"]):
        r = CliRunner().invoke(main, [str(a) for a in command] + ["--model", str(d)])
        one_error_line(r, 4, f"{d / 'scorer_model.json'}: ", repr(field))
    assert not (tmp_path / "o").exists()


def test_a_failed_manifest_write_is_one_line_and_resumable(tiny_model, tmp_path, monkeypatch):
    import errno

    from scorer import storage

    real_write = storage.LocalStorage.write_text

    def full_disk_for_the_manifest(self, rel, text):
        if rel == "_manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(".manifest.tmp")))
        real_write(self, rel, text)

    out = tmp_path / "o"
    monkeypatch.setattr(storage.LocalStorage, "write_text", full_disk_for_the_manifest)
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.txt"), "-o", str(out),
                                  "--model", str(tiny_model)])
    one_error_line(r, 5, str(out), "No space left on device", "run the same command again")
    assert not (out / "_SUCCESS").exists()
    monkeypatch.setattr(storage.LocalStorage, "write_text", real_write)
    r = invoke("run", SAMPLE / "sst2_dev_sample.txt", "-o", out, "--model", tiny_model)
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "_manifest.json").read_text())["rows_out"] == 272


@pytest.mark.parametrize("value", ["abc", "-2", "1.5", "0"])
def test_a_bad_scorer_threads_is_one_line(tiny_model, tmp_path, value):
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.txt"), "-o", str(tmp_path / "o"),
                                  "--model", str(tiny_model)], env={"SCORER_THREADS": value})
    one_error_line(r, 2, f"SCORER_THREADS={value!r}", "a whole number of threads, 1 or more")
    assert not (tmp_path / "o").exists()


def test_resuming_with_max_errors_below_the_committed_bad_rows(tiny_model, tmp_path):
    (tmp_path / "in.txt").write_text("".join(["a fine film\n", "\n"] * 6 + ["a fine film\n"] * 10))
    out = tmp_path / "o"
    args = ["run", tmp_path / "in.txt", "-o", out, "--model", tiny_model, "--rows-per-file", "2",
            "--chunk-rows", "4"]
    r = CliRunner().invoke(main, [str(a) for a in args + ["--max-errors", "3"]])
    one_error_line(r, 6, "more than 3 bad rows (--max-errors)")
    committed = json.loads((out / "_scorer_run" / "progress.json").read_text())
    assert committed["counters"]["rows_with_error"] == 3
    r = CliRunner().invoke(main, [str(a) for a in args + ["--max-errors", "2"]])
    one_error_line(r, 6, f"{out}", "already has 3 bad rows", "more than --max-errors 2")
    assert json.loads((out / "_scorer_run" / "progress.json").read_text()) == committed
    r = CliRunner().invoke(main, [str(a) for a in args + ["--max-errors", "6"]])
    assert r.exit_code == 0, r.stderr
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == 22 and m["rows_with_error"] == 6


def test_a_file_name_that_is_not_utf8_is_one_line(tiny_model, tmp_path):
    import os

    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 name, as Python hands it over from argv
    (tmp_path / name).write_text("a fine film\n")
    r = CliRunner().invoke(main, ["run", str(tmp_path / name), "-o", str(tmp_path / "o"),
                                  "--model", str(tiny_model)])
    one_error_line(r, 3, "caf\\xe9.txt", "not valid UTF-8")
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.txt"), "-o",
                                  str(tmp_path / os.fsdecode(b"out\xff")), "--model", str(tiny_model)])
    one_error_line(r, 5, "out\\xff", "not valid UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    (tmp_path / "d").mkdir()
    with open(tmp_path / "d" / os.fsdecode(b"p\xff.parquet"), "wb") as f:  # pyarrow takes no such path
        pq.write_table(pa.table({"text": ["a fine film"]}), f)
    for found_by in (str(tmp_path / "*.txt"), str(tmp_path / "d")):  # a glob, a directory
        r = CliRunner().invoke(main, ["run", found_by, "-o", str(tmp_path / "o"), "--model", str(tiny_model)])
        one_error_line(r, 3, "not valid UTF-8")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def s3_writer_without_manifest_rights():
    """moto's S3 server on loopback with IAM checks on, and the environment of a user who may
    read and write the bucket except under denied/ and its scored/_manifest.json (AccessDenied)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The first 4 requests (bucket, user, policy, key) are let through before IAM applies.
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "testing",
                 "aws_secret_access_key": "testing"}
        wait_for_port(port, "moto_server")
        boto3.client("s3", **admin).create_bucket(Bucket="bkt")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="scorer")
        iam.put_user_policy(UserName="scorer", PolicyName="p", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:PutObject", "Resource": [
                    "arn:aws:s3:::bkt/denied/*", "arn:aws:s3:::bkt/scored/_manifest.json"]}]}))
        key = iam.create_access_key(UserName="scorer")["AccessKey"]
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}
    finally:
        server.terminate()
        server.wait()


def test_s3_access_denied_on_the_output_is_one_line(s3_writer_without_manifest_rights, tiny_model):
    env = s3_writer_without_manifest_rights
    for output, fragment in [("s3://bkt/denied/out", "denied/out/_scorer_run/run.json"),
                             ("s3://bkt/scored", "scored/_manifest.json")]:
        r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.txt"), "-o", output,
                                      "--model", str(tiny_model)], env=env)
        one_error_line(r, 5, output, fragment, "ACCESS_DENIED")


def test_registry_list_with_a_malformed_version_is_one_line(tiny_model, tmp_path):
    from jobs import registry as registry_cli
    from scorer import registry

    reg = tmp_path / "reg"
    registry.register(reg, tiny_model)
    spec = json.loads((reg / "1" / "scorer_model.json").read_text())
    (reg / "1" / "scorer_model.json").write_text(json.dumps({**spec, "base": "x"}))
    r = CliRunner().invoke(registry_cli.main, ["list", str(reg)])
    one_error_line(r, 4, f"{reg / '1' / 'scorer_model.json'}: 'base' must be a JSON object")
    (reg / "1" / "scorer_model.json").write_text(json.dumps(spec))
    (reg / "_aliases").mkdir()
    (reg / "_aliases" / "champion").write_text("[1]")
    r = CliRunner().invoke(registry_cli.main, ["list", str(reg)])
    one_error_line(r, 4, f"{reg / '_aliases' / 'champion'}: not a valid alias file")


# --------------------------------------------------------------------------- options and modes

TXT = SAMPLE / "sst2_dev_sample.txt"


@pytest.mark.parametrize("args, message", [
    (["--once"], "--once needs --follow DIR"),
    (["--require-marker"], "--require-marker needs --follow DIR"),
    (["--poll-seconds", "1"], "--poll-seconds needs --follow DIR"),
    (["--settle-seconds", "5"], "--settle-seconds needs --follow DIR"),  # even at its default
    (["--workers", "2"], "--workers needs --engine ray"),
    (["--address", "auto"], "--address needs --engine ray"),
    (["--engine", "local", "--workers", "1"], "--workers needs --engine ray"),
    (["--long-text", "truncate", "--max-windows", "4"], "--max-windows needs --long-text window"),
    (["--engine", "ray", "--flush-seconds", "5"], "--flush-seconds"),
])
def test_a_mode_flag_outside_its_mode_is_a_usage_error(tmp_path, args, message):
    # Refused before the model is read: without the refusal this missing model would exit 4.
    r = CliRunner().invoke(main, ["run", str(TXT), "-o", str(tmp_path / "o"), "--model",
                                  str(tmp_path / "no-model"), *args])
    assert r.exit_code == 2, r.output
    assert f"Error: {message}" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--fail-on-empty"], "--fail-on-empty does not apply to --follow"),
    (["--engine", "ray"], "--engine ray does not follow directories"),
    (["--workers", "2"], "--workers needs --engine ray"),
])
def test_a_flag_that_does_not_apply_to_follow_is_a_usage_error(tmp_path, args, message):
    (tmp_path / "landing").mkdir()
    r = CliRunner().invoke(main, ["run", "--follow", str(tmp_path / "landing"), "-o", str(tmp_path / "o"),
                                  "--model", str(tmp_path / "no-model"), "--once", *args])
    assert r.exit_code == 2, r.output
    assert f"Error: {message}" in r.stderr
    assert not (tmp_path / "o").exists()


def test_every_run_option_takes_its_default_from_the_dataclass():
    from dataclasses import fields

    from scorer.cli import run
    from scorer.options import FollowOptions, RayOptions, RunOptions

    params = {p.name: p for p in run.params}
    internal = {"queue_depth"}  # a tuning knob of the local engine, not an option
    for options in (RunOptions, FollowOptions, RayOptions):
        for f in fields(options):
            if f.name not in internal:
                assert f.name in params, f"{options.__name__}.{f.name} is not a `scorer run` option"
                assert params[f.name].default == f.default, f.name


@pytest.fixture
def fake_engines(monkeypatch):
    """The three engines replaced by fakes that record their arguments and stop the run (exit 3)."""
    import sys
    import types

    import scorer
    from scorer import follow, pipeline
    from scorer.errors import InputError

    seen = {}

    def engine(name):
        def run(*args, **kwargs):
            seen[name] = (args, kwargs)
            raise InputError("stopped by the test")
        return run

    monkeypatch.setattr(pipeline, "run", engine("local"))
    monkeypatch.setattr(follow, "follow", engine("follow"))
    ray_engine = types.SimpleNamespace(run=engine("ray"))  # no Ray started
    monkeypatch.setitem(sys.modules, "scorer.ray_engine", ray_engine)
    monkeypatch.setattr(scorer, "ray_engine", ray_engine, raising=False)
    return seen


def stopped_by_the_fake(r) -> None:
    assert r.exit_code == 3 and r.stderr.strip() == "error: stopped by the test", r.output


def test_the_options_given_reach_the_engine(fake_engines, tmp_path):
    from scorer.options import FollowOptions, RayOptions, RunOptions

    stopped_by_the_fake(invoke("run", TXT, "-o", tmp_path / "o", "--format", "text", "--keep-columns",
                               "text,x", "--flush-rows", "7", "--drop-text", "--max-errors", "1%",
                               "--threads", "1", "--long-text", "window", "--max-windows", "2"))
    args, _ = fake_engines["local"]
    assert args == ([str(TXT)], str(tmp_path / "o"), None, RunOptions(
        format="text", keep_columns=["text", "x"], rows_per_file=7, drop_text=True, max_errors="1%",
        threads=1, long_text="window", max_windows=2))
    (tmp_path / "landing").mkdir()
    stopped_by_the_fake(invoke("run", "--follow", tmp_path / "landing", "-o", tmp_path / "o", "--once",
                               "--settle-seconds", "0", "--poll-seconds", "0.1", "--log-format", "text",
                               "--engine", "local"))
    args, kwargs = fake_engines["follow"]
    assert args == (str(tmp_path / "landing"), str(tmp_path / "o"), None, RunOptions())
    assert {k: kwargs[k] for k in vars(FollowOptions())} == vars(FollowOptions(
        once=True, settle_seconds=0, poll_seconds=0.1))
    stopped_by_the_fake(invoke("run", TXT, "-o", tmp_path / "o", "--engine", "ray", "--workers", "2",
                               "--address", "auto"))
    args, kwargs = fake_engines["ray"]
    assert args == ([str(TXT)], str(tmp_path / "o"), None, RunOptions())
    assert {k: kwargs[k] for k in vars(RayOptions())} == vars(RayOptions(address="auto", workers=2))


def test_compressed_inputs_by_extension_and_on_stdin(tiny_model, tmp_path):
    import gzip

    data = "".join(json.dumps({"text": f"review {i}: a fine film"}) + "\n" for i in range(49)).encode()
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(data))
    for args in ([tmp_path / "c.jsonl.gz"], [tmp_path / "c.jsonl.gz", "--format", "jsonl"]):
        out = tmp_path / f"o{len(args)}"
        r = invoke("run", *args, "-o", out, "--model", tiny_model)
        assert r.exit_code == 0, r.output
        assert f"scored 49 rows into {out}/" in r.stderr
        assert read_output(out).column("error").null_count == 49
    r = invoke("run", "-", "--format", "jsonl", "-o", tmp_path / "stdin", "--model", tiny_model,
               input=gzip.compress(data))
    assert r.exit_code == 0 and "scored 49 rows" in r.stderr, r.output


def test_help_examples_cite_sample_files_that_exist():
    """`scorer --help` cited sample_data/reviews.parquet, which was never shipped."""
    import re

    from tests.conftest import REPO

    for args in [[], *[[name] for name in main.commands]]:
        r = CliRunner().invoke(main, [*args, "--help"])
        assert r.exit_code == 0, r.output
        for cited in re.findall(r"sample_data/[\w.]+", r.output):
            assert (REPO / cited).exists(), f"scorer {' '.join(args)} --help cites {cited}"
    assert "sample_data/sst2_dev_sample.parquet" in CliRunner().invoke(main, ["--help"]).output


def test_a_usage_error_keeps_click_s_three_lines_exit_2(tmp_path):
    """As the README says: click's Usage: / Try / Error: lines, not one error: line."""
    r = CliRunner().invoke(main, ["run", "x.parquet", "-o", str(tmp_path / "o"), "--once"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("Usage: ") and lines[-1] == "Error: --once needs --follow DIR"


def test_an_excel_csv_with_a_byte_order_mark_and_leading_zeros(tiny_model, tmp_path):
    (tmp_path / "export.csv").write_bytes("\ufeffacct,zip,text\r\n007,02139,a fine film\r\n"
                                          "012,10001,a dull film\r\n".encode())
    out = tmp_path / "o"
    r = invoke("run", tmp_path / "export.csv", "-o", out, "--model", tiny_model, "--id-column", "acct")
    assert r.exit_code == 0, r.output
    t = read_output(out)
    assert t.column_names[:3] == ["acct", "zip", "text"]
    assert t.column("acct").to_pylist() == ["007", "012"] and t.column("zip").to_pylist() == ["02139", "10001"]
    r = invoke("run", tmp_path / "export.csv", "-o", tmp_path / "o2", "--model", tiny_model,
               "--id-column", "acct", "--csv-types", "none")
    assert r.exit_code == 0, r.output


# Runs `scorer` in a fresh process and reports, on stdout, its exit code and which of the heavy
# modules it imported (the CLI writes on stderr).
WITHOUT_TENSORFLOW = """
import json, sys
from scorer.cli import main
try:
    main(sys.argv[1:], prog_name="scorer")
    code = 0
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("tensorflow", "keras", "keras_hub", "tokenizers") if m in sys.modules)
print(json.dumps({"exit_code": code, "imported": heavy}))
"""


def run_in_a_fresh_process(*args):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def refusal_setups(tiny_model, tmp_path):
    """name -> (arguments after `run`, exit code, a fragment of the error), set up in tmp_path."""
    from scorer import commit

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a fine film", "label": 1, "input_label": 0}\n')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.csv").write_text("x\n")
    broken = tmp_path / "broken_model"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "weights.safetensors").write_bytes(b"not the weights")
    locked = tmp_path / "locked"
    lock = commit.OutputLock(locked)
    lock.acquire()  # held by this process while the fresh one tries
    model = ["--model", tiny_model]
    return lock, {
        "not empty": ([TXT, "-o", tmp_path / "foreign", *model], 5, "notes.csv"),
        "output inside the input": ([tmp_path, "-o", tmp_path / "o", *model], 2, "inside"),
        "column clash": ([src, "-o", tmp_path / "o", "--keep-columns", "text,label,input_label",
                          *model], 5, "'input_label' is taken too"),
        "lock held": ([TXT, "-o", locked, *model], 8, "another scorer run is writing there"),
        "bad option": ([TXT, "-o", tmp_path / "o", "--max-errors", "lots", *model], 6, "--max-errors"),
        "missing input": ([tmp_path / "nothing.parquet", "-o", tmp_path / "o", *model], 3, "nothing.parquet"),
        "missing model": ([TXT, "-o", tmp_path / "o", "--model", tmp_path / "no-model"], 4, "not found"),
        "corrupt weights": ([TXT, "-o", tmp_path / "o", "--model", broken], 4, "does not match"),
        "no drift reference": ([TXT, "-o", tmp_path / "o", "--max-drift", "0.25", *model], 4, "reference"),
        "follow, lock held": (["--follow", tmp_path / "foreign", "-o", locked, "--once", *model], 8,
                              "another scorer run is writing there"),
    }


def test_every_refusal_comes_before_tensorflow_is_imported(tiny_model, tmp_path):
    """A refused run answers at once: nothing it checks needs the model loaded (issue 21: every
    refusal took 6-8 s of model loading first)."""
    lock, setups = refusal_setups(tiny_model, tmp_path)
    try:
        for name, (args, code, fragment) in setups.items():
            report, stderr = run_in_a_fresh_process("run", *args)
            assert report == {"exit_code": code, "imported": []}, (name, stderr)
            assert stderr.startswith("error: ") and fragment in stderr, (name, stderr)
    finally:
        lock.release()
    assert not (tmp_path / "o").exists()


def test_a_finished_run_is_recognised_before_tensorflow_is_imported(tiny_model, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", TXT, "-o", out, "--model", tiny_model).exit_code == 0
    report, stderr = run_in_a_fresh_process("run", TXT, "-o", out, "--model", tiny_model)
    assert report == {"exit_code": 0, "imported": []}, stderr
    assert stderr.startswith("already complete: 272 rows")


def test_the_loading_line_reaches_the_terminal_while_tensorflow_silences_stderr():
    """runtime.start points descriptor 2 at /dev/null while TensorFlow imports: the loading line
    stood still for that part of the load."""
    import os
    import pty
    import time

    from scorer.cli import Messages

    master, follower = pty.openpty()
    terminal = os.fdopen(follower, "w")
    try:
        with Messages(stream=terminal).loading("tiny"):
            saved, devnull = os.dup(follower), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, follower)  # as runtime.start does to stderr
            time.sleep(1.6)
            os.dup2(saved, follower)
            os.close(saved)
            os.close(devnull)
        os.set_blocking(master, False)
        try:
            shown = os.read(master, 1 << 16).decode()
        except BlockingIOError:  # nothing reached the terminal
            shown = ""
    finally:
        terminal.close()
        os.close(master)
    assert shown.count("loading model tiny") >= 3, shown
