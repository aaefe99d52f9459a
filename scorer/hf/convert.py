"""Hugging Face checkpoint -> keras-hub backbone and classifier head, with the arithmetic exact.

    config.json + safetensors tensors
      -> keras-hub backbone, weights ported by keras-hub's own converter (DeBERTa: ours)
      -> corrections keras-hub's converters leave out, each checked by tests/test_hf.py against
         transformers itself:
           hidden_act (exact erf GELU vs the tanh approximation keras-hub hard-codes),
           layer_norm_eps (hard-coded per family in keras-hub),
           RoBERTa / XLM-R: token-type embedding row 0 (dropped by keras-hub) folded into the
           position embeddings, whose first padding_idx + 1 rows are reserved
      -> strictness: every backbone variable must be set (they start as NaN) and every tensor of
         the encoder used, so a field keras-hub skips can never pass silently
      -> the head as transformers computes it: first token -> dense + activation -> classifier
"""

from __future__ import annotations

import importlib
from typing import Mapping

import numpy as np

from scorer.errors import ModelError
from scorer.heads import HEAD_DENSE, HEAD_NAME, activation
from scorer.hf import deberta
from scorer.hf.checkpoint import Checkpoint
from scorer.hf.tensors import assign_tensor, hooked, tensor_key

# model_type -> (keras-hub converter module, prefix of the encoder's tensors in a classifier)
KERAS_HUB_CONVERTERS = {
    "bert": ("convert_bert", "bert."),
    "distilbert": ("convert_distilbert", "distilbert."),
    "roberta": ("convert_roberta", "roberta."),
    "xlm-roberta": ("convert_xlm_roberta", "roberta."),
    "albert": ("convert_albert", "albert."),
}
ENCODER_PREFIX = {**{k: v[1] for k, v in KERAS_HUB_CONVERTERS.items()}, "deberta-v2": "deberta."}
# Buffers transformers may save beside the weights; they hold no arithmetic.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")

# The head: (dense tensors, its activation, classifier tensors); activation None = config's.
_HEADS = {
    "bert": ("bert.pooler.dense", "tanh", "classifier"),
    "albert": ("albert.pooler", "tanh", "classifier"),
    "distilbert": ("pre_classifier", "relu", "classifier"),
    "roberta": ("classifier.dense", "tanh", "classifier.out_proj"),
    "xlm-roberta": ("classifier.dense", "tanh", "classifier.out_proj"),
    "deberta-v2": ("pooler.dense", None, "classifier"),
}

# Hugging Face activation names -> ours (scorer.heads.HEAD_ACTIVATIONS).
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "relu": "relu", "tanh": "tanh", "silu": "silu",
               "swish": "silu"}


def hidden_activation(ckpt: Checkpoint) -> str:
    key = "activation" if ckpt.model_type == "distilbert" else "hidden_act"
    default = "gelu_new" if ckpt.model_type == "albert" else "gelu"
    return _ours(ckpt, key, ckpt.config.get(key, default))


def _ours(ckpt: Checkpoint, key: str, name) -> str:
    if name not in ACTIVATIONS:
        raise ModelError(f"{ckpt.path}: {key} {name!r} is not supported (one of "
                         f"{', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def layer_norm_eps(ckpt: Checkpoint) -> float:
    if ckpt.model_type == "distilbert":
        return 1e-12  # fixed in transformers' DistilBERT
    return float(ckpt.config.get("layer_norm_eps", 1e-12))


def head_activation(ckpt: Checkpoint) -> str:
    _, act, _ = _HEADS[ckpt.model_type]
    return act or _ours(ckpt, "pooler_hidden_act", ckpt.config.get("pooler_hidden_act", "gelu"))


# ----------------------------------------------------------------------------- checks

def check_config(ckpt: Checkpoint) -> None:
    """Refuse a config field that changes the arithmetic in a way the backbone cannot follow."""
    c = ckpt.config

    def refuse(what):
        raise ModelError(f"{ckpt.path / 'config.json'}: {what} is not supported")

    if c.get("position_embedding_type", "absolute") != "absolute" and ckpt.model_type != "deberta-v2":
        refuse(f"position_embedding_type {c['position_embedding_type']!r}")
    if c.get("is_decoder") or c.get("add_cross_attention"):
        refuse("a decoder (is_decoder / add_cross_attention)")
    if ckpt.model_type in ("roberta", "xlm-roberta") and int(c.get("type_vocab_size", 1)) < 1:
        refuse("type_vocab_size 0")
    hidden_activation(ckpt)
    head_activation(ckpt)


# ----------------------------------------------------------------------------- backbone

class _Tensors:
    """keras-hub's SafetensorLoader interface over tensors in memory, recording what is used.
    A name is looked up as given, with the encoder's prefix, and without it, so the same
    converter reads a classifier ("bert.embeddings...") and a bare encoder ("embeddings...")."""

    def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str):
        self.tensors = tensors
        self.prefix = prefix
        self.used: set[str] = set()

    def get_tensor(self, name: str) -> np.ndarray:
        key = tensor_key(self.tensors, name, self.prefix)
        self.used.add(key)
        return self.tensors[key]

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        value = hooked(self, keras_variable, hf_weight_key, hook_fn)
        assign_tensor(keras_variable, value, hf_weight_key)


