"""Leaf helpers every layer shares, each written once: a JSON object read from a file, a file's
sha256, a file replaced atomically and durably, directory fsyncs, and UTC timestamps.
Imports nothing of scorer but its errors."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from scorer.errors import ScorerError


def read_object(path: Path, error: type[ScorerError]) -> dict:
    """A JSON object read from a file (a model spec, a checkpoint's config, a manifest, a
    reference), with every reason it cannot be had as one line of the caller's error, so its
    exit code."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Replace a file all at once, durably: a temporary file of its own in the same directory
    (two writers never share one), fsync'd, renamed over the file, then the directory fsync'd,
    so a reader sees the old file or the new one, and a power cut after the return keeps the
    new one. mode: the file's permissions regardless of the umask (else the umask's)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file in it) durable."""
    fsync_path(path)


def fsync_path(path: Path) -> None:
    """fsync a file (its data) or a directory (its entries), by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_timestamp(seconds: float | None = None) -> str:
    """ISO 8601 UTC to the second, e.g. 2026-12-06T07:00:00Z (now, or of epoch `seconds`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
