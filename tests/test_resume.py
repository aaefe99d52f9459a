"""Crash safety: a real `scorer run` process is SIGKILLed at many points, then the same command
resumes it; the output must hold every input row exactly once, scored as an uninterrupted run
scores it. Also: SIGTERM stops cleanly, and a second run into a busy directory fails fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO, SAMPLE

# 300 JSONL rows (8 of them bad) then 300 Parquet rows; a checkpoint every 70 input rows, chunks
# of 32 rows: checkpoints fall inside chunks and across the two inputs.
ARGS = ["--chunk-rows", "32", "--rows-per-file", "70"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    lines = [json.dumps({"text": t, "n": i}) for i, t in enumerate(texts)]
    for i in range(5, 300, 40):
        lines[i] = "{broken json" if i % 80 == 5 else json.dumps({"text": "", "n": i})
    (tmp / "a.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"text": texts[::-1], "n": list(range(300))}), tmp / "b.parquet",
                   row_group_size=50)
    return [str(tmp / "a.jsonl"), str(tmp / "b.parquet")]


def cli_args(inputs, out, model, *extra):
    return ["run", *inputs, "-o", str(out), "--model", str(model), *ARGS, *extra]


def rows(out) -> list[dict]:
    return ds.dataset(out, format="parquet").to_table().sort_by("row_id").to_pylist()


@pytest.fixture(scope="module")
def reference(inputs, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model))
    assert r.exit_code == 0, r.output
    return rows(out)


def killed_run(inputs, out, model, crash_at, *extra):
    env = {**os.environ, "SCORER_CRASH_AT": crash_at}
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *cli_args(inputs, out, model, *extra)],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()


def assert_exactly_once(out, reference):
    got = rows(out)
    ids = [r["row_id"] for r in got]
    assert len(ids) == len(set(ids)) == 600  # no duplicates, no gaps
    assert [r["row_id"] for r in reference] == ids
    for a, b in zip(got, reference):
        assert a["label"] == b["label"] and a["error"] == b["error"] and a["n"] == b["n"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5) if a["score"] is not None else b["score"] is None
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or "_scorer_run" in p.parts]
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == m["rows_out"] == 600 and m["rows_with_error"] == 8
    assert sum(p["rows"] for p in m["parts"]) == 600
    return m


# Where the process dies: "<point>:<n>" = the n-th time it passes the point (scorer/faults.py).
CRASH_POINTS = [
    ("read:3", "while reading (third chunk read, nothing committed)"),
    ("read:14", "while reading the second input"),
    ("encode:5", "after tokenizing a chunk"),
    ("infer:4", "after scoring a chunk, before it is written"),
    ("write:3", "with a part file half written"),
    ("write:12", "with a part file half written, after checkpoints"),
    ("commit:3", "part files renamed, checkpoint not yet recorded"),
    ("checkpoint:2", "just after a checkpoint"),
    ("checkpoint:11", "after the last checkpoint (of 11 splits), before the manifest"),
    ("manifest:1", "manifest written, _SUCCESS not"),
]


@pytest.mark.parametrize("crash_at, when", CRASH_POINTS, ids=[c for c, _ in CRASH_POINTS])
def test_sigkill_then_resume_gives_every_row_exactly_once(inputs, tiny_model, reference, tmp_path,
                                                          crash_at, when):
    out = tmp_path / "out"
    killed_run(inputs, out, tiny_model, crash_at)
    progress = out / "_scorer_run" / "progress.json"  # absent: killed before writing began
    started_writing = progress.exists()
    committed = json.loads(progress.read_text())["rows"] if started_writing else 0
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model))
    assert r.exit_code == 0, r.output
    m = assert_exactly_once(out, reference)
    assert m["resumed"] == started_writing and m["rows_resumed_from_checkpoint"] == committed
    # committed rows are not scored again: only the rest reached the model
    if committed:
        assert f"resumed after {committed:,} committed rows" in r.stderr


def test_resume_with_dead_letters_and_partitions(inputs, tiny_model, tmp_path):
    out, dead = tmp_path / "out", tmp_path / "dead"
    extra = ["--dead-letter", str(dead), "--partition-by", "label"]
    killed_run(inputs, out, tiny_model, "write:9", *extra)
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, *extra))
    assert r.exit_code == 0, r.output
    scored = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    letters = ds.dataset(dead, format="parquet").to_table()
    assert scored.num_rows == 592 and letters.num_rows == 8
    ids = scored.column("row_id").to_pylist()
    assert len(set(ids)) == 592
    assert sorted(letters.column("position").to_pylist()) == list(range(5, 300, 40))
    assert not [p for p in dead.rglob("*") if p.name.endswith(".tmp")]


def test_a_changed_input_refuses_to_resume(inputs, tiny_model, tmp_path):
    out = tmp_path / "out"
    killed_run(inputs, out, tiny_model, "checkpoint:2")
    r = CliRunner().invoke(main, cli_args(inputs[:1], out, tiny_model))
    assert r.exit_code == 5
    assert "holds an unfinished run that cannot be resumed by this one (its inputs were" in r.stderr
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, "--max-length", "32"))
    assert r.exit_code == 5 and "its --max-length was None" in r.stderr


def test_sigterm_stops_cleanly_a_busy_directory_fails_fast_and_the_run_resumes(tiny_model, tmp_path):
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    pq.write_table(pa.table({"text": texts * 40}), tmp_path / "big.parquet")  # 12,000 rows
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "big.parquet"), "-o", str(out), "--model", str(tiny_model),
            "--chunk-rows", "100", "--rows-per-file", "500"]
    # Paused before submitting its 6th chunk, the run has committed part-00000-00000 (5 chunks, 500
    # rows) and is still running whatever the machine's speed; SIGTERM ends the pause.
    env = {**os.environ, "SCORER_PAUSE_AT": "infer:6"}
    proc = subprocess.Popen([sys.executable, "-m", "scorer.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "part-00000-00000.parquet").exists():  # it has committed a part
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.02)
        second = CliRunner().invoke(main, args)
        assert second.exit_code == 8
        assert second.stderr.strip() == (f"error: {out}: another scorer run is writing there (pid "
                                         f"{proc.pid} on {os.uname().nodename} since "
                                         f"{second.stderr.split(' since ')[1].split(')')[0]}); wait for "
                                         "it or use another output directory")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == ("error: stopped by SIGTERM; committed part files are "
                                               "kept: run the same command again to resume")
    assert not (out / "_SUCCESS").exists() and not list(out.glob(".*.tmp"))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    table = ds.dataset(out, format="parquet").to_table()
    ids = table.column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 12_000


def snapshot(out) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_the_same_command_on_a_finished_run_is_already_complete(inputs, tiny_model, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, cli_args(inputs, out, tiny_model)).exit_code == 0
    finished = json.loads((out / "_manifest.json").read_text())["finished"]
    before = snapshot(out)
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model))  # an Airflow retry, a cron tick
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [f"already complete: 600 rows, finished at {finished}: nothing "
                                     f"rescored in {out}/ (--overwrite scores again)"]
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS", "_manifest.json", *sorted(p.name for p in out.glob("part-*"))]
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, "--max-length", "32"))
    assert r.exit_code == 5
    assert r.stderr.strip() == (f"error: {out}: holds a finished run of another command (its "
                                "--max-length was None); pass --overwrite to replace it")
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, "--overwrite"))
    assert r.exit_code == 0 and r.stderr.startswith("scored 592 of 600 rows")


def test_sigterm_after_success_does_not_fail_a_finished_run(inputs, tiny_model, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SCORER_TERM_AT": "success"}  # SIGTERM lands just after _SUCCESS
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *cli_args(inputs, out, tiny_model)],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("scored 592 of 600 rows")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == [
        "_SUCCESS", "_manifest.json"]


# --long-text window: windows of 16 tokens (most sample sentences need two or more), at most 3
WINDOWED = ["--long-text", "window", "--max-length", "16", "--max-windows", "3"]


@pytest.fixture(scope="module")
def windowed_reference(inputs, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref-windowed") / "out"
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, *WINDOWED))
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("crash_at", ["write:3", "checkpoint:2"])
def test_windowed_rows_resume_exactly_once(inputs, tiny_model, windowed_reference, tmp_path, crash_at):
    out = tmp_path / "out"
    killed_run(inputs, out, tiny_model, crash_at, *WINDOWED)
    r = CliRunner().invoke(main, cli_args(inputs, out, tiny_model, *WINDOWED))
    assert r.exit_code == 0, r.output
    reference = rows(windowed_reference)
    m = assert_exactly_once(out, reference)
    assert [r["windows"] for r in rows(out)] == [r["windows"] for r in reference]
    expected = json.loads((windowed_reference / "_manifest.json").read_text())
    assert m["rows_windowed"] == expected["rows_windowed"] > 100
    assert m["rows_truncated"] == expected["rows_truncated"] > 0
