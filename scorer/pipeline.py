"""The pipeline: source -> encode -> model -> sink, for one run into one output directory.

    run(["in.parquet"], "scored/")     # what `scorer run in.parquet -o scored/` does

Every `rows_per_file` input rows the open part files are committed and the run checkpointed
(scorer.commit): a killed run, started again, goes on from its last checkpoint.
"""

from __future__ import annotations

import copy
import itertools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import scorer
from scorer import api, commit, drift, encode, faults, runtime, sink, source, stages, storage
from scorer.api import Scorer, ScoreStats, error_kind, output_names
from scorer.errors import DataError, InputError, ModelError, OutputError
from scorer.options import RESUME_OPTIONS, RunOptions, parse_max_errors


DEAD_LETTER_SCHEMA = pa.schema([("source", pa.string()), ("position", pa.int64()),
                                ("error", pa.string()), ("text", pa.string())])


def load_scorer(model, opts: RunOptions, **overrides) -> Scorer:
    """The Scorer a run's options ask for (every engine loads it here)."""
    kwargs = dict(max_length=opts.max_length, batch_tokens=opts.batch_tokens,
                  precision=opts.precision, threads=opts.threads, long_text=opts.long_text,
                  max_windows=opts.max_windows)
    return Scorer.load(model, **{**kwargs, **overrides})


@dataclass
class RunResult:
    output: Path | str  # a local directory, or an object store URI
    manifest: dict = field(default_factory=dict)
    already_complete: bool = False  # the output held this very run, finished: nothing was done


def run(inputs: list[str], output: str | Path, model=None, options: RunOptions | None = None,
        progress: Callable[[int, float], None] | None = None, scorer_: Scorer | None = None,
        **kwargs) -> RunResult:
    """Score every input row into Parquet part files under `output`.

    Options are RunOptions fields, given as an object or as keyword arguments. Everything that
    can be checked before scoring is: inputs exist, the model loads, the output can be written.
    An unfinished run of the same inputs, model and options in `output` is resumed; a finished
    one is left as it is (RunResult.already_complete, with its manifest).
    """
    opts = options or RunOptions(**kwargs)
    error_limit = parse_max_errors(opts.max_errors)
    started = time.time()
    out = output_location(output)
    expanded = source.expand_inputs(inputs, opts.format)
    t0 = time.perf_counter()
    model_scorer = scorer_ or load_scorer(model, opts)
    load_seconds = time.perf_counter() - t0
    model_scorer.stats = ScoreStats()  # a Scorer may serve several runs: count this one's rows
    compiled_before = model_scorer.predictor.compile_seconds
    reference, reference_warnings = load_reference(model_scorer, opts)
    outdir = open_output(out, [source.fingerprint(i) for i in expanded], model_scorer, opts)
    if outdir.finished:
        return RunResult(out, outdir.finished, already_complete=True)
    stats = source.SourceStats()
    timer = {"read": 0.0, "write": 0.0}

    def start(first: source.Chunk | None) -> _Sinks:
        # The first chunk is read before the output directory is changed, so a wrong column or
        # a column clash fails without emptying an --overwrite target.
        check_columns(first, model_scorer, opts)
        outdir.prepare()
        return _Sinks(outdir, opts, model_scorer, error_limit)

    try:
        sinks = _stream(expanded, outdir.progress.rows, model_scorer, opts, stats, timer, start,
                        progress, started)
        warnings = _final_checks(stats, sinks.counters, opts, error_limit)
    except BaseException:
        outdir.abandon()
        raise
    manifest = _manifest(model_scorer, [{"path": i.path, "format": i.format} for i in expanded],
                         opts, stats.rows, sinks, timer, load_seconds, compiled_before, started)
    manifest.update(blank_lines_skipped=stats.blank_lines, resumed=outdir.resumed,
                    rows_resumed_from_checkpoint=stats.rows_skipped, warnings=warnings,
                    rows_per_second=round((stats.rows - stats.rows_skipped) / manifest["timing"]["total_seconds"], 1))
    add_drift(manifest, reference, reference_warnings, sinks.profile)
    try:
        outdir.finish(manifest)
    except BaseException:
        outdir.abandon()  # the lock goes; the checkpoint stays, so the same command finishes it
        raise
    return RunResult(out, manifest)


