"""The local engine: source -> encode -> model -> sink on threads, for one run (scorer.runs).

    run(["in.parquet"], "scored/")     # what `scorer run in.parquet -o scored/` does

Reading, tokenizing and writing each run on a thread of their own (scorer.stages), the model on
the calling thread. Every `rows_per_file` input rows the open part files are committed and the
run checkpointed (scorer.commit): a killed run, started again, goes on from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path
from typing import Callable, ContextManager

import pyarrow as pa

from scorer import faults, overlap, source, stages
from scorer.api import Prepared, Scorer
from scorer.errors import OutputError
from scorer.options import RunOptions
from scorer.runs import Run, RunResult, WriteStage
from scorer.tables import chunk_table, scored_table

# (rows through the model so far, within a chunk too; seconds since the first batch)
Progress = Callable[[int, float], None]
Loading = Callable[[str], ContextManager]  # loading(model name): held while the model loads


def run(inputs: list[str], output: str | Path, model=None, options: RunOptions | None = None,
        progress: Progress | None = None, scorer_: Scorer | None = None,
        loading: Loading | None = None, **kwargs) -> RunResult:
    """Score every input row into Parquet part files under `output`.

    Options are RunOptions fields, given as an object or as keyword arguments. Everything that
    can refuse the run is checked before the model loads (and TensorFlow is imported): inputs
    exist and lie apart from the output, the model's spec and checksums, the output (lock,
    contents, an identical run already finished there), the first chunk's columns; then the
    model loads, and the output is made ready to write. (Standard input: the model loads
    before the output is locked, so that a stream's first rows wait for nothing.)
    An unfinished run of the same inputs, model and options in `output` is resumed; a finished
    one is left as it is (RunResult.already_complete, with its manifest).
    """
    the_run = Run(options or RunOptions(**kwargs), output)
    expanded = source.expand_inputs(inputs, the_run.opts.format)
    overlap.check_apart([i.path for i in expanded], output, the_run.opts.dead_letter)
    if scorer_ is not None:
        the_run.load_scorer(None, scorer_)
    elif any(i.path == "-" for i in expanded):
        # A stream's first rows must not wait for the model: it loads before the output is
        # locked (the lock then says the stream is being read).
        with loading_model(loading, str(model or "default")):
            the_run.load_scorer(model)
    else:
        the_run.read_model(model)
    outdir = the_run.open([source.fingerprint(i) for i in expanded])
    if outdir.finished:
        return RunResult(the_run.out, outdir.finished, already_complete=True)
    stats = source.SourceStats()

    def start(first: source.Chunk | None) -> WriteStage:
        # The first chunk is read before the model loads and the output directory is changed,
        # so a wrong column or a column clash fails fast without emptying an --overwrite target.
        the_run.check_first(first)
        if the_run.scorer is None:
            with loading_model(loading, the_run.model_dir.id.name):
                the_run.load_scorer(the_run.model_dir)
        outdir.prepare()
        return the_run.write_stage()

    with the_run.writing():
        writes = stream(expanded, outdir.progress.rows, the_run, stats, start, progress)
    return the_run.complete(expanded, stats, writes, blank_lines_skipped=stats.blank_lines)


def stream(inputs: list[source.Input], skip: int, the_run: Run, stats: source.SourceStats,
           start: Callable[[source.Chunk | None], WriteStage],
           progress: Progress | None = None) -> WriteStage:
    """read -> prepare (tokenize) -> infer -> write over `inputs` after their first `skip` rows,
    each stage on its own thread (infer on this one), with the_run's scorer. start(first chunk
    or None) is called before anything is written and returns the WriteStage to write to; it
    is returned after a final checkpoint."""
    reader = prepared_chunks = consumer = writes = None
    try:
        reader = _reader(inputs, skip, the_run, stats)
        first = next((c for c in reader if len(c)), None)  # a stream's empty ticks carry nothing
        writes = start(first)
        rows_before = writes.rows - skip
        chunks = itertools.chain([first] if first is not None else [], reader)
        prepared_chunks = stages.prefetch(((c, _prepared(the_run.scorer, c)) for c in chunks),
                                          depth=the_run.opts.queue_depth, name="encode")
        consumer = stages.Consumer(_writer(the_run, writes), depth=the_run.opts.queue_depth, name="write")
        scored = 0  # rows through the model so far
        for chunk, prepared in prepared_chunks:
            the_run.scoring_begins()
            if progress and prepared.encoded is not None:
                prepared.encoded.batches = ReportingBatches(
                    prepared.encoded.batches, len(chunk),
                    lambda rows, before=scored: progress(before + rows, the_run.scoring_seconds))
            probs = the_run.scorer.infer(prepared)
            faults.point("infer")
            scored += len(chunk)
            if progress:
                progress(scored, the_run.scoring_seconds)
            consumer.submit((chunk, prepared, probs))
        consumer.close()
        with the_run.timers.write.measure():
            writes.checkpoint()
        if stats.rows != writes.rows - rows_before:  # the invariant: no row is ever lost
            raise OutputError(f"internal error: read {stats.rows} rows but accounted for "
                              f"{writes.rows - rows_before}")
        return writes
    except BaseException:
        for stage in (prepared_chunks, reader):
            if stage is not None:
                stage.close()  # stops the encode and read threads
        if consumer is not None:
            consumer.cancel()  # the writer thread must be idle before its files are dropped
        if writes is not None:
            writes.abort()
        raise


def _reader(inputs: list[source.Input], skip: int, the_run: Run, stats: source.SourceStats):
    """The read stage: chunks on their own thread, timed."""
    opts = the_run.opts
    chunks = source.read_chunks(inputs, opts.text_column, opts.chunk_rows, stats, skip=skip,
                                max_line_bytes=opts.max_line_bytes, flush_seconds=opts.flush_seconds,
                                id_column=opts.id_column, csv_types=opts.csv_types)
    return stages.prefetch(stages.timed(chunks, the_run.timers.read), depth=opts.queue_depth,
                           name="read")


class ReportingBatches(list):
    """A chunk's model batches that report, as each next one is taken, about how many of the
    chunk's `texts` the batches done so far held (report(rows)): progress within a chunk, from
    the loop every model runs over its batches, without a hook in each of them."""

    def __init__(self, batches: list, texts: int, report: Callable[[int], None]):
        super().__init__(batches)
        self.texts, self.report = texts, report  # report: None once the batches were gone over

    def __iter__(self):
        if self.report is None:  # reported once, by the model's loop; others read them again
            yield from list.__iter__(self)
            return
        report, self.report = self.report, None
        sequences = sum(len(b.rows) for b in list.__iter__(self)) or 1  # windows count apart
        done = 0
        for batch in list.__iter__(self):
            yield batch
            done += len(batch.rows)
            if done < sequences:  # the chunk's end is reported by who scores it
                report(self.texts * done // sequences)


def _writer(the_run: Run, writes: WriteStage) -> Callable:
    """The write stage's work on one (chunk, prepared, probabilities)."""
    def write(item: tuple[source.Chunk, Prepared, object]) -> None:
        chunk, prepared, probs = item
        with the_run.timers.write.measure():
            if len(chunk):
                table = chunk_table(chunk, the_run.opts, the_run.output_columns)
                writes.write(scored_table(table, the_run.scorer, prepared, probs, the_run.opts))
            else:
                writes.write(pa.table({}))  # a stream's tick
    return write


def _prepared(model_scorer: Scorer, chunk: source.Chunk) -> Prepared:
    prepared = model_scorer.prepare(chunk.texts, chunk.read_errors)
    faults.point("encode")
    return prepared


def loading_model(loading: Loading | None, name: str) -> ContextManager:
    """What to hold while a model loads: the caller's loading(name), or nothing."""
    return loading(name) if loading else contextlib.nullcontext()
