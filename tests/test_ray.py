"""--engine ray on a local Ray cluster (ray.init(num_cpus=2)) gives the same output rows, schema,
parts and every manifest count as the local engine with 1 and 2 workers; a driver stopped by
SIGTERM or SIGINT stops as the local engine does, and resumes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.cluster import kill_session, session_processes
from tests.conftest import REPO, ray_inputs

ray = pytest.importorskip("ray", reason="Ray is the optional extra scorer[ray]; ./install.sh test installs it")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return ray_inputs(tmp_path_factory.mktemp("ray-in"))


# What every engine's manifest must agree on, for the same inputs and options (issue 22)
COUNTS = ("rows_in", "rows_out", "rows_scored", "rows_with_error", "rows_dead_lettered", "error_reasons",
          "rows_truncated", "rows_windowed", "real_tokens", "padded_tokens", "parts", "profile", "drift")


def cli_args(engine_args, inputs, out, model, *extra) -> list[str]:
    return ["run", *inputs, "-o", str(out), "--model", str(model), "--chunk-rows", "50",
            "--rows-per-file", "130", *engine_args, *extra]


def run(engine_args, inputs, out, model, *extra):
    r = CliRunner().invoke(main, cli_args(engine_args, inputs, out, model, *extra))
    assert r.exit_code == 0, r.output
    return json.loads((out / "_manifest.json").read_text())


@pytest.mark.parametrize("extra", [[], ["--dead-letter", "{dead}", "--partition-by", "label"]],
                         ids=["plain", "dead-letters-and-partitions"])
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_and_local_engines_give_identical_output(ray_cluster, inputs, tiny_model, tmp_path, extra, workers):
    def args(engine):
        return [a.replace("{dead}", str(tmp_path / f"dead-{engine}")) for a in extra]

    local = run([], inputs, tmp_path / "local", tiny_model, *args("local"))
    distributed = run(["--engine", "ray", "--workers", str(workers)], inputs, tmp_path / "ray", tiny_model,
                      *args("ray"))
    assert distributed["engine"]["name"] == "ray" and distributed["engine"]["workers"] == workers
    for key in COUNTS:
        assert distributed[key] == local[key], key
    hive = "hive" if "--partition-by" in extra else None
    a = ds.dataset(tmp_path / "local", format="parquet", partitioning=hive).to_table().sort_by("row_id")
    b = ds.dataset(tmp_path / "ray", format="parquet", partitioning=hive).to_table().sort_by("row_id")
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    assert a.num_rows == 420 - (2 if extra else 0)
    for name in a.column_names:
        if name in ("score", "probabilities"):
            continue
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    for x, y in zip(a.column("probabilities").to_pylist(), b.column("probabilities").to_pylist()):
        assert (x is None and y is None) or x == pytest.approx(y, abs=1e-5)
    if extra:
        dead = [ds.dataset(tmp_path / f"dead-{e}", format="parquet").to_table().sort_by("position")
                for e in ("local", "ray")]
        assert dead[0].equals(dead[1]) and dead[0].num_rows == 2


# Long texts cut into windows of 16 tokens, at most 2 (longer ones truncated), bad rows
# dead-lettered: no count of the manifest is zero, so agreeing on them says something.
COUNTED = ["--long-text", "window", "--max-length", "16", "--max-windows", "2"]


@pytest.fixture(scope="module")
def local_manifest(inputs, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-local")
    return run([], inputs, tmp / "out", tiny_model, *COUNTED, "--dead-letter", str(tmp / "dead"))


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_and_local_manifests_agree_on_every_count_and_carry_real_stats(
        ray_cluster, inputs, tiny_model, local_manifest, tmp_path, workers):
    distributed = run(["--engine", "ray", "--workers", str(workers)], inputs, tmp_path / "out", tiny_model,
                      *COUNTED, "--dead-letter", str(tmp_path / "dead"))
    local = local_manifest
    assert distributed["engine"]["workers"] == workers and distributed["splits"]["planned"] == 4
    assert local["rows_dead_lettered"] == 2 and sum(local["error_reasons"].values()) == 2
    assert local["rows_windowed"] > 0 and local["rows_truncated"] > 0
    assert 0 < local["real_tokens"] < local["padded_tokens"] and local["profile"]["scored"] == 418
    for key in COUNTS:
        assert distributed[key] == local[key], key
    assert [(p["file"], p["rows"]) for p in distributed["dead_letter"]["parts"]] == \
        [(p["file"], p["rows"]) for p in local["dead_letter"]["parts"]]
    for manifest in (local, distributed):  # the actors' work is reported, not zeros
        assert manifest["timing"]["encode_seconds"] > 0 and manifest["timing"]["infer_seconds"] > 0


def test_ray_engine_scores_a_hugging_face_checkpoint_as_the_local_engine_does(
        ray_cluster, inputs, hf_reference, tmp_path):
    model = hf_reference["roberta"].path
    local = run([], inputs[:1], tmp_path / "local", model)
    distributed = run(["--engine", "ray", "--workers", "1"], inputs[:1], tmp_path / "ray", model)
    assert distributed["model"] == local["model"]
    assert distributed["model"]["architecture"] == "RobertaForSequenceClassification"
    a = ds.dataset(tmp_path / "local", format="parquet").to_table().sort_by("row_id")
    b = ds.dataset(tmp_path / "ray", format="parquet").to_table().sort_by("row_id")
    assert a.num_rows == b.num_rows == 300
    assert a.column("label").to_pylist() == b.column("label").to_pylist()


def test_a_ray_started_by_the_run_scores_at_nice_0(inputs, tiny_model, tmp_path):
    """Ray's default worker niceness (15) let its own processes preempt an actor's intra-op
    threads (default model, 1 worker --threads 2: 430-456 rows/s against 582-585 at nice 0): the Ray
    a run starts itself (no --address) runs its actors at nice 0, and the manifest says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "scorer.cli", "run", *inputs, "-o", str(out), "--model",
                        str(tiny_model), "--engine", "ray", "--workers", "1"],
                       cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    engine = json.loads((out / "_manifest.json").read_text())["engine"]
    # Ray adds worker_niceness to the niceness its raylet inherits: 0 adds nothing to ours.
    assert engine["worker_niceness"] == [os.getpriority(os.PRIO_PROCESS, 0)]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop, own_cluster", [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-to-a-driver-with-its-own-ray", "SIGINT-to-a-driver-joined-by-address"])
