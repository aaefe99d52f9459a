"""Model stage: a BERT-family backbone, a pooling step and a dense head, compiled for inference.

    token_ids, padding_mask  [batch, length]
      -> backbone            [batch, length, hidden]
      -> pool (mean/cls)     [batch, hidden]
      -> dropout, dense      [batch, labels]  logits, float32 even under mixed precision
      -> softmax | sigmoid   [batch, labels]  probabilities

Weights that the base encoder does not supply (LoRA adapter + head, or everything) live in one
safetensors file keyed by Keras variable path, so loading never runs code from the model files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from scorer import backbone as backbones
from scorer import runtime
from scorer.errors import ModelError
from scorer.modeldir import ModelDir, ModelSpec

HEAD_NAME = "classifier_head"


# ----------------------------------------------------------------------------- device & precision

@dataclass(frozen=True)
class DevicePolicy:
    device: str  # a TensorFlow device name
    dtype: str  # keras dtype policy name for the backbone

    @property
    def mixed(self) -> bool:
        return self.dtype.startswith("mixed")


def choose_device(gpus: list | None = None, precision: str = "auto") -> DevicePolicy:
    """GPU 0 with float16 mixed precision when a GPU is visible, else CPU in float32.

    precision: auto | float32 | mixed_float16 | mixed_bfloat16. Mixed precision keeps the
    variables and the head in float32 and runs the backbone's matmuls in 16 bits; on a CPU it
    only slows things down, so auto never picks it there.
    """
    if gpus is None:
        gpus = runtime.start()
    device = "/GPU:0" if gpus else "/CPU:0"
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {precision!r}")
    return DevicePolicy(device, precision)


# ----------------------------------------------------------------------------- the Keras model

def build_classifier(backbone, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
    """Wrap a keras-hub backbone into a functional model with a classification head."""
    import keras
    from keras import ops

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    if "segment_ids" in backbone.input:  # BERT wants segment ids: one segment, all zeros
        inputs_for_backbone = dict(inputs, segment_ids=ops.zeros_like(token_ids))
    else:
        inputs_for_backbone = inputs
    out = backbone(inputs_for_backbone)
    sequence = out["sequence_output"] if isinstance(out, dict) else out  # [batch, length, hidden]
    if pooling == "mean":
        mask = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)  # [batch, length, 1]
        pooled = ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
    elif pooling == "cls":
        pooled = sequence[:, 0, :]
    elif pooling == "pooled":
        if not isinstance(out, dict) or "pooled_output" not in out:
            raise ModelError("pooling 'pooled' needs a backbone with a pooler (BERT)")
        pooled = out["pooled_output"]
    else:
        raise ModelError(f"unknown pooling {pooling!r}")
    if pooling != "pooled":
        for layer in backbone.layers:  # BERT's pooler is unused: do not train or decay it
            if layer.name == "pooled_dense":
                layer.trainable = False
    x = keras.layers.Dropout(dropout, name="head_dropout")(pooled)  # [batch, hidden]
    logits = keras.layers.Dense(num_labels, dtype="float32", name=HEAD_NAME)(x)  # [batch, labels]
    return keras.Model(inputs, logits, name="scorer_classifier")


def _by_path(model) -> dict:
    variables = {v.path: v for v in model.weights}
    if len(variables) != len(model.weights):
        raise ModelError("model has variables with the same path: cannot save by path")
    return variables


def save_weights(model, path, scope: str = "trainable") -> list[str]:
    """Write the model's trainable variables (LoRA + head, or all after a full fine-tune) or,
    scope='all', every variable (a model with no pretrained base) to a safetensors file."""
    from safetensors.numpy import save_file

    chosen = model.trainable_weights if scope == "trainable" else model.weights
    tensors = {v.path: np.asarray(v.numpy()) for v in chosen}
    save_file(tensors, str(path))
    return sorted(tensors)


def read_weights(path) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable weights ({e})") from None


def load_weights(model, path, require_all: bool = False) -> None:
    """Assign every tensor in a safetensors file to the variable of the same path, strictly:
    the head (and LoRA, if enabled) must be there, and every variable when require_all."""
    tensors = read_weights(path)
    variables = _by_path(model)
    head = [p for p in variables if p.startswith(HEAD_NAME + "/")]
    lora = [p for p in variables if "lora_kernel" in p]
    needed = set(variables) if require_all else set(head + lora)
    missing = sorted(needed - set(tensors))
    if missing:
        raise ModelError(f"{path}: no weights for {missing[:3]}")
    assign_weights(model, tensors, str(path))


def assign_weights(model, tensors: dict, where: str) -> None:
    variables = _by_path(model)
    unknown = sorted(set(tensors) - set(variables))
    if unknown:
        raise ModelError(f"{where}: weights for variables this model does not have: {unknown[:3]}")
    for name, value in tensors.items():
        var = variables[name]
        if tuple(var.shape) != value.shape:
            raise ModelError(f"{where}: {name} has shape {value.shape}, the model wants {tuple(var.shape)}")
        var.assign(value)


def weights_scope(spec: ModelSpec) -> str:
    """What a model directory must store: everything when no pretrained base supplies the
    encoder, else what training changed (LoRA + head, or all after a full fine-tune)."""
    return "all" if spec.base["kind"] == "config" else "trainable"


def build_from_spec(spec: ModelSpec, dtype=None):
    """The Keras model a spec describes, base weights loaded, LoRA enabled; head untrained."""
    runtime.start()
    # Only the backbone takes a (mixed) dtype policy; the head is float32 by construction.
    backbone = backbones.build_backbone(spec.base, dtype=dtype)
    if spec.lora_rank:
        backbone.enable_lora(spec.lora_rank, target_layer_names=spec.lora_targets)
    return build_classifier(backbone, len(spec.labels), spec.pooling, spec.dropout)


def load_keras_model(model_dir: ModelDir, dtype=None):
    model = build_from_spec(model_dir.spec, dtype)
    # A config-only base has no pretrained weights: every variable must come from the file.
    load_weights(model, model_dir.path / model_dir.spec.weights_file,
                 require_all=model_dir.spec.base["kind"] == "config")
    return model


# ----------------------------------------------------------------------------- compiled inference

class Predictor:
    """Probabilities for padded batches, through one XLA-compiled tf.function.

    Every distinct (rows, length) shape is compiled once, on first use; the encoder only produces
    a small fixed set of shapes. `compile_seconds` is the time those first calls took.
    """

    def __init__(self, model, problem_type: str, policy: DevicePolicy, jit_compile: bool = True):
        import tensorflow as tf

        self.model = model
        self.policy = policy
        self.sigmoid = problem_type == "multi_label"
        self.compile_seconds = 0.0
        self.shapes_seen: set[tuple[int, int]] = set()
        # One trace with a [None, None] signature; XLA still compiles each concrete shape once
        # (and keeps it in its persistent cache), but the Keras graph is traced only once.
        spec = tf.TensorSpec([None, None], tf.int32)
        self._fn = tf.function(self._forward, jit_compile=jit_compile, autograph=False,
                               input_signature=[spec, spec])

    def _forward(self, token_ids, padding_mask):
        import tensorflow as tf

        logits = self.model({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)
        logits = tf.cast(logits, tf.float32)
        return tf.sigmoid(logits) if self.sigmoid else tf.nn.softmax(logits, axis=-1)

    def __call__(self, token_ids: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        shape = tuple(token_ids.shape)
        first = shape not in self.shapes_seen
        start = time.perf_counter()
        with tf.device(self.policy.device):
            probs = self._fn(tf.constant(token_ids, tf.int32), tf.constant(padding_mask, tf.int32))
        probs = probs.numpy()  # [batch, labels] float32
        if first:
            self.shapes_seen.add(shape)
            self.compile_seconds += time.perf_counter() - start
        return probs
