"""scorer.hf.deberta against transformers itself: tiny seeded DeBERTa-v3-style checkpoints and
DebertaV2Model's hidden states come from .venv-hfref (tests/hf_reference/deberta_hidden.py);
the backbone built from the same files must give the same hidden states on right-padded batches.
Config values the backbone cannot reproduce, and tensors it cannot place, are refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from scorer.errors import ModelError
from tests.conftest import REPO

REFERENCE_PYTHON = REPO / ".venv-hfref" / "bin" / "python"
VARIANTS = ("v3", "tanh_gelu")  # deberta_hidden.VARIANTS
BATCHES = 2  # deberta_hidden.BATCHES
TOLERANCE = 1e-5  # max abs difference of hidden states (measured: ~1.2e-6, float32)


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    assert REFERENCE_PYTHON.exists(), ("no .venv-hfref (transformers + torch, the reference): "
                                       "run ./install.sh test")
    out = tmp_path_factory.mktemp("deberta_reference")
    proc = subprocess.run([str(REFERENCE_PYTHON), str(REPO / "tests/hf_reference/deberta_hidden.py"),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def checkpoint(reference: Path, variant: str) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    config = json.loads((reference / variant / "config.json").read_text())
    return config, load_file(str(reference / variant / "model.safetensors"))


def build(config, tensors):
    from scorer.hf import deberta

    return deberta.build_backbone(config, tensors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hidden_states_equal_transformers(reference, variant):
    """Eagerly and XLA-compiled (as scorer runs it), on right-padded batches with a padding
    mask; the head tensors (pooler.*, classifier.*) are in `tensors` and left alone."""
    import tensorflow as tf

    config, tensors = checkpoint(reference, variant)
    assert any(k.startswith("classifier.") for k in tensors)
    backbone = build(config, tensors)
    compiled = tf.function(lambda x: backbone(x, training=False), jit_compile=True)
    expected = np.load(reference / variant / "hidden.npz")
    for b in range(BATCHES):
        mask = expected[f"mask_{b}"]
        inputs = {"token_ids": expected[f"ids_{b}"].astype("int32"),
                  "padding_mask": mask.astype("int32")}
        assert (mask == 0).any()  # right padding present
        for run in (lambda x: backbone(x, training=False), compiled):
            hidden = np.asarray(run(inputs))
            # Padded positions are not outputs (transformers zeroes their embeddings).
            diff = np.abs(hidden - expected[f"hidden_{b}"])[mask.astype(bool)]
            assert diff.max() <= TOLERANCE, f"batch {b}: max abs difference {diff.max():.2e}"


def test_bare_encoder_names_give_the_same_backbone(reference):
    """A DebertaV2Model checkpoint stores the encoder without the "deberta." prefix."""
    config, tensors = checkpoint(reference, "v3")
    bare = {k.removeprefix("deberta."): v for k, v in tensors.items() if k.startswith("deberta.")}
    ids = np.array([[5, 17, 3, 0]], dtype="int32")
    inputs = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}
    np.testing.assert_array_equal(np.asarray(build(config, bare)(inputs)),
                                  np.asarray(build(config, tensors)(inputs)))


def test_log_buckets_equal_transformers_at_deberta_v3_base_size(reference):
    """deberta-v3-base's position_buckets 256 over 512 positions (a float ceil in both
    frameworks) give transformers' bucket for every relative distance, compiled by XLA."""
    import tensorflow as tf
    from keras_hub.src.models.deberta_v3.disentangled_self_attention import \
        DisentangledSelfAttention

    from scorer.hf import deberta

    settings = deberta.read_config(dict(base_config(), position_buckets=256,
                                        max_position_embeddings=512))
    attention = DisentangledSelfAttention(
        num_heads=1, hidden_dim=8, max_position_embeddings=settings.max_relative_positions,
        bucket_size=settings.bucket_size)
    buckets = tf.function(lambda: attention._get_rel_pos(512), jit_compile=True)()
    expected = np.load(reference / "buckets_256_512.npy")
    np.testing.assert_array_equal(np.asarray(buckets)[0, 0], expected)


# ----------------------------------------------------------------------------- refusals

def base_config() -> dict:
    """The "v3" variant's config.json fields, without the reference (fast)."""
    return {"model_type": "deberta-v2", "architectures": ["DebertaV2ForSequenceClassification"],
            "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 48, "max_position_embeddings": 64,
            "relative_attention": True, "position_buckets": 8, "max_relative_positions": -1,
            "pos_att_type": ["p2c", "c2p"], "norm_rel_ebd": "layer_norm", "share_att_key": True,
            "position_biased_input": False, "type_vocab_size": 0, "layer_norm_eps": 1e-7,
            "hidden_act": "gelu"}