def load_reference(model_scorer: Scorer, opts: RunOptions) -> tuple[drift.Reference | None, list[str]]:
    """The model's drift reference (and warnings about it); --max-drift without one is refused
    before anything is scored."""
    reference, warnings = drift.find_reference(model_scorer.model_dir, opts.reference)
    if reference is None and opts.max_drift is not None:
        raise ModelError(f"--max-drift needs a reference for model {model_scorer.model_dir.path}: "
                         "make one with `scorer profile MODEL DATA`, or pass --reference FILE"
                         + (f" ({warnings[0]})" if warnings else ""))
    return reference, warnings


def add_drift(manifest: dict, reference: drift.Reference | None, reference_warnings: list[str],
              profile: drift.Profile) -> None:
    """The manifest's "drift" (and the reference itself, for `scorer report`), and its warnings."""
    run_drift = drift.compare(reference, profile)
    manifest["drift"] = run_drift.to_json()
    manifest["reference_profile"] = reference.profile.to_json() if reference else None
    manifest["warnings"] = manifest["warnings"] + reference_warnings + run_drift.warnings()


def _stream(inputs: list[source.Input], skip: int, model_scorer: Scorer, opts: RunOptions,
            stats: source.SourceStats, timer: dict, start: Callable, progress, started: float):
    """read -> prepare (tokenize) -> infer -> write over `inputs` after their first `skip` rows,
    each stage on its own thread (infer on this one). start(first chunk or None) is called
    before anything is written and returns the _Sinks to write to; they are returned after a
    final checkpoint."""
    reader = prepared_chunks = consumer = sinks = None
    try:
        reader = stages.prefetch(stages.timed(
            source.read_chunks(inputs, opts.text_column, opts.chunk_rows, stats, skip=skip,
                               max_line_bytes=opts.max_line_bytes, flush_seconds=opts.flush_seconds),
            timer, "read"), depth=opts.queue_depth, name="read")
        first = next((c for c in reader if len(c)), None)  # a stream's empty ticks carry nothing
        sinks = start(first)
        rows_before = sinks.rows - skip

        def write(item):
            chunk, prepared, probs = item
            t = time.perf_counter()
            if len(chunk):
                sinks.write(scored_table(chunk_table(chunk, opts), model_scorer, prepared, probs, opts))
            else:
                sinks.write(pa.table({}))  # a stream's tick
            timer["write"] += time.perf_counter() - t
            if progress:
                progress(sinks.rows - sinks.start_rows, time.time() - started)

        chunks = itertools.chain([first] if first is not None else [], reader)
        prepared_chunks = stages.prefetch(
            ((c, _prepared(model_scorer, c)) for c in chunks), depth=opts.queue_depth, name="encode")
        consumer = stages.Consumer(write, depth=opts.queue_depth, name="write")
        for chunk, prepared in prepared_chunks:
            probs = model_scorer.infer(prepared)
            faults.point("infer")
            consumer.submit((chunk, prepared, probs))
        consumer.close()
        t = time.perf_counter()
        sinks.checkpoint()
        timer["write"] += time.perf_counter() - t
        if stats.rows != sinks.rows - rows_before:  # the invariant: no row is ever lost
            raise OutputError(f"internal error: read {stats.rows} rows but accounted for "
                              f"{sinks.rows - rows_before}")
        return sinks
    except BaseException:
        for stage in (prepared_chunks, reader):
            if stage is not None:
                stage.close()  # stops the encode and read threads
        if consumer is not None:
            consumer.cancel()  # the writer thread must be idle before its files are dropped
        if sinks is not None:
            sinks.abort()
        raise


