"""A model registry on any filesystem path: numbered immutable versions plus movable aliases.

    models/sentiment/
      1/  2/  3/            model directories, each written to a temp dir and renamed into place
      _aliases/champion     {"version": 2, ...}: small JSON files, replaced atomically (0644:
                            every scorer reads them, whoever wrote them)
      _aliases/.promotion.lock   flock'd by a promotion from reading the champion to moving it

A model reference is a directory, `REGISTRY@alias` or `REGISTRY@N`; a bare registry directory
means its champion. Every write is durable before it is visible: a version's files and
directories are fsync'd before the rename that publishes it, and the directory a rename changed
is fsync'd after it, so a power cut never leaves an alias pointing at a half-written version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from scorer import fileio
from scorer.errors import ModelError
from scorer.modelspec import SPEC_FILE

ALIASES = "_aliases"
CHAMPION = "champion"


def is_registry(path: Path) -> bool:
    return (path / ALIASES).is_dir() or bool(versions(path))


def versions(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir()
                  if p.name.isdigit() and (p / SPEC_FILE).is_file())


def read_alias(registry: Path, alias: str) -> int | None:
    file = registry / ALIASES / alias
    if not file.is_file():
        return None
    try:
        return int(json.loads(file.read_text())["version"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(f"{file}: not a valid alias file") from None


def aliases(registry: Path) -> dict[str, int]:
    folder = registry / ALIASES
    if not folder.is_dir():
        return {}
    return {f.name: read_alias(registry, f.name) for f in sorted(folder.iterdir())
            if not f.name.startswith(".")}


def set_alias(registry: Path, alias: str, version: int, reason: str = "") -> int | None:
    """Point alias at version (atomically); returns the version it pointed at before."""
    if not alias or "/" in alias or alias.startswith((".", "_")) or alias.isdigit():
        raise ModelError(f"invalid alias name {alias!r}")
    if version not in versions(registry):
        raise ModelError(f"{registry}: no version {version}")
    previous = read_alias(registry, alias)
    folder = _aliases_dir(registry)
    record = {"version": version, "previous": previous, "reason": reason,
              "updated": fileio.utc_timestamp()}
    # 0644 whatever the job's umask: the scoring workers may run as another user
    fileio.write_atomic(folder / alias, json.dumps(record), mode=0o644)
    return previous


@contextlib.contextmanager
def promotion_lock(registry: Path):
    """Held by whoever reads the champion, compares with it and moves it: two jobs finishing at
    once take turns, so the second compares with the first one's result and cannot crown a
    model worse than the champion it never saw."""
    if not versions(registry):
        raise ModelError(f"{registry}: no registered versions")
    try:
        fd = os.open(_aliases_dir(registry) / ".promotion.lock",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise ModelError(f"{registry}: cannot take the promotion lock ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the other job's promotion to finish
        yield
    finally:
        os.close(fd)  # releases the lock


def _aliases_dir(registry: Path) -> Path:
    """REGISTRY/_aliases, created readable by everyone (and durably) if it is not there."""
    folder = registry / ALIASES
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # whatever the job's umask
        fileio.fsync_dir(registry)
    return folder


def register(registry: Path, model_dir: Path) -> int:
    """Copy a finished model directory in as the next version; returns its number."""
    registry.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=registry, prefix=".incoming-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a version is for every reader
    try:
        for item in model_dir.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        _fsync_tree(tmp)
        while True:  # another job may take a number at the same time: rename is the lock
            version = (versions(registry) or [0])[-1] + 1
            try:
                os.rename(tmp, registry / str(version))
                fileio.fsync_dir(registry)
                return version
            except OSError:
                if not (registry / str(version)).exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under root, directories after what they hold."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fileio.fsync_path(Path(directory, name))
        fileio.fsync_dir(Path(directory))


def resolve(ref: str) -> Path:
    """`path`, `path@alias` or `path@N` -> a model directory (a registry alone: its champion)."""
    path_part, _, selector = ref.rpartition("@") if "@" in Path(ref).name else (ref, "", "")
    registry = Path(path_part)
    if selector:
        if not registry.is_dir():
            raise ModelError(f"model registry not found: {path_part}")
        version = int(selector) if selector.isdigit() else read_alias(registry, selector)
        if version is None:
            known = ", ".join(aliases(registry)) or "none"
            raise ModelError(f"{path_part}: no alias {selector!r} (aliases: {known})")
        target = registry / str(version)
        if not (target / SPEC_FILE).is_file():
            raise ModelError(f"{path_part}: no version {version}")
        return target
    if registry.is_dir() and not (registry / SPEC_FILE).exists() and is_registry(registry):
        version = read_alias(registry, CHAMPION)
        if version is None:
            raise ModelError(f"{registry}: a registry with no champion; name a version with @N")
        return registry / str(version)
    return registry
