"""Training batches: the texts as token sequences (a long text's windows, one a epoch), shuffled
into fixed-shape batches of the scorer's own length buckets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer import encode


@dataclass
class TrainingRows:
    """The training texts as token sequences: one per text, or a text's windows
    (encode.BatchEncoder.tokenize_windows) of which each epoch trains on one."""

    ids: list  # [sequences] token ids
    lengths: np.ndarray  # [sequences]
    first: np.ndarray  # [texts] index of each text's first sequence
    count: np.ndarray  # [texts] its sequences

    @classmethod
    def of(cls, encoder: encode.BatchEncoder, texts: list[str]) -> "TrainingRows":
        if encoder.window_overlap is None:
            ids, lengths, _ = encoder.tokenize(texts)
            count = np.ones(len(texts), dtype=np.int64)
        else:
            ids, _, count, _ = encoder.tokenize_windows(texts)
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
        first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        return cls(ids, lengths, first, count.astype(np.int64))

    def epoch(self, seed: int, epoch: int) -> np.ndarray:
        """[texts] the sequence each text is trained on in this epoch (seeded: a resumed epoch
        draws the same windows). A window is labelled with its text's label; one window a text
        per epoch keeps an epoch's cost at one sequence per text."""
        rng = np.random.default_rng([seed, epoch, 1])
        return self.first + (rng.random(len(self.first)) * self.count).astype(np.int64)


@dataclass
class TrainingBatch:
    inputs: encode.Batch  # [batch_size, bucket length] token ids and padding mask
    targets: np.ndarray  # [batch_size] label ids, or [batch_size, labels] 0/1
    weights: np.ndarray  # [batch_size] 1 for a real row, 0 for the padding of a short batch


def epoch_batches(encoder: encode.BatchEncoder, rows: TrainingRows, targets: np.ndarray,
                  batch_size: int, seed: int, epoch: int) -> list[TrainingBatch]:
    """The epoch's batches: a sequence of each text, shuffled (seeded: the same batches when
    resumed)."""
    rng = np.random.default_rng([seed, epoch])
    picked = rows.epoch(seed, epoch)  # [texts] a sequence of each
    ids = [rows.ids[i] for i in picked]
    return training_batches(encoder, ids, rows.lengths[picked], targets, batch_size, rng)


def epoch_steps(encoder: encode.BatchEncoder, rows: TrainingRows, batch_size: int, seed: int,
                epoch: int) -> int:
    """How many batches epoch_batches gives, without padding them."""
    buckets = encoder.bucket_of(rows.lengths[rows.epoch(seed, epoch)])
    return sum(-(-int(np.sum(buckets == b)) // batch_size) for b in range(len(encoder.buckets)))


def training_batches(encoder: encode.BatchEncoder, ids: list, lengths: np.ndarray,
                     targets: np.ndarray, batch_size: int,
                     rng: np.random.Generator) -> list[TrainingBatch]:
    """Shuffled batches of batch_size rows, each padded to its bucket length.

    Rows are shuffled within a bucket and batches across buckets; a bucket's last short batch
    is padded with weight-0 rows so every step has one of a few fixed shapes.
    """
    buckets = encoder.bucket_of(lengths)
    batches = []
    for b, length in enumerate(encoder.buckets):
        rows = rng.permutation(np.flatnonzero(buckets == b))
        for start in range(0, len(rows), batch_size):
            take = rows[start:start + batch_size]
            y = np.zeros((batch_size,) + targets.shape[1:], targets.dtype)
            y[: len(take)] = targets[take]
            weights = np.zeros(batch_size, np.float32)
            weights[: len(take)] = 1.0
            batches.append(TrainingBatch(encoder.pad(ids, lengths, take, length, batch_size), y,
                                         weights))
    return [batches[i] for i in rng.permutation(len(batches))]
