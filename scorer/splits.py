"""Splits: a run's input cut into units of work that run anywhere, and the executor of one.

    the_plan = plan(inputs, rows_per_split=100_000)     # footers and names only, never rows
    result = execute_split(split, scorer, opts, "out/")  # read, score, write: metadata comes back
    the_run.commit(result)                              # the driver, one at a time (scorer.runs)

A Split is a Parquet input's row-group range (several small files may form one split: about
rows_per_split rows, whole row groups), a JSON Lines / CSV / text file (whole, or a byte range),
standard input, or a landing entry that --follow took (scorer.follow, which numbers them in the
order it takes them). Its id (its place in the plan, "00003") names its part files: part-00003-00000.parquet,
part-00003-00001.parquet (--rows-per-file rows each), so the same inputs give the same files
whichever engine ran them. Row ids stay `<input>:<position>`: a range's positions count from
its file's first row.

execute_split() runs anywhere the output is reachable (this process, a Ray worker): it reads the
split, scores it through the threaded stages (scorer.stages: read, encode and write threads,
inference on the calling thread) and writes its part files, dead letters and partitions under
the attempt's own directory, `_scorer_run/attempts/<split>-<attempt>/` in the output (and in the
dead-letter location). It returns a SplitResult: the split's SplitState (rows, parts, counters,
drift profile: what a commit records) and the attempt's own work (tokens, encode, infer, compile,
read and write seconds, where it ran). Rows never travel back.

Committing is the driver's (scorer.runs.Run.commit, scorer.commit.OutputDir.commit_attempt):
the attempt's parts are renamed to their final names, the split recorded in progress.json; an
attempt of a split already committed (a retry that lost, a speculative duplicate) is deleted.
With `checkpoint` (the local engine, streams), the executor also hands over partial results at
every --rows-per-file rows (and --flush-seconds), which the driver commits the same way: a
resumed split goes on from its committed rows (`committed`). Not at a split's last row, where the
plan knows it (Parquet, a cut line file): the split's end commits it, once.
"""

from __future__ import annotations

import copy
import itertools
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from scorer import drift, embedder, faults, sink, source, stages, storage
from scorer.api import Prepared, Scorer, error_kind, output_names
from scorer.errors import DataError, OutputError
from scorer.options import RunOptions, parse_max_errors
from scorer.prepared import ScoreStats
from scorer.tables import (DEAD_LETTER_SCHEMA, ERROR, POSITION, SOURCE, TOKENS, TRUNCATED, WINDOWED, chunk_table,
                           embeddings_in, dead_letters, probabilities_in, public_columns, scored_table)

PARQUET, FILE, STREAM, ENTRY = "parquet", "file", "stream", "entry"  # Split.kind (ENTRY: --follow's)
STATE_DIR = "_scorer_run"  # the output's state directory while a run is unfinished (scorer.commit)
ATTEMPTS = f"{STATE_DIR}/attempts"  # each attempt of a split writes its parts under here


@dataclass(frozen=True)
class Piece:
    """One input's part of a split: a whole file, or a Parquet file's row groups [start, stop)."""

    path: str  # the input as given (a file, a Parquet directory, '-')
    format: str
    member: str | None = None  # Parquet: the file (of a directory input) as row ids name it
    row_groups: tuple[int, int] | None = None  # Parquet: [start, stop); None: every row group
    first_row: int = 0  # the position of its first row in its file
    rows: int | None = None  # from the footers (Parquet) or a line count; None: not known
    byte_range: tuple[int, int] | None = None  # JSON Lines, text: its bytes [start, stop)
    first_line: int = 0  # JSON Lines, text: the lines before byte_range

    def input(self) -> source.Input:
        return source.Input(self.path, self.format, self.member, self.row_groups, self.byte_range,
                            self.first_line, self.first_row)


@dataclass(frozen=True)
class Split:
    """A unit of work: read, scored, written and committed as one."""

    id: str  # "00003": its place in the plan, in its part files' names
    kind: str  # PARQUET (row groups of one or more files), FILE (a whole file), STREAM (stdin),
    # ENTRY (a landing entry that scorer.follow took: its file, or its directory's Parquet files)
    pieces: tuple[Piece, ...]

    @property
    def first_row(self) -> int:
        return self.pieces[0].first_row

    @property
    def rows(self) -> int | None:
        """Its input rows, if the plan knows them (Parquet)."""
        counts = [p.rows for p in self.pieces]
        return None if None in counts else sum(counts)

    def inputs(self) -> list[source.Input]:
        return [p.input() for p in self.pieces]

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "pieces": [asdict(p) for p in self.pieces]}

    @classmethod
    def from_json(cls, data: dict) -> "Split":
        pieces = tuple(Piece(**{**p, **{k: tuple(p[k]) for k in ("row_groups", "byte_range")
                                        if p.get(k)}}) for p in data["pieces"])
        return cls(data["id"], data["kind"], pieces)


