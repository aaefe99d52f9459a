"""The scorer spec a Hugging Face classifier checkpoint implies: its labels and problem type, its
head (the first token, a dense layer with the architecture's activation, the classifier), and
the smaller of the tokenizer's model_max_length and the position limit. Never written: the
checkpoint is read as it is (scorer.modeldir)."""

from __future__ import annotations

import json

from scorer.errors import ModelError
from scorer.hf import convert
from scorer.hf.checkpoint import CONFIG_FILE, Checkpoint
from scorer.modelspec import ModelSpec


def implied_spec(ckpt: Checkpoint) -> ModelSpec:
    tokenizer_max = None
    tokenizer_config = ckpt.path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        try:
            tokenizer_max = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            raise ModelError(f"{tokenizer_config}: not readable JSON ({e})") from None
    convert.check_config(ckpt)
    spec = ModelSpec(
        name=ckpt.path.name, labels=ckpt.labels, problem_type=ckpt.problem_type,
        base={"kind": "hf_dir", "path": str(ckpt.path), "sha256": dict(ckpt.checksums)},
        max_length=ckpt.max_length(tokenizer_max if isinstance(tokenizer_max, (int, float)) else None),
        pooling="cls", head_activation=convert.head_activation(ckpt), dropout=0.0,
        weights_file=ckpt.weight_files[0], checksums=dict(ckpt.checksums),
        training={"source": "Hugging Face checkpoint", "architecture": ckpt.architecture})
    spec.validate(str(ckpt.path / CONFIG_FILE))
    return spec
