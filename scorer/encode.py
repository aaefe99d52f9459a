"""Encode stage: texts -> token ids, cut into length-bucketed batches of bounded shape.

The fast tokenizer encodes a whole chunk in one call (Rust, threaded). Rows are then sorted by
token length and cut into batches by a token budget; each batch is padded only up to the next
bucket length, and its row count is rounded up to a quarter of the bucket's full batch, so the
set of (rows, length) shapes the model ever sees is small and fixed whatever the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bucket lengths to pad to (capped at the model's max length, which is always a bucket).
DEFAULT_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
DEFAULT_BATCH_TOKENS = 4096
# A text longer than this many characters per allowed token is cut before tokenizing, so that a
# 10 MB line costs no more than a long one; no WordPiece token is this long, so the result is
# the same as truncating after tokenizing.
_CHARS_PER_TOKEN_BOUND = 64


@dataclass
class Batch:
    """One model call: `rows` index into the chunk; rows past `len(rows)` are padding rows."""

    rows: np.ndarray  # [n_real] int64, positions in the chunk
    token_ids: np.ndarray  # [batch, length] int32, padded with the tokenizer's pad id
    padding_mask: np.ndarray  # [batch, length] int32, 1 = real token

    @property
    def shape(self) -> tuple[int, int]:
        return self.token_ids.shape


@dataclass
class EncodedChunk:
    lengths: np.ndarray  # [n] int32 token counts after truncation, [CLS] and [SEP] included
    truncated: np.ndarray  # [n] bool
    batches: list[Batch]

    @property
    def real_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def padded_tokens(self) -> int:
        return int(sum(b.token_ids.size for b in self.batches))


def load_tokenizer(path: str | Path, max_length: int):
    """A `tokenizers.Tokenizer` that truncates to max_length and does not pad.

    The packaged tokenizer.json pads and truncates to 128 by default, which would make every
    text 128 tokens long: both are reset here.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # false halves encode speed
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def bucket_lengths(max_length: int, buckets=DEFAULT_BUCKETS) -> tuple[int, ...]:
    return tuple(sorted({b for b in buckets if b < max_length} | {max_length}))


def batch_rows(length: int, batch_tokens: int) -> int:
    """Rows in a full batch of this bucket length: the token budget, in multiples of 4 rows."""
    return max(4, (batch_tokens // length) // 4 * 4)


class BatchEncoder:
    """Tokenizes chunks of texts and plans their batches."""

    def __init__(self, tokenizer, max_length: int, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 buckets=DEFAULT_BUCKETS):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.buckets = bucket_lengths(max_length, buckets)
        pad_id = tokenizer.token_to_id("[PAD]")  # BERT; RoBERTa-style vocabularies say <pad>
        self.pad_id = pad_id if pad_id is not None else (tokenizer.token_to_id("<pad>") or 0)

    def shapes(self) -> list[tuple[int, int]]:
        """Every batch shape this encoder can produce (the bound on compiled programs)."""
        out = []
        for length in self.buckets:
            full = batch_rows(length, self.batch_tokens)
            out += [(full * q // 4, length) for q in (1, 2, 3, 4)]
        return sorted(set(out))

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        """Token ids per text, their lengths [n] and whether each text was truncated [n]."""
        char_cap = self.max_length * _CHARS_PER_TOKEN_BOUND
        cut = [len(t) > char_cap for t in texts]
        if any(cut):
            texts = [t[:char_cap] if c else t for t, c in zip(texts, cut)]
        encodings = self.tokenizer.encode_batch_fast(texts)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(ids))
        return ids, lengths, truncated | np.asarray(cut, dtype=bool)

    def encode(self, texts: list[str]) -> EncodedChunk:
        ids, lengths, truncated = self.tokenize(texts)
        return EncodedChunk(lengths, truncated, self._plan(ids, lengths))

    def bucket_of(self, lengths: np.ndarray) -> np.ndarray:
        """Index into self.buckets of the shortest bucket each length fits in."""
        return np.searchsorted(np.asarray(self.buckets), lengths)

    def pad(self, ids: list[list[int]], lengths: np.ndarray, rows: np.ndarray, length: int,
            padded_rows: int) -> Batch:
        """A batch of the given rows, padded to [padded_rows, length]."""
        token_ids = np.full((padded_rows, length), self.pad_id, dtype=np.int32)
        for i, r in enumerate(rows):
            token_ids[i, : lengths[r]] = ids[r]
        real = np.zeros(padded_rows, dtype=np.int32)
        real[: len(rows)] = lengths[rows]
        padding_mask = (np.arange(length)[None, :] < real[:, None]).astype(np.int32)
        return Batch(rows, token_ids, padding_mask)

    def _plan(self, ids: list[list[int]], lengths: np.ndarray) -> list[Batch]:
        order = np.argsort(lengths, kind="stable")
        bucket_of = self.bucket_of(lengths[order])
        batches = []
        for b, length in enumerate(self.buckets):
            rows = order[bucket_of == b]
            full = batch_rows(length, self.batch_tokens)
            for start in range(0, len(rows), full):
                take = rows[start:start + full]
                padded_rows = -(-len(take) * 4 // full) * full // 4  # round up to a quarter batch
                batches.append(self.pad(ids, lengths, take, length, padded_rows))
        return batches