def build_backbone(ckpt: Checkpoint, tensors: Mapping[str, np.ndarray], dtype=None):
    """The encoder of a checkpoint as a keras-hub backbone, every weight from `tensors`."""
    check_config(ckpt)
    if ckpt.model_type == "deberta-v2":
        try:
            return deberta.build_backbone(ckpt.config, tensors, dtype=dtype)
        except ModelError as e:
            raise ModelError(f"{ckpt.path}: {e}") from None
    module_name, prefix = KERAS_HUB_CONVERTERS[ckpt.model_type]
    converter = importlib.import_module(f"keras_hub.src.utils.transformers.{module_name}")
    kwargs = converter.convert_backbone_config(ckpt.config)
    if ckpt.model_type == "bert":
        kwargs["num_segments"] = int(ckpt.config.get("type_vocab_size", 2))
    if ckpt.model_type in ("roberta", "xlm-roberta"):
        kwargs["max_sequence_length"] = ckpt.position_limit
    backbone = converter.backbone_cls(**kwargs, dtype=dtype)
    for v in backbone.weights:  # what the converter does not set stays NaN and is caught below
        v.assign(np.full(v.shape, np.nan, dtype=v.dtype))
    source = _Tensors(tensors, prefix)
    try:
        converter.convert_weights(backbone, source, ckpt.config)
        if ckpt.model_type in ("roberta", "xlm-roberta"):
            _roberta_embeddings(ckpt, backbone, source)
    except KeyError as e:
        raise ModelError(f"{ckpt.path}: no tensor {e.args[0]} in its weights") from None
    _set_activation_and_eps(backbone, activation(hidden_activation(ckpt)), layer_norm_eps(ckpt))
    unset = [v.path for v in backbone.weights if np.isnan(np.asarray(v.numpy(), np.float32)).any()]
    if unset:
        raise ModelError(f"{ckpt.path}: the conversion left {unset[:3]} unset")
    _check_all_used(ckpt, tensors, source)
    return backbone


def _roberta_embeddings(ckpt: Checkpoint, backbone, source: _Tensors) -> None:
    """Positions start at padding_idx + 1 (keras-hub assumes padding_idx 1), and every token adds
    token-type embedding 0 (keras-hub has no token types): both folded into one table."""
    offset = int(ckpt.config.get("pad_token_id", 1)) + 1
    positions = source.get_tensor("embeddings.position_embeddings.weight")
    token_type = source.get_tensor("embeddings.token_type_embeddings.weight")[0]
    table = backbone.embeddings.position_embedding.position_embeddings
    length = table.shape[0]
    table.assign(positions[offset:offset + length] + token_type[None, :])


def _set_activation_and_eps(backbone, act, eps: float) -> None:
    import keras
    from keras_hub.layers import TransformerEncoder

    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, TransformerEncoder):
            layer.activation = act
            layer._feedforward_intermediate_dense.activation = act
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.epsilon = eps


def _check_all_used(ckpt: Checkpoint, tensors: Mapping, source: _Tensors) -> None:
    head = set(head_tensor_names(ckpt)) if ckpt.is_classifier else set()
    unused = sorted(k for k in tensors
                    if k not in source.used and k not in head and not k.endswith(_BUFFERS)
                    and not _is_pretraining_head(ckpt, k))
    if unused:
        raise ModelError(f"{ckpt.path}: tensors this conversion does not use: {unused[:4]} "
                         "(an architecture variant scorer does not reproduce)")


def _is_pretraining_head(ckpt: Checkpoint, key: str) -> bool:
    """A bare encoder's masked-LM / pre-training head, or a classifier's when fine-tuning from an
    encoder checkpoint: not part of the encoder."""
    if ckpt.is_classifier:
        return False
    return key.startswith(("cls.", "lm_head.", "predictions.", "vocab_", "sop_classifier.",
                           "classifier.", "pre_classifier.", "pooler.", "mask_predictions."))


# ----------------------------------------------------------------------------- head

def head_tensor_names(ckpt: Checkpoint) -> list[str]:
    dense, _, out = _HEADS[ckpt.model_type]
    return [f"{dense}.weight", f"{dense}.bias", f"{out}.weight", f"{out}.bias"]


def head_weights(ckpt: Checkpoint, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The classifier head as Keras variable paths (scorer.heads: HEAD_DENSE / HEAD_NAME)."""
    dense_w, dense_b, out_w, out_b = head_tensor_names(ckpt)
    missing = [k for k in (dense_w, dense_b, out_w, out_b) if k not in tensors]
    if missing:
        raise ModelError(f"{ckpt.path}: no tensor {missing[0]} (the classifier head)")
    return {f"{HEAD_DENSE}/kernel": tensors[dense_w].T, f"{HEAD_DENSE}/bias": tensors[dense_b],
            f"{HEAD_NAME}/kernel": tensors[out_w].T, f"{HEAD_NAME}/bias": tensors[out_b]}
