"""What the prepare stage makes of a chunk of texts, shared by every model kind (a classifier's
api.Scorer, an embedding model's embedder.Embedder): each row's error or its encoded batches, and
the time and padding the stages spent."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from scorer import encode


@dataclass
class ScoreStats:
    """Where time went and how much compute padding took (row counts are the pipeline's)."""

    real_tokens: int = 0
    padded_tokens: int = 0
    encode_seconds: float = 0.0
    infer_seconds: float = 0.0


@dataclass
class Prepared:
    errors: list  # [n] str | None: why a row is not scored
    valid: np.ndarray  # [n_valid] positions of the rows that are scored
    encoded: encode.EncodedChunk | None  # batches over the valid rows (None if there are none)

    def truncated(self) -> np.ndarray:
        """[n] bool: which rows were cut to the max length (with windows: past the last one)."""
        out = np.zeros(len(self.errors), dtype=bool)
        if self.encoded is not None:
            out[self.valid] = self.encoded.truncated
        return out

    def windows(self) -> np.ndarray:
        """[n] int32: how many windows each row was scored as (0: not scored)."""
        out = np.zeros(len(self.errors), dtype=np.int32)
        if self.encoded is not None:
            chunk = self.encoded
            out[self.valid] = chunk.windows if chunk.windows is not None else 1
        return out


def text_error(text) -> str | None:
    if text is None:
        return "null text"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


def prepare(encoder: encode.BatchEncoder, stats: ScoreStats, texts: list,
            read_errors: list | None = None, prompt: str = "") -> Prepared:
    """Check and tokenize a chunk of texts (each usable one after `prompt`); rows that cannot be
    scored get a reason."""
    t0 = time.perf_counter()
    errors = [r or text_error(t) for t, r in zip(texts, read_errors or [None] * len(texts))]
    valid = np.array([i for i, e in enumerate(errors) if e is None], dtype=np.int64)
    encoded = encoder.encode([prompt + texts[i] for i in valid]) if len(valid) else None
    stats.encode_seconds += time.perf_counter() - t0
    return Prepared(errors, valid, encoded)
