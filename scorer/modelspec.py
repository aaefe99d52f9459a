"""The model format: the spec a model directory holds (scorer_model.json), its fields checked.

    <model>/
      scorer_model.json     this spec (labels, base encoder, pooling, max length, checksums, ...)
      weights.safetensors   the weights the base does not supply: LoRA adapter + head, or all
      tokenizer.json        only when the base encoder does not bring its tokenizer

Nothing here is executable: JSON and safetensors only, no pickle, no Keras model config.
scorer.modeldir reads a directory (ours, or a Hugging Face checkpoint through scorer.hf, which
builds this spec from its config).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from scorer import fileio
from scorer.errors import ModelError
from scorer.heads import HEAD_ACTIVATIONS

SPEC_FILE = "scorer_model.json"
FORMAT_VERSION = 2  # the newest this scorer reads
# 2: windowed_temperature. A spec is written with the lowest version that holds it, so a model
# without one still loads in an older scorer, and one with it is refused there ("upgrade scorer")
# instead of scoring windowed texts with the wrong calibration (older readers skip unknown keys).
PROBLEM_TYPES = ("single_label", "multi_label")
POOLINGS = ("mean", "cls", "pooled")


@dataclass(frozen=True)
class Temperatures:
    """The calibration rule, one place for scoring (scorer.api) and the fine-tuning job
    (jobs.metrics): a text's logits are divided by `temperature`, a text scored as several
    windows by `windowed_temperature` instead when there is one."""

    temperature: float = 1.0
    windowed_temperature: float | None = None

    def per_text(self, windows: np.ndarray) -> np.ndarray:
        """[texts] the temperature each text's logits are divided by, from its windows [texts]."""
        return np.where(np.asarray(windows) > 1, self.windowed_temperature or self.temperature,
                        self.temperature)