def plan(inputs: list[source.Input], rows_per_split: int,
         max_line_bytes: int = source.DEFAULT_MAX_LINE_BYTES) -> list[Split]:
    """The run's splits, in input order, from Parquet footers, and a line count of the local,
    uncompressed JSON Lines and text files; no row is parsed. Consecutive Parquet row groups (of
    one file or of several) are packed into splits of at most rows_per_split rows (a bigger row
    group is a split of its own); a JSON Lines or text file is cut at the line starting every
    rows_per_split-th row; every other input (CSV, compressed, remote, stdin) is one split."""
    splits: list[Split] = []
    pending: list[Piece] = []  # the Parquet split being filled
    pending_rows = 0

    def close() -> None:
        nonlocal pending, pending_rows
        if pending:
            splits.append(Split(f"{len(splits):05d}", PARQUET, tuple(pending)))
        pending, pending_rows = [], 0

    for inp in inputs:
        if _cut_by_lines(inp):
            close()
            cuts = source.line_cuts(inp.path, inp.format, rows_per_split, max_line_bytes)
            for (start, lines, rows), (stop, _, next_rows) in zip(cuts, cuts[1:]):
                splits.append(Split(f"{len(splits):05d}", FILE, (Piece(
                    inp.path, inp.format, first_row=rows, rows=next_rows - rows,
                    byte_range=(start, stop), first_line=lines),)))
            continue
        if inp.format != "parquet" or inp.path == "-":
            close()
            kind = STREAM if inp.path == "-" else FILE
            splits.append(Split(f"{len(splits):05d}", kind, (Piece(inp.path, inp.format),)))
            continue
        for member, groups in source.parquet_layout(inp.path):
            start, first, position = 0, 0, 0
            for g, rows in enumerate(groups):
                if pending_rows and pending_rows + rows > rows_per_split:
                    if g > start:
                        pending.append(Piece(inp.path, inp.format, member, (start, g), first,
                                             position - first))
                    close()
                    start, first = g, position
                pending_rows += rows
                position += rows
            pending.append(Piece(inp.path, inp.format, member, (start, len(groups)), first,
                                 position - first))
    close()
    return splits


def _cut_by_lines(inp: source.Input) -> bool:
    """Whether a file is cut into byte ranges: JSON Lines and text, local and uncompressed (a
    CSV value may hold a line break; a compressed stream cannot be entered midway; an object
    store's file would be read twice)."""
    return (inp.format in ("jsonl", "text") and inp.path != "-" and not storage.is_remote(inp.path)
            and source.compression_of(inp.path) is None)


