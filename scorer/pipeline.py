"""The pipeline: source -> encode -> model -> sink, for one run into one output directory.

    run(["in.parquet"], "scored/")     # what `scorer run in.parquet -o scored/` does
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

import scorer
from scorer import encode, runtime, sink, source, stages
from scorer.api import Scorer, ScoreStats, output_names
from scorer.errors import InputError, OutputError


@dataclass
class RunOptions:
    text_column: str = "text"
    format: str = "auto"
    id_column: str | None = None  # carried through; else each row gets row_id = "<input>:<position>"
    keep_columns: list[str] | None = None  # input columns to keep (default: all)
    drop_text: bool = False
    output_prefix: str = ""
    partition_by: str | None = None
    rows_per_file: int = 100_000
    chunk_rows: int = source.DEFAULT_CHUNK_ROWS
    overwrite: bool = False
    max_length: int | None = None
    batch_tokens: int = encode.DEFAULT_BATCH_TOKENS
    precision: str = "auto"
    threads: int | None = None  # TensorFlow and tokenizer threads (default: usable cores)
    queue_depth: int = 2  # chunks waiting between two stages (memory: ~3 chunks per stage)


@dataclass
class RunResult:
    output: Path
    manifest: dict = field(default_factory=dict)


def run(inputs: list[str], output: str | Path, model=None, options: RunOptions | None = None,
        progress: Callable[[int, float], None] | None = None, scorer_: Scorer | None = None,
        **kwargs) -> RunResult:
    """Score every input row into Parquet part files under `output`.

    Options are RunOptions fields, given as an object or as keyword arguments. Everything that
    can be checked before scoring is: inputs exist, the model loads, the output can be written.
    """
    opts = options or RunOptions(**kwargs)
    started = time.time()
    out = Path(output)
    expanded = source.expand_inputs(inputs, opts.format)
    t0 = time.perf_counter()
    model_scorer = scorer_ or Scorer.load(model, max_length=opts.max_length,
                                          batch_tokens=opts.batch_tokens, precision=opts.precision,
                                          threads=opts.threads)
    load_seconds = time.perf_counter() - t0
    model_scorer.stats = ScoreStats()  # a Scorer may serve several runs: count this one's rows
    compiled_before = model_scorer.predictor.compile_seconds
    stats = source.SourceStats()
    timer = {"read": 0.0, "write": 0.0}
    # read -> prepare (tokenize) -> infer -> write, each on its own thread (infer on this one)
    reader = stages.prefetch(stages.timed(
        source.read_chunks(expanded, opts.text_column, opts.chunk_rows, stats), timer, "read"),
        depth=opts.queue_depth, name="read")

    # The first chunk is read before the output directory is touched, so a wrong column or a
    # column clash fails without emptying an --overwrite target.
    first = next(reader, None)
    if first is not None:
        _check_columns(_kept_columns(first, opts).column_names, model_scorer, opts)
    sink.prepare_output(out, opts.overwrite)
    writer = sink.PartWriter(out, opts.rows_per_file, model_scorer.model_dir.id, opts.partition_by)
    rows_out = 0

    def write(item):
        nonlocal rows_out
        chunk, prepared, probs = item
        t = time.perf_counter()
        table = _join(_kept_columns(chunk, opts), model_scorer.columns(prepared, probs, opts.output_prefix))
        writer.write(table)
        timer["write"] += time.perf_counter() - t
        rows_out += table.num_rows
        if progress:
            progress(rows_out, time.time() - started)

    chunks = itertools.chain([first] if first is not None else [], reader)
    prepared_chunks = stages.prefetch(
        ((c, model_scorer.prepare(c.texts, c.read_errors)) for c in chunks),
        depth=opts.queue_depth, name="encode")
    consumer = stages.Consumer(write, depth=opts.queue_depth, name="write")
    try:
        for chunk, prepared in prepared_chunks:
            consumer.submit((chunk, prepared, model_scorer.infer(prepared)))
        consumer.close()
        t = time.perf_counter()
        writer.close()
        timer["write"] += time.perf_counter() - t
    except BaseException:
        prepared_chunks.close()  # stops the encode and read threads
        consumer.cancel()  # the writer thread must be idle before its files are dropped
        writer.abort()
        raise

    s = model_scorer.stats
    total = time.time() - started
    manifest = {
        "scorer_version": scorer.__version__,
        "model": model_scorer.model_dir.id,
        "inputs": [{"path": i.path, "format": i.format} for i in expanded],
        "options": {k: v for k, v in asdict(opts).items() if k != "overwrite"},
        "rows_in": stats.rows,
        "rows_out": rows_out,
        "rows_scored": s.rows - s.errors,
        "rows_with_error": s.errors,
        "error_reasons": s.error_reasons,
        "rows_truncated": s.truncated,
        "blank_lines_skipped": stats.blank_lines,
        "parts": writer.parts,
        "timing": {
            "total_seconds": round(total, 3), "load_seconds": round(load_seconds, 3),
            "read_seconds": round(timer["read"], 3), "encode_seconds": round(s.encode_seconds, 3),
            "infer_seconds": round(s.infer_seconds, 3),
            "compile_seconds": round(model_scorer.predictor.compile_seconds - compiled_before, 3),
            "write_seconds": round(timer["write"], 3),
        },
        "rows_per_second": round(rows_out / total, 1) if total else None,
        "real_tokens": s.real_tokens,
        "padded_tokens": s.padded_tokens,
        "padding_fraction": round(1 - s.real_tokens / s.padded_tokens, 4) if s.padded_tokens else 0.0,
        "device": model_scorer.predictor.policy.device,
        "precision": model_scorer.predictor.policy.dtype,
        "threads": runtime.threads_in_use,
        "xla_cache": runtime.xla_cache_dir(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if rows_out != stats.rows:  # the invariant every run must keep: no row is ever lost
        raise OutputError(f"internal error: read {stats.rows} rows but wrote {rows_out}")
    sink.finish(out, manifest)
    return RunResult(out, manifest)


def _kept_columns(chunk: source.Chunk, opts: RunOptions) -> pa.Table:
    table = chunk.columns
    names = table.column_names
    keep = names if opts.keep_columns is None else opts.keep_columns
    unknown = [c for c in keep if c not in names]
    for col in (opts.id_column, opts.partition_by):
        if col and col not in names and col not in output_names(True, opts.output_prefix):
            unknown.append(col)
    if unknown:
        raise InputError(f"{chunk.source}: no column {unknown[0]!r} (columns: {', '.join(names)})")
    if opts.id_column and opts.id_column not in keep:
        keep = [opts.id_column] + list(keep)
    if opts.drop_text:
        keep = [c for c in keep if c != opts.text_column]
    table = table.select(list(keep))
    if not opts.id_column:
        ids = [f"{chunk.source}:{chunk.offset + i}" for i in range(len(chunk))]
        table = table.append_column("row_id", pa.array(ids, pa.string()))
    return table


def _check_columns(kept: list[str], model_scorer: Scorer, opts: RunOptions) -> None:
    clash = [c for c in output_names(model_scorer.multi_label, opts.output_prefix) if c in kept]
    if clash:
        raise OutputError(f"input column {clash[0]!r} has the name of an output column; keep both "
                          f"with --output-prefix (e.g. --output-prefix pred_ gives pred_{clash[0]}) "
                          f"or leave it out with --keep-columns")


def _join(kept: pa.Table, scored: pa.Table) -> pa.Table:
    for name in scored.column_names:
        kept = kept.append_column(name, scored.column(name))
    return kept


def terminal_progress(rows: int, seconds: float) -> None:
    rate = rows / seconds if seconds > 0 else 0.0
    sys.stderr.write(f"\rscored {rows:,} rows ({rate:,.0f} rows/s)")
    sys.stderr.flush()