@dataclass
class ModelSpec:
    name: str
    labels: list[str]  # label names in label-id order
    # Where the encoder comes from, one of:
    #   {"kind": "packaged", "id": "all-minilm-l6-v2"}      a pip-installed pretrained encoder
    #   {"kind": "hf_dir", "path": "/abs/path", "sha256": {file: digest}}   a local Hugging Face
    #       checkpoint, its config and weight files' sha256 recorded at training, checked at load
    #   {"kind": "config", "architecture": "BertBackbone", "config": {...}}   weights all in this dir
    base: dict
    version: str = "1"
    problem_type: str = "single_label"
    threshold: float = 0.5  # multi_label: a label is predicted when its probability is >= this
    # Logits are divided by this before softmax / sigmoid: fitted by the job on its validation
    # set so that a score of 0.8 is right about 80% of the time (1.0: as trained)
    temperature: float = 1.0
    # A text scored as several windows (--long-text window): its mean window logits are divided
    # by this instead, fitted on the validation texts that had several (None: the temperature).
    # The mean is milder than each window, so it wants its own; Hugging Face exports fold only
    # `temperature` (transformers truncates)
    windowed_temperature: float | None = None
    max_length: int = 128
    pooling: str = "mean"
    # A dense layer + this activation between pooling and the classifier (the heads of Hugging
    # Face classifiers: BERT's pooler, RoBERTa's classifier.dense, ...); None: no such layer
    head_activation: str | None = None
    dropout: float = 0.1
    lora_rank: int | None = None
    lora_targets: list[str] | None = None  # backbone layer names; None: keras-hub's (query, value)
    weights_file: str = "weights.safetensors"
    tokenizer_file: str | None = None  # None: the base encoder's tokenizer
    checksums: dict = field(default_factory=dict)  # file name -> sha256
    training: dict = field(default_factory=dict)  # provenance: command, data fingerprint, seed, ...
    metrics: dict = field(default_factory=dict)
    # What the model produces on its validation set (scorer.drift: {"data", "profile"}), the
    # reference runs measure drift against; {}: none here (a sidecar may hold one)
    reference: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def temperatures(self) -> Temperatures:
        return Temperatures(self.temperature, self.windowed_temperature)

    def validate(self, where: str) -> None:
        def bad(msg):
            raise ModelError(f"{where}: {msg}")

        for name, types in _FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                bad(f"{name!r} must be {_TYPE_WORDS[types]}, not {type(value).__name__}")
        _check_base(self.base, bad)
        if not all(isinstance(x, str) for x in self.lora_targets or []):
            bad("'lora_targets' must be a list of layer names")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.checksums.items()):
            bad("'checksums' must map file names to sha256 strings")
        for name in (self.weights_file, self.tokenizer_file):
            if name is not None and not _is_plain_file_name(name):
                bad(f"file name {name!r} must be a plain name inside the model directory")
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            bad("'labels' must be a non-empty list of label names")
        if len(set(self.labels)) != len(self.labels):
            bad("'labels' has duplicate names")
        if self.problem_type not in PROBLEM_TYPES:
            bad(f"'problem_type' must be one of {PROBLEM_TYPES}, not {self.problem_type!r}")
        if self.pooling not in POOLINGS:
            bad(f"'pooling' must be one of {POOLINGS}, not {self.pooling!r}")
        if self.head_activation not in HEAD_ACTIVATIONS:
            bad(f"'head_activation' must be one of {HEAD_ACTIVATIONS}, not {self.head_activation!r}")
        if not 0.01 <= self.temperature <= 100:
            bad(f"'temperature' must be from 0.01 to 100, not {self.temperature!r}")
        if self.windowed_temperature is not None and not 0.01 <= self.windowed_temperature <= 100:
            bad(f"'windowed_temperature' must be from 0.01 to 100, not {self.windowed_temperature!r}")
        if not isinstance(self.max_length, int) or not 2 <= self.max_length <= 8192:
            bad(f"'max_length' must be an integer from 2 to 8192, not {self.max_length!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


# JSON types of the spec's fields (bool, a subclass of int, is refused where it is not listed).
_FIELD_TYPES = {
    "name": (str,), "labels": (list,), "base": (dict,), "version": (str, int),
    "problem_type": (str,), "threshold": (int, float), "temperature": (int, float),
    "windowed_temperature": (int, float, type(None)), "max_length": (int,), "pooling": (str,),
    "head_activation": (str, type(None)), "dropout": (int, float),
    "lora_rank": (int, type(None)), "lora_targets": (list, type(None)), "weights_file": (str,),
    "tokenizer_file": (str, type(None)), "checksums": (dict,), "training": (dict,),
    "metrics": (dict,), "reference": (dict,), "format_version": (int,),
}
_TYPE_WORDS = {(str,): "a string", (list,): "a list", (dict,): "a JSON object",
               (str, int): "a string or an integer", (int, float): "a number", (int,): "an integer",
               (str, type(None)): "a string or null", (int, type(None)): "an integer or null",
               (list, type(None)): "a list or null", (int, float, type(None)): "a number or null"}
# What each base kind must hold, and of which type.
_BASE_FIELDS = {"packaged": {"id": str}, "hf_dir": {"path": str},
                "config": {"architecture": str, "config": dict}}


def _check_base(base: dict, bad) -> None:
    kind = base.get("kind")
    if kind not in _BASE_FIELDS:
        bad(f"'base.kind' must be packaged, hf_dir or config, not {kind!r}")
    for key, kind_type in _BASE_FIELDS[kind].items():
        if not isinstance(base.get(key), kind_type):
            bad(f"'base' of kind {kind} needs {key!r} as {_TYPE_WORDS[(kind_type,)]}, "
                f"not {type(base.get(key)).__name__}")


def _is_plain_file_name(name: str) -> bool:
    """A file directly inside the model directory: no separator, no '..', not absolute."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def parse(raw: dict, where: str) -> ModelSpec:
    """A spec from its JSON object: the required fields, a format this scorer reads, every field
    checked (unknown keys, a newer scorer's, are skipped)."""
    missing = [k for k in ("name", "labels", "base") if k not in raw]
    if missing:
        raise ModelError(f"{where}: missing {', '.join(missing)}")
    version = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{where}: 'format_version' must be an integer, not {type(version).__name__}")
    if version > FORMAT_VERSION:
        raise ModelError(f"{where}: format_version {raw['format_version']} is newer than this "
                         f"scorer reads ({FORMAT_VERSION}); upgrade scorer")
    known = {f.name for f in fields(ModelSpec)}
    spec = ModelSpec(**{k: v for k, v in raw.items() if k in known})
    spec.validate(where)
    return spec


def write_spec(path: Path, spec: ModelSpec) -> None:
    """Record the checksums of the directory's files and write the spec last."""
    spec.checksums = {
        name: fileio.sha256_file(path / name)
        for name in [spec.weights_file] + ([spec.tokenizer_file] if spec.tokenizer_file else [])
    }
    spec.format_version = 2 if spec.windowed_temperature is not None else 1
    spec.validate(str(path / SPEC_FILE))
    fileio.write_atomic(path / SPEC_FILE, spec.to_json())
