"""What identifies a model in the output (ModelId): in the manifest, each part file's metadata,
--follow's entry records, `scorer info` and a drift reference's sidecar. A leaf: it knows the
identity's fields, not how a model directory is read (scorer.modeldir, scorer.stdir)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields


def combined_checksum(checksums: dict[str, str]) -> str:
    """One sha256 over every file's (file -> sha256, in file order)."""
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ModelId:
    """A scorer model directory: name, version, path and the sha256 of its spec. A Hugging Face
    checkpoint read as it is also has its architecture, labels and every file's sha256 (version
    None; checksum: combined_checksum of them); a sentence-transformers directory has its kind,
    architecture, dimension and files' sha256. The fields a model does not have are None and
    are not written."""

    name: str
    version: str | int | None  # the spec's; None for a checkpoint or directory read as it is
    path: str
    checksum: str  # the spec file's sha256, else combined_checksum(checksums)
    kind: str | None = None  # "embedding"; a classifier's id does not say (written since issue 24)
    architecture: str | None = None
    labels: list[str] | None = None
    dimension: int | None = None
    checksums: dict[str, str] | None = None  # file (relative path) -> sha256, every file read

    def to_json(self) -> dict:
        """The id as written since the first manifest: name, version, path, the fields this kind
        of model has, then checksum."""
        optional = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.name not in ("name", "version", "path", "checksum")}
        return {"name": self.name, "version": self.version, "path": self.path,
                **{k: v for k, v in optional.items() if v is not None}, "checksum": self.checksum}

    @classmethod
    def from_json(cls, data: dict) -> "ModelId":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
