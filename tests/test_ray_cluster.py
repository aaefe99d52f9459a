"""--engine ray on a real 2-node Ray cluster on this machine (tests/cluster.py: a head and a worker
node, `ray start --num-cpus 1` each, ended by pid): `scorer run --address` in a process of its own,
as a user runs it, gives the rows the local engine gives; a second driver on the same output is
refused by the lock; a driver SIGKILLed mid-run resumes with the same command; an actor SIGKILLed
mid-split is replaced and its split retried; with the second node's processes killed mid-run the
run finishes on the head. Every row exactly once, each time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.cluster import LocalCluster
from tests.conftest import REPO, ray_inputs

pytest.importorskip("ray", reason="Ray is the optional extra scorer[ray]; ./install.sh test installs it")

ARGS = ["--chunk-rows", "50", "--rows-per-file", "130"]
ROWS = 420  # 300 Parquet rows, 120 JSON Lines rows (2 of them bad)
RUN_SECONDS = 600  # one `scorer run` on the cluster; a loaded 2-core machine is slow


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster.start(nodes=2) as started:
        yield started
    assert not started.pids(), "a Ray process of the test cluster outlived it"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return ray_inputs(tmp_path_factory.mktemp("cluster-in"))


@pytest.fixture(scope="module")
def local_rows(inputs, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster-local") / "out"
    r = CliRunner().invoke(main, ["run", *inputs, "-o", str(out), "--model", str(tiny_model), *ARGS])
    assert r.exit_code == 0, r.output
    return rows(out), json.loads((out / "_manifest.json").read_text())


def ray_command(inputs, out, model, cluster, *extra) -> list[str]:
    return [sys.executable, "-m", "scorer.cli", "run", *inputs, "-o", str(out), "--model", str(model),
            *ARGS, "--engine", "ray", "--address", cluster.address, "--workers", "2", *extra]


def scorer_run(command, cluster, **env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env={**os.environ, **cluster.env, **env}, capture_output=True,
                          text=True, timeout=RUN_SECONDS)


def rows(out) -> list[dict]:
    return ds.dataset(out, format="parquet").to_table().sort_by("row_id").to_pylist()


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    """Every row exactly once, labelled and scored as the local engine does."""
    ids = [r["row_id"] for r in got]
    assert len(ids) == len(set(ids)) == ROWS  # no duplicates, no gaps
    assert ids == [r["row_id"] for r in expected]
    for a, b in zip(got, expected):
        assert (a["label"], a["error"], a["n"]) == (b["label"], b["error"], b["n"]), a["row_id"]
        if b["probabilities"] is None:
            assert a["probabilities"] is None, a["row_id"]
        else:
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5), a["row_id"]


def test_the_cluster_has_two_nodes_each_a_session_of_its_own(cluster):
    head, node = cluster.nodes
    assert head.pids() and node.pids() and not set(head.pids()) & set(node.pids())
    assert "2" == cluster.run_python(
        "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(n['Alive'] for n in ray.nodes()))").strip()


def test_a_two_node_cluster_gives_the_local_engines_rows(cluster, inputs, tiny_model, local_rows, tmp_path):
    expected, local_manifest = local_rows
    out = tmp_path / "out"
    proc = scorer_run(ray_command(inputs, out, tiny_model, cluster), cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(rows(out), expected)
    m = json.loads((out / "_manifest.json").read_text())
    assert m["engine"]["name"] == "ray" and m["engine"]["workers"] == 2
    for key in ("rows_in", "rows_out", "rows_with_error", "error_reasons", "profile"):
        assert m[key] == local_manifest[key], key


def test_a_second_driver_on_the_same_output_is_refused_by_the_lock(cluster, inputs, tiny_model,
                                                                   local_rows, tmp_path):
    out = tmp_path / "out"
    command = ray_command(inputs, out, tiny_model, cluster)
    # Paused at its first checkpoint, the first driver holds the output whatever the machine's speed.
    log = tmp_path / "first.log"  # a file, not a pipe: Ray's progress lines would fill a pipe and block
    with log.open("w") as sink:
        first = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                 env={**os.environ, **cluster.env, "SCORER_PAUSE_AT": "checkpoint:1"})
    try:
        deadline = time.time() + RUN_SECONDS
        while not (out / "_scorer_run" / "progress.json").exists():
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the first driver did not reach its first checkpoint"
            time.sleep(0.2)
        second = scorer_run(command, cluster)
        assert second.returncode == 8, second.stderr[-3000:]
        assert f"another scorer run is writing there (pid {first.pid} on" in second.stderr
    finally:
        first.kill()  # by its pid: the paused driver never ends on its own
        first.wait()
    resumed = scorer_run(command, cluster)  # the lock died with its holder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_rows(rows(out), local_rows[0])


def test_a_driver_killed_mid_run_resumes_exactly_once(cluster, inputs, tiny_model, local_rows, tmp_path):
    out = tmp_path / "out"
    command = ray_command(inputs, out, tiny_model, cluster)
    killed = scorer_run(command, cluster, SCORER_CRASH_AT="checkpoint:2")  # the driver SIGKILLs itself
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "_SUCCESS").exists()
    committed = json.loads((out / "_scorer_run" / "progress.json").read_text())["rows"]
    assert 0 < committed < ROWS
    resumed = scorer_run(command, cluster)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_rows(rows(out), local_rows[0])
    m = json.loads((out / "_manifest.json").read_text())
    assert m["resumed"] and m["rows_in"] == m["rows_out"] == ROWS
    finished = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = scorer_run(command, cluster)  # a finished run, rerun: nothing to do
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == finished


def paused_actors(release, log, driver, count: int) -> list[int]:
    """Wait until `count` scoring actors are paused mid-split (scorer.faults' SCORER_PAUSE_RELEASE:
    each created release.<pid>); their pids."""
    deadline = time.time() + RUN_SECONDS
    while len(pids := [int(p.suffix[1:]) for p in release.parent.glob(release.name + ".*")]) < count:
        assert driver.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"{count} actors did not pause mid-split: {pids}"
        time.sleep(0.2)
    return pids


def run_with_paused_actors(command, cluster, tmp_path, act) -> tuple[subprocess.CompletedProcess, str]:
    """Run `command` with every scoring actor paused at its first part-file write; once both
    are, act(paused pids), then let the rest go on. The driver's exit code and output."""
    release, log = tmp_path / "release", tmp_path / "driver.log"
    release.write_text("")
    with log.open("w") as sink:
        driver = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, **cluster.env, "SCORER_PAUSE_AT": "write:1",
                                       "SCORER_PAUSE_RELEASE": str(release)})
    try:
        act(paused_actors(release, log, driver, 2))
        release.unlink()
        driver.wait(timeout=RUN_SECONDS)
    finally:
        driver.kill()
        driver.wait()
    return driver.returncode, log.read_text()


