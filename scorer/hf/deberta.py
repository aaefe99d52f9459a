"""Hugging Face DeBERTa-v2/v3 encoder -> keras-hub DebertaV3Backbone (keras-hub 0.32 has the
backbone but no converter from transformers' checkpoints).

Only the DeBERTa-v3 arithmetic is accepted, because it is the only one the backbone computes:
relative attention with log buckets (position_buckets > 0), c2p + p2c scores, keys shared with
the relative embeddings, LayerNorm on the relative embeddings, no absolute positions, no token
types, no embedding projection, no convolution layer. Any other value of a field that changes
that arithmetic is refused with a ModelError, never ignored. The two fields keras-hub hard-codes
and transformers reads from config.json, layer_norm_eps and hidden_act, are set on the built
layers. tests/test_hf_deberta.py checks the hidden states against transformers' DebertaV2Model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from scorer.errors import ModelError
from scorer.hf.tensors import assign_tensor

# hidden_act -> whether it is the tanh approximation of GELU (transformers: "gelu" is exact erf).
_GELU_IS_APPROXIMATE = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# A buffer older transformers versions saved; it holds no weights (and DeBERTa-v3 has no
# absolute positions to index with it).
_BUFFERS = ("embeddings.position_ids",)


@dataclass(frozen=True)
class DebertaConfig:
    """What the backbone needs from config.json, its arithmetic checked."""

    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    dropout: float
    bucket_size: int  # position_buckets
    # The log-bucket scale: transformers' max_relative_positions (max_position_embeddings when
    # < 1); keras-hub reads it from the backbone's max_sequence_length and uses it for nothing else.
    max_relative_positions: int
    layer_norm_eps: float
    approximate_gelu: bool


def read_config(config: Mapping) -> DebertaConfig:
    """The backbone's settings from a DeBERTa-v2 config.json; a ModelError for any value the
    backbone would compute differently from transformers. Absent fields take transformers'
    defaults (which are DeBERTa-v2's, not v3's: a v3 config states them)."""

    def refuse(what: str, why: str):
        raise ModelError(f"config.json: {what} is not supported ({why})")

    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ModelError(f"config.json: {key} must be a positive integer, not "
                             f"{config.get(key)!r}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads:
        refuse(f"hidden_size {hidden} with {heads} attention heads", "not a multiple")
    if config.get("attention_head_size", hidden // heads) != hidden // heads:
        refuse(f"attention_head_size {config['attention_head_size']}",
               "the backbone's heads are hidden_size / num_attention_heads wide")
    if config.get("embedding_size", hidden) != hidden:
        refuse(f"embedding_size {config['embedding_size']} != hidden_size {hidden}",
               "the backbone has no embedding projection")
    if not config.get("relative_attention", False):
        refuse("relative_attention false", "the backbone always uses relative attention")
    if config.get("position_biased_input", True):
        refuse("position_biased_input true (or absent)", "the backbone has no absolute positions")
    if config.get("type_vocab_size", 0) != 0:
        refuse(f"type_vocab_size {config['type_vocab_size']}", "the backbone has no token types")
    if not config.get("share_att_key", False):
        refuse("share_att_key false (or absent)",
               "the backbone projects relative embeddings with the content query/key weights")
    if _names(config.get("pos_att_type")) != {"c2p", "p2c"}:
        refuse(f"pos_att_type {config.get('pos_att_type')!r}", "the backbone adds c2p and p2c")
    if _names(config.get("norm_rel_ebd", "none")) != {"layer_norm"}:
        refuse(f"norm_rel_ebd {config.get('norm_rel_ebd', 'none')!r}",
               "the backbone layer-normalises the relative embeddings")
    if config.get("conv_kernel_size", 0) > 0:
        refuse(f"conv_kernel_size {config['conv_kernel_size']}", "the backbone has no conv layer")
    buckets = config.get("position_buckets", -1)
    if not isinstance(buckets, int) or buckets < 1:
        refuse(f"position_buckets {buckets!r}", "the backbone always uses log-bucketed positions")
    max_relative = config.get("max_relative_positions", -1)
    if max_relative < 1:
        max_relative = config.get("max_position_embeddings", 512)
    if max_relative - 1 <= buckets // 2:  # the log-bucket formula divides by log((max - 1) / mid)
        refuse(f"max_relative_positions {max_relative} with position_buckets {buckets}",
               "no log-bucket scale")
    act = config.get("hidden_act", "gelu")
    if act not in _GELU_IS_APPROXIMATE:
        refuse(f"hidden_act {act!r}", f"one of {', '.join(_GELU_IS_APPROXIMATE)}")
    return DebertaConfig(
        vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
        num_heads=heads, hidden_dim=hidden, intermediate_dim=config["intermediate_size"],
        dropout=float(config.get("hidden_dropout_prob", 0.1)), bucket_size=buckets,
        max_relative_positions=max_relative,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-7)),
        approximate_gelu=_GELU_IS_APPROXIMATE[act])


def _names(value) -> set[str] | None:
    """transformers' "a|b" strings and lists of names, as a set (None when neither)."""
    if isinstance(value, str):
        return {x.strip() for x in value.lower().split("|")}
    if isinstance(value, list):
        return {str(x).strip().lower() for x in value}
    return None


