"""scorer.ray_engine's driver without a Ray cluster: its Datasource's blocks, scored by its
map_batches UDF in order, stand in for the Dataset; what the driver writes is what the local
engine writes (tests/test_ray.py runs the real thing on a local cluster)."""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from scorer import classifier, pipeline
from scorer.options import RunOptions

ray = pytest.importorskip("ray", reason="Ray is the optional extra scorer[ray]; ./install.sh test installs it")
from scorer import ray_engine  # noqa: E402  (imports ray)


class InOrderBlocks:
    """What map_batches gives the driver: ScoreBlocks over the ChunkSource's blocks, in order."""

    def __init__(self, chunks: ray_engine.ChunkSource, model_path: str, opts: RunOptions):
        self.chunks, self.udf = chunks, ray_engine.ScoreBlocks(model_path, opts)

    def iter_batches(self, batch_size=None, batch_format="pyarrow"):
        for task in self.chunks.get_read_tasks(parallelism=1):
            for block in task.read_fn():
                yield self.udf(block)


@pytest.fixture
def no_cluster(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1})
    monkeypatch.setattr(ray_engine, "_scored_blocks",
                        lambda chunks, model_path, opts, workers, gpus: InOrderBlocks(chunks, model_path, opts))


def test_the_driver_writes_what_the_local_engine_writes(no_cluster, tiny_model, tmp_path, monkeypatch):
    data = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": f"review {i}: a fine film", "n": i}) for i in range(11)]
    lines[3], lines[7] = "{not json", json.dumps({"text": None, "n": 7})
    data.write_text("\n".join(lines) + "\n")
    opts = dict(chunk_rows=4, rows_per_file=5)
    local = pipeline.run([str(data)], tmp_path / "local", tiny_model, **opts).manifest

    built = []
    real_load = classifier.load_keras_model
    monkeypatch.setattr(classifier, "load_keras_model", lambda *a, **k: built.append(1) or real_load(*a, **k))
    driver = ray_engine.run([str(data)], tmp_path / "ray", tiny_model, RunOptions(**opts), workers=3).manifest
    assert len(built) == 1  # by the one scoring actor, not by the driver
    assert driver["engine"]["name"] == "ray" and driver["engine"]["workers"] == 3
    for key in ("rows_in", "rows_out", "rows_scored", "rows_with_error", "error_reasons", "parts",
                "profile", "drift", "model", "rows_resumed_from_checkpoint"):
        assert driver[key] == local[key], key
    a, b = (ds.dataset(tmp_path / name, format="parquet").to_table() for name in ("local", "ray"))
    assert a.column_names == b.column_names and a.num_rows == b.num_rows == 11
    for name in ("row_id", "n", "label", "error"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    assert (tmp_path / "ray" / "_SUCCESS").exists()
