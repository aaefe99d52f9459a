"""A JSON object read from a file (a model spec, a checkpoint's config, a manifest, a reference),
with every reason it cannot be had as one line of the caller's error, so its exit code."""

from __future__ import annotations

import json
from pathlib import Path

from scorer.errors import ScorerError


def read_object(path: Path, error: type[ScorerError]) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw
