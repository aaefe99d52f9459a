"""The encoder a job starts from (--base): resolved to a spec's base, and its weights and head
taken over into the model being trained."""

from __future__ import annotations

from pathlib import Path

from scorer import backbone as backbones
from scorer import classifier, modeldir, modelspec, registry
from scorer.errors import ScorerError
from scorer.heads import HEAD_DENSE, HEAD_NAME
from scorer.hf import checkpoint as hf_checkpoint
from scorer.hf import convert


def resolve_base(base: str) -> tuple[dict, Path | None]:
    """--base -> (the spec's base, a model directory of ours to start from, or None)."""
    base = str(base)
    if base == "default":
        return {"kind": "packaged", "id": "all-minilm-l6-v2"}, None
    if base in backbones.PACKAGED:
        return {"kind": "packaged", "id": base}, None
    path = Path(base)
    if "@" in path.name or (path.is_dir() and (path / modelspec.SPEC_FILE).exists()) or \
            registry.is_registry(path):
        ours = modeldir.read(base)
        return ours.spec.base, ours.path
    if (path / "config.json").is_file():
        # The checksums of its config and weights, checked whenever the model loads (backbone).
        sha256 = hf_checkpoint.read(path, classifier=False).checksums
        return {"kind": "hf_dir", "path": str(path.resolve()), "sha256": sha256}, None
    raise ScorerError(f"--base {base}: not 'default', a packaged encoder id, a scorer model "
                      "directory, or a Hugging Face checkpoint directory (config.json)")


def start_from(model, spec: modelspec.ModelSpec, start: modeldir.ModelDir) -> None:
    """Initialise from a model of ours: its encoder weights (and adapter when the modes match);
    its head only when the label set is the same."""
    if bool(start.spec.lora_rank) != bool(spec.lora_rank) and start.spec.base["kind"] != "config":
        raise ScorerError(f"--base {start.path} was trained with "
                          f"{'LoRA' if start.spec.lora_rank else 'a full fine-tune'}: continue in the "
                          "same mode, or start from its base encoder")
    tensors = classifier.read_weights(start.path / start.spec.weights_file)
    wanted = {v.path for v in model.weights}
    if start.spec.labels != spec.labels:
        wanted -= {p for p in wanted if p.startswith(HEAD_NAME + "/")}
    classifier.assign_weights(model, {k: v for k, v in tensors.items() if k in wanted},
                              str(start.path))


def hf_classifier(base: dict) -> "hf_checkpoint.Checkpoint | None":
    """The Hugging Face classifier checkpoint a base is, if it is one (not a bare encoder)."""
    if base["kind"] != "hf_dir":
        return None
    ckpt = backbones.hf_base(base)
    return ckpt if ckpt.is_classifier else None


def base_checkpoint_record(base: dict) -> dict | None:
    """What a model trained from a Hugging Face checkpoint records of it."""
    if base["kind"] != "hf_dir":
        return None
    ckpt = backbones.hf_base(base)
    return {"path": str(ckpt.path), "architecture": ckpt.architecture, "checksums": ckpt.checksums}


def start_from_checkpoint(model, spec: modelspec.ModelSpec,
                          ckpt: "hf_checkpoint.Checkpoint") -> str:
    """Start from a Hugging Face classifier's head: its dense layer always, its classifier layer
    when the label names are the same (else a new one). Returns what it did, for the log."""
    head = convert.head_weights(ckpt, ckpt.tensors())
    same = ckpt.labels == spec.labels
    if not same:
        head = {k: v for k, v in head.items() if k.startswith(HEAD_DENSE + "/")}
    classifier.assign_weights(model, head, str(ckpt.path))
    return (f"head: {ckpt.architecture}'s, labels {ckpt.labels}" if same else
            f"head: {ckpt.architecture}'s dense layer; a new classifier layer, since its labels "
            f"{ckpt.labels} are not {spec.labels}")
