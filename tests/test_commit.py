"""The output directory's commit protocol: refusal rules, lock, checkpoints, resume decisions."""

import json
import os
import subprocess
import sys

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer import commit, drift
from scorer.errors import OutputBusy, OutputError
from scorer.manifest import DeadLetter, Manifest
from scorer.splits import Counters, Split, SplitState

KEPT = Path(__file__).parent / "checkpoints"  # progress.json files earlier scorers wrote
IDENTITY = {"inputs": [{"path": "in.jsonl", "format": "jsonl", "size": 10, "mtime_ns": 1}],
            "model": "abc", "options": {"text_column": "text", "rows_per_file": 100}}
NO_ROWS = Manifest(rows_out=0, parts=[])  # the least a manifest says


def open_dir(out, identity=IDENTITY, overwrite=False, dead_letter=None):
    return commit.OutputDir.open(out, identity, overwrite, dead_letter)


def test_a_fresh_directory_is_created_and_finished(tmp_path):
    out = tmp_path / "out"
    d = open_dir(out)
    assert not d.resumed
    d.prepare()
    pq.write_table(pa.table({"x": [1, 2, 3]}), out / "part-00000.parquet")
    parts = [{"file": "part-00000.parquet", "rows": 3}]
    d.checkpoint(commit.Progress(rows=3, parts=parts))
    d.finish(Manifest(rows_out=3, parts=parts))
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_manifest.json", "part-00000.parquet"]
    assert json.loads((out / "_manifest.json").read_text()) == Manifest(
        rows_out=3, parts=parts, identity=IDENTITY).to_json()


# what an earlier version's progress.json had that this one's has not (--follow's ledger is its
# engine_state, each split has its own next_index)
DROPPED = ("next_index", "dead_letter_next_index", "unit", "units_done", "entries")


@pytest.mark.parametrize("name", ["d708981-split-run.json", "fb17e59-split-run.json"])
def test_a_checkpoint_is_typed_in_memory_and_written_back_as_it_was_read(name):
    data = json.loads((KEPT / name).read_text())
    del data["_fixture"]
    progress = commit.Progress.from_json(data)
    assert isinstance(progress.counters, Counters) and progress.counters.rows_in == progress.rows == 120
    assert progress.counters.error_reasons == {"null text": 1, "empty text": 1}
    assert isinstance(progress.profile, drift.Profile) and progress.profile.rows == 120
    assert all(isinstance(s, Split) for s in progress.plan) and len(progress.plan) == 4
    assert progress.plan[1].pieces[0].byte_range == (9478, 19095)
    assert all(isinstance(s, SplitState) for s in progress.splits.values())
    assert [(s.rows, s.complete) for s in progress.splits.values()] == [(60, True), (60, False)]
    written = {**{k: v for k, v in data.items() if k not in DROPPED}, "engine_state": data.get("engine_state")}
    assert json.dumps(progress.to_json()) == json.dumps(written)


def test_refusals(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"x")  # an unfinished run's, without its state
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        open_dir(out)
    open_dir(out, overwrite=True).prepare()
    assert os.listdir(out) == [commit.STATE_DIR]  # only the lock of the live run
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        open_dir(f)
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "x").write_text("")
    with pytest.raises(OutputError, match="dead-letter directory is not empty"):
        open_dir(tmp_path / "out2", dead_letter=dead)


def snapshot(out):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_an_identical_finished_run_is_recognised_and_left_as_it_is(tmp_path):
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    d.finish(Manifest(rows_out=0, finished="2026-12-01T00:00:00Z"))
    assert json.loads((out / "_manifest.json").read_text())["identity"] == IDENTITY
    before = snapshot(out)
    again = open_dir(out)
    assert again.finished == Manifest(rows_out=0, finished="2026-12-01T00:00:00Z", identity=IDENTITY).to_json()
    assert snapshot(out) == before and sorted(os.listdir(out)) == ["_SUCCESS", "_manifest.json"]
    assert open_dir(out).finished  # the lock was released
    assert open_dir(out, overwrite=True).finished is None  # --overwrite scores again


@pytest.mark.parametrize("change, message", [
    (lambda i: i["inputs"][0].update(size=11), "input in.jsonl changed since"),
    (lambda i: i.update(model="def"), "it used model abc"),
    (lambda i: i["options"].update(rows_per_file=7), "its --rows-per-file was 100"),
])
def test_a_different_command_on_a_finished_run_names_the_difference(tmp_path, change, message):
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    d.finish(NO_ROWS)
    other = json.loads(json.dumps(IDENTITY))
    change(other)
    with pytest.raises(OutputError, match=rf"holds a finished run of another command \({message}.*\); "
                                          "pass --overwrite to replace it"):
        open_dir(out, identity=other)


