"""Embedding stage: an encoder's token vectors -> one vector per text, as sentence-transformers
computes it, compiled for inference.

    token_ids, padding_mask  [batch, length]
      -> backbone            [batch, length, hidden]
      -> pool                [batch, hidden]     mean | cls | max | mean_sqrt_len_tokens, over real tokens
      -> dense layers        [batch, dim]        optional: x W^T + b, activation (+ residual)
      -> L2 normalise        [batch, dim]        optional
A text scored as several windows gets the mean of its windows' vectors, normalised again when the
model normalises (combine_windows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from scorer import backbone as backbones
from scorer.heads import activation

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens")
# sentence-transformers Dense activation classes (as saved in its config) -> ours.
ACTIVATIONS = {"torch.nn.modules.activation.Tanh": "tanh", "torch.nn.modules.linear.Identity": "identity",
               "torch.nn.modules.activation.ReLU": "relu", "torch.nn.modules.activation.GELU": "gelu",
               "torch.nn.modules.activation.Sigmoid": "sigmoid", "torch.nn.modules.activation.SiLU": "silu"}
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # [out, in] float32, as torch stores it
    bias: np.ndarray | None  # [out]
    activation: str  # one of ACTIVATIONS' values
    residual: bool = False  # add the input (or residual_weight @ input when the widths differ)
    residual_weight: np.ndarray | None = None  # [out, in]


@dataclass(frozen=True)
class EmbeddingHead:
    """What follows the encoder: pooling, dense layers, normalisation."""

    pooling: str
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False

    @property
    def dimension(self) -> int | None:
        """The output width (None: the encoder's hidden size, when there is no dense layer)."""
        return self.dense[-1].weight.shape[0] if self.dense else None


# ----------------------------------------------------------------------------- arithmetic (TF)

def pool(sequence, padding_mask, mode: str):
    """[batch, length, hidden] -> [batch, hidden] float32 over the real tokens (padding_mask 1)."""
    import tensorflow as tf

    x = tf.cast(sequence, tf.float32)
    mask = tf.cast(padding_mask, tf.float32)[:, :, None]  # [batch, length, 1]
    if mode == "cls":
        return x[:, 0, :]
    if mode == "max":
        return tf.reduce_max(tf.where(mask > 0, x, tf.constant(-np.inf, tf.float32)), axis=1)
    total = tf.reduce_sum(x * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)  # [batch, 1]
    return total / (count if mode == "mean" else tf.sqrt(count))


def pool_slots(sequence, slot_onehot, position_ids, mode: str):
    """Packed rows: [batch, length, hidden] -> [batch, slots, hidden] float32, each slot pooled
    over its own tokens (mean, cls or mean_sqrt_len_tokens; max is never packed)."""
    import tensorflow as tf

    x = tf.cast(sequence, tf.float32)
    onehot = tf.cast(slot_onehot, tf.float32)  # [batch, slots, length]
    if mode == "cls":
        first = onehot * tf.cast(tf.equal(position_ids, 0), tf.float32)[:, None, :]
        return tf.einsum("bsl,blh->bsh", first, x)
    total = tf.einsum("bsl,blh->bsh", onehot, x)
    count = tf.maximum(tf.reduce_sum(onehot, axis=-1, keepdims=True), 1e-9)  # [batch, slots, 1]
    return total / (count if mode == "mean" else tf.sqrt(count))


def apply_head(head: EmbeddingHead, pooled):
    """Dense layers and normalisation on [..., hidden] float32."""
    import tensorflow as tf

    x = pooled
    for layer in head.dense:
        y = tf.tensordot(x, tf.constant(layer.weight.T), axes=1)
        if layer.bias is not None:
            y = y + tf.constant(layer.bias)
        y = _activation(layer.activation)(y)
        if layer.residual:
            y = y + (x if layer.residual_weight is None
                     else tf.tensordot(x, tf.constant(layer.residual_weight.T), axes=1))
        x = y
    if head.normalize:
        x = x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), NORMALIZE_EPS)
    return x


def _activation(name: str):
    import tensorflow as tf

    if name == "identity":
        return tf.identity
    if name == "sigmoid":
        return tf.sigmoid
    return activation(name)  # tanh, relu, gelu (exact, as torch.nn.GELU()), silu


def combine_windows(vectors: np.ndarray, text_of: np.ndarray, texts: int, normalize: bool) -> np.ndarray:
    """[windows, dim] -> [texts, dim]: the mean of each text's windows' vectors, normalised again
    when the model normalises (a mean of unit vectors is shorter than one). A text of one window
    keeps its vector as it is."""
    counts = np.bincount(text_of, minlength=texts)
    summed = np.zeros((texts, vectors.shape[1]), np.float64)
    np.add.at(summed, text_of, vectors)
    out = summed / np.maximum(counts, 1)[:, None]
    if normalize:
        several = counts > 1
        norms = np.linalg.norm(out[several], axis=1, keepdims=True)
        out[several] /= np.maximum(norms, NORMALIZE_EPS)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- compiled inference

class EmbeddingPredictor:
    """Vectors for batches, through XLA-compiled tf.functions (each batch shape compiled once).
    Packed batches (several texts a row, a keras-hub BERT backbone) run the backbone's layers with
    positions restarting in each slot and attention kept within it, as classifier.Predictor does."""

    def __init__(self, backbone, head: EmbeddingHead, policy, jit_compile: bool = True):
        import keras_hub

        self.backbone = backbone
        self.head = head
        self.policy = policy
        self.compile_seconds = 0.0
        self.shapes_seen: set[tuple[int, int]] = set()
        # max pooling over a slot would need a [batch, slots, length, hidden] mask: not packed
        self.packable = head.pooling != "max" and isinstance(backbone, keras_hub.models.BertBackbone)
        self._segments = "segment_ids" in backbone.input
        self._fn, self._packed_fn = backbones.compiled_forwards(self._forward, self._forward_packed,
                                                                jit_compile)

    def _forward(self, token_ids, padding_mask):
        import tensorflow as tf

        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        if self._segments:  # BERT wants segment ids: one segment, all zeros
            inputs["segment_ids"] = tf.zeros_like(token_ids)
        out = self.backbone(inputs, training=False)
        sequence = out["sequence_output"] if isinstance(out, dict) else out
        return apply_head(self.head, pool(sequence, padding_mask, self.head.pooling))

    def _forward_packed(self, token_ids, slot_ids, position_ids, slot_onehot):
        x = backbones.packed_sequence(self.backbone, token_ids, slot_ids, position_ids)  # [batch, length, hidden]
        return apply_head(self.head, pool_slots(x, slot_onehot, position_ids, self.head.pooling))

    def __call__(self, batch) -> np.ndarray:
        """Vectors [len(batch.rows), dim] of the batch's texts, in batch.rows order."""
        import tensorflow as tf

        shape = tuple(batch.token_ids.shape)
        first = shape not in self.shapes_seen
        start = time.perf_counter()
        with tf.device(self.policy.device):
            if batch.slot_ids is None:
                out = self._fn(batch.token_ids, batch.padding_mask).numpy()[: len(batch.rows)]
            else:
                out = self._packed_fn(batch.token_ids, batch.slot_ids, batch.position_ids,
                                      batch.slot_onehot).numpy()  # [batch, slots, dim]
                out = out.reshape(-1, out.shape[-1])[batch.slots]
        if first:
            self.shapes_seen.add(shape)
            self.compile_seconds += time.perf_counter() - start
        return out
