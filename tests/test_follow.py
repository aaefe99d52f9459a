"""--follow: every landed file scored exactly once, across restarts, kills and SIGTERM."""

from __future__ import annotations

import json
import os
import re
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


def ledger(out) -> dict:
    """The follower's state in progress.json: entry -> (status, split, rows committed), each
    entry's rows as its split records them."""
    state = json.loads((out / "_scorer_run" / "progress.json").read_text())
    return {e["name"]: (e["status"], e["split"], state["splits"][e["split"]]["rows"])
            for e in state["engine_state"]["entries"]}


def three_landed_files(tmp_path, model):
    """A landing directory with f0..f2.jsonl (40 rows each), and a follow command over it that
    commits every 15 rows."""
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    for k in range(3):
        land(landing, f"f{k}.jsonl", 40, start=40 * k)
    args = ["run", "--follow", str(landing), "-o", str(out), "--model", str(model),
            "--rows-per-file", "15", "--chunk-rows", "10", "--poll-seconds", "0.2"]
    return landing, out, args


def test_a_killed_follower_restarts_where_it_stopped(tiny_model, tmp_path):
    landing, out, args = three_landed_files(tmp_path, tiny_model)
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args],  # dies inside the 2nd file
                          env={**os.environ, "SCORER_CRASH_AT": "checkpoint:5"},
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # f0.jsonl's three commits (15, 30, 40 rows), then f1.jsonl's first two
    assert ledger(out) == {"f0.jsonl": ("scored", "00000", 40), "f1.jsonl": ("scoring", "00001", 30)}
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


def test_a_restarted_follower_finishes_its_entry_in_progress_before_an_earlier_name(tiny_model, tmp_path):
    landing, out, args = three_landed_files(tmp_path, tiny_model)
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args],  # dies inside f1.jsonl
                          env={**os.environ, "SCORER_CRASH_AT": "checkpoint:5"},
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ledger(out)["f1.jsonl"] == ("scoring", "00001", 30)
    land(landing, "a.jsonl", 5, start=120)  # lands meanwhile, and sorts before the half-done entry
    r = CliRunner().invoke(main, [*args, "--once"])
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 125))  # no row of f1.jsonl twice
    m = json.loads((out / "_manifest.json").read_text())
    # f1.jsonl first; then a.jsonl and f2.jsonl in name order, or f2.jsonl first while a.jsonl settles
    assert m["units_done"][:2] == ["f0.jsonl", "f1.jsonl"]
    assert sorted(m["units_done"][2:]) == ["a.jsonl", "f2.jsonl"]


def test_a_bad_entry_is_recorded_as_failed_and_the_follower_goes_on(tiny_model, tmp_path):
    landing, out, dead = tmp_path / "landing", tmp_path / "out", tmp_path / "dead"
    landing.mkdir()
    land(landing, "a.jsonl", 10)
    (landing / "b.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")  # a corrupt gzip file
    pq.write_table(pa.table({"body": ["no text column here"]}), landing / "c.parquet")
    pq.write_table(pa.table({"text": ["a column clash"], "label": ["x"], "input_label": ["y"]}),
                   landing / "d.parquet")
    (landing / "e.parquet").write_bytes(b"PAR1 not a parquet file")
    land(landing, "f.jsonl", 5, start=40)
    for in_flight in ("g.jsonl._COPYING_", "h.jsonl.gstmp", "i.jsonl.filepart", "j.jsonl~"):
        (landing / in_flight).write_text('{"text": "half written"}\n{"te')
    r = follow_once(landing, out, tiny_model, "--dead-letter", str(dead))
    assert r.exit_code == 7, r.output
    for name in ("b.jsonl.gz", "c.parquet", "d.parquet", "e.parquet"):
        assert f"error: entry {name} failed" in r.stderr
    m = json.loads((out / "_manifest.json").read_text())
    assert m["units_done"] == ["a.jsonl", "f.jsonl"]
    failed = {e["name"]: e for e in m["entries"] if e["status"] == "failed"}
    assert sorted(failed) == ["b.jsonl.gz", "c.parquet", "d.parquet", "e.parquet"]
    assert "not readable as gzip" in failed["b.jsonl.gz"]["reason"] and "'text'" in failed["c.parquet"]["reason"]
    assert "'label'" in failed["d.parquet"]["reason"]
    assert texts(out) == expected((0, 10), (40, 45))
    notes = ds.dataset(dead, format="parquet").to_table().to_pylist()
    assert sorted(n["source"] for n in notes) == sorted(str(landing / n) for n in failed)
    assert all(n["error"].startswith("entry failed: ") for n in notes)

    r = follow_once(landing, out, tiny_model, "--dead-letter", str(dead))
    assert r.exit_code == 0, r.output  # failed entries are not tried again on every restart
    assert "error:" not in r.stderr and texts(out) == expected((0, 10), (40, 45))


