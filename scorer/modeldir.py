"""A model, read from where a reference points: a scorer model directory (its spec, in the
format of scorer.modelspec, and its files' checksums) or a Hugging Face classifier checkpoint as
it is (scorer.hf). The top of the model-format stack:

    fileio, errors, heads -> modelspec -> registry, hf.checkpoint -> hf.convert -> hf.spec -> modeldir
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from scorer import backbone, fileio, registry, stdir
from scorer.errors import ModelError
from scorer.hf import checkpoint as hf_checkpoint
from scorer.hf import spec as hf_spec
from scorer.hf.checkpoint import Checkpoint
from scorer.modelid import ModelId, combined_checksum
from scorer.modelspec import SPEC_FILE, ModelSpec, parse

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default"


@dataclass
class ModelDir:
    """A model: a directory of ours (a spec), or a Hugging Face classifier checkpoint as it is
    (`checkpoint` set; its spec is derived from config.json and never written)."""

    path: Path
    spec: ModelSpec
    checkpoint: Checkpoint | None = None
    kind = "classifier"  # a sentence-transformers directory reads as a stdir.SentenceTransformerDir

    @functools.cached_property
    def id(self) -> ModelId:
        """What identifies the scored output's model: name, version and a checksum of the spec
        (of a Hugging Face checkpoint: its architecture, labels, and the sha256 of its config and
        weights, the checksum covering them all)."""
        if self.checkpoint is None:
            return ModelId(self.spec.name, self.spec.version, str(self.path),
                           fileio.sha256_file(self.path / SPEC_FILE))
        ckpt = self.checkpoint
        return ModelId(self.spec.name, None, str(self.path), combined_checksum(ckpt.checksums),
                       architecture=ckpt.architecture, labels=self.spec.labels,
                       checksums=ckpt.checksums)


def resolve(ref: str | Path | None) -> Path:
    """A model reference -> its directory: None or 'default' (the packaged default model), a
    model directory, or a registry reference (REGISTRY, REGISTRY@alias, REGISTRY@N)."""
    if ref is None or str(ref) == "default":
        return DEFAULT_MODEL_DIR
    path = registry.resolve(str(ref))
    if not path.is_dir() and str(ref) in backbone.PACKAGED:  # a packaged sentence-transformers model
        return backbone.packaged_path(str(ref))
    if not path.is_dir():
        raise ModelError(f"model directory not found: {ref}")
    return path


def read(ref: str | Path | None, verify: bool = True) -> "ModelDir | stdir.SentenceTransformerDir":
    """Read and check a model directory's spec, and (verify=True) its files' checksums."""
    path = resolve(ref)
    spec_path = path / SPEC_FILE
    if stdir.is_sentence_transformers(path) and not spec_path.exists():
        return stdir.read(path, name=str(ref) if str(ref) in backbone.PACKAGED else "")
    if hf_checkpoint.is_checkpoint(path):
        return from_checkpoint(hf_checkpoint.read(path))
    if not spec_path.is_file():
        raise ModelError(f"{path} is not a scorer model directory: it has no {SPEC_FILE}")
    spec = parse(fileio.read_object(spec_path, ModelError), str(spec_path))
    for name in (spec.weights_file, spec.tokenizer_file):
        if name is not None and not (path / name).resolve().is_relative_to(path.resolve()):
            raise ModelError(f"{path / name}: a symlink out of the model directory")
    model_dir = ModelDir(path, spec)
    if verify:
        verify_files(model_dir)
    return model_dir


def from_checkpoint(ckpt: Checkpoint) -> ModelDir:
    """A Hugging Face classifier checkpoint as a model, with the spec it implies."""
    return ModelDir(ckpt.path, hf_spec.implied_spec(ckpt), ckpt)


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
        actual = fileio.sha256_file(file)
        if actual != expected:
            raise ModelError(f"{file}: sha256 {actual[:12]}... does not match the recorded "
                             f"{expected[:12]}... (corrupt or modified)")
