"""Embedding runs in every engine, driven through the CLI: --follow and --engine ray write the
same vectors as the local engine, for a sentence-transformers model and for a classifier's
--emit label,embedding; a classifier's --emit embedding run measures its vectors' drift in each."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer import drift
from scorer.cli import main
from tests.conftest import SAMPLE

LONG = "the film was long, slow and in the end rather moving " * 30  # several windows


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """A Parquet file (SST-2 texts, a long one, a null) and a JSON Lines file with a bad line."""
    tmp = tmp_path_factory.mktemp("embedding-in")
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()[:60]
    texts[5], texts[9] = LONG, None
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), tmp / "a.parquet", row_group_size=16)
    lines = [json.dumps({"text": t}) for t in texts[10:40]]
    lines[3] = "{not json"
    (tmp / "b.jsonl").write_text("\n".join(lines) + "\n")
    return [str(tmp / "a.parquet"), str(tmp / "b.jsonl")]


def rows_by_id(out) -> dict[str, dict]:
    table = ds.dataset(out, format="parquet").to_table()
    return {row["row_id"]: row for row in table.to_pylist()}


def assert_same_rows(a: dict, b: dict, column: str = "embedding") -> None:
    """Same rows, same errors, vectors equal to float32 rounding (another process, maybe
    another batch order)."""
    assert sorted(a) == sorted(b)
    for row_id, row in a.items():
        other = b[row_id]
        assert row["error"] == other["error"], row_id
        if row[column] is None:
            assert other[column] is None, row_id
        else:
            np.testing.assert_allclose(row[column], other[column], atol=1e-5, err_msg=row_id)
        if "label" in row:
            assert row["label"] == other["label"], row_id


def with_vector_reference(model, tmp_path):
    """A copy of a classifier with a reference of its vectors (scorer profile --emit embedding)."""
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    r = run_cli("profile", copy, SAMPLE / "sst2_dev_sample.parquet", "--emit", "embedding")
    assert r.exit_code == 0, r.output
    return copy


def local_run(inputs, out, model, *extra) -> dict:
    r = run_cli("run", *inputs, "-o", out, "--model", model, "--chunk-rows", "16", *extra)
    assert r.exit_code == 0, r.output
    return json.loads((out / "_manifest.json").read_text())


# ---------------------------------------------------------------------------- --follow

@pytest.mark.parametrize("kind", ["sentence-transformers", "classifier --emit label,embedding"])
def test_follow_writes_the_vectors_a_batch_run_writes(st_reference, tiny_model, inputs, tmp_path, kind):
    model, extra = ((st_reference["cls_dense_normalize"].path, []) if kind == "sentence-transformers"
                    else (tiny_model, ["--emit", "label,embedding"]))
    landing = tmp_path / "landing"
    landing.mkdir()
    for path in inputs:
        (landing / path.rsplit("/", 1)[1]).symlink_to(path)
    batch_inputs = [str(landing / p.rsplit("/", 1)[1]) for p in inputs]
    local_run(batch_inputs, tmp_path / "batch", model, *extra)
    r = run_cli("run", "--follow", landing, "-o", tmp_path / "followed", "--once", "--model", model,
                "--chunk-rows", "16", "--settle-seconds", "0", *extra)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "followed" / "_manifest.json").read_text())
    assert manifest["units_done"] == ["a.parquet", "b.jsonl"] and manifest["rows_out"] == 90
    assert_same_rows(rows_by_id(tmp_path / "batch"), rows_by_id(tmp_path / "followed"))


def test_follow_measures_a_classifiers_vectors_against_their_reference(tiny_model, inputs, tmp_path):
    model = with_vector_reference(tiny_model, tmp_path)
    landing = tmp_path / "landing"
    landing.mkdir()
    for path in inputs:
        (landing / path.rsplit("/", 1)[1]).symlink_to(path)
    r = run_cli("run", "--follow", landing, "-o", tmp_path / "followed", "--once", "--model", model,
                "--chunk-rows", "16", "--settle-seconds", "0", "--emit", "embedding")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "followed" / "_manifest.json").read_text())
    assert manifest["drift"]["reference"] == str(model / drift.EMBEDDING_SIDECAR_NAME)
    assert "embedding_pc1" in manifest["drift"]["psi"] and "embedding_norm" in manifest["drift"]["psi"]
    assert all("embedding_pc8" in e["drift"]["psi"] for e in manifest["entries"])
    assert sum(manifest["profile"]["norm_hist"]) == manifest["rows_scored"]


def test_a_follower_loads_an_embedding_model_once(st_reference, inputs, tmp_path, monkeypatch):
    """Between entries the follower looks for a new champion; the same sentence-transformers
    directory is not loaded (and compiled) again for every entry."""
    from scorer import follow, runs

    loads = []
    load = runs.Run.load_scorer
    monkeypatch.setattr(runs.Run, "load_scorer", lambda self, *a, **k: loads.append(a) or load(self, *a, **k))
    landing = tmp_path / "landing"
    landing.mkdir()
    for i, path in enumerate(inputs * 2):
        (landing / f"{i}-{path.rsplit('/', 1)[1]}").symlink_to(path)
    follow.follow(landing, tmp_path / "out", st_reference["mean"].path, once=True, settle_seconds=0)
    assert len(loads) == 1


# ---------------------------------------------------------------------------- --engine ray

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra scorer[ray]; ./install.sh test installs it")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("kind", ["sentence-transformers", "classifier --emit label,embedding",
                                  "classifier --emit embedding, with a reference"])
def test_ray_writes_the_vectors_the_local_engine_writes(ray_cluster, st_reference, tiny_model, inputs,
                                                        tmp_path, kind):
    """The same rows and the same profile (with a reference: the vectors binned by its basis on
    the actors as locally)."""
    model, extra = {"sentence-transformers": (st_reference["cls_dense_normalize"].path,
                                              ["--embedding-dtype", "float16"]),
                    "classifier --emit label,embedding": (tiny_model, ["--emit", "label,embedding"])
                    }.get(kind) or (with_vector_reference(tiny_model, tmp_path), ["--emit", "embedding"])
    local = local_run(inputs, tmp_path / "local", model, *extra)
    distributed = local_run(inputs, tmp_path / "ray", model, "--engine", "ray", "--workers", "2", *extra)
    assert distributed["engine"]["name"] == "ray"
    for key in ("rows_in", "rows_out", "rows_with_error", "error_reasons", "model", "profile"):
        assert distributed[key] == local[key], key
    if "reference" in kind:
        assert sum(local["profile"]["projection_hist"][0]) == local["rows_scored"]
        assert distributed["drift"]["psi"] == local["drift"]["psi"]
    a = ds.dataset(tmp_path / "local", format="parquet").to_table()
    b = ds.dataset(tmp_path / "ray", format="parquet").to_table()
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    assert_same_rows(rows_by_id(tmp_path / "local"), rows_by_id(tmp_path / "ray"))