def _write_slowly(path, lines, pause, started):
    """A producer writing in place (scp, curl, cp): a line every `pause` seconds."""
    started.wait(120)
    with open(path, "a") as f:
        for line in lines:
            f.write(line)
            f.flush()
            time.sleep(pause)


def test_a_file_written_in_place_is_taken_only_once_it_has_settled(tiny_model, tmp_path):
    import threading

    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    lines = [json.dumps({"text": f"review {i}: a fine film"}) + "\n" for i in range(12)]
    target = landing / "a.jsonl"
    target.write_text("".join(lines[:2]))
    started = threading.Event()
    writer = threading.Thread(target=_write_slowly, args=(target, lines[2:], 0.3, started))
    writer.start()
    watcher = threading.Thread(target=lambda: (_wait_for(out / "_scorer_run" / "lock"), started.set()))
    watcher.start()
    try:
        r = follow_once(landing, out, tiny_model, "--settle-seconds", "1.5", "--poll-seconds", "0.2")
    finally:
        started.set()
        writer.join()
        watcher.join()
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 12))


def _wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)


def _appending_after_first_read(monkeypatch, path, extra: str):
    """Make the first read of `path` be followed by a producer appending to it: the entry changes
    after it was read (a producer that paused longer than the settle time)."""
    from scorer import source

    real = source.read_chunks
    appended = []

    def read_chunks(inputs, *args, **kwargs):
        yield from real(inputs, *args, **kwargs)
        if not appended and any(i.path == str(path) for i in inputs):
            appended.append(True)
            with open(path, "a") as f:
                f.write(extra)

    monkeypatch.setattr(source, "read_chunks", read_chunks)


def test_an_entry_that_changed_while_it_was_read_is_scored_again_once_settled(tiny_model, tmp_path,
                                                                               monkeypatch):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    land(landing, "a.jsonl", 6)
    _appending_after_first_read(monkeypatch, landing / "a.jsonl",
                                "".join(json.dumps({"text": f"review {i}: a fine film"}) + "\n"
                                        for i in range(6, 9)))
    r = follow_once(landing, out, tiny_model, "--settle-seconds", "0.5", "--poll-seconds", "0.1")
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 9))  # all of it, once: nothing of the first read was kept


def test_an_entry_that_changed_after_some_rows_were_committed_is_failed(tiny_model, tmp_path,
                                                                        monkeypatch):
    from scorer import faults

    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    land(landing, "a.jsonl", 25)
    land(landing, "b.jsonl", 5, start=100)
    real_point, checkpoints = faults.point, []

    def point(name):  # the producer appends once a.jsonl's first 20 rows are committed
        real_point(name)
        if name == "checkpoint" and len(checkpoints) < 2:
            checkpoints.append(name)
            if len(checkpoints) == 2:
                with open(landing / "a.jsonl", "a") as f:
                    f.write(json.dumps({"text": "late"}) + "\n")

    monkeypatch.setattr(faults, "point", point)
    r = follow_once(landing, out, tiny_model, "--settle-seconds", "0.5", "--rows-per-file", "10",
                    "--chunk-rows", "10")
    assert r.exit_code == 7, r.output
    assert "error: entry a.jsonl failed" in r.stderr and "1 failed: a.jsonl" in r.stderr
    m = json.loads((out / "_manifest.json").read_text())
    failed = [e for e in m["entries"] if e["status"] == "failed"]
    assert [e["name"] for e in failed] == ["a.jsonl"] and failed[0]["rows"] == 20
    assert "changed" in failed[0]["reason"]
    assert m["units_done"] == ["b.jsonl"] and texts(out) == expected((0, 20), (100, 105))


