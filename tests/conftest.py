"""Shared fixtures: a tiny randomly initialised BERT model directory (seconds to load and
compile), and the real packaged default model for the few end-to-end tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import scorer  # noqa: F401  (sets HF_HUB_OFFLINE and KERAS_BACKEND before TensorFlow loads)
from scorer import backbone as backbones
from scorer import classifier, modeldir

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
DATASETS = REPO.parent / "shared" / "datasets"

TINY_BERT = {"vocabulary_size": 30522, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
             "intermediate_dim": 64, "max_sequence_length": 128, "num_segments": 2}


def make_tiny_model(path: Path, labels=("negative", "positive"), problem_type="single_label",
                    seed: int = 1, max_length: int = 64, name: str = "tiny") -> Path:
    """A randomly initialised 2-layer BERT with the real MiniLM tokenizer, saved in our format."""
    import keras

    keras.utils.set_random_seed(seed)
    spec = modeldir.ModelSpec(
        name=name, labels=list(labels), problem_type=problem_type, max_length=max_length,
        base={"kind": "config", "architecture": "BertBackbone", "config": TINY_BERT},
        tokenizer_file="tokenizer.json", training={"note": "random weights, for tests"})
    model = classifier.build_from_spec(spec)
    path.mkdir(parents=True, exist_ok=True)
    classifier.save_weights(model, path / spec.weights_file, scope="all")
    shutil.copy(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json", path / "tokenizer.json")
    modeldir.write_spec(path, spec)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_multilabel_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny_ml",
                           labels=("a", "b", "c"), problem_type="multi_label", name="tiny-ml")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_model):
    from scorer import Scorer

    return Scorer.load(tiny_model)


@pytest.fixture(scope="session")
def default_scorer():
    from scorer import Scorer

    return Scorer.load()