def _manifest(model_scorer: Scorer, inputs: list[dict], opts: RunOptions, rows_in: int,
              sinks: "_Sinks", timer: dict, load_seconds: float, compiled_before: float,
              started: float) -> dict:
    s = model_scorer.stats
    c = sinks.counters
    total = time.time() - started
    return {
        "scorer_version": scorer.__version__,
        "model": model_scorer.model_dir.id,
        "inputs": inputs,
        "options": {k: v for k, v in asdict(opts).items() if k != "overwrite"},
        "rows_in": rows_in,
        "rows_out": c["rows_out"],
        "rows_scored": c["rows_out"] + c["rows_dead_lettered"] - c["rows_with_error"],
        "rows_with_error": c["rows_with_error"],
        "rows_dead_lettered": c["rows_dead_lettered"],
        "error_reasons": c["error_reasons"],
        "rows_truncated": c["rows_truncated"],
        "rows_windowed": c.get("rows_windowed", 0),
        "parts": sinks.writer.parts,
        "dead_letter": ({"path": opts.dead_letter, "parts": sinks.dead.parts}
                        if sinks.dead else None),
        "timing": {
            "total_seconds": round(total, 3), "load_seconds": round(load_seconds, 3),
            "read_seconds": round(timer["read"], 3), "encode_seconds": round(s.encode_seconds, 3),
            "infer_seconds": round(s.infer_seconds, 3),
            "compile_seconds": round(model_scorer.predictor.compile_seconds - compiled_before, 3),
            "write_seconds": round(timer["write"], 3),
        },
        "profile": sinks.profile.to_json(),
        "summary": sinks.profile.summary(),
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


def output_location(output) -> Path | str:
    """A local output as a Path; an object store URI as it is."""
    return output if storage.is_remote(str(output)) else Path(output)


def open_output(out, inputs: list[dict], model_scorer: Scorer, opts: RunOptions,
                model_key: str | None = None) -> commit.OutputDir:
    """Lock the output and decide fresh run or resume; what identifies this run is its inputs'
    fingerprints, the model's checksum (or model_key: --follow's model reference, since a
    follower moves to a new champion between entries) and the options that shape the output."""
    identity = {"inputs": inputs, "model": model_key or model_scorer.model_dir.id["checksum"],
                "options": {k: getattr(opts, k) for k in RESUME_OPTIONS}}
    return commit.OutputDir.open(out, identity, opts.overwrite, opts.dead_letter)


def chunk_table(chunk: source.Chunk, opts: RunOptions) -> pa.Table:
    """A read chunk as one Arrow table: the kept input columns (and row_id), then the private
    columns the later stages need: __texts (what to score), __read_error, __source, __position.
    This is also what a Ray Data block holds (scorer.ray_engine)."""
    n = len(chunk)
    texts = [t if isinstance(t, str) else None for t in chunk.texts]
    private = {"__texts": pa.array(texts, pa.string()),
               "__read_error": pa.array(chunk.read_errors, pa.string()),
               "__source": pa.array([chunk.source] * n, pa.string()),
               "__position": pa.array(range(chunk.offset, chunk.offset + n), pa.int64())}
    table = _kept_columns(chunk, opts)
    for name, column in private.items():
        table = table.append_column(name, column)
    return table


def scored_table(table: pa.Table, model_scorer: Scorer, prepared, probs, opts: RunOptions) -> pa.Table:
    """A chunk_table() with the model's output columns added, and the private columns the sink
    uses: __error, __truncated, __windowed, __source, __position, __text (the text, for dead
    letters)."""
    out = table.drop_columns(["__texts", "__read_error", "__source", "__position"])
    out = _join(out, model_scorer.columns(prepared, probs, opts.output_prefix))
    private = {"__error": pa.array(prepared.errors, pa.string()),
               "__truncated": pa.array(prepared.truncated(), pa.bool_()),
               "__tokens": pa.array(drift.token_counts(prepared), pa.int32()),
               "__windowed": pa.array(prepared.windows() > 1, pa.bool_()),
               "__source": table.column("__source"), "__position": table.column("__position"),
               "__text": table.column("__texts")}
    for name, column in private.items():
        out = out.append_column(name, column)
    return out


def probabilities_of(scored: pa.Table, column: str, num_labels: int) -> np.ndarray:
    """[n, labels] from a scored table's probabilities column; NaN rows where it is null."""
    values = scored.column(column).combine_chunks()
    out = np.full((scored.num_rows, num_labels), np.nan)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    out[valid] = pc.list_flatten(values).to_numpy(zero_copy_only=False).reshape(-1, num_labels)
    return out


def _prepared(model_scorer: Scorer, chunk: source.Chunk):
    prepared = model_scorer.prepare(chunk.texts, chunk.read_errors)
    faults.point("encode")
    return prepared


class _Sinks:
    """The write stage: output (and dead-letter) part files, row accounting, checkpoints."""

    def __init__(self, outdir: commit.OutputDir, opts: RunOptions, model_scorer: Scorer,
                 error_limit: tuple[str, float] | None):
        p = outdir.progress
        self.outdir = outdir
        self.opts = opts
        self.model_scorer = model_scorer
        self.error_limit = error_limit
        self.writer = sink.PartWriter(outdir.out, model_scorer.model_dir.id, opts.partition_by,
                                      parts=p.parts, next_index=p.next_index)
        self.dead = (sink.PartWriter(outdir.dead_letter, parts=p.dead_letter_parts,
                                     next_index=p.dead_letter_next_index)
                     if outdir.dead_letter else None)
        self.start_rows = p.rows
        self.rows = p.rows  # input rows accounted for, committed or not
        self.since = 0  # of which not yet committed
        self.first_uncommitted = 0.0  # monotonic time the oldest of those was written
        self.counters = copy.deepcopy(p.counters)
        self.unit, self.units_done = p.unit, list(p.units_done)  # --follow only
        self.entries = copy.deepcopy(p.entries)  # --follow only
        labels = model_scorer.spec.labels
        # What was scored (the run's; --follow: the entry in progress), as committed
        self.profile = (drift.Profile.from_json(p.profile) if p.profile and p.profile["labels"] == labels
                        else drift.Profile.empty(labels))
        committed_bad = self.counters["rows_with_error"]
        if error_limit and error_limit[0] == "rows" and committed_bad > error_limit[1]:
            raise DataError(f"{outdir.out}: the unfinished run there already has {committed_bad} bad "
                            f"rows, more than --max-errors {opts.max_errors}; resume it with a higher "
                            "limit, or pass --overwrite to start again")

    def write(self, scored: pa.Table) -> None:
        """Write a scored_table(): pieces end where a checkpoint falls."""
        if scored.num_rows == 0:  # a stream's tick: only time has passed
            self._commit_if_due()
            return
        start = 0
        while start < scored.num_rows:
            take = min(scored.num_rows - start, self.opts.rows_per_file - self.since)
            self._write_piece(scored.slice(start, take))
            start += take
            if self.since == self.opts.rows_per_file:
                self.checkpoint()
        self._commit_if_due()

    def _commit_if_due(self) -> None:
        """--flush-seconds: commit once the oldest uncommitted row was written flush/2 ago (the
        reader hands rows on within flush/2 of their arrival)."""
        flush = self.opts.flush_seconds
        if flush and self.since and time.monotonic() - self.first_uncommitted >= flush / 2:
            self.checkpoint()

    def _write_piece(self, scored: pa.Table) -> None:
        c = self.counters
        self.profile.add(probabilities_of(scored, self.opts.output_prefix + "probabilities",
                                          len(self.profile.labels)),
                         scored.column("__tokens").to_numpy())
        errors = scored.column("__error")
        bad = errors.is_valid()
        bad_rows = scored.filter(bad)
        if self.dead is not None and bad_rows.num_rows:
            self.dead.write(bad_rows.select(["__source", "__position", "__error", "__text"])
                            .rename_columns(DEAD_LETTER_SCHEMA.names).cast(DEAD_LETTER_SCHEMA))
            c["rows_dead_lettered"] += bad_rows.num_rows
            scored = scored.filter(pc.invert(bad))
        self.writer.write(scored.drop_columns([n for n in scored.column_names if n.startswith("__")]))
        c["rows_out"] += scored.num_rows
        c["rows_with_error"] += bad_rows.num_rows
        c["rows_truncated"] += pc.sum(scored.column("__truncated")).as_py() or 0
        c["rows_windowed"] = c.get("rows_windowed", 0) + (pc.sum(scored.column("__windowed")).as_py() or 0)
        for reason in bad_rows.column("__error").to_pylist():
            kind = error_kind(reason)
            c["error_reasons"][kind] = c["error_reasons"].get(kind, 0) + 1
        if not self.since:
            self.first_uncommitted = time.monotonic()
        self.rows += len(errors)
        self.since += len(errors)
        limit = self.error_limit
        if limit and limit[0] == "rows" and c["rows_with_error"] > limit[1]:
            row = bad_rows.slice(bad_rows.num_rows - 1).to_pylist()[0]
            raise DataError(f"more than {int(limit[1])} bad rows (--max-errors); the latest: "
                            f"{row['__source']}:{row['__position']}: {row['__error']}")

    def checkpoint(self) -> None:
        """Commit every open part, then record it (scorer.commit.OutputDir.checkpoint)."""
        self.writer.commit()
        if self.dead is not None:
            self.dead.commit()
        self.outdir.checkpoint(commit.Progress(
            rows=self.rows, unit=self.unit, units_done=list(self.units_done),
            entries=copy.deepcopy(self.entries),
            parts=list(self.writer.parts),
            dead_letter_parts=list(self.dead.parts) if self.dead else [],
            next_index=dict(self.writer.next_index),
            dead_letter_next_index=dict(self.dead.next_index) if self.dead else {},
            counters=copy.deepcopy(self.counters), profile=self.profile.to_json()))
        self.since = 0

    def abort(self) -> None:
        self.writer.abort()
        if self.dead is not None:
            self.dead.abort()


def _final_checks(stats: source.SourceStats, counters: dict, opts: RunOptions,
                  error_limit) -> list[str]:
    """Run-level rules checked once every row is in: the error fraction, empty input."""
    if error_limit and error_limit[0] == "fraction" and stats.rows:
        share = counters["rows_with_error"] / stats.rows
        if share > error_limit[1]:
            raise DataError(f"{counters['rows_with_error']} of {stats.rows} rows are bad "
                            f"({share:.2%}), more than --max-errors {opts.max_errors}")
    if stats.rows == 0:
        if opts.fail_on_empty:
            raise DataError(f"no input rows in {', '.join(stats.files)} (--fail-on-empty)")
        return [f"no input rows in {', '.join(stats.files)}: the output holds no part files"]
    return []


def _kept_columns(chunk: source.Chunk, opts: RunOptions) -> pa.Table:
    table = chunk.columns
    names = table.column_names
    keep = names if opts.keep_columns is None else opts.keep_columns
    unknown = [c for c in keep if c not in names]
    for col in (opts.id_column, opts.partition_by):
        if col and col not in names and col not in output_names(True, opts.output_prefix, True):
            unknown.append(col)
    if unknown:
        raise InputError(f"{chunk.source}: no column {unknown[0]!r} (columns: {', '.join(names)})")
    if opts.id_column and opts.id_column not in keep:
        keep = [opts.id_column] + list(keep)
    if opts.drop_text:
        keep = [c for c in keep if c != opts.text_column]
    if opts.partition_by in names and opts.partition_by not in keep:
        keep = list(keep) + [opts.partition_by]  # it names the directories (and leaves the files)
    table = table.select(list(keep))
    if not opts.id_column:
        ids = [f"{chunk.source}:{chunk.offset + i}" for i in range(len(chunk))]
        table = table.append_column("row_id", pa.array(ids, pa.string()))
    return table


def check_columns(first: source.Chunk | None, model_scorer: Scorer, opts: RunOptions) -> None:
    """On the first chunk, before the output is touched: the kept columns exist, none has an
    output column's name, and the --partition-by column can name directories."""
    if first is None:
        return
    kept = _kept_columns(first, opts)
    clash = [c for c in output_names(model_scorer.multi_label, opts.output_prefix, model_scorer.windowed)
             if c in kept.column_names]
    if clash:
        raise OutputError(f"input column {clash[0]!r} has the name of an output column; keep both "
                          f"with --output-prefix (e.g. --output-prefix pred_ gives pred_{clash[0]}) "
                          f"or leave it out with --keep-columns")
    if opts.partition_by:
        check_partition_column(kept, opts)


# Output columns holding lists; the others are strings and numbers.
_LIST_OUTPUTS = {"probabilities": pa.list_(pa.float32()), "labels": pa.list_(pa.string())}


def check_partition_column(kept: pa.Table, opts: RunOptions) -> None:
    """--partition-by names directories after its values' text: a list or binary cannot."""
    column = opts.partition_by
    if column in kept.column_names:
        column_type = kept.schema.field(column).type
    else:
        column_type = _LIST_OUTPUTS.get(column.removeprefix(opts.output_prefix), pa.string())
    if not sink.can_name_directories(column_type):
        kind = "list" if pa.types.is_list(column_type) else str(column_type)
        raise OutputError(f"--partition-by {column}: a {kind} column cannot name directories; "
                          "partition by a column of strings, numbers, booleans, dates or times")


def _join(kept: pa.Table, scored: pa.Table) -> pa.Table:
    for name in scored.column_names:
        kept = kept.append_column(name, scored.column(name))
    return kept


def terminal_progress(rows: int, seconds: float) -> None:
    rate = rows / seconds if seconds > 0 else 0.0
    sys.stderr.write(f"\rscored {rows:,} rows ({rate:,.0f} rows/s)")
    sys.stderr.flush()