def test_a_finished_run_without_a_recorded_identity_is_not_taken_for_this_one(tmp_path):
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    d.finish(NO_ROWS)
    (out / "_manifest.json").write_text("{}")  # as scorer wrote it before it recorded identities
    with pytest.raises(OutputError, match=r"holds a finished run of another command \(its identity "
                                          r"was not recorded\)"):
        open_dir(out)


def test_a_failure_before_writing_leaves_no_trace(tmp_path):
    out = tmp_path / "out"
    open_dir(out).abandon()
    assert not out.exists()


def test_an_unfinished_run_is_resumed_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    (out / "part-00000.parquet").write_bytes(b"committed")
    d.checkpoint(commit.Progress(rows=5, parts=[{"file": "part-00000.parquet", "rows": 5}],
                                 splits={"00000": SplitState(rows=5)}))
    (out / "part-00001.parquet").write_bytes(b"renamed after the checkpoint")
    (out / ".part-00002.parquet.tmp").write_bytes(b"half written")
    d.abandon()  # as a crash would leave it (plus the lock, which the kernel drops)

    again = open_dir(out)
    assert again.resumed and again.progress.rows == 5 and again.progress.splits == {"00000": SplitState(rows=5)}
    again.prepare()
    assert sorted(os.listdir(out)) == [commit.STATE_DIR, "part-00000.parquet"]


def test_a_checkpoint_of_the_previous_version_is_resumed_and_its_follow_state_refused(tmp_path):
    """progress.json as fb17e59 wrote it: next_index and --follow's unit, units_done and entries
    (empty for a batch run), fields no longer recorded."""
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    d.abandon()
    state = out / commit.STATE_DIR / "progress.json"
    earlier = {"rows": 5, "parts": [], "dead_letter_parts": [], "next_index": {"": 1},
               "dead_letter_next_index": {}, "unit": None, "units_done": [], "entries": [],
               "counters": {}, "profile": None, "plan": [], "splits": {"00000": SplitState(rows=5).to_json()}}
    state.write_text(json.dumps(earlier))
    again = open_dir(out)
    assert again.resumed and again.progress == commit.Progress(rows=5, plan=[],
                                                               splits={"00000": SplitState(rows=5)})
    again.abandon()
    state.write_text(json.dumps({**earlier, "units_done": ["a.jsonl"]}))
    with pytest.raises(OutputError, match="an earlier scorer version's --follow.*pass --overwrite"):
        open_dir(out)
    assert open_dir(out, overwrite=True).progress == commit.Progress()


@pytest.mark.parametrize("change, message", [
    (lambda i: i["inputs"][0].update(size=11), "input in.jsonl changed since"),
    (lambda i: i.update(inputs=[{"path": "other.jsonl"}]), "its inputs were in.jsonl"),
    (lambda i: i.update(model="def"), "it used model abc"),
    (lambda i: i["options"].update(rows_per_file=7), "its --rows-per-file was 100"),
])
def test_a_different_run_refuses_to_resume_and_names_the_difference(tmp_path, change, message):
    out = tmp_path / "out"
    d = open_dir(out)
    d.prepare()
    d.abandon()
    other = json.loads(json.dumps(IDENTITY))
    change(other)
    with pytest.raises(OutputError, match=message):
        open_dir(out, identity=other)
    assert open_dir(out, identity=other, overwrite=True).resumed is False


def test_stdin_runs_cannot_be_resumed(tmp_path):
    out = tmp_path / "out"
    stdin = {**IDENTITY, "inputs": [{"path": "-", "format": "text"}]}
    d = open_dir(out, identity=stdin)
    d.prepare()
    d.abandon()
    with pytest.raises(OutputError, match="standard input, which cannot be read again"):
        open_dir(out, identity=stdin)