def test_a_follower_picks_up_a_new_champion_between_entries(tiny_model, tmp_path):
    from scorer import registry
    from tests.conftest import make_tiny_model

    reg = tmp_path / "registry"
    v1 = registry.register(reg, tiny_model)
    v2 = registry.register(reg, make_tiny_model(tmp_path / "tiny2", seed=2, name="tiny2"))
    registry.set_alias(reg, "champion", v1)
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    ref = f"{reg}@champion"
    manifest = out / "_manifest.json"

    def done():
        return json.loads(manifest.read_text())["units_done"] if manifest.exists() else []

    proc = subprocess.Popen([sys.executable, "-m", "scorer.cli", "run", "--follow", str(landing),
                             "-o", str(out), "--model", ref, "--poll-seconds", "0.2",
                             "--settle-seconds", "0"], stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 120
        land(landing, "a.jsonl", 4)
        while done() != ["a.jsonl"]:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        registry.set_alias(reg, "champion", v2)
        land(landing, "b.jsonl", 4, start=4)
        while done() != ["a.jsonl", "b.jsonl"]:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    land(landing, "c.jsonl", 4, start=8)  # and a restart after the promotion
    r = follow_once(landing, out, ref, "--settle-seconds", "0")
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 12))
    m = json.loads(manifest.read_text())
    versions = {e["name"]: e["model"]["path"] for e in m["entries"]}
    assert versions == {"a.jsonl": str(reg / "1"), "b.jsonl": str(reg / "2"), "c.jsonl": str(reg / "2")}
    part_models = {}
    for part in m["parts"]:
        meta = pq.read_schema(out / part["file"]).metadata[b"scorer.model"]
        rows = pq.read_table(out / part["file"]).column("text").to_pylist()
        for text in rows:
            part_models[int(text.split()[1].rstrip(":"))] = json.loads(meta)["name"]
    assert part_models == {**{i: "tiny" for i in range(4)}, **{i: "tiny2" for i in range(4, 12)}}


