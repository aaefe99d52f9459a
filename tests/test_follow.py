"""--follow: every landed file scored exactly once, across restarts, kills and SIGTERM."""

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
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO


def land(landing, name, n, start=0):
    """Write a file the way a producer should: under a temp name, then rename."""
    tmp = landing / f".{name}.tmp"
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"text": [f"review {start + i}: a fine film" for i in range(n)]}), tmp)
    else:
        tmp.write_text("".join(json.dumps({"text": f"review {start + i}: a fine film"}) + "\n"
                               for i in range(n)))
    os.replace(tmp, landing / name)


def texts(out):
    return sorted(ds.dataset(out, format="parquet").to_table().column("text").to_pylist())


def expected(*ranges):
    return sorted(f"review {i}: a fine film" for a, b in ranges for i in range(a, b))


def follow_once(landing, out, model, *extra):
    return CliRunner().invoke(main, ["run", "--follow", str(landing), "-o", str(out), "--once",
                                     "--model", str(model), *extra])


def test_once_scores_what_is_there_and_a_rerun_only_what_is_new(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    land(landing, "a.jsonl", 30)
    land(landing, "b.parquet", 20, start=30)
    (landing / ".c.jsonl.tmp").write_text('{"text": "still being written"}\n')
    (landing / "_ignored.jsonl").write_text('{"text": "not data"}\n')
    r = follow_once(landing, out, tiny_model)
    assert r.exit_code == 0, r.output
    assert f"scored 2 new files from {landing}/ into {out}/ (2 files, 50 rows in all)" in r.stderr
    assert texts(out) == expected((0, 50))

    land(landing, "c.jsonl", 5, start=50)
    r = follow_once(landing, out, tiny_model)
    assert r.exit_code == 0, r.output
    assert "scored 1 new files" in r.stderr and "(3 files, 55 rows in all)" in r.stderr
    assert texts(out) == expected((0, 55))
    m = json.loads((out / "_manifest.json").read_text())
    assert m["units_done"] == ["a.jsonl", "b.parquet", "c.jsonl"] and m["rows_out"] == 55
    assert not (out / "_SUCCESS").exists()  # a followed output never finishes

    assert follow_once(landing, out, tiny_model).exit_code == 0  # nothing new: nothing changes
    assert texts(out) == expected((0, 55))


def test_require_marker_takes_only_directories_with_success(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    (landing / "day1").mkdir(parents=True)
    (landing / "day2").mkdir()
    land(landing / "day1", "part-0.parquet", 10)
    land(landing / "day2", "part-0.parquet", 10, start=10)
    (landing / "day1" / "_SUCCESS").write_text("")
    land(landing, "loose.jsonl", 3, start=100)
    r = follow_once(landing, out, tiny_model, "--require-marker")
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 10))


def test_a_killed_follower_restarts_where_it_stopped(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    for k in range(3):
        land(landing, f"f{k}.jsonl", 40, start=40 * k)
    args = ["run", "--follow", str(landing), "-o", str(out), "--model", str(tiny_model),
            "--rows-per-file", "15", "--chunk-rows", "10", "--poll-seconds", "0.2"]
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args],  # dies inside the 2nd file
                          env={**os.environ, "SCORER_CRASH_AT": "checkpoint:6"},
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = json.loads((out / "_scorer_run" / "progress.json").read_text())
    assert state["units_done"] == ["f0.jsonl"] and state["unit"] == "f1.jsonl" and state["rows"] > 0
    r = CliRunner().invoke(main, [*args, "--once"])
    assert r.exit_code == 0, r.output
    all_texts = texts(out)
    assert all_texts == expected((0, 120))  # every row once: no duplicate, no gap


def test_sigterm_stops_a_follower_cleanly(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "scorer.cli", "run", "--follow", str(landing),
                             "-o", str(out), "--model", str(tiny_model), "--poll-seconds", "0.2"],
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        land(landing, "a.jsonl", 7)
        deadline = time.time() + 120
        manifest = out / "_manifest.json"
        while not (manifest.exists() and json.loads(manifest.read_text())["units_done"] == ["a.jsonl"]):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "stopped by SIGTERM" in stderr
    land(landing, "b.jsonl", 3, start=7)
    assert follow_once(landing, out, tiny_model).exit_code == 0
    assert texts(out) == expected((0, 10))