def assert_finished_exactly_once(out, expected) -> dict:
    assert_same_rows(rows(out), expected)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or "_scorer_run" in p.parts]
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == m["rows_out"] == ROWS and sum(p["rows"] for p in m["parts"]) == ROWS
    return m


def test_an_actor_killed_mid_split_is_retried_and_every_row_is_written_once(cluster, inputs, tiny_model,
                                                                            local_rows, tmp_path):
    out = tmp_path / "out"

    def kill_one(paused: list[int]) -> None:
        assert set(paused) <= set(cluster.pids())  # Ray actors of the test cluster
        os.kill(paused[0], signal.SIGKILL)

    code, log = run_with_paused_actors(ray_command(inputs, out, tiny_model, cluster), cluster, tmp_path,
                                       kill_one)
    assert code == 0, log[-3000:]
    m = assert_finished_exactly_once(out, local_rows[0])
    assert m["engine"]["actors_lost"] == 1 and m["engine"]["split_retries"] == 1
    assert m["engine"]["split_attempts"] == m["splits"]["planned"] + 1


def test_a_node_lost_mid_run_the_run_finishes_on_the_head_exactly_once(cluster, inputs, tiny_model,
                                                                       local_rows, tmp_path):
    """Last in this module: the cluster has one node left after it."""
    out = tmp_path / "out"
    head, node = cluster.nodes

    def lose_the_node(paused: list[int]) -> None:
        # One actor per node (each has one CPU), both mid-split.
        assert len(set(paused) & set(node.pids())) == 1 and len(set(paused) & set(head.pids())) == 1
        node.kill()

    code, log = run_with_paused_actors(ray_command(inputs, out, tiny_model, cluster), cluster, tmp_path,
                                       lose_the_node)
    assert code == 0, log[-3000:]
    m = assert_finished_exactly_once(out, local_rows[0])
    assert m["engine"]["actors_lost"] >= 1 and m["engine"]["split_retries"] >= 1
