"""Model stage: a BERT-family backbone, a pooling step and a dense head, compiled for inference.

    token_ids, padding_mask  [batch, length]
      -> backbone            [batch, length, hidden]
      -> pool (mean/cls)     [batch, hidden]
      -> dense + activation  [batch, hidden]  only with a head_activation (Hugging Face heads)
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
from scorer.heads import HEAD_DENSE, HEAD_NAME, activation
from scorer.hf import convert
from scorer.modeldir import ModelDir
from scorer.modelspec import ModelSpec


# ----------------------------------------------------------------------------- device & precision

@dataclass(frozen=True)
class DevicePolicy:
    device: str  # a TensorFlow device name
    dtype: str  # keras dtype policy name for the backbone
    int8: bool = False  # scored by scorer.quantized (int8 matmuls on the CPU, OpenVINO)

    @property
    def mixed(self) -> bool:
        return self.dtype.startswith("mixed")

    @property
    def precision(self) -> str:
        """What the run's manifest records: int8, or the backbone's dtype policy."""
        return "int8" if self.int8 else self.dtype


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "int8")


def choose_device(gpus: list | None = None, precision: str = "auto") -> DevicePolicy:
    """GPU 0 with float16 mixed precision when a GPU is visible, else CPU in float32.

    precision: auto | float32 | mixed_float16 | mixed_bfloat16 | int8. Mixed precision keeps the
    variables and the head in float32 and runs the backbone's matmuls in 16 bits; on a CPU it
    only slows things down, so auto never picks it there. int8 (CPU only, the openvino extra):
    the model is loaded in float32 and its matmul weights quantized by scorer.quantized.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "int8":
        runtime.require_openvino()  # before anything is loaded: exit 2 naming the extra
        if gpus is None:
            runtime.start()
        return DevicePolicy("/CPU:0", "float32", int8=True)
    if gpus is None:
        gpus = runtime.start()
    device = "/GPU:0" if gpus else "/CPU:0"
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    return DevicePolicy(device, precision)


# ----------------------------------------------------------------------------- the Keras model

def build_classifier(backbone, num_labels: int, pooling: str = "mean", dropout: float = 0.1,
                     head_activation: str | None = None):
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
    if head_activation is not None:
        pooled = keras.layers.Dense(pooled.shape[-1], activation=activation(head_activation),
                                    name=HEAD_DENSE)(pooled)  # [batch, hidden]
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
    # Only the backbone takes a (mixed) dtype policy; the head is float32 by construction.
    backbone = backbones.build_backbone(spec.base, dtype=dtype)
    if spec.lora_rank:
        backbone.enable_lora(spec.lora_rank, target_layer_names=spec.lora_targets)
    return build_classifier(backbone, len(spec.labels), spec.pooling, spec.dropout,
                            spec.head_activation)


def load_keras_model(model_dir: ModelDir, dtype=None):
    if model_dir.checkpoint is not None:
        return load_checkpoint_model(model_dir, dtype)
    model = build_from_spec(model_dir.spec, dtype)
    # A config-only base has no pretrained weights: every variable must come from the file.
    load_weights(model, model_dir.path / model_dir.spec.weights_file,
                 require_all=model_dir.spec.base["kind"] == "config")
    return model


def load_checkpoint_model(model_dir: ModelDir, dtype=None):
    """A Hugging Face classifier checkpoint as it is: its encoder and its head."""
    runtime.start()
    ckpt = model_dir.checkpoint
    tensors = ckpt.tensors()
    backbone = convert.build_backbone(ckpt, tensors, dtype=dtype)
    spec = model_dir.spec
    model = build_classifier(backbone, len(spec.labels), spec.pooling, spec.dropout,
                             spec.head_activation)
    assign_weights(model, convert.head_weights(ckpt, tensors), str(ckpt.path))
    return model


# ----------------------------------------------------------------------------- compiled inference

def packing_supported(model) -> bool:
    """Packed batches need BERT's embeddings and an attention mask: keras-hub BertBackbone."""
    import keras_hub

    return isinstance(backbone_layer(model), keras_hub.models.BertBackbone)


def backbone_layer(model):
    """The model's keras-hub backbone (its encoder) layer; None if it has none."""
    import keras_hub

    return next((layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)), None)