HOLD = """
import sys, time
from pathlib import Path
from scorer.commit import OutputLock
lock = OutputLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_the_lock_excludes_a_second_run_and_dies_with_its_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"another scorer run is writing there \(pid {holder.pid} on "):
            open_dir(out)
    finally:
        holder.kill()
        holder.wait()
    open_dir(out).abandon()  # a dead holder's lock is free at once: no stale-lock timeout


@pytest.mark.parametrize("dead, out", [("o", "o"), ("o/bad", "o"), ("d", "d/out"), ("o/./", "o")])
def test_a_dead_letter_directory_overlapping_the_output_is_refused(tmp_path, dead, out):
    with pytest.raises(OutputError, match=r"--dead-letter .* overlaps the output .*: give them "
                                          "separate directories"):
        open_dir(tmp_path / out, dead_letter=tmp_path / dead)
    assert not (tmp_path / out).exists()


def test_a_dead_letter_directory_is_locked_like_the_output(tmp_path):
    dead = tmp_path / "dead"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(dead)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"{dead}: another scorer run is writing there"):
            open_dir(tmp_path / "out", dead_letter=dead)
        open_dir(tmp_path / "out").abandon()  # the output's own lock was released
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_does_not_clobber_another_outputs_dead_letters(tmp_path):
    dead = tmp_path / "dead"
    a = open_dir(tmp_path / "a", dead_letter=dead)
    a.prepare()
    (dead / "part-00000.parquet").write_bytes(b"a's bad rows")
    a.abandon()
    with pytest.raises(OutputError, match=rf"{dead}: holds the dead letters of another output "
                                          rf"\({tmp_path / 'a'}\); give each output its own"):
        open_dir(tmp_path / "b", overwrite=True, dead_letter=dead)
    assert (dead / "part-00000.parquet").exists()
    again = open_dir(tmp_path / "a", overwrite=True, dead_letter=dead)  # its own: replaced
    again.prepare()
    assert not (dead / "part-00000.parquet").exists()
    again.finish(Manifest(rows_out=0, dead_letter=DeadLetter(str(dead), []), rows_dead_lettered=0))
    assert sorted(os.listdir(dead)) == ["_scorer_output"]


def a_previous_output(out):
    """What earlier runs leave: parts (some in partition directories), manifest, markers, state."""
    (out / "label=positive").mkdir(parents=True)
    (out / "label=positive" / "part-00000.parquet").write_bytes(b"x")
    (out / "label=" / "nested=1").mkdir(parents=True)
    (out / "label=" / "nested=1" / ".part-00001.parquet.tmp").write_bytes(b"x")
    for name in ("part-00002.parquet", "_SUCCESS", "_manifest.json", "_report.png", "._manifest.json.tmp"):
        (out / name).write_bytes(b"x")
    (out / commit.STATE_DIR).mkdir()
    (out / commit.STATE_DIR / "progress.json").write_text("{}")


def test_overwrite_replaces_a_previous_output_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    a_previous_output(out)
    d = open_dir(out, overwrite=True)
    d.prepare()
    assert sorted(os.listdir(out)) == [commit.STATE_DIR]
    d.finish(NO_ROWS)


def test_overwrite_of_a_location_holding_other_files_is_refused_naming_five(tmp_path):
    out = tmp_path / "out"
    a_previous_output(out)
    for name in ("important.csv", "in.txt", "notes/a.md", "part-00003.parquet.bak", "z.parquet",
                 "label=positive/readme.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("keep me")
    (out / "empty").mkdir()
    (out / "link").symlink_to(tmp_path)
    def listing():
        return sorted(str(p.relative_to(out)) for p in out.rglob("*") if commit.STATE_DIR not in p.parts)

    before = listing()
    with pytest.raises(OutputError, match=(
            rf"^{out}: the output directory holds files that are not a scorer output \(empty/, "
            r"important.csv, in.txt, label=positive/readme.txt, link and 3 more\); --overwrite "
            r"replaces only a previous scorer output: move them away or choose another directory$")):
        open_dir(out, overwrite=True)
    assert listing() == before


def test_a_dead_letter_directory_holding_other_files_is_refused(tmp_path):
    dead = tmp_path / "dead"
    a = open_dir(tmp_path / "a", dead_letter=dead)
    a.prepare()
    a.abandon()
    (dead / "mine.csv").write_text("keep me")
    with pytest.raises(OutputError, match=rf"{dead}: the dead-letter directory holds files that "
                                          r"are not a scorer output \(mine.csv\)"):
        open_dir(tmp_path / "a", overwrite=True, dead_letter=dead)
    assert (dead / "mine.csv").read_text() == "keep me"


def test_foreign_files_in_an_object_store_prefix_are_refused(tmp_path):
    """The same rule through pyarrow's filesystem (a local file:// stand-in for s3://)."""
    from scorer import storage

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "_SUCCESS").write_text("")
    (tmp_path / "p" / "data.jsonl").write_text("{}")
    location = storage.ArrowStorage.__new__(storage.ArrowStorage)
    import pyarrow.fs as pafs

    location.uri, location.fs, location.base = f"s3://b/p", pafs.LocalFileSystem(), str(tmp_path / "p")
    assert commit.foreign_files(location) == ["data.jsonl"]
