"""What a run is asked to do: RunOptions, one field per `scorer run` option, plus the follow
and Ray modes' own options, each default written here once (scorer.cli takes it from here);
which of them a resumed run must share; --max-errors parsed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scorer import api, encode, source
from scorer.errors import DataError


@dataclass
class RunOptions:
    text_column: str = "text"
    format: str = "auto"
    id_column: str | None = None  # carried through; else each row gets row_id = "<input>:<position>"
    keep_columns: list[str] | None = None  # input columns to keep (default: all)
    drop_text: bool = False
    output_prefix: str = ""
    partition_by: str | None = None
    rows_per_file: int = 100_000  # also the checkpoint interval, in input rows (--flush-rows)
    flush_seconds: float | None = None  # streams: commit rows within about this many seconds
    chunk_rows: int = source.DEFAULT_CHUNK_ROWS
    overwrite: bool = False
    max_length: int | None = None
    batch_tokens: int = encode.DEFAULT_BATCH_TOKENS
    precision: str = "auto"
    threads: int | None = None  # TensorFlow and tokenizer threads (default: usable cores)
    queue_depth: int = 2  # chunks waiting between two stages (memory: ~3 chunks per stage)
    dead_letter: str | None = None  # directory for rows that cannot be scored (else: kept, error set)
    max_errors: str | None = None  # fail when bad rows exceed this: a count ("100") or fraction ("0.01", "1%")
    fail_on_empty: bool = False
    max_line_bytes: int = source.DEFAULT_MAX_LINE_BYTES
    csv_types: str = "infer"  # CSV columns: infer numbers and booleans, or "none": all as read
    reference: str | None = None  # the reference file to measure drift against (default: the model's)
    max_drift: float | None = None  # scorer.cli exits EXIT_DRIFT when a PSI passes this
    metrics_file: str | None = None  # Prometheus textfile (scorer.metrics), rewritten by --follow
    long_text: str = api.DEFAULT_LONG_TEXT  # over the max length: api.LONG_TEXT
    max_windows: int = encode.DEFAULT_MAX_WINDOWS  # --long-text window: windows per text, at most
    prompt: str | None = None  # embedding models: a prompt name of the model's (put before each text)
    embedding_dtype: str = "float32"  # the embedding column's values: float32 | float16
    emit: str | None = None  # "label", "embedding" or "label,embedding"; None: the model's own


@dataclass
class FollowOptions:
    """`scorer run --follow DIR`: how the landing directory is watched (scorer.follow.follow's
    keywords); each is a usage error without --follow."""
    once: bool = False  # score the entries there now, then return (cron)
    require_marker: bool = False  # take only directories holding _SUCCESS
    poll_seconds: float = 2.0
    settle_seconds: float = 5.0  # an entry is taken once unchanged this long
    drift_window: int | None = None  # drift judged over the latest K entries (None: back to MIN_ROWS rows)


@dataclass
class RayOptions:
    """`scorer run --engine ray`: the cluster (scorer.ray_engine.run's keywords); each is a usage
    error with another engine."""
    address: str | None = None  # the cluster to join (default: auto / a local one)
    workers: int = 1  # scoring actors, each loading the model once


# What a resumed run must share with the run it continues (besides inputs and model).
RESUME_OPTIONS = ("text_column", "format", "id_column", "keep_columns", "drop_text",
                   "output_prefix", "partition_by", "rows_per_file", "max_length", "precision",
                   "dead_letter", "max_line_bytes", "long_text", "max_windows", "csv_types",
                   "prompt", "embedding_dtype", "emit")


@dataclass(frozen=True)
class ErrorLimit:
    """--max-errors, parsed: the run fails when its bad rows are more than `value` rows (kind
    "rows"), or more than that share of its input rows (kind "fraction")."""
    kind: Literal["rows", "fraction"]
    value: float  # rows: a count; fraction: a share of the input rows (1% is 0.01)

    def rows_exceeded(self, bad: int) -> bool:
        return self.kind == "rows" and bad > self.value

    def fraction_exceeded(self, bad: int, rows: int) -> bool:
        return self.kind == "fraction" and rows > 0 and bad / rows > self.value


def parse_max_errors(value: str | None) -> ErrorLimit | None:
    """--max-errors: "100" (rows) -> ErrorLimit("rows", 100); "0.01" or "1%" -> ("fraction", 0.01)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return ErrorLimit("fraction", float(text[:-1]) / 100)
        if "." in text or "e" in text.lower():
            fraction = float(text)
            if not 0 <= fraction < 1:
                raise ValueError
            return ErrorLimit("fraction", fraction)
        return ErrorLimit("rows", int(text))
    except ValueError:
        raise DataError(f"--max-errors {value!r}: give a row count (100), a fraction (0.01) or a "
                        "percentage (1%)") from None
