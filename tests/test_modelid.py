"""What identifies a model in the output (scorer.modelid.ModelId): typed inside the program, the
same JSON as before in the manifest, the part files' metadata and `scorer info`."""

import json

import pytest

from scorer import modeldir
from scorer.modelid import ModelId, combined_checksum
from tests.conftest import make_hf_checkpoint

SCORER_MODEL = {"name": "m", "version": "1", "path": "/models/m", "checksum": "abc"}
HF_CHECKPOINT = {"name": "c", "version": None, "path": "/models/c", "architecture": "BertForSequenceClassification",
                 "labels": ["neg", "pos"], "checksums": {"config.json": "1"}, "checksum": "def"}
EMBEDDING = {"name": "e", "version": None, "path": "/models/e", "kind": "embedding",
             "architecture": "BertModel", "dimension": 384, "checksums": {"modules.json": "2"},
             "checksum": "0ff"}


@pytest.mark.parametrize("data", [SCORER_MODEL, HF_CHECKPOINT, EMBEDDING])
def test_an_id_is_written_as_it_was_read_keys_in_order(data):
    model_id = ModelId.from_json(data)
    assert list(model_id.to_json().items()) == list(data.items())


def test_a_scorer_model_s_id_is_its_spec_checksum(tiny_model):
    model_id = modeldir.read(tiny_model).id
    assert isinstance(model_id, ModelId)
    assert list(model_id.to_json()) == ["name", "version", "path", "checksum"]
    assert (model_id.name, model_id.version, model_id.path) == ("tiny", "1", str(tiny_model))
    assert model_id.checksums is None and len(model_id.checksum) == 64


def test_a_checkpoint_s_id_covers_every_file_read(tmp_path):
    ckpt = make_hf_checkpoint(tmp_path / "ckpt", "bert")
    config = json.loads((ckpt / "config.json").read_text())  # read as a classifier: the id only
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "neg", "1": "pos"})
    (ckpt / "config.json").write_text(json.dumps(config))
    model_id = modeldir.read(ckpt).id
    assert list(model_id.to_json()) == ["name", "version", "path", "architecture", "labels",
                                        "checksums", "checksum"]
    assert model_id.version is None and model_id.labels == ["neg", "pos"]
    assert "config.json" in model_id.checksums
    assert model_id.checksum == combined_checksum(model_id.checksums)


def test_an_embedding_model_s_id_names_its_kind_and_dimension():
    model_id = modeldir.read("all-minilm-l6-v2").id
    assert list(model_id.to_json()) == ["name", "version", "path", "kind", "architecture",
                                        "dimension", "checksums", "checksum"]
    assert (model_id.kind, model_id.dimension) == ("embedding", 384)
    assert model_id.checksum == combined_checksum(model_id.checksums)
