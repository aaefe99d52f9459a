"""The model registry's writes are durable: a version or alias that a reader saw survives a power
cut, because every file and directory a rename made visible was fsync'd first."""

import os
from pathlib import Path

from scorer import registry, storage


def test_register_and_set_alias_fsync_what_their_renames_publish(tiny_model, tmp_path, monkeypatch):
    synced_dirs: list[Path] = []
    synced_files: list[str] = []
    fsync_dir = storage.fsync_dir
    monkeypatch.setattr(storage, "fsync_dir", lambda p: (synced_dirs.append(Path(p)), fsync_dir(p)))
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced_files.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                  fsync(fd)))
    reg = tmp_path / "reg"
    version = registry.register(reg, tiny_model)
    assert reg in synced_dirs  # the rename that made reg/1 visible
    copied = {p.name for p in (reg / str(version)).iterdir()}
    assert copied <= {Path(f).name for f in synced_files}  # each file's data before the rename
    synced_dirs.clear()
    registry.set_alias(reg, "champion", version)
    assert reg / registry.ALIASES in synced_dirs and reg in synced_dirs  # the alias, _aliases/