def test_max_errors_applies_to_each_entry(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    bad = json.dumps({"text": ""}) + "\n"
    (landing / "a.jsonl").write_text(bad * 3)
    for name, start in (("b.jsonl", 0), ("c.jsonl", 2)):  # 2 bad rows each: 4 in all
        (landing / name).write_text(bad * 2 + "".join(json.dumps({"text": f"review {i}: a fine film"}) + "\n"
                                                      for i in range(start, start + 2)))
    r = follow_once(landing, out, tiny_model, "--max-errors", "2", "--settle-seconds", "0")
    assert r.exit_code == 7, r.output
    assert "error: entry a.jsonl failed" in r.stderr and "--max-errors" in r.stderr
    m = json.loads((out / "_manifest.json").read_text())
    assert m["units_done"] == ["b.jsonl", "c.jsonl"] and m["units_failed"] == ["a.jsonl"]
    assert m["rows_with_error"] == 4 and sorted(t for t in texts(out) if t) == expected((0, 4))


def test_an_entry_whose_rows_are_all_bad_fails_unless_max_errors_allows_it(tiny_model, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    (landing / "a.jsonl").write_bytes(b'{"text": "caf\xe9"}\n' * 3)
    land(landing, "b.jsonl", 2)
    r = follow_once(landing, out, tiny_model, "--settle-seconds", "0")
    assert r.exit_code == 7, r.output
    assert ("error: entry a.jsonl failed, recorded and skipped: all 3 rows are bad (3 invalid UTF-8): "
            "nothing was scored") in r.stderr
    assert json.loads((out / "_manifest.json").read_text())["units_done"] == ["b.jsonl"]
    r = follow_once(landing, tmp_path / "out2", tiny_model, "--settle-seconds", "0", "--max-errors", "100%")
    assert r.exit_code == 0, r.output


def test_an_entry_record_is_typed_inside_and_written_as_before():
    """follow.EntryRecord: its Signature and ModelId typed; its JSON (in the checkpoint and the
    manifest) as a follower wrote it (tests/manifests/5c0b1a1-follow.json)."""
    from scorer.follow import EntryRecord, Signature
    from scorer.modelid import ModelId

    written = json.loads((REPO / "tests" / "manifests" / "5c0b1a1-follow.json").read_text())["entries"][0]
    record = EntryRecord.from_json(written)
    assert isinstance(record.signature, Signature) and isinstance(record.model, ModelId)
    assert record.model.path == "/data/tiny" and record.signature.size == 50131
    assert record.to_json() == written and list(record.to_json()) == list(written)
    taken = EntryRecord("b.jsonl", "scoring", Signature(3, 4, "d"))
    assert taken.to_json()["model"] is None and EntryRecord.from_json(taken.to_json()) == taken


def rows_by_id(out) -> dict:
    table = ds.dataset(out, format="parquet").to_table()
    return {r["row_id"]: (r["label"], r["probabilities"], r["error"]) for r in table.to_pylist()}


def test_follow_writes_the_rows_and_counts_a_batch_run_writes(tiny_model, tmp_path):
    """Issue 22: each landed entry is a split, so the same files give the same rows, counts and
    part names (part-<split>-<n>) through `scorer run` and `scorer run --follow --once`."""
    landing = tmp_path / "landing"
    landing.mkdir()
    land(landing, "a.jsonl", 30)
    land(landing, "b.parquet", 20, start=30)
    (landing / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                             for t in ["review 50: a fine film", "", "review 52: dull"]))
    files = [str(p) for p in sorted(landing.iterdir())]
    options = ["--model", str(tiny_model), "--rows-per-file", "7", "--chunk-rows", "5"]
    r = CliRunner().invoke(main, ["run", *files, "-o", str(tmp_path / "batch"), *options])
    assert r.exit_code == 0, r.output
    r = follow_once(landing, tmp_path / "followed", tiny_model, *options[2:], "--settle-seconds", "0")
    assert r.exit_code == 0, r.output
    batch, followed = rows_by_id(tmp_path / "batch"), rows_by_id(tmp_path / "followed")
    assert len(batch) == 53 and sorted(batch) == sorted(followed)
    for row_id, (label, probabilities, error) in batch.items():
        assert followed[row_id][0] == label and followed[row_id][2] == error, row_id
        assert followed[row_id][1] == pytest.approx(probabilities, abs=1e-6), row_id
    manifests = [json.loads((tmp_path / o / "_manifest.json").read_text()) for o in ("batch", "followed")]
    for key in ("rows_in", "rows_out", "rows_scored", "rows_with_error"):
        assert manifests[0][key] == manifests[1][key], key
    assert manifests[1]["rows_with_error"] == 1
    names = [p["file"] for p in manifests[1]["parts"]]
    assert all(re.fullmatch(r"part-\d{5}-\d{5}\.parquet", n) for n in names), names
    assert sorted(os.listdir(tmp_path / "followed")) == sorted(names + ["_manifest.json", "_scorer_run"])


def test_an_output_of_the_earlier_follow_is_refused_naming_overwrite(tiny_model, tmp_path):
    """A follower's output written before entries were splits (progress.json with unit,
    units_done and entries; part-NNNNN files): refused with a clear error, kept as it is;
    --overwrite starts it again."""
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    assert follow_once(landing, out, tiny_model).exit_code == 0  # the same follower's state
    old = REPO / "tests" / "checkpoints" / "fb17e59-follow-progress.json"
    (out / "_scorer_run" / "progress.json").write_text(old.read_text())
    for n in range(4):
        pq.write_table(pa.table({"text": ["old"]}), out / f"part-{n:05d}.parquet")
    land(landing, "a.jsonl", 30)
    land(landing, "b.jsonl", 5, start=30)
    before = sorted(os.listdir(out))
    r = follow_once(landing, out, tiny_model, "--settle-seconds", "0")
    assert r.exit_code == 5, r.output
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {out}: holds the output of an earlier scorer version's --follow, which this one "
        "cannot continue; pass --overwrite to score every landed entry again")
    assert sorted(os.listdir(out)) == before
    r = follow_once(landing, out, tiny_model, "--settle-seconds", "0", "--overwrite")
    assert r.exit_code == 0, r.output
    assert texts(out) == expected((0, 35))
