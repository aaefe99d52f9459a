"""A run: its lifecycle, owned here for every engine (scorer.pipeline, scorer.ray_engine).

    the_run = Run(opts, "scored/")
    the_run.read_model(model)                # spec and checksums: no TensorFlow yet
    the_run.execute(inputs, engine)          # open (locked), plan, engine.execute, complete

Run.execute opens the output (fresh, resumed, or already finished), plans the run into splits
(scorer.splits; a resume keeps the recorded plan) and gives the engine the splits not yet
committed. The engine only executes them (scorer.splits.execute_split, anywhere; the local engine
loads the model once the first rows' columns are checked), calls start(first chunk) before an
attempt writes, and hands each SplitResult to commit(): the driver, one result at a time,
renames the attempt's parts to their final names and records the split in progress.json
(scorer.commit). Once every split is committed, the run-level checks, the manifest (summed over
the splits, computed here for all engines) and _SUCCESS.

--follow (scorer.follow) has no plan: it makes a split of each landing entry it takes, executes
it and commits its results here too, with its entry ledger as the engine's own state
(commit(result, engine_state)); its output never completes, its manifest (manifest(inputs,
totals())) is rewritten after every entry.
(The module is `runs`: `scorer.run` is the Python API's function, scorer.pipeline.run.)
"""

from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator, Protocol

from scorer import classifier, commit, drift, fileio, modeldir, runtime, source, splits, stdir, storage
from scorer.api import Scorer, ScoreStats
from scorer.errors import DataError, ModelError, OutputError
from scorer.manifest import DeadLetter, Manifest
from scorer.options import RESUME_OPTIONS, ErrorLimit, RunOptions, parse_max_errors
from scorer.splits import Counters, Split, SplitResult, SplitState, emits_labels, profiles_vectors
from scorer.stages import Stopwatch
from scorer.tables import check_columns
from scorer.version import __version__


def load_scorer(model, opts: RunOptions, **overrides) -> Scorer:
    """The Scorer a run's options ask for (every engine, and every Ray actor, loads it here)."""
    kwargs = dict(max_length=opts.max_length, batch_tokens=opts.batch_tokens,
                  precision=opts.precision, threads=opts.threads, long_text=opts.long_text,
                  max_windows=opts.max_windows, prompt=opts.prompt,
                  embedding_dtype=opts.embedding_dtype, emit=opts.emit)
    return Scorer.load(model, **{**kwargs, **overrides})


def output_location(output) -> Path | str:
    """A local output as a Path; an object store URI as it is."""
    return output if storage.is_remote(str(output)) else Path(output)


@dataclass
class RunResult:
    output: Path | str  # a local directory, or an object store URI
    # the _manifest.json, as JSON (the Python API's, docs/python-api.md); typed:
    # scorer.manifest.Manifest.from_json(manifest)
    manifest: dict = field(default_factory=dict)
    already_complete: bool = False  # the output held this very run, finished: nothing was done


@dataclass
class Timers:
    """Where the driver's own time went (reading and writing are timed by each split:
    SplitResult.read_seconds / write_seconds)."""

    load: Stopwatch = field(default_factory=Stopwatch)  # the model (--follow: the latest)


@dataclass
class Totals:
    """The committed splits added up (Run._summed)."""

    profile: drift.Profile
    rows: int = 0
    parts: list = field(default_factory=list)
    dead_letter_parts: list = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    blank_lines: int = 0


@dataclass
class Committed:
    """What a manifest reports: the committed rows, and the work this process did for them."""

    counters: Counters
    parts: list
    dead_letter_parts: list | None  # None: the run has no dead-letter location
    profile: drift.Profile
    score: ScoreStats  # tokens, encode and infer seconds
    compile_seconds: float
    read_seconds: float
    write_seconds: float


class Engine(Protocol):
    """What executes a run's splits (scorer.pipeline.LocalEngine, scorer.ray_engine.RayEngine).
    One with a `facts` dict (Ray: workers, retries, hosts) has it in the manifest's `engine`,
    read once the splits ran."""

    def execute(self, the_run: "Run", pending: list[Split]) -> None:
        """Execute every split of `pending` (scorer.splits.execute_split, anywhere), calling
        the_run.start(first chunk) before any attempt writes and handing every result to
        the_run.commit(), one at a time, in any order."""


def check_some_scored(bad: int, rows: int, error_limit: ErrorLimit | None,
                      reasons: dict[str, int]) -> None:
    """Without --max-errors, rows that are all bad fail the run (exit 6): a run that scored
    nothing is no success (a compressed file read as text, the wrong --format)."""
    if error_limit is None and rows and bad == rows:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise DataError(f"all {rows:,} rows are bad ({kinds}): nothing was scored; check --format "
                        "and --text-column, or accept it with --max-errors")


