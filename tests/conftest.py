"""Shared fixtures: a tiny randomly initialised BERT model directory (seconds to load and
compile), and the real packaged default model for the few end-to-end tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Compiled XLA programs persist in a cache; tests get a fresh one, shared by their subprocesses.
os.environ["SCORER_XLA_CACHE"] = tempfile.mkdtemp(prefix="scorer-test-xla-")

import scorer  # noqa: F401  (sets HF_HUB_OFFLINE and KERAS_BACKEND before TensorFlow loads)
from scorer import backbone as backbones
from scorer import classifier, modeldir

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"

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


def make_hf_checkpoint(path: Path, model_type: str, seed: int = 0) -> Path:
    """A tiny random Hugging Face-format checkpoint (config.json, model.safetensors with HF tensor
    names, the MiniLM tokenizer) of model_type 'bert' or 'distilbert', as `from_pretrained` users
    have on disk."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    vocab, hidden, inter, layers, positions = 30522, 32, 64, 2, 128

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ln(prefix):
        return {prefix + ".weight": np.ones(hidden, np.float32), prefix + ".bias": np.zeros(hidden, np.float32)}

    t = {}
    if model_type == "bert":
        config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": vocab,
                  "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
                  "intermediate_size": inter, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                  "attention_probs_dropout_prob": 0.1, "max_position_embeddings": positions,
                  "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}
        t.update({"embeddings.word_embeddings.weight": w(vocab, hidden),
                  "embeddings.position_embeddings.weight": w(positions, hidden),
                  "embeddings.token_type_embeddings.weight": w(2, hidden),
                  **ln("embeddings.LayerNorm"),
                  "pooler.dense.weight": w(hidden, hidden), "pooler.dense.bias": w(hidden)})
        for i in range(layers):
            p = f"encoder.layer.{i}."
            for name, shape in [("attention.self.query", (hidden, hidden)),
                                ("attention.self.key", (hidden, hidden)),
                                ("attention.self.value", (hidden, hidden)),
                                ("attention.output.dense", (hidden, hidden)),
                                ("intermediate.dense", (inter, hidden)), ("output.dense", (hidden, inter))]:
                t[p + name + ".weight"], t[p + name + ".bias"] = w(*shape), w(shape[0])
            t.update(ln(p + "attention.output.LayerNorm"))
            t.update(ln(p + "output.LayerNorm"))
    else:
        config = {"model_type": "distilbert", "architectures": ["DistilBertModel"], "vocab_size": vocab,
                  "dim": hidden, "n_layers": layers, "n_heads": 2, "hidden_dim": inter,
                  "activation": "gelu", "dropout": 0.1, "attention_dropout": 0.1,
                  "max_position_embeddings": positions, "pad_token_id": 0}
        t.update({"distilbert.embeddings.word_embeddings.weight": w(vocab, hidden),
                  "distilbert.embeddings.position_embeddings.weight": w(positions, hidden),
                  **ln("distilbert.embeddings.LayerNorm")})
        for i in range(layers):
            p = f"distilbert.transformer.layer.{i}."
            for name, shape in [("attention.q_lin", (hidden, hidden)), ("attention.k_lin", (hidden, hidden)),
                                ("attention.v_lin", (hidden, hidden)), ("attention.out_lin", (hidden, hidden)),
                                ("ffn.lin1", (inter, hidden)), ("ffn.lin2", (hidden, inter))]:
                t[p + name + ".weight"], t[p + name + ".bias"] = w(*shape), w(shape[0])
            t.update(ln(p + "sa_layer_norm"))
            t.update(ln(p + "output_layer_norm"))
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file(t, str(path / "model.safetensors"))
    src = backbones.packaged_path("all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, path / name)
    return path