def build_backbone(config: Mapping, tensors: Mapping[str, np.ndarray], dtype=None):
    """A keras_hub.models.DebertaV3Backbone from a checkpoint's config.json and its tensors by
    Hugging Face name ("deberta.encoder..." as a classifier stores them, or "encoder..." as a
    bare DebertaV2Model does). Every backbone variable gets a tensor of its shape and every
    encoder tensor is used, else ModelError; head tensors (pooler.*, classifier.*) are left to
    the caller."""
    import keras
    import keras_hub
    from keras_hub.src.utils.keras_utils import gelu_approximate

    settings = read_config(config)
    backbone = keras_hub.models.DebertaV3Backbone(
        vocabulary_size=settings.vocabulary_size, num_layers=settings.num_layers,
        num_heads=settings.num_heads, hidden_dim=settings.hidden_dim,
        intermediate_dim=settings.intermediate_dim, dropout=settings.dropout,
        max_sequence_length=settings.max_relative_positions, bucket_size=settings.bucket_size,
        dtype=dtype)
    # keras-hub hard-codes exact GELU and eps 1e-7; both are read at call time.
    act = gelu_approximate if settings.approximate_gelu else keras.activations.gelu
    for encoder in backbone.transformer_layers:
        encoder.activation = act
        encoder._feedforward_intermediate_dense.activation = act
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.epsilon = settings.layer_norm_eps

    porter = _Porter(tensors, _encoder_prefix(tensors))
    _port(backbone, porter, settings.num_heads)
    unset = [v.path for v in backbone.weights if id(v) not in porter.assigned]
    if unset:
        raise ModelError(f"the DeBERTa conversion left {unset[:3]} unset")
    unused = sorted(k for k in _encoder_tensor_names(tensors, porter.prefix) if k not in porter.used)
    if unused:
        raise ModelError(f"DeBERTa tensors the backbone has no place for: {unused[:4]} "
                         "(an architecture variant scorer does not reproduce)")
    return backbone


def _encoder_prefix(tensors: Mapping) -> str:
    for prefix in ("deberta.", ""):
        if prefix + WORD_EMBEDDINGS in tensors:
            return prefix
    raise ModelError(f"no tensor deberta.{WORD_EMBEDDINGS} (nor {WORD_EMBEDDINGS}): not a "
                     "DeBERTa-v2/v3 checkpoint's weights")


def _encoder_tensor_names(tensors: Mapping, prefix: str) -> list[str]:
    parts = (prefix,) if prefix else ("embeddings.", "encoder.")
    return [k for k in tensors
            if k.startswith(parts) and not k.removeprefix(prefix).startswith(_BUFFERS)]


@dataclass
class _Porter:
    """Assigns tensors to variables, recording which tensors and variables were used."""

    tensors: Mapping[str, np.ndarray]
    prefix: str
    used: set[str] = field(default_factory=set)
    assigned: set[int] = field(default_factory=set)  # id() of each assigned variable

    def assign(self, variable, name: str, layout: Callable[[np.ndarray], np.ndarray] = np.asarray):
        key = self.prefix + name
        if key not in self.tensors:
            raise ModelError(f"no tensor {key} in the checkpoint's weights")
        tensor = np.asarray(self.tensors[key])
        try:
            value = layout(tensor)
        except ValueError:  # a reshape that cannot be done: the tensor has the wrong shape
            value = tensor
        assign_tensor(variable, value, key, tensor.shape)
        self.used.add(key)
        self.assigned.add(id(variable))


def _port(backbone, porter: _Porter, num_heads: int) -> None:
    """transformers' DebertaV2Model names -> the backbone's variables. torch Linear weights are
    [out, in]: Keras kernels are [in, out], and q/k/v kernels are split per head."""

    def linear(w):
        return w.T

    def per_head(w):  # [heads * head_dim, hidden] -> [hidden, heads, head_dim]
        return w.T.reshape(w.shape[1], num_heads, -1)

    def per_head_bias(b):
        return b.reshape(num_heads, -1)

    def layer_norm(keras_layer, name):
        porter.assign(keras_layer.gamma, f"{name}.weight")
        porter.assign(keras_layer.beta, f"{name}.bias")

    def dense(keras_layer, name, kernel_layout=linear, bias_layout=np.asarray):
        porter.assign(keras_layer.kernel, f"{name}.weight", kernel_layout)
        porter.assign(keras_layer.bias, f"{name}.bias", bias_layout)

    porter.assign(backbone.token_embedding.embeddings, WORD_EMBEDDINGS)
    layer_norm(backbone.embeddings_layer_norm, "embeddings.LayerNorm")
    porter.assign(backbone.relative_embeddings.rel_embeddings, "encoder.rel_embeddings.weight")
    layer_norm(backbone.relative_embeddings.layer_norm, "encoder.LayerNorm")
    for i, encoder in enumerate(backbone.transformer_layers):
        hf = f"encoder.layer.{i}."
        attention = encoder._self_attention_layer
        for keras_dense, proj in ((attention._query_dense, "query_proj"),
                                  (attention._key_dense, "key_proj"),
                                  (attention._value_dense, "value_proj")):
            dense(keras_dense, f"{hf}attention.self.{proj}", per_head, per_head_bias)
        dense(attention._output_dense, f"{hf}attention.output.dense")
        layer_norm(encoder._self_attention_layer_norm, f"{hf}attention.output.LayerNorm")
        dense(encoder._feedforward_intermediate_dense, f"{hf}intermediate.dense")
        dense(encoder._feedforward_output_dense, f"{hf}output.dense")
        layer_norm(encoder._feedforward_layer_norm, f"{hf}output.LayerNorm")