class Predictor:
    """Probabilities for batches, through XLA-compiled tf.functions.

    Every distinct batch shape is compiled once, on first use; the encoder only produces a small
    fixed set of shapes. `compile_seconds` is the time those first calls took. Unpacked batches
    run the Keras model; packed ones (several texts a row) run the same layers with positions
    restarting in each slot, attention kept within a slot, and pooling per slot.

    `outputs(batch, which)` also gives the features: the vector the classifier head reads (the
    pooled output, after the head's dense + activation when it has one), from the same forward
    pass as the probabilities (which="both") or without the head (which="features"). Each
    `which` is traced on its first use only.
    """

    def __init__(self, model, problem_type: str, policy: DevicePolicy, jit_compile: bool = True,
                 pooling: str = "mean", temperature: float = 1.0):
        self.model = model
        self.policy = policy
        self.pooling = pooling
        self.sigmoid = problem_type == "multi_label"
        self.temperature = float(temperature)  # logits / temperature: the model's calibration
        self.compile_seconds = 0.0
        self.shapes_seen: set[tuple[int, int]] = set()
        self._backbone = backbone_layer(model)  # packed batches run its layers (BERT only)
        self._head = model.get_layer(HEAD_NAME)
        names = {layer.name for layer in model.layers}
        self._head_dense = model.get_layer(HEAD_DENSE) if HEAD_DENSE in names else None
        self._fn, self._packed_fn = backbones.compiled_forwards(self._forward, self._forward_packed,
                                                                jit_compile)
        self._jit_compile = jit_compile
        self._output_fns: dict[str, tuple] = {PROBABILITIES: (self.run_plain, self.run_packed)}

    @property
    def features_width(self) -> int:
        """The width of what the head reads (the hidden size, or the head dense layer's)."""
        return int(self._head.kernel.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self._head.kernel.shape[1])

    def _probabilities(self, logits):
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32) / self.temperature
        return tf.sigmoid(logits) if self.sigmoid else tf.nn.softmax(logits, axis=-1)

    def _forward(self, token_ids, padding_mask):
        logits = self.model({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)
        return self._probabilities(logits)  # [batch, labels]

    def _forward_packed(self, token_ids, slot_ids, position_ids, slot_onehot):
        return self._probabilities(self._head(self._packed_head_input(
            token_ids, slot_ids, position_ids, slot_onehot)))  # [batch, slots, labels]

    def _packed_head_input(self, token_ids, slot_ids, position_ids, slot_onehot):
        """What the head reads for each slot of a packed batch: [batch, slots, hidden]."""
        import tensorflow as tf

        x = backbones.packed_sequence(self._backbone, token_ids, slot_ids, position_ids)  # [batch, length, hidden]
        onehot = tf.cast(slot_onehot, x.dtype)  # [batch, slots, length]
        if self.pooling == "mean":
            counts = tf.maximum(tf.reduce_sum(onehot, axis=-1, keepdims=True), 1.0)
            pooled = tf.einsum("bsl,blh->bsh", onehot, x) / counts  # [batch, slots, hidden]
        else:  # cls / pooled: the first token of each slot
            first = onehot * tf.cast(tf.equal(position_ids, 0), x.dtype)[:, None, :]
            pooled = tf.einsum("bsl,blh->bsh", first, x)
            if self.pooling == "pooled":
                pooled = self._backbone.pooled_dense(pooled)
        if self._head_dense is not None:
            pooled = self._head_dense(pooled)  # [batch, slots, hidden]
        return pooled

    def run_plain(self, token_ids, padding_mask) -> np.ndarray:
        """Probabilities [batch, labels] of an unpacked batch (one text a row)."""
        return self._fn(token_ids, padding_mask).numpy()

    def run_packed(self, token_ids, slot_ids, position_ids, slot_onehot) -> np.ndarray:
        """Probabilities [batch, slots, labels] of a packed batch."""
        return self._packed_fn(token_ids, slot_ids, position_ids, slot_onehot).numpy()

    def __call__(self, batch) -> np.ndarray:
        """Probabilities [len(batch.rows), labels] of the batch's texts, in batch.rows order."""
        return self.outputs(batch, PROBABILITIES)[0]

    def outputs(self, batch, which: str) -> tuple[np.ndarray, ...]:
        """The batch's texts' outputs in batch.rows order: (probabilities [rows, labels],),
        (features [rows, hidden] float32,) or, which="both", (features, probabilities)."""
        import tensorflow as tf

        plain, packed = self._output_functions(which)
        # shapes_seen: the batch shapes compiled for probabilities, and (which, *shape) for others
        shape = tuple(batch.token_ids.shape) if which == PROBABILITIES else (which, *batch.token_ids.shape)
        first = shape not in self.shapes_seen
        start = time.perf_counter()
        with tf.device(self.policy.device):
            if batch.slot_ids is None:
                out = plain(batch.token_ids, batch.padding_mask)  # each [batch, width]
                out = [o[: len(batch.rows)] for o in _as_tuple(out)]
            else:
                out = packed(batch.token_ids, batch.slot_ids, batch.position_ids,
                             batch.slot_onehot)  # each [batch, slots, width]
                out = [o.reshape(-1, o.shape[-1])[batch.slots] for o in _as_tuple(out)]
        if first:
            self.shapes_seen.add(shape)
            self.compile_seconds += time.perf_counter() - start
        return tuple(out)

    def _output_functions(self, which: str) -> tuple:
        """(plain, packed) functions of numpy batches for `which`, traced on first use."""
        if which not in self._output_fns:
            if which not in (FEATURES, BOTH):
                raise ValueError(f"unknown output {which!r}")
            import keras
            import tensorflow as tf

            # The sub-model up to the head's input: the same layers and weights as self.model.
            features_model = keras.Model(self.model.input, self._head.input)
            with_probabilities = which == BOTH

            def finish(features):
                out = tf.cast(features, tf.float32)
                return (out, self._probabilities(self._head(features))) if with_probabilities else out

            def plain(token_ids, padding_mask):
                return finish(features_model({"token_ids": token_ids, "padding_mask": padding_mask},
                                             training=False))

            def packed(token_ids, slot_ids, position_ids, slot_onehot):
                return finish(self._packed_head_input(token_ids, slot_ids, position_ids, slot_onehot))

            plain_fn, packed_fn = backbones.compiled_forwards(plain, packed, self._jit_compile)
            self._output_fns[which] = (lambda *a: _numpy(plain_fn(*a)), lambda *a: _numpy(packed_fn(*a)))
        return self._output_fns[which]


PROBABILITIES, FEATURES, BOTH = "probabilities", "features", "both"  # Predictor.outputs' `which`


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _numpy(out):
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()
