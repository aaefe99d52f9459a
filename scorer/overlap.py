"""An output (or dead-letter) location may not be, contain or lie inside an input: scorer would
read its own output, and --overwrite would delete the input. Checked before anything is read,
written or removed, for local paths (symlinks resolved) and object-store prefixes alike.

    check_apart(["in/", "x.jsonl"], "scored/", dead_letter="bad/")  # raises UsageError (exit 2)
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from scorer import storage
from scorer.errors import UsageError

_SCHEME_ALIASES = {"gcs": "gs", "abfss": "abfs"}


def check_apart(inputs: list[str], output: str, dead_letter: str | None = None,
                follow_dir: str | None = None) -> None:
    """Refuse an output or --dead-letter location that overlaps any input: a file, a directory,
    a glob's match (give the expanded paths), or the directory --follow watches."""
    sources = [(p, "input") for p in inputs if p != "-"]
    if follow_dir:
        sources.append((follow_dir, "followed directory"))
    for location, flag in ((output, "the output"), (dead_letter, "--dead-letter")):
        if not location:
            continue
        for path, kind in sources:
            relation = _relation(_key(location), _key(path))
            if relation:
                raise UsageError(f"{flag} {location} {relation} the {kind} {path}: scorer would "
                                 "read its own output, and --overwrite would delete the input; "
                                 "write somewhere apart from the inputs")


def _relation(location: str, source: str) -> str | None:
    """How a location and a source overlap, in words (None: they do not)."""
    if location == source:
        return "is"
    if source.startswith(location.rstrip("/") + "/"):
        return "contains"
    if location.startswith(source.rstrip("/") + "/"):
        return "lies inside"
    return None


def _key(path: str) -> str:
    """A location as one absolute name to compare: a local path resolved (symlinks followed as
    far as it exists), an object-store URI without its query and trailing slash."""
    path = str(path)
    if storage.is_remote(path):
        parts = urlsplit(path)
        scheme = _SCHEME_ALIASES.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return os.path.realpath(path)