def test_a_stopped_ray_driver_stops_cleanly_and_the_same_command_resumes(ray_cluster, tiny_model, tmp_path,
                                                                        stop, own_cluster):
    """A user's `scorer run --engine ray` stopped while its actor is mid-split: SIGTERM to one that
    started a Ray of its own, SIGINT to one joined to a running cluster (--address). Exit 128 +
    signal with the local engine's stop line, its actor ended (and every process a driver
    started), the lock released, the committed split kept; the same command then scores every
    row exactly once."""
    inputs, out = ray_inputs(tmp_path), tmp_path / "out"
    address = [] if own_cluster else ["--address", ray.get_runtime_context().gcs_address]
    args = ["--engine", "ray", "--workers", "1", *address]
    # Four splits (Parquet rows 0-127, 128-255, 256-299, the JSON Lines file): the actor writes
    # the first in three chunks and pauses at its fourth write, in the second split, once the
    # driver has committed the first. The driver is then waiting on Ray for the actor.
    release, log = tmp_path / "release", tmp_path / "driver.log"
    release.write_text("")
    with log.open("w") as sink:
        command = [sys.executable, "-m", "scorer.cli", *cli_args(args, inputs, out, tiny_model)]
        driver = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True,  # its session: the processes it starts
                                  env={**os.environ, "SCORER_PAUSE_AT": "write:4",
                                       "SCORER_PAUSE_RELEASE": str(release)})
    try:
        deadline = time.time() + 600
        while not (paused := list(tmp_path.glob("release.*"))):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the actor did not pause mid-split"
            time.sleep(0.2)
        actor = int(paused[0].suffix[1:])
        # a process of the Ray it started, or of the running cluster's
        assert (actor in session_processes(driver.pid)) == own_cluster
        committed = json.loads((out / "_scorer_run" / "progress.json").read_text())
        assert list(committed["splits"]) == ["00000"] and committed["rows"] == 128
        driver.send_signal(stop)
        driver.wait(timeout=120)
        stderr = log.read_text()
        assert driver.returncode == 128 + stop, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == (f"error: stopped by {stop.name}; committed part files are "
                                                   "kept: run the same command again to resume")
        deadline = time.time() + 60
        while alive(actor) or session_processes(driver.pid):
            assert time.time() < deadline, f"outlived the driver: {actor}, {session_processes(driver.pid)}"
            time.sleep(0.2)
    finally:
        kill_session(driver.pid, "the stopped driver")  # none left, unless it failed to stop
        driver.wait()
    with open(out / "_scorer_run" / "lock") as lock:  # released: nobody holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (out / "_SUCCESS").exists()
    assert [p.name for p in out.glob("part-*")] == ["part-00000-00000.parquet"]
    release.unlink()
    m = run(args, inputs, out, tiny_model)  # the same command, in this process (on its Ray)
    assert m["resumed"] and m["rows_resumed_from_checkpoint"] == 128
    assert m["rows_in"] == sum(p["rows"] for p in m["parts"]) == 420
    ids = ds.dataset(out, format="parquet").to_table().column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 420