class Run:
    """One run into one output directory: its options, model, output, timers and manifest."""

    def __init__(self, opts: RunOptions, output, errors_per_split: bool = False):
        self.opts = opts
        self.error_limit = parse_max_errors(opts.max_errors)
        # --max-errors as a row count holds for each split (--follow: each entry), not their sum
        self.errors_per_split = errors_per_split
        self.started = time.time()
        self.scoring_started: float | None = None  # the first batch's: rows/s counts from there
        self.out = output_location(output)
        self.timers = Timers()
        self.scorer: Scorer | None = None  # None until loaded, and on the Ray driver: its actors score
        self.model_dir: modeldir.ModelDir | None = None
        self.device: classifier.DevicePolicy | None = None
        self.reference: drift.Reference | None = None
        self.reference_warnings: list[str] = []
        self.renamed_columns: dict[str, str] = {}  # input column -> the name it is kept under
        self.outdir: commit.OutputDir | None = None
        self.plan: list[Split] = []
        self.attempts_discarded = 0  # attempts of splits already committed, deleted
        self._started = False  # the output was made ready (start())
        self._checked = False  # the run's first rows' columns were checked (check_first())
        self._results: dict[str, SplitResult] = {}  # this process's, the latest of each split
        self._commit_lock = threading.Lock()
        self._compiled_before = 0.0
        self._rows_before = 0  # input rows the output held when this process opened it

    def load_scorer(self, model, scorer_: Scorer | None = None, **overrides) -> Scorer:
        """Load the model (or take scorer_, counting from zero) and its drift reference; again
        to change models (--follow)."""
        self.timers.load = Stopwatch()
        with self.timers.load.measure():
            model_scorer = scorer_ or load_scorer(model, self.opts, **overrides)
        model_scorer.reset_stats()
        self.scorer = model_scorer
        self._compiled_before = model_scorer.predictor.compile_seconds
        self._use_model(model_scorer.model_dir, model_scorer.predictor.policy)
        return model_scorer

    def scoring_begins(self) -> None:
        """The first batch goes to the model: the run's rows/s is counted from here (start-up
        and the model load apart)."""
        if self.scoring_started is None:
            self.scoring_started = time.time()

    @property
    def scoring_seconds(self) -> float:
        return time.time() - self.scoring_started if self.scoring_started is not None else 0.0

    def read_model(self, model) -> modeldir.ModelDir:
        """The model's spec and files, checked without TensorFlow (what can refuse the run does
        so before it loads; load_scorer(model_dir) builds it later), or for a driver that only
        writes what workers score."""
        if self.opts.precision == "int8":
            runtime.require_openvino()  # exit 2 naming the extra, before anything is loaded
        with self.timers.load.measure():
            model_dir = modeldir.read(model)
        self._use_model(model_dir, None)
        return model_dir

    @property
    def multi_label(self) -> bool:
        return self.model_dir.kind == "classifier" and self.model_dir.spec.problem_type == "multi_label"

    @property
    def windowed(self) -> bool:
        return self.scorer.windowed if self.scorer else self.opts.long_text == "window"

    def open(self, inputs: list[dict], model_key: str | None = None) -> commit.OutputDir:
        """Lock the output and decide fresh run or resume; what identifies this run is its inputs'
        fingerprints, the model's checksum (or model_key: --follow's model reference, since a
        follower moves to a new champion between entries) and the options that shape the output."""
        identity = {"inputs": inputs, "model": model_key or self.model_dir.id.checksum,
                    "options": {k: getattr(self.opts, k) for k in RESUME_OPTIONS}}
        self.outdir = commit.OutputDir.open(self.out, identity, self.opts.overwrite, self.opts.dead_letter)
        self._rows_before = self.outdir.progress.counters.rows_in
        return self.outdir

    @property
    def output_columns(self) -> list[str]:
        """The columns the model adds to each row (an input column of one of these names is kept
        as input_<name>: tables.renamed_inputs)."""
        return splits.output_columns(self.model_dir, self.opts, self.windowed)

    def check_first(self, first: source.Chunk | None) -> None:
        """The first chunk's columns (tables.check_columns), before the output is changed; input
        columns kept under a new name are recorded (the manifest's input_columns_renamed)."""
        self.renamed_columns.update(check_columns(first, self.opts, self.output_columns))
        self._checked = self._checked or first is not None

    # ------------------------------------------------------------------ the lifecycle over splits

    def execute(self, inputs: list[source.Input], engine: "Engine", **extra) -> RunResult:
        """The whole run: open the output (locked; the same run found finished is left as it
        is), plan it (a resume keeps the recorded plan), let the engine execute the splits not
        yet committed (it hands each result to commit()), then complete it; `extra` fields
        (the engine's facts) go into the manifest."""
        outdir = self.open([source.fingerprint(i) for i in inputs])
        if outdir.finished:
            return RunResult(self.out, outdir.finished, already_complete=True)
        with self.writing():
            self.plan = self._plan(inputs)
            self._check_committed_errors()
            engine.execute(self, [s for s in self.plan if not self.committed(s.id).complete])
            self.start(None)  # nothing was left to execute: a resume still clears what it must
            missing = [s.id for s in self.plan if not self.committed(s.id).complete]
            if missing:
                raise OutputError(f"internal error: split(s) {', '.join(missing)} were not committed")
        facts = getattr(engine, "facts", None)  # an engine's own, known once it ran (Ray's retries)
        return self._complete_splits(inputs, **extra, **({"engine": facts} if facts else {}))

    def start(self, first: source.Chunk | None) -> None:
        """Before an attempt writes (the engine calls it with the split's first chunk): the
        run's first rows' columns are checked and, the first time, the output made ready
        (scorer.commit.OutputDir.prepare), so a wrong column fails before an --overwrite target
        is emptied. A later input's column that cannot name partitions fails where it is
        written (scorer.sink), naming its row."""
        if not self._checked:
            self.check_first(first)  # the run's first rows (a run of empty inputs has none)
        if not self._started:
            self.outdir.prepare()
            self._started = True

    def committed(self, split: str) -> SplitState:
        """What of a split is committed (nothing: an empty SplitState), a copy the attempt may
        go on from."""
        return copy.deepcopy(self.outdir.progress.splits.get(split) or SplitState())

    def bad_rows_allowed(self, split: str) -> int | None:
        """--max-errors as a row count: the bad rows a split may hold, given the other splits'."""
        limit = self.error_limit
        if limit is None or limit.kind != "rows":
            return None
        others = sum(s.counters.rows_with_error
                     for name, s in self.outdir.progress.splits.items() if name != split)
        return int(limit.value) - others

    def commit(self, result: SplitResult, engine_state: dict | None = None) -> bool:
        """Commit an attempt's result (one at a time, in any order): its parts renamed to their
        final names and the split recorded in progress.json (scorer.commit), with engine_state
        (an engine's own: --follow's ledger; None: as recorded). An attempt of a split already
        committed, or that did not go on from the split's committed rows, is deleted instead
        (False). A partial result (a checkpoint) is committed the same way."""
        with self._commit_lock:
            attempt = splits.attempt_dir(result.split, result.attempt)
            before = self.committed(result.split)
            state = result.state
            if before.complete or state.parts[:len(before.parts)] != before.parts \
                    or state.rows < before.rows:
                self.outdir.discard_attempt(attempt)
                self.attempts_discarded += 1
                return False
            states = {**self.outdir.progress.splits, result.split: copy.deepcopy(state)}
            total = self._summed(states)
            if not self.errors_per_split and self._over_row_limit(total.counters):
                raise DataError(splits.too_many_bad_rows(self.opts.max_errors, result.last_bad_row))
            old = {p["file"] for p in before.parts}
            old_dead = {p["file"] for p in before.dead_letter_parts}
            self.outdir.commit_attempt(
                attempt, [p["file"] for p in state.parts if p["file"] not in old],
                [p["file"] for p in state.dead_letter_parts if p["file"] not in old_dead],
                commit.Progress(rows=total.rows, parts=total.parts,
                                dead_letter_parts=total.dead_letter_parts,
                                counters=total.counters, profile=total.profile,
                                plan=self.outdir.progress.plan, splits=states,
                                engine_state=(self.outdir.progress.engine_state if engine_state is None
                                              else engine_state)))
            if result.complete:
                self.outdir.discard_attempt(attempt)
            self._results[result.split] = result
            if result.scoring_started is not None:  # rows/s counts from the first batch
                self.scoring_started = min(self.scoring_started or result.scoring_started,
                                           result.scoring_started)
            return True

    def discard(self, result: SplitResult) -> None:
        """An attempt's result that is not to be committed (--follow: its entry changed or
        failed at the end): what it wrote is deleted; the split's committed rows stay."""
        self.outdir.discard_attempt(splits.attempt_dir(result.split, result.attempt))

    def _plan(self, inputs: list[source.Input]) -> list[Split]:
        recorded = self.outdir.progress.plan
        if recorded is not None:
            return list(recorded)
        if self.outdir.progress.rows:
            raise OutputError(f"{self.out}: holds an unfinished run of an earlier scorer version, "
                              "which this one cannot resume; pass --overwrite to start again")
        the_plan = splits.plan(inputs, self.opts.rows_per_file, self.opts.max_line_bytes)
        self.outdir.progress.plan = the_plan
        return the_plan

    def _summed(self, states: dict[str, SplitState]) -> "Totals":
        """The committed splits' states added up, their parts in plan order."""
        labels = self.model_dir.spec.labels if emits_labels(self.model_dir, self.opts) else []
        total = Totals(profile=drift.Profile.empty(labels))
        for name in sorted(states, key=lambda n: (len(n), n)):  # ids: positions, zero-padded to 5
            state = states[name]
            total.rows += state.rows
            total.parts += state.parts
            total.dead_letter_parts += state.dead_letter_parts
            total.counters.add(state.counters)
            total.blank_lines += state.blank_lines
            if state.profile and state.profile["labels"] == labels:
                total.profile = total.profile.merge(drift.Profile.from_json(state.profile))
        return total

    def _over_row_limit(self, counters: Counters) -> bool:
        limit = self.error_limit
        return limit is not None and limit.rows_exceeded(counters.rows_with_error)

    def _check_committed_errors(self) -> None:
        bad = self.outdir.progress.counters.rows_with_error
        if self._over_row_limit(Counters(rows_with_error=bad)):
            raise DataError(f"{self.outdir.out}: the unfinished run there already has {bad} bad "
                            f"rows, more than --max-errors {self.opts.max_errors}; resume it with a "
                            "higher limit, or pass --overwrite to start again")

    def totals(self) -> Committed:
        """What the output holds (the committed splits summed) and the work this process did
        for it (its attempts, the latest of each split): what a manifest reports."""
        total = self._summed(self.outdir.progress.splits)
        mine = list(self._results.values())
        score = ScoreStats()
        for result in mine:
            for f in fields(ScoreStats):
                setattr(score, f.name, getattr(score, f.name) + getattr(result.score, f.name))
        return Committed(total.counters, total.parts,
                         total.dead_letter_parts if self.opts.dead_letter else None, total.profile,
                         score, sum(r.compile_seconds for r in mine), sum(r.read_seconds for r in mine),
                         sum(r.write_seconds for r in mine))

    def _complete_splits(self, inputs: list[source.Input], **extra) -> RunResult:
        done = self.totals()
        stats = source.SourceStats(files=[i.path for i in inputs], rows=done.counters.rows_in,
                                   rows_skipped=self._rows_before)
        return self._finish(inputs, stats, done, **extra,
                            blank_lines_skipped=self._summed(self.outdir.progress.splits).blank_lines,
                            splits={"planned": len(self.plan), "executed_now": len(self._results),
                                    "attempts_discarded": self.attempts_discarded})

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A failure inside releases the output; its checkpoint stays, so the same command
        resumes the run."""
        try:
            yield
        except BaseException:
            self.outdir.abandon()
            raise

    def _finish(self, inputs: list[source.Input], stats: source.SourceStats, done: "Committed",
                **extra) -> RunResult:
        with self.writing():
            warnings = self._final_checks(stats, done.counters)
            manifest = self.manifest([{"path": i.path, "format": i.format} for i in inputs], done)
            run_drift = drift.compare(self.reference, done.profile)
            manifest = replace(self.with_drift(manifest, run_drift), **extra, resumed=self.outdir.resumed,
                               rows_resumed_from_checkpoint=stats.rows_skipped,
                               warnings=warnings + manifest.warnings + run_drift.warnings())
            self.outdir.finish(manifest)
        return RunResult(self.out, manifest.to_json())

    def manifest(self, inputs: list[dict], done: Committed) -> Manifest:
        """What the output holds and how it was made (every engine's _manifest.json); the
        caller adds its own fields (a batch run's or --follow's) and the drift."""
        c, s = done.counters, done.score
        total, scoring = time.time() - self.started, self.scoring_seconds
        rows_now = c.rows_in - self._rows_before  # rows this process wrote
        # the Ray driver scores nothing: the device its workers would choose on this machine
        device = self.device or classifier.choose_device(precision=self.opts.precision)
        return Manifest(
            scorer_version=__version__, model=self.model_dir.id, inputs=inputs,
            options={k: v for k, v in asdict(self.opts).items() if k != "overwrite"},
            rows_in=c.rows_in, rows_out=c.rows_out, rows_scored=c.rows_scored,
            rows_with_error=c.rows_with_error, rows_dead_lettered=c.rows_dead_lettered,
            error_reasons=c.error_reasons, rows_truncated=c.rows_truncated,
            rows_windowed=c.rows_windowed,
            # rows/s of scoring (from the first batch; model load apart), and over the whole run
            rows_per_second=round(rows_now / scoring, 1) if scoring > 0 else 0.0,
            rows_per_second_overall=round(rows_now / max(total, 1e-9), 1),
            scoring_seconds=round(scoring, 3),
            parts=done.parts,
            dead_letter=(DeadLetter(self.opts.dead_letter, done.dead_letter_parts)
                         if done.dead_letter_parts is not None else None),
            timing={
                "total_seconds": round(total, 3), "load_seconds": round(self.timers.load.seconds, 3),
                "read_seconds": round(done.read_seconds, 3),
                "encode_seconds": round(s.encode_seconds, 3), "infer_seconds": round(s.infer_seconds, 3),
                "compile_seconds": round(done.compile_seconds, 3),
                "write_seconds": round(done.write_seconds, 3),
            },
            profile=done.profile.to_json(), summary=done.profile.summary(),
            input_columns_renamed=dict(self.renamed_columns),
            warnings=self.column_warnings() + self.reference_warnings,
            real_tokens=s.real_tokens, padded_tokens=s.padded_tokens,
            padding_fraction=round(1 - s.real_tokens / s.padded_tokens, 4) if s.padded_tokens else 0.0,
            device=device.device, precision=device.precision,
            threads=runtime.threads_in_use, xla_cache=runtime.xla_cache_dir(),
            started=fileio.utc_timestamp(self.started),
            finished=fileio.utc_timestamp(),
        )

    def column_warnings(self) -> list[str]:
        return [f"input column {original!r} is kept as {renamed!r}: the output column {original!r} "
                "has its name (--output-prefix names the output columns instead)"
                for original, renamed in self.renamed_columns.items()]

    def with_drift(self, manifest: Manifest, run_drift: drift.Drift) -> Manifest:
        """The manifest with its drift and the reference profile it was measured against (the
        nearest candidate's), which `scorer report` draws beside the run's."""
        chosen = self.reference.profile_of(run_drift.part) if self.reference else None
        return replace(manifest, drift=run_drift, reference_profile=chosen.to_json() if chosen else None)

    def _use_model(self, model_dir: modeldir.ModelDir, device: classifier.DevicePolicy | None) -> None:
        """Score as model_dir from now on; its drift reference is found (--max-drift without one
        is refused before anything is scored)."""
        self.model_dir, self.device = model_dir, device
        vectors = profiles_vectors(model_dir, self.opts)
        self.reference, self.reference_warnings = drift.find_reference(model_dir, self.opts.reference, vectors)
        if self.reference is not None and self.opts.long_text == "truncate":
            # the run counts a text's tokens up to the max length, the reference over all windows
            model_length = (model_dir.max_length if isinstance(model_dir, stdir.SentenceTransformerDir)
                            else model_dir.spec.max_length)  # as api.Scorer.load sizes the encoder
            self.reference = self.reference.lengths_capped(min(self.opts.max_length or model_length, model_length))
        if self.reference is None and self.opts.max_drift is not None:
            warnings = self.reference_warnings
            raise ModelError(f"--max-drift needs a reference for model {model_dir.path}: make one "
                             f"with `{drift.profile_command(model_dir, vectors)}`, or pass --reference FILE"
                             + (f" ({warnings[0]})" if warnings else ""))

    def check_error_fraction(self, bad: int, rows: int) -> None:
        """--max-errors as a share: of the run's input rows (--follow: of each entry's)."""
        limit = self.error_limit
        if limit is not None and limit.fraction_exceeded(bad, rows):
            raise DataError(f"{bad} of {rows} rows are bad ({bad / rows:.2%}), more than "
                            f"--max-errors {self.opts.max_errors}")

    def _final_checks(self, stats: source.SourceStats, counters: Counters) -> list[str]:
        """Run-level rules checked once every row is in: the error fraction, empty input, a run
        that scored no row at all."""
        check_some_scored(counters.rows_with_error, counters.rows_in, self.error_limit,
                          counters.error_reasons)
        self.check_error_fraction(counters.rows_with_error, stats.rows)
        if stats.rows == 0:
            if self.opts.fail_on_empty:
                raise DataError(f"no input rows in {', '.join(stats.files)} (--fail-on-empty)")
            return [f"no input rows in {', '.join(stats.files)}: the output holds no part files"]
        return []