@dataclass
class Counters:
    """What became of the input rows (of a split, or summed over the run: progress.json and the
    manifest)."""

    rows_out: int = 0  # rows in the part files
    rows_dead_lettered: int = 0
    rows_with_error: int = 0  # rows not scored: in the part files with error set, or dead-lettered
    rows_truncated: int = 0  # of rows_out
    rows_windowed: int = 0  # of rows_out
    error_reasons: dict[str, int] = field(default_factory=dict)  # api.error_kind -> rows

    @classmethod
    def from_json(cls, data: dict) -> "Counters":
        """progress.json's counters (a checkpoint from before rows_windowed lacks it)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def rows_in(self) -> int:
        """Input rows accounted for: each is in a part file or a dead letter."""
        return self.rows_out + self.rows_dead_lettered

    @property
    def rows_scored(self) -> int:
        return self.rows_in - self.rows_with_error

    def count(self, written: pa.Table, bad_rows: pa.Table, dead_lettered: bool) -> None:
        """A piece of a scored_table(): `written` went to the part files, `bad_rows` (ERROR set)
        are among them, or went to the dead letters."""
        self.rows_out += written.num_rows
        self.rows_dead_lettered += bad_rows.num_rows if dead_lettered else 0
        self.rows_with_error += bad_rows.num_rows
        self.rows_truncated += pc.sum(written.column(TRUNCATED)).as_py() or 0
        self.rows_windowed += pc.sum(written.column(WINDOWED)).as_py() or 0
        for reason in bad_rows.column(ERROR).to_pylist():
            kind = error_kind(reason)
            self.error_reasons[kind] = self.error_reasons.get(kind, 0) + 1

    def add(self, other: "Counters") -> None:
        for f in fields(self):
            if f.name != "error_reasons":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for kind, n in other.error_reasons.items():
            self.error_reasons[kind] = self.error_reasons.get(kind, 0) + n


@dataclass
class SplitState:
    """A split's rows as committed (a record in progress.json), or as an attempt left them."""

    rows: int = 0  # input rows accounted for, from the split's first row
    complete: bool = False  # every row of the split is in
    parts: list = field(default_factory=list)  # {"file", "rows", "bytes"}, relative to the output
    dead_letter_parts: list = field(default_factory=list)
    next_index: dict = field(default_factory=dict)  # partition dir ("" = top) -> next part number
    dead_letter_next_index: dict = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    profile: dict | None = None  # scorer.drift.Profile of its rows
    blank_lines: int = 0  # JSON Lines: white-space-only lines passed over

    def to_json(self) -> dict:
        return {**asdict(self), "counters": self.counters.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "SplitState":
        return cls(**{**copy.deepcopy(data), "counters": Counters.from_json(data["counters"])})


@dataclass
class SplitResult:
    """What an attempt of a split hands the driver: metadata only."""

    split: str  # Split.id
    attempt: str  # its directory is attempt_dir(split, attempt)
    state: SplitState  # the split as this attempt leaves it (a committed beginning included)
    score: ScoreStats  # this attempt's tokens, encode and infer seconds
    compile_seconds: float = 0.0  # this attempt's first calls of new shapes
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    rows_read: int = 0  # input rows this attempt read (a resumed split's committed ones not)
    last_bad_row: str | None = None  # "<source>:<position>: <error>" of its latest bad row
    host: str = ""  # where it ran: "<hostname>:<pid>"
    scoring_started: float | None = None  # time.time() its first batch went to the model

    @property
    def complete(self) -> bool:
        return self.state.complete

    def to_json(self) -> dict:
        return {**asdict(self), "state": self.state.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "SplitResult":
        return cls(**{**data, "state": SplitState.from_json(data["state"]),
                      "score": ScoreStats(**data["score"])})


def attempt_dir(split: str, attempt: str) -> str:
    """Where an attempt writes, relative to the output (and to the dead-letter location)."""
    return f"{ATTEMPTS}/{split}-{attempt}"


def emits_labels(model_dir, opts: RunOptions) -> bool:
    """Whether the run writes label columns (and so profiles them for drift): a classifier's,
    unless --emit leaves the labels out."""
    return model_dir.kind == "classifier" and embedder.LABEL in (embedder.parse_emit(opts.emit)
                                                                 or (embedder.LABEL,))


def profiles_vectors(model_dir, opts: RunOptions) -> bool:
    """Whether the run's drift profile counts its vectors (an embedding model's, a classifier's
    --emit embedding): a run that writes no labels. With labels it counts those, vectors or not."""
    return not emits_labels(model_dir, opts)


def output_columns(model_dir, opts: RunOptions, windowed: bool) -> list[str]:
    """The columns the model adds to each row (an input column of one of these names is kept
    as input_<name>: tables.renamed_inputs)."""
    if model_dir.kind == "embedding":
        return embedder.output_names(opts.output_prefix, windowed)
    multi_label = model_dir.spec.problem_type == "multi_label"
    return output_names(multi_label, opts.output_prefix, windowed,
                        embedder.parse_emit(opts.emit) or (embedder.LABEL,))


def first_chunk(split: Split, opts: RunOptions) -> source.Chunk | None:
    """The split's first chunk, read (on the driver) to check its columns before the output is
    changed; None if it has no rows. Not for standard input: it cannot be read twice."""
    chunks = _chunks(split, opts, source.SourceStats(), skip=0)
    try:
        return next((c for c in chunks if len(c)), None)
    finally:
        chunks.close()


def execute_split(split: Split, scorer: Scorer, opts: RunOptions, output, *,
                  attempt: str | None = None, committed: SplitState | None = None,
                  bad_rows_allowed: int | None = None,
                  embedding_basis: drift.EmbeddingBasis | None = None,
                  before_write: Callable[[source.Chunk | None], None] | None = None,
                  checkpoint: Callable[[SplitResult], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> SplitResult:
    """Read, score and write one split into its attempt's directory under `output` (and
    opts.dead_letter); returns the complete SplitResult. Raises as the local run does (a bad
    column, more than bad_rows_allowed bad rows in the split, an unreadable input).

    attempt: names the attempt's directory (default: a new random one, so that a retry or a
    duplicate never writes where another attempt does). committed: the split's committed
    beginning, to go on from (its rows are skipped, its part numbers continue).
    embedding_basis: an embedding model's reference basis, which its drift profile bins by
    (Run.reference.basis).
    before_write(first chunk or None): called once the first chunk is read, before anything is
    written (the local engine checks it and prepares the output then: Run.start). checkpoint(partial
    result): called every --rows-per-file rows (and --flush-seconds) with the parts closed so
    far; the caller commits them before it returns. progress(rows): rows through the model in
    this attempt so far, as its batches are done (within a chunk too)."""
    attempt = attempt or uuid.uuid4().hex[:12]
    committed = committed or SplitState()
    score_before = copy.copy(scorer.stats)
    compile_before = scorer.predictor.compile_seconds
    stats = source.SourceStats()
    read_watch = stages.Stopwatch()
    writer = reader = prepared_chunks = consumer = None
    try:
        reader = stages.prefetch(stages.timed(_chunks(split, opts, stats, committed.rows), read_watch),
                                 depth=opts.queue_depth, name="read")
        first = next((c for c in reader if len(c)), None)  # a stream's empty ticks carry nothing
        if before_write is not None:
            before_write(first)
        writer = SplitWriter(split, attempt, scorer, opts, output, committed, bad_rows_allowed,
                             embedding_basis)
        if checkpoint is not None:
            writer.on_checkpoint = lambda: checkpoint(_result(writer, stats, read_watch, scorer,
                                                              score_before, compile_before))
        chunks = itertools.chain([first] if first is not None else [], reader)
        prepared_chunks = stages.prefetch(((c, _prepared(scorer, c)) for c in chunks),
                                          depth=opts.queue_depth, name="encode")
        outputs = output_columns(scorer.model_dir, opts, scorer.windowed)
        consumer = stages.Consumer(_write_stage(writer, scorer, opts, outputs),
                                   depth=opts.queue_depth, name="write")
        scored = 0  # rows through the model so far
        for chunk, prepared in prepared_chunks:
            writer.scoring_started = writer.scoring_started or time.time()
            if progress and prepared.encoded is not None:
                prepared.encoded.batches = ReportingBatches(
                    prepared.encoded.batches, len(chunk), lambda rows, before=scored: progress(before + rows))
            probs = scorer.infer(prepared)
            faults.point("infer")
            scored += len(chunk)
            if progress:
                progress(scored)
            consumer.submit((chunk, prepared, probs))
        consumer.close()
        with writer.watch.measure():
            writer.close_parts()
        read = stats.rows - stats.rows_skipped
        if read != writer.rows - committed.rows:  # the invariant: no row is ever lost
            raise OutputError(f"internal error: read {read} rows but accounted for "
                              f"{writer.rows - committed.rows}")
        writer.complete = True
        return _result(writer, stats, read_watch, scorer, score_before, compile_before)
    except BaseException:
        for stage in (prepared_chunks, reader):
            if stage is not None:
                stage.close()  # stops the encode and read threads
        if consumer is not None:
            consumer.cancel()  # the writer thread must be idle before its files are dropped
        if writer is not None:
            writer.abort()
        raise


def given_up(split: str, committed: SplitState, opts: RunOptions, notes: list[tuple[str, str]]) -> SplitResult:
    """A split given up on (--follow: an entry that cannot be scored), to commit as any result:
    its committed rows, marked complete, and with a dead-letter location, a dead letter for each
    (where, reason) note (a thing that has no row: the whole entry), written under a new
    attempt's directory."""
    attempt = uuid.uuid4().hex[:12]
    state = copy.deepcopy(committed)
    state.complete = True
    if opts.dead_letter:
        dead = sink.PartWriter(storage.open_storage(_joined(opts.dead_letter, attempt_dir(split, attempt))),
                               next_index=committed.dead_letter_next_index, name_prefix=f"{split}-")
        dead.write(pa.table({"source": [w for w, _ in notes], "position": [None] * len(notes),
                             "line": [None] * len(notes), "error": [r for _, r in notes],
                             "text": [None] * len(notes), "raw": [None] * len(notes)},
                            schema=DEAD_LETTER_SCHEMA))
        dead.commit()
        state.dead_letter_parts += [{**p, "bytes": dead.out.size(p["file"])} for p in dead.parts]
        state.dead_letter_next_index = dict(dead.next_index)
    return SplitResult(split, attempt, state, ScoreStats(), host=f"{socket.gethostname()}:{os.getpid()}")


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


def _chunks(split: Split, opts: RunOptions, stats: source.SourceStats, skip: int):
    return source.read_chunks(split.inputs(), opts.text_column, opts.chunk_rows, stats, skip=skip,
                              max_line_bytes=opts.max_line_bytes, flush_seconds=opts.flush_seconds,
                              id_column=opts.id_column, csv_types=opts.csv_types)


def _prepared(model_scorer: Scorer, chunk: source.Chunk) -> Prepared:
    prepared = model_scorer.prepare(chunk.texts, chunk.read_errors)
    faults.point("encode")
    return prepared


def _write_stage(writer: "SplitWriter", model_scorer: Scorer, opts: RunOptions,
                 outputs: list[str]) -> Callable:
    """The write thread's work on one (chunk, prepared, probabilities)."""
    def write(item) -> None:
        chunk, prepared, probs = item
        with writer.watch.measure():
            if len(chunk):
                writer.write(scored_table(chunk_table(chunk, opts, outputs), model_scorer, prepared,
                                          probs, opts))
            else:
                writer.tick()  # a stream's tick: only time has passed
    return write


def _result(writer: "SplitWriter", stats: source.SourceStats, read_watch: stages.Stopwatch,
            model_scorer: Scorer, score_before: ScoreStats, compile_before: float) -> SplitResult:
    now = model_scorer.stats
    score = ScoreStats(**{f.name: getattr(now, f.name) - getattr(score_before, f.name)
                          for f in fields(ScoreStats)})
    state = writer.state()
    state.blank_lines += stats.blank_lines
    return SplitResult(writer.split.id, writer.attempt, state, score,
                       model_scorer.predictor.compile_seconds - compile_before,
                       read_watch.seconds, writer.watch.seconds,
                       stats.rows - stats.rows_skipped, writer.last_bad_row,
                       f"{socket.gethostname()}:{os.getpid()}", writer.scoring_started)


class SplitWriter:
    """A split's output and dead-letter part files, under its attempt's directory, and its row
    accounting: parts close every --rows-per-file input rows (and, with a checkpoint, every
    --flush-seconds), where a checkpoint may commit them."""

    def __init__(self, split: Split, attempt: str, model_scorer: Scorer, opts: RunOptions, output,
                 committed: SplitState, bad_rows_allowed: int | None,
                 embedding_basis: drift.EmbeddingBasis | None = None):
        self.split, self.attempt, self.opts = split, attempt, opts
        self.committed = committed
        self.bad_rows_allowed = bad_rows_allowed
        where = attempt_dir(split.id, attempt)
        self.out = storage.open_storage(_joined(output, where))
        self.writer = sink.PartWriter(self.out, model_scorer.model_dir.id, opts.partition_by,
                                      next_index=committed.next_index, name_prefix=f"{split.id}-")
        self.dead = (sink.PartWriter(storage.open_storage(_joined(opts.dead_letter, where)),
                                     next_index=committed.dead_letter_next_index,
                                     name_prefix=f"{split.id}-")
                     if opts.dead_letter else None)
        self.parts = list(committed.parts)  # {"file", "rows", "bytes"}: committed, then closed
        self.dead_letter_parts = list(committed.dead_letter_parts)
        self.counters = copy.deepcopy(committed.counters)
        labels = model_scorer.model_dir.spec.labels if emits_labels(model_scorer.model_dir, opts) else []
        self.profile = (drift.Profile.from_json(committed.profile)
                        if committed.profile and committed.profile["labels"] == labels
                        else drift.Profile.empty(labels))
        # A run without labels counts its vectors (against the reference's basis, if any)
        self.embeddings = profiles_vectors(model_scorer.model_dir, opts)
        self.embedding_basis = embedding_basis
        self.scoring_started: float | None = None
        self.start_rows = self.rows = committed.rows
        self.since = 0  # input rows written since parts last closed
        self.first_unclosed = 0.0  # monotonic time the oldest of those was written
        self.complete = False
        self.last_bad_row: str | None = None
        self.on_checkpoint: Callable[[], None] | None = None
        self.watch = stages.Stopwatch()
        self._listed = {id(w): 0 for w in (self.writer, self.dead) if w is not None}  # parts in self.parts

    def write(self, scored: pa.Table) -> None:
        """A scored_table(): pieces end where --rows-per-file falls."""
        start = 0
        while start < scored.num_rows:
            take = min(scored.num_rows - start, self.opts.rows_per_file - self.since)
            self._write_piece(scored.slice(start, take))
            start += take
            if self.since == self.opts.rows_per_file:
                self._roll()
        self.tick()

    def tick(self) -> None:
        """--flush-seconds (with a checkpoint): close the parts once the oldest row not in a
        closed part was written flush/2 ago (the reader hands rows on within flush/2)."""
        flush = self.opts.flush_seconds
        if (flush and self.on_checkpoint is not None and self.since
                and time.monotonic() - self.first_unclosed >= flush / 2):
            self._roll()

    def close_parts(self) -> None:
        """Close and rename every open part (inside the attempt's directory); with those a new
        schema closed before, they join the split's parts."""
        for writer, parts in ((self.writer, self.parts), (self.dead, self.dead_letter_parts)):
            if writer is None:
                continue
            writer.commit()
            closed = writer.parts[self._listed[id(writer)]:]
            parts += [{**p, "bytes": writer.out.size(p["file"])} for p in closed]
            self._listed[id(writer)] = len(writer.parts)
        self.since = 0

    def state(self) -> SplitState:
        return SplitState(self.rows, self.complete, list(self.parts), list(self.dead_letter_parts),
                          dict(self.writer.next_index),
                          dict(self.dead.next_index) if self.dead else {},
                          copy.deepcopy(self.counters), self.profile.to_json(),
                          self.committed.blank_lines)

    def abort(self) -> None:
        """Drop open parts and the attempt's directory (its closed parts were never committed,
        or were moved out by a checkpoint)."""
        for writer in (self.writer, self.dead):
            if writer is not None:
                writer.abort()
                try:
                    writer.out.delete_dir("")
                except OSError:
                    pass

    def _roll(self) -> None:
        self.close_parts()
        # At the split's last row (the plan knows its rows) the split's end commits next, with
        # these parts: a checkpoint now would commit the split twice, the second time nothing new.
        if self.on_checkpoint is not None and self.rows != self.split.rows:
            self.on_checkpoint()

    def _write_piece(self, scored: pa.Table) -> None:
        if self.profile.labels:
            self.profile.add(probabilities_in(scored, self.opts.output_prefix + "probabilities",
                                              len(self.profile.labels)),
                             scored.column(TOKENS).to_numpy())
        elif self.embeddings:
            self.profile.add_embeddings(embeddings_in(scored, self.opts.output_prefix + embedder.EMBEDDING),
                                        scored.column(TOKENS).to_numpy(), self.embedding_basis)
        bad = scored.column(ERROR).is_valid()
        bad_rows = scored.filter(bad)
        rows = scored.num_rows
        dead_lettered = self.dead is not None and bad_rows.num_rows > 0
        if dead_lettered:
            self.dead.write(dead_letters(bad_rows))
            scored = scored.filter(pc.invert(bad))
        self.writer.write(public_columns(scored))
        self.counters.count(scored, bad_rows, dead_lettered)
        if bad_rows.num_rows:
            row = bad_rows.slice(bad_rows.num_rows - 1).to_pylist()[0]
            self.last_bad_row = f"{row[SOURCE]}:{row[POSITION]}: {row[ERROR]}"
        if not self.since:
            self.first_unclosed = time.monotonic()
        self.rows += rows
        self.since += rows
        if self.bad_rows_allowed is not None and self.counters.rows_with_error > self.bad_rows_allowed:
            raise DataError(too_many_bad_rows(self.opts.max_errors, self.last_bad_row))


def too_many_bad_rows(max_errors: str, latest: str | None) -> str:
    """--max-errors as a row count was passed: the error's message."""
    return f"more than {int(parse_max_errors(max_errors).value)} bad rows (--max-errors); the latest: {latest}"


def _joined(location, rel: str) -> str:
    return f"{str(location).rstrip('/')}/{rel}"
