"""s3:// inputs and outputs against a real S3-compatible server on loopback (moto's standalone
server, started here), with the same commit and resume guarantees as local paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO, SAMPLE, wait_for_port

MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="module")
def s3():
    if not MOTO.exists():
        pytest.fail("moto_server is not installed: ./install.sh test installs it")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        wait_for_port(port, "moto_server")
        fs = pafs.S3FileSystem(allow_bucket_creation=True, endpoint_override=env["AWS_ENDPOINT_URL"])
        fs.create_dir("bkt")
        texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
        pq.write_table(pa.table({"text": texts[:200], "n": list(range(200))}), "bkt/in/a.parquet",
                       filesystem=fs, row_group_size=40)
        with fs.open_output_stream("bkt/in/b.jsonl") as f:
            f.write("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts[200:])).encode())
        pq.write_table(pa.table({"text": texts[:30]}), "bkt/in/dir/day=1/p.parquet", filesystem=fs)
        yield fs
    finally:
        server.terminate()
        server.wait()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


INPUTS = ["s3://bkt/in/a.parquet", "s3://bkt/in/b.jsonl"]
ARGS = ["--rows-per-file", "70", "--chunk-rows", "32"]


def objects(fs, prefix):
    return sorted(i.path[len(prefix) + 1:] for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
                  if i.type == pafs.FileType.File)


def rows(fs, prefix):
    return ds.dataset(prefix, format="parquet", filesystem=fs).to_table().sort_by("row_id")


@pytest.fixture(scope="module")
def local_reference(s3, tiny_model, tmp_path_factory):
    local = tmp_path_factory.mktemp("s3ref")
    for name in ("a.parquet", "b.jsonl"):
        with s3.open_input_stream(f"bkt/in/{name}") as f:
            (local / name).write_bytes(f.read())
    out = local / "out"
    r = CliRunner().invoke(main, ["run", str(local / "a.parquet"), str(local / "b.jsonl"), "-o", str(out),
                                  "--model", str(tiny_model), *ARGS])
    assert r.exit_code == 0, r.output
    return ds.dataset(out, format="parquet").to_table()


def test_s3_round_trip_matches_a_local_run(s3, tiny_model, local_reference):
    r = CliRunner().invoke(main, ["run", *INPUTS, "-o", "s3://bkt/out1/", "--model", str(tiny_model), *ARGS])
    assert r.exit_code == 0, r.output
    names = objects(s3, "bkt/out1")
    # a.parquet's row groups of 40 rows, a split each (two would pass --rows-per-file 70); then
    # b.jsonl's 100 rows, one split of two parts; each moved from its attempt's prefix
    assert names == ["_SUCCESS", "_manifest.json"] + [f"part-{i:05d}-00000.parquet" for i in range(6)] + [
        "part-00005-00001.parquet"]
    got = rows(s3, "bkt/out1")
    want = local_reference.sort_by("row_id")  # same order: the same file names and positions
    assert got.num_rows == 300
    assert got.column("row_id").to_pylist()[0] == "s3://bkt/in/a.parquet:0"
    assert got.column("n").to_pylist() == want.column("n").to_pylist()
    assert got.column("label").to_pylist() == want.column("label").to_pylist()
    assert got.column("error").to_pylist() == want.column("error").to_pylist()
    m = json.loads(s3.open_input_stream("bkt/out1/_manifest.json").read())
    assert m["rows_in"] == m["rows_out"] == 300


def test_s3_prefix_input_is_a_parquet_dataset(s3, tiny_model, tmp_path):
    r = CliRunner().invoke(main, ["run", "s3://bkt/in/dir", "-o", str(tmp_path / "o"), "--model", str(tiny_model)])
    assert r.exit_code == 0, r.output
    t = ds.dataset(tmp_path / "o", format="parquet").to_table()
    assert t.num_rows == 30 and set(t.column("day").to_pylist()) == {1}


def test_missing_s3_input_is_a_clear_error(s3, tiny_model, tmp_path):
    r = CliRunner().invoke(main, ["run", "s3://bkt/in/nope.parquet", "-o", str(tmp_path / "o"),
                                  "--model", str(tiny_model)])
    assert r.exit_code == 3 and r.stderr.strip() == "error: s3://bkt/in/nope.parquet: no such object or prefix"


@pytest.mark.parametrize("crash_at", ["write:4", "commit:2", "checkpoint:3", "manifest:1"])
def test_s3_output_resumes_exactly_once_after_sigkill(s3, tiny_model, crash_at):
    out = f"s3://bkt/resume-{crash_at.replace(':', '-')}"
    args = ["run", *INPUTS, "-o", out, "--model", str(tiny_model), *ARGS]
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "SCORER_CRASH_AT": crash_at}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "_SUCCESS" not in objects(s3, out[5:])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    got = rows(s3, out[5:])
    ids = got.column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 300
    assert not [o for o in objects(s3, out[5:]) if o.startswith("_scorer_run")]


def test_s3_output_holding_the_same_finished_run_is_already_complete(s3, tiny_model):
    args = ["run", "s3://bkt/in/dir", "-o", "s3://bkt/out-twice", "--model", str(tiny_model)]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = {o: (s3.get_file_info(f"bkt/out-twice/{o}").mtime, s3.open_input_stream(f"bkt/out-twice/{o}").read())
              for o in objects(s3, "bkt/out-twice")}
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("already complete: 30 rows, finished at ")
    after = {o: (s3.get_file_info(f"bkt/out-twice/{o}").mtime, s3.open_input_stream(f"bkt/out-twice/{o}").read())
             for o in objects(s3, "bkt/out-twice")}
    assert after == before
    r = CliRunner().invoke(main, [*args, "--text-column", "text", "--max-length", "16"])
    assert r.exit_code == 5
    assert "holds a finished run of another command (its --max-length was None)" in r.stderr



def test_ray_actors_read_and_write_s3_as_the_local_engine_does(s3, tiny_model, local_reference):
    """--engine ray with two actors: each reads its splits from S3 and writes their parts there."""
    pytest.importorskip("ray", reason="Ray is the optional extra scorer[ray]; ./install.sh test installs it")
    out = "s3://bkt/out-ray"
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", "run", *INPUTS, "-o", out, "--model",
                           str(tiny_model), *ARGS, "--engine", "ray", "--workers", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = rows(s3, out[5:]), local_reference.sort_by("row_id")
    assert got.num_rows == 300 and got.column("row_id").to_pylist()[0] == "s3://bkt/in/a.parquet:0"
    for name in ("n", "label", "error"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert not [o for o in objects(s3, out[5:]) if o.startswith("_scorer_run")]
    m = json.loads(s3.open_input_stream(f"{out[5:]}/_manifest.json").read())
    assert m["engine"]["name"] == "ray" and m["rows_in"] == m["rows_out"] == 300
