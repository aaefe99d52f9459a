"""Follow a landing directory: score every file that lands there exactly once, into one output.

    follow("landing/", "scored/")              # `scorer run --follow landing/ -o scored/`
    follow("landing/", "scored/", once=True)   # what is there now, then exit (cron)

Each top-level entry of the landing directory is a unit: a file (format by extension or
--format), or a directory read as a Parquet dataset. Names starting with '.' or '_' and the
in-flight names of common producers (TEMP_SUFFIXES) are never taken; with require_marker, only
directories holding a _SUCCESS file are. An entry is taken once it has settled (its size and
mtime unchanged for settle_seconds), and its rows are committed only while it is still as it was
when taken (checked at every checkpoint, the last one after reading it all).

Entries are scored in name order (one still settling after those that sort later), through the
same stages and commit protocol as a batch run: a checkpoint inside an entry every
--rows-per-file rows, and one at its end that records it done.
A restart first finishes the entry a killed run left half done, then goes on. An entry that
cannot be scored (unknown format, missing text column, column clash, too many bad rows, changed
after some of its rows were committed) is recorded as failed, with the reason, and the follower
goes on. Between entries the model reference is resolved again, so a registry's new champion is
picked up; every entry records the model that scored it (EntryRecord, in the checkpoint and in
`_manifest.json`, which is rewritten after every entry). A followed output never "finishes":
there is no _SUCCESS.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from scorer import commit, drift, fileio, modeldir, modelspec, overlap, source
from scorer.errors import DataError, InputError, ModelError, OutputError
from scorer.manifest import Manifest
from scorer.metrics import write_metrics
from scorer.modelid import ModelId
from scorer.options import ErrorLimit, RunOptions
from scorer.pipeline import loading_model, stream
from scorer.runs import Run, RunResult, WriteStage, check_some_scored

# Names producers write under before renaming: ours, Hadoop `fs -put` (._COPYING_), gsutil
# (.gstmp), WinSCP (.filepart), editors and backups (~).
TEMP_SUFFIXES = (".tmp", ".inprogress", ".partial", ".crc", ".part", "._COPYING_", ".gstmp",
                 ".filepart", "~")
DEFAULT_SETTLE_SECONDS = 5.0
EXIT_ENTRIES_FAILED = 7  # --once ended, but some entries failed (README: exit codes)
SCORING, SCORED, FAILED = "scoring", "scored", "failed"


@dataclass(frozen=True)
class Signature:
    """An entry as it is on disk: any write to any of its files changes it."""

    size: int  # bytes, over all its files
    newest_mtime_ns: int
    digest: str  # over every file's relative name, size and mtime

    @classmethod
    def of(cls, entry: Path) -> "Signature | None":
        """None if the entry is gone."""
        try:
            files = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
            stats = [(f.relative_to(entry).as_posix(), f.stat()) for f in files]
            own_mtime = entry.stat().st_mtime_ns  # a directory's changes when files come and go
        except FileNotFoundError:
            return None
        digest = hashlib.sha256()
        for name, st in stats:
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return cls(sum(st.st_size for _, st in stats),
                   max([own_mtime] + [st.st_mtime_ns for _, st in stats]), digest.hexdigest())

    def change_from(self, before: "Signature") -> str:
        return f"size {before.size} -> {self.size} bytes, modified again"


@dataclass
class EntryRecord:
    """One landing entry taken: in the checkpoint (commit.Progress.entries) and the manifest."""

    name: str
    status: str  # SCORING (its rows are being committed), SCORED or FAILED
    signature: Signature  # as it was when taken
    model: ModelId | None = None  # the model that scored its rows
    rows: int = 0  # its input rows committed to the output
    reason: str | None = None  # why it failed
    profile: dict | None = None  # scorer.drift's profile of its committed rows, as JSON
    drift: dict | None = None  # scorer.drift.Drift of those rows against the model's reference, as JSON
    window: dict | None = None  # DriftWindow, as JSON: drift judged over it and the scored entries before it

    def to_json(self) -> dict:
        """As written; a record without a window (failed, or from before windows) has no key."""
        data = {**asdict(self), "signature": asdict(self.signature),
                "model": self.model.to_json() if self.model else None}
        if self.window is None:
            del data["window"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "EntryRecord":
        return cls(**{**data, "signature": Signature(**data["signature"]),
                      "model": ModelId.from_json(data["model"]) if data.get("model") else None})


@dataclass
class DriftWindow:
    """The latest scored entries, summed (profiles are counts), that drift is judged over when an
    entry is scored: a landing zone of small files is judged on enough rows (drift.MIN_ROWS)."""

    entries: list[str]  # in the order taken, the entry it was judged for last
    rows: int
    drift: dict  # scorer.drift.Drift of their summed profile against the model's reference

    def label(self) -> str:
        """How a warning names it: the entry, and the others when there are others."""
        if len(self.entries) == 1:
            return f"entry {self.entries[0]}"
        return (f"entry {self.entries[-1]} (judged with the {len(self.entries) - 1} entries before it, "
                f"from {self.entries[0]}: {self.rows:,} rows)")


class Settling:
    """Which entries have stopped changing. An entry has settled once its Signature has stayed the
    same for settle_seconds: seen unchanged by this process for that long, or last modified that
    long ago by the clock (so a cron run takes an old file at once)."""

    def __init__(self, settle_seconds: float):
        self.settle_seconds = settle_seconds
        self._seen: dict[str, tuple[Signature, float]] = {}  # name -> signature, since (monotonic)

    def settled(self, name: str, signature: Signature) -> bool:
        seen = self._seen.get(name)
        if seen is None or seen[0] != signature:
            seen = self._seen[name] = (signature, time.monotonic())
        unchanged_for = max(time.monotonic() - seen[1],
                            time.time() - signature.newest_mtime_ns / 1e9)
        return unchanged_for >= self.settle_seconds

    def keep_only(self, names: set[str]) -> None:
        """Forget entries taken or gone (a follower runs for months)."""
        self._seen = {n: seen for n, seen in self._seen.items() if n in names}


class _EntryFailed(Exception):
    """The entry cannot be scored (the reason is the message); the follower goes on."""


class _EntryChanged(Exception):
    """The entry changed after it was taken: its uncommitted rows are dropped."""


def is_candidate(entry: Path, require_marker: bool = False) -> bool:
    """Whether a landing entry is data to score at all (not a temp name, marker present)."""
    name = entry.name
    if name.startswith((".", "_")) or name.endswith(TEMP_SUFFIXES):
        return False
    return not require_marker or (entry.is_dir() and (entry / commit.SUCCESS).exists())


def follow(landing: str | Path, output: str | Path, model=None, options: RunOptions | None = None,
           once: bool = False, require_marker: bool = False, poll_seconds: float = 2.0,
           settle_seconds: float = DEFAULT_SETTLE_SECONDS, drift_window: int | None = None,
           progress=None, notify: Callable[[str], None] | None = None, loading=None,
           **kwargs) -> RunResult:
    """Score the landing directory's entries into `output`; with once, those there now, then
    return. notify(message) is told of every entry that fails; progress and loading as for
    scorer.pipeline.run. Drift is judged over the latest drift_window scored entries (None: as
    many of the latest as make drift.MIN_ROWS rows)."""
    landing = Path(landing)
    if not landing.is_dir():
        raise InputError(f"{landing}: --follow needs a directory")
    the_run = Run(options or RunOptions(**kwargs), output)
    overlap.check_apart([], str(output), the_run.opts.dead_letter, follow_dir=str(landing))
    follower = _Follower(landing, the_run, model, require_marker, Settling(settle_seconds),
                         progress, notify, loading)
    follower.drift_window = drift_window
    try:
        follower.run(once, poll_seconds)
    finally:
        follower.outdir.abandon()  # releases the lock; the state stays: the next run continues it
    return RunResult(the_run.out, follower.manifest)


class _Follower:
    def __init__(self, landing: Path, the_run: Run, model, require_marker: bool,
                 settling: Settling, progress, notify, loading):
        self.landing, self.the_run, self.opts = landing, the_run, the_run.opts
        self.model_ref = str(model) if model is not None else "default"
        self.require_marker, self.settling = require_marker, settling
        self.progress, self.notify = progress, notify or (lambda message: None)
        self.loading = loading
        self.scored_now: list[str] = []
        self.failed_now: list[str] = []
        self.drift_window: int | None = None  # entries drift is judged over (None: to MIN_ROWS rows)
        # A model problem stops us before the output; the model loads with the first entry to score.
        the_run.read_model(modeldir.resolve(model))
        self.outdir = the_run.open([self._input()], model_key=self.model_ref)
        self.writes: WriteStage | None = None
        self.manifest: dict = {}

    def run(self, once: bool, poll_seconds: float) -> None:
        self.outdir.prepare()
        self.writes = self.the_run.write_stage(per_unit=True)
        self._finish_entry_in_progress()
        waiting_for = None  # --once: the entries there at the start
        while True:
            pending = self._pending()
            self.settling.keep_only({e.name for e in pending})
            if once:
                waiting_for = {e.name for e in pending} if waiting_for is None else waiting_for
                pending = [e for e in pending if e.name in waiting_for]
            unsettled = [e for e in pending if not self._take_if_settled(e)]
            if once and not unsettled:
                break
            time.sleep(poll_seconds)  # SIGTERM lands here between entries, or in stream
        self._write_manifest()

    def _input(self) -> dict:
        return {"path": str(self.landing), "follow": True}

    def _pending(self) -> list[Path]:
        """Landing entries to score, not yet scored or failed, in name order."""
        taken = set(self.writes.units_done) | {e["name"] for e in self.writes.entries}
        return [e for e in sorted(self.landing.iterdir())
                if e.name not in taken and is_candidate(e, self.require_marker)]

    def _take_if_settled(self, entry: Path) -> bool:
        """Score the entry if it has settled; False if it is still to be taken (not settled yet,
        or changed before any of its rows were committed)."""
        signature = Signature.of(entry)
        if signature is None:
            return True  # gone before it was taken: nothing to do
        if not self.settling.settled(entry.name, signature):
            return False
        self._use_model(modeldir.resolve(self.model_ref))  # between entries: a new champion
        return self._score(entry, EntryRecord(entry.name, SCORING, signature), skip=0)

    def _finish_entry_in_progress(self) -> None:
        """A killed run's half-done entry comes first, from its committed rows on, with the model
        that scored them, if it is still what it was."""
        name, rows = self.writes.unit, self.writes.rows
        if name is None:
            return
        record = next((EntryRecord.from_json(e) for e in self.writes.entries if e["name"] == name), None)
        if record is None:  # not written by this version of scorer
            raise OutputError(f"{self.the_run.out}: its checkpoint does not record how entry {name} "
                              "was taken; pass --overwrite to start again")
        entry = self.landing / name
        signature = Signature.of(entry)
        if signature is None or signature != record.signature:
            self._fail(entry, record, f"{'removed' if signature is None else 'changed'} after "
                       f"{rows} of its rows were committed; land it again under a new name")
            return
        try:
            self._use_model(Path(record.model.path), record.model.checksum)
        except ModelError as e:
            self._fail(entry, record, f"cannot finish it with the model that scored its first "
                       f"{rows} rows: {e}")
            return
        self._score(entry, record, skip=rows)

    def _score(self, entry: Path, record: EntryRecord, skip: int) -> bool:
        """Score the entry from row `skip` on; False if it changed before any row was committed."""
        writes = self.writes
        record.model = self.the_run.model_dir.id
        taken = record.signature
        bad_before, reasons_before = writes.counters.rows_with_error, dict(writes.counters.error_reasons)
        writes.begin_unit(entry.name, skip, self._entry_row_limit(bad_before),
                          lambda: self._check_unchanged(entry, taken))
        writes.record_entry(record.to_json())  # committed with the entry's first checkpoint
        try:
            inputs = source.expand_inputs([str(entry)], self.opts.format)
            stream(inputs, skip, self.the_run, source.SourceStats(), self._start_entry, self.progress)
            bad, rows = writes.counters.rows_with_error - bad_before, writes.rows - skip
            self.the_run.check_error_fraction(bad, rows)
            if not skip:  # a resumed entry's committed rows were counted by another process
                check_some_scored(bad, rows, self.the_run.error_limit,
                                  {k: n - reasons_before.get(k, 0) for k, n in
                                   writes.counters.error_reasons.items() if n > reasons_before.get(k, 0)})
        except (InputError, DataError, _EntryFailed) as e:
            self._fail(entry, record, str(e))
            return True
        except _EntryChanged as e:
            committed = self.outdir.progress.rows if self.outdir.progress.unit == entry.name else 0
            if not committed:
                self.writes = self.the_run.write_stage(per_unit=True)  # taken again later
                return False
            self._fail(entry, record, f"changed while being scored ({e}) after {committed} of its "
                       "rows were committed; land the new version under a new name")
            return True
        record.status, record.rows = SCORED, writes.rows
        self._close_entry(record, done=True)
        self.scored_now.append(entry.name)
        return True

    def _start_entry(self, first: source.Chunk | None) -> WriteStage:
        try:
            self.the_run.check_first(first)
        except OutputError as e:  # a column clash is this entry's problem, not the output's
            raise _EntryFailed(str(e)) from None
        return self.writes

    def _entry_row_limit(self, bad_before: int) -> ErrorLimit | None:
        """--max-errors as a row count holds for each entry: its bad rows over those before."""
        limit = self.the_run.error_limit
        return ErrorLimit("rows", bad_before + limit.value) if limit and limit.kind == "rows" else None

    def _check_unchanged(self, entry: Path, taken: Signature) -> None:
        now = Signature.of(entry)
        if now is None:
            raise _EntryChanged("removed")
        if now != taken:
            raise _EntryChanged(now.change_from(taken))

    def _fail(self, entry: Path, record: EntryRecord, reason: str) -> None:
        """Record the entry as failed (with a dead-letter note), keeping its committed rows."""
        self.writes = writes = self.the_run.write_stage(per_unit=True)  # what is committed
        record.status, record.reason = FAILED, reason
        record.rows = writes.rows if writes.unit == entry.name else 0
        writes.dead_letter_note(str(entry), f"entry failed: {reason}")
        self._close_entry(record, done=False)
        self.failed_now.append(entry.name)
        self.notify(f"entry {entry.name} failed, recorded and skipped: {reason}")

    def _close_entry(self, record: EntryRecord, done: bool) -> None:
        profile = self.writes.end_unit(done)
        record.profile = profile.to_json()
        record.drift = drift.compare(self.the_run.reference, profile).to_json()
        if record.status == SCORED:
            record.window = asdict(self._window(record, profile))
        self.writes.record_entry(record.to_json())
        self.writes.checkpoint()  # the entry is done: recorded with its last parts
        self._write_manifest()

    def _window(self, record: EntryRecord, profile: drift.Profile) -> DriftWindow:
        """The entry and the scored entries before it, by the same model, summed: the latest
        drift_window of them, else back until drift.MIN_ROWS rows (or the first)."""
        names, total = [record.name], profile
        before = [e for e in self.writes.entries if e["name"] != record.name]
        for e in reversed(before):
            if len(names) == self.drift_window or (self.drift_window is None and total.rows >= drift.MIN_ROWS):
                break
            if (e.get("model") or {}).get("checksum") != record.model.checksum:
                break  # another model's scores: not comparable with this reference
            if e["status"] == SCORED and e.get("profile"):
                total = total.merge(drift.Profile.from_json(e["profile"]))
                names.append(e["name"])
        return DriftWindow(names[::-1], total.rows, drift.compare(self.the_run.reference, total).to_json())

    def _use_model(self, model_dir: Path, checksum: str | None = None) -> None:
        """Score with the model in model_dir from the next entry on (loading it if it is not the
        one loaded); checksum: the spec checksum it must have."""
        if self._is_loaded(model_dir):
            if self.the_run.scorer is None:  # the first entry: the model read at the start loads now
                with loading_model(self.loading, self.the_run.model_dir.id.name):
                    self.the_run.load_scorer(self.the_run.model_dir)
            return
        with loading_model(self.loading, str(model_dir)):
            self.the_run.load_scorer(model_dir)
        if checksum and self.the_run.model_dir.id.checksum != checksum:
            raise ModelError(f"{model_dir}: changed since (its spec checksum differs)")
        self.writes = self.the_run.write_stage(per_unit=True)  # new part files carry its id

    def _is_loaded(self, model_dir: Path) -> bool:
        """Whether model_dir is the run's model (loaded, or read and loaded with the first entry), as
        it was: our directory by its spec's checksum;
        a Hugging Face checkpoint or a sentence-transformers directory (no spec) by its files'."""
        current = self.the_run.model_dir.id
        if str(model_dir) != current.path:
            return False
        spec = model_dir / modelspec.SPEC_FILE
        if spec.is_file():
            return fileio.sha256_file(spec) == current.checksum
        return modeldir.read(model_dir).id.checksum == current.checksum

    def _write_manifest(self) -> None:
        """Cumulative over every entry ever taken into this output; rewritten after each."""
        writes = self.writes
        manifest = self.the_run.manifest([self._input()], writes)
        manifest.update(units_done=list(writes.units_done),
                        units_failed=[e["name"] for e in writes.entries if e["status"] == FAILED],
                        entries=writes.entries, units_scored_now=self.scored_now,
                        units_failed_now=self.failed_now)
        manifest.update(self._drift_fields())
        self.outdir.write_manifest(manifest)
        self.manifest = manifest
        if self.opts.metrics_file:
            write_metrics(self.opts.metrics_file, Manifest.from_json(manifest), str(self.the_run.out),
                          EXIT_ENTRIES_FAILED if self.failed_now else 0)

    def _drift_fields(self) -> dict:
        """Drift is measured per entry (EntryRecord.drift) and judged per entry over its window
        (EntryRecord.window, against its nearest reference candidate): the manifest's "drift" is
        the largest among the windows of the entries scored by this process (with the candidate it
        was measured against as "reference_profile"), "profile" merges every entry's of the
        current labels, and each window over the warning level is a warning."""
        labels, reference = self.writes.profile.labels, self.the_run.reference  # none: no labels written
        profile = drift.Profile.empty(labels)
        for e in self.writes.entries:
            if e.get("profile") and e["profile"]["labels"] == labels:
                profile = profile.merge(drift.Profile.from_json(e["profile"]))
        now = [DriftWindow(**e["window"]) for e in self.writes.entries
               if e["name"] in self.scored_now and e.get("window")]
        # judged drifts first: one measured on too few rows neither warns nor fails the run
        worst = max(now, key=lambda w: (not w.drift.get("too_few_rows"), w.drift["max_psi"] or 0.0),
                    default=None)
        warnings = self.the_run.column_warnings() + self.the_run.reference_warnings
        for window in now:
            warnings += [f"{window.label()}: {w}" for w in drift.Drift.from_json(window.drift).warnings()]
        worst_drift = (drift.Drift.from_json(worst.drift) if worst
                       else drift.compare(reference, drift.Profile.empty(labels)))
        return {"profile": profile.to_json(), "summary": profile.summary(),
                **self.the_run.drift_fields(worst_drift),
                "drift_entry": worst.entries[-1] if worst else None,
                "drift_window": worst.entries if worst else None,
                "warnings": warnings}
