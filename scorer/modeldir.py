"""The model directory format: one JSON file that says what the model is, plus its files.

    <model>/
      scorer_model.json     this spec (labels, base encoder, pooling, max length, checksums, ...)
      weights.safetensors   the weights the base does not supply: LoRA adapter + head, or all
      tokenizer.json        only when the base encoder does not bring its tokenizer

Nothing here is executable: JSON and safetensors only, no pickle, no Keras model config.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from scorer import jsonfile, registry
from scorer.errors import ModelError
from scorer.hf import checkpoint as hf_checkpoint
from scorer.hf.checkpoint import Checkpoint

SPEC_FILE = registry.SPEC_FILE
FORMAT_VERSION = 2  # the newest this scorer reads
# 2: windowed_temperature. A spec is written with the lowest version that holds it, so a model
# without one still loads in an older scorer, and one with it is refused there ("upgrade scorer")
# instead of scoring windowed texts with the wrong calibration (older readers skip unknown keys).
DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default"
PROBLEM_TYPES = ("single_label", "multi_label")
POOLINGS = ("mean", "cls", "pooled")
HEAD_ACTIVATIONS = (None, "tanh", "relu", "gelu", "gelu_tanh", "silu")


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


@dataclass
class ModelDir:
    """A model: a directory of ours (a spec), or a Hugging Face classifier checkpoint as it is
    (`checkpoint` set; its spec is derived from config.json and never written)."""

    path: Path
    spec: ModelSpec
    checkpoint: "Checkpoint | None" = None

    @functools.cached_property
    def id(self) -> dict:
        """What identifies the scored output's model: name, version and a checksum of the spec
        (of a Hugging Face checkpoint: its architecture, labels, and the sha256 of its config and
        weights, the checksum covering them all)."""
        if self.checkpoint is None:
            return {"name": self.spec.name, "version": self.spec.version, "path": str(self.path),
                    "checksum": sha256_file(self.path / SPEC_FILE)}
        ckpt = self.checkpoint
        combined = hashlib.sha256(json.dumps(ckpt.checksums, sort_keys=True).encode()).hexdigest()
        return {"name": self.spec.name, "version": None, "path": str(self.path),
                "architecture": ckpt.architecture, "labels": self.spec.labels,
                "checksums": ckpt.checksums, "checksum": combined}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(ref: str | Path | None) -> Path:
    """A model reference -> its directory: None or 'default' (the packaged default model), a
    model directory, or a registry reference (REGISTRY, REGISTRY@alias, REGISTRY@N)."""
    if ref is None or str(ref) == "default":
        return DEFAULT_MODEL_DIR
    path = registry.resolve(str(ref))
    if not path.is_dir():
        raise ModelError(f"model directory not found: {ref}")
    return path


def read(ref: str | Path | None, verify: bool = True) -> ModelDir:
    """Read and check a model directory's spec, and (verify=True) its files' checksums."""
    path = resolve(ref)
    spec_path = path / SPEC_FILE
    if hf_checkpoint.is_checkpoint(path):
        return from_checkpoint(hf_checkpoint.read(path))
    if not spec_path.is_file():
        raise ModelError(f"{path} is not a scorer model directory: it has no {SPEC_FILE}")
    raw = jsonfile.read_object(spec_path, ModelError)
    known = {f.name for f in fields(ModelSpec)}
    missing = [k for k in ("name", "labels", "base") if k not in raw]
    if missing:
        raise ModelError(f"{spec_path}: missing {', '.join(missing)}")
    version = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{spec_path}: 'format_version' must be an integer, not {type(version).__name__}")
    if version > FORMAT_VERSION:
        raise ModelError(f"{spec_path}: format_version {raw['format_version']} is newer than this "
                         f"scorer reads ({FORMAT_VERSION}); upgrade scorer")
    spec = ModelSpec(**{k: v for k, v in raw.items() if k in known})
    spec.validate(str(spec_path))
    for name in (spec.weights_file, spec.tokenizer_file):
        if name is not None and not (path / name).resolve().is_relative_to(path.resolve()):
            raise ModelError(f"{path / name}: a symlink out of the model directory")
    model_dir = ModelDir(path, spec)
    if verify:
        verify_files(model_dir)
    return model_dir


def from_checkpoint(ckpt: "Checkpoint") -> ModelDir:
    """The spec a Hugging Face classifier checkpoint implies: its labels and problem type, its
    head (the first token, a dense layer with the architecture's activation, the classifier),
    and the smaller of the tokenizer's model_max_length and the position limit."""
    from scorer.hf import convert

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
    spec.validate(str(ckpt.path / hf_checkpoint.CONFIG_FILE))
    return ModelDir(ckpt.path, spec, ckpt)


def verify_files(model_dir: ModelDir) -> None:
    spec = model_dir.spec
    needed = [spec.weights_file] + ([spec.tokenizer_file] if spec.tokenizer_file else [])
    for name in needed:
        file = model_dir.path / name
        if not file.is_file():
            raise ModelError(f"{model_dir.path}: missing {name}")
        expected = spec.checksums.get(name)
        if expected is None:
            raise ModelError(f"{model_dir.path}: no checksum recorded for {name}")
        actual = sha256_file(file)
        if actual != expected:
            raise ModelError(f"{file}: sha256 {actual[:12]}... does not match the recorded "
                             f"{expected[:12]}... (corrupt or modified)")


def write_spec(path: Path, spec: ModelSpec) -> None:
    """Record the checksums of the directory's files and write the spec last."""
    spec.checksums = {
        name: sha256_file(path / name)
        for name in [spec.weights_file] + ([spec.tokenizer_file] if spec.tokenizer_file else [])
    }
    spec.format_version = 2 if spec.windowed_temperature is not None else 1
    spec.validate(str(path / SPEC_FILE))
    (path / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