REMOVE = object()


@pytest.mark.parametrize("field, value, says", [
    ("relative_attention", False, "relative_attention false"),
    ("relative_attention", REMOVE, "relative_attention false"),
    ("position_biased_input", True, "position_biased_input true"),
    ("position_biased_input", REMOVE, "position_biased_input true"),
    ("share_att_key", False, "share_att_key false"),
    ("share_att_key", REMOVE, "share_att_key false"),
    ("pos_att_type", ["c2p"], "pos_att_type"),
    ("pos_att_type", "p2c", "pos_att_type"),
    ("pos_att_type", REMOVE, "pos_att_type None"),
    ("norm_rel_ebd", "none", "norm_rel_ebd 'none'"),
    ("norm_rel_ebd", REMOVE, "norm_rel_ebd 'none'"),
    ("hidden_act", "relu", "hidden_act 'relu'"),
    ("hidden_act", "gelu_fast", "hidden_act 'gelu_fast'"),
    ("embedding_size", 16, "embedding_size 16"),
    ("type_vocab_size", 2, "type_vocab_size 2"),
    ("position_buckets", -1, "position_buckets -1"),
    ("position_buckets", REMOVE, "position_buckets -1"),
    ("max_relative_positions", 5, "max_relative_positions 5 with position_buckets 8"),
    ("conv_kernel_size", 3, "conv_kernel_size 3"),
    ("attention_head_size", 8, "attention_head_size 8"),
    ("num_attention_heads", 3, "hidden_size 32 with 3 attention heads"),
    ("hidden_size", REMOVE, "hidden_size must be a positive integer"),
])
def test_config_the_backbone_cannot_reproduce_is_refused(field, value, says):
    from scorer.hf import deberta

    config = base_config()
    if value is REMOVE:
        del config[field]
    else:
        config[field] = value
    with pytest.raises(ModelError) as err:
        deberta.build_backbone(config, {})
    message = str(err.value)
    assert says in message and "\n" not in message, message


@pytest.mark.parametrize("fields, approximate, scale", [
    ({}, False, 64),
    ({"pos_att_type": "c2p|p2c", "hidden_act": "gelu_new"}, True, 64),
    ({"hidden_act": "gelu_pytorch_tanh", "max_relative_positions": 40}, True, 40),
])
def test_config_the_backbone_reproduces_is_read(fields, approximate, scale):
    from scorer.hf import deberta

    settings = deberta.read_config(dict(base_config(), **fields))
    assert (settings.approximate_gelu, settings.max_relative_positions) == (approximate, scale)
    assert (settings.bucket_size, settings.layer_norm_eps) == (8, 1e-7)


# ----------------------------------------------------------------------------- strict tensors

def refused(config, tensors) -> str:
    with pytest.raises(ModelError) as err:
        build(config, tensors)
    return str(err.value)


def test_a_missing_encoder_tensor_is_refused(reference):
    config, tensors = checkpoint(reference, "v3")
    name = "deberta.encoder.layer.1.attention.self.value_proj.bias"
    del tensors[name]
    assert refused(config, tensors) == f"no tensor {name} in the checkpoint's weights"


def test_an_unused_encoder_tensor_is_refused(reference):
    """E.g. a share_att_key=false checkpoint's own position projection, under a config that
    claims otherwise: never dropped silently."""
    config, tensors = checkpoint(reference, "v3")
    extra = "deberta.encoder.layer.0.attention.self.pos_key_proj.weight"
    tensors[extra] = np.zeros((32, 32), np.float32)
    assert extra in refused(config, tensors)


@pytest.mark.parametrize("name, shape", [
    ("deberta.encoder.rel_embeddings.weight", (32, 32)),  # 16 position buckets, not 8
    ("deberta.encoder.layer.0.attention.self.query_proj.weight", (30, 32)),
    ("deberta.encoder.layer.0.intermediate.dense.weight", (32, 48)),  # transposed
])
def test_a_tensor_of_the_wrong_shape_is_refused(reference, name, shape):
    config, tensors = checkpoint(reference, "v3")
    tensors[name] = np.zeros(shape, np.float32)
    message = refused(config, tensors)
    assert name in message and str(shape) in message, message


def test_weights_of_another_model_are_refused():
    assert "not a DeBERTa-v2/v3 checkpoint" in refused(
        base_config(), {"bert.embeddings.word_embeddings.weight": np.zeros((300, 32))})
