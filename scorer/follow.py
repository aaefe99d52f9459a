"""Follow a landing directory: score every file that lands there exactly once, into one output.

    follow("landing/", "scored/")              # `scorer run --follow landing/ -o scored/`
    follow("landing/", "scored/", once=True)   # what is there now, then exit (cron)

Each top-level entry of the landing directory is a unit: a file (format by extension or
--format), or a directory read as a Parquet dataset. Names starting with '.' or '_' and the
in-flight names of common producers (TEMP_SUFFIXES) are never taken; with require_marker, only
directories holding a _SUCCESS file are. An entry is taken once it has settled (its size and
mtime unchanged for settle_seconds), and its rows are committed only while it is still as it was
when taken (checked at every checkpoint, the last one after reading it all).

Entries are scored in name order (one still settling after those that sort later). Each entry
taken is a split of its own (scorer.splits, kind ENTRY), numbered in the order taken ("00000",
"00001", ...: its part files are part-<split>-<n>.parquet, as a batch run's), executed as the
local engine executes a split (scorer.splits.execute_split: a checkpoint inside it every
--rows-per-file rows) and committed by the run (scorer.runs.Run.commit). The follower's own
state, its Ledger (an EntryRecord per entry taken: its split, signature, model, status), is
committed with every checkpoint of a split (progress.json's engine_state), the record that says
an entry is done with the split's last rows.
A restart first finishes the entry a killed run left half done (from its committed rows on, with
the model that scored them), then goes on. An entry that cannot be scored (unknown format,
missing text column, column clash, too many bad rows, changed after some of its rows were
committed) is recorded as failed, with the reason (its committed rows stay; a dead letter names
it), and the follower goes on. --max-errors holds for each entry. Between entries the model
reference is resolved again, so a registry's new champion is picked up; every entry records the
model that scored it (in the ledger and in `_manifest.json`, which is rewritten after every
entry). A followed output never "finishes": there is no _SUCCESS.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from scorer import commit, drift, fileio, modeldir, modelspec, overlap, source, splits
from scorer.errors import DataError, InputError, ModelError, OutputError
from scorer.manifest import Manifest
from scorer.metrics import write_metrics
from scorer.modelid import ModelId
from scorer.options import RunOptions
from scorer.pipeline import loading_model
from scorer.runs import Run, RunResult, check_some_scored
from scorer.splits import SplitResult, SplitState

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
    """One landing entry taken: in the follower's Ledger (the checkpoint) and the manifest."""

    name: str
    status: str  # SCORING (its rows are being committed), SCORED or FAILED
    signature: Signature  # as it was when taken
    model: ModelId | None = None  # the model that scored its rows
    rows: int = 0  # its input rows committed to the output
    reason: str | None = None  # why it failed
    profile: dict | None = None  # scorer.drift's profile of its committed rows, as JSON
    drift: dict | None = None  # scorer.drift.Drift of those rows against the model's reference, as JSON
    window: dict | None = None  # DriftWindow, as JSON: drift judged over it and the scored entries before it
    split: str | None = None  # its split's id (its order of taking); None: written before entries were splits

    def to_json(self) -> dict:
        """As written; a record without a window (failed, or from before windows) or a split
        (from before splits) has no key for it."""
        data = {**asdict(self), "signature": asdict(self.signature),
                "model": self.model.to_json() if self.model else None}
        for key in ("window", "split"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "EntryRecord":
        return cls(**{**data, "signature": Signature(**data["signature"]),
                      "model": ModelId.from_json(data["model"]) if data.get("model") else None})


@dataclass
class Ledger:
    """Every entry taken into the output, in the order taken: the follower's own state, committed
    with its splits (progress.json's engine_state), so an entry's record and its rows are
    recorded together."""

    records: list[EntryRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"entries": [r.to_json() for r in self.records]}

    @classmethod
    def from_json(cls, data: dict | None) -> "Ledger":
        return cls([EntryRecord.from_json(e) for e in (data or {}).get("entries", [])])

    def put(self, record: EntryRecord) -> None:
        """Add the record, or replace the one of its entry."""
        names = [r.name for r in self.records]
        index = names.index(record.name) if record.name in names else len(names)
        self.records[index:index + 1] = [record]

    def drop(self, name: str) -> None:
        self.records = [r for r in self.records if r.name != name]

    def named(self, status: str) -> list[str]:
        return [r.name for r in self.records if r.status == status]

    def in_progress(self) -> EntryRecord | None:
        """The entry a killed follower left half done."""
        return next((r for r in self.records if r.status == SCORING), None)

    def next_split(self) -> str:
        """The split id of the next entry taken: its order of taking (a record dropped before
        any of its rows were committed gives its id back)."""
        return f"{len(self.records):05d}"


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
    the_run = Run(options or RunOptions(**kwargs), output, errors_per_split=True)
    overlap.check_apart([], str(output), the_run.opts.dead_letter, follow_dir=str(landing))
    follower = _Follower(landing, the_run, model, require_marker, Settling(settle_seconds),
                         progress, notify, loading)
    follower.drift_window = drift_window
    try:
        follower.run(once, poll_seconds)
    finally:
        follower.outdir.abandon()  # releases the lock; the state stays: the next run continues it
    return RunResult(the_run.out, follower.manifest.to_json())


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
        self.ledger = Ledger.from_json(self.outdir.progress.engine_state)
        self.manifest: Manifest | None = None  # written after every entry, and at the end

    def run(self, once: bool, poll_seconds: float) -> None:
        self.outdir.prepare()
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
            time.sleep(poll_seconds)  # SIGTERM lands here between entries, or in a split
        self._write_manifest()

    def _input(self) -> dict:
        return {"path": str(self.landing), "follow": True}

    def _pending(self) -> list[Path]:
        """Landing entries to score, not yet taken (scored, failed), in name order."""
        taken = {r.name for r in self.ledger.records}
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
        return self._score(entry, EntryRecord(entry.name, SCORING, signature, split=self.ledger.next_split()))

    def _finish_entry_in_progress(self) -> None:
        """A killed run's half-done entry comes first, from its committed rows on, with the model
        that scored them, if it is still what it was."""
        record = self.ledger.in_progress()
        if record is None:
            return
        rows = self.the_run.committed(record.split).rows
        entry = self.landing / record.name
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
        self._score(entry, record)

    def _score(self, entry: Path, record: EntryRecord) -> bool:
        """Execute the entry's split from its committed rows on and commit it, the record with
        it; False if it changed before any of its rows were committed (it is taken again)."""
        the_run = self.the_run
        record.model = the_run.model_dir.id
        self.ledger.put(record)  # committed with the split's first checkpoint
        try:
            inputs = source.expand_inputs([str(entry)], self.opts.format)
            split = splits.Split(record.split, splits.ENTRY,
                                 tuple(splits.Piece(i.path, i.format) for i in inputs))
            result = splits.execute_split(
                split, the_run.scorer, self.opts, the_run.out,
                committed=the_run.committed(record.split), bad_rows_allowed=self._bad_rows_allowed(),
                embedding_basis=the_run.reference.basis if the_run.reference else None,
                before_write=self._check_columns,
                checkpoint=lambda partial: self._checkpoint(entry, record, partial),
                progress=self._told if self.progress else None)
        except (InputError, DataError, _EntryFailed) as e:
            self._fail(entry, record, str(e))
            return True
        except _EntryChanged as e:
            return self._changed(entry, record, e)
        try:
            self._check_unchanged(entry, record.signature)
            bad, rows = result.state.counters.rows_with_error, result.state.rows
            the_run.check_error_fraction(bad, rows)
            check_some_scored(bad, rows, the_run.error_limit, result.state.counters.error_reasons)
        except DataError as e:
            the_run.discard(result)  # its committed rows stay, recorded with the failure
            self._fail(entry, record, str(e))
            return True
        except _EntryChanged as e:
            the_run.discard(result)
            return self._changed(entry, record, e)
        record.status, record.rows = SCORED, result.state.rows
        self._close_entry(record, result)
        self.scored_now.append(entry.name)
        return True

    def _checkpoint(self, entry: Path, record: EntryRecord, partial: SplitResult) -> None:
        """Inside the entry, every --rows-per-file rows: its rows so far committed with its
        record, if it is still as it was when taken."""
        self._check_unchanged(entry, record.signature)
        record.rows = partial.state.rows
        self.the_run.commit(partial, self.ledger.to_json())

    def _changed(self, entry: Path, record: EntryRecord, change: Exception) -> bool:
        committed = self.the_run.committed(record.split).rows
        if not committed:
            self.ledger.drop(record.name)  # taken again once it settles
            return False
        self._fail(entry, record, f"changed while being scored ({change}) after {committed} of its "
                   "rows were committed; land the new version under a new name")
        return True

    def _check_columns(self, first: source.Chunk | None) -> None:
        try:
            self.the_run.check_first(first)
        except OutputError as e:  # a column clash is this entry's problem, not the output's
            raise _EntryFailed(str(e)) from None

    def _bad_rows_allowed(self) -> int | None:
        """--max-errors as a row count holds for each entry (its split)."""
        limit = self.the_run.error_limit
        return int(limit.value) if limit and limit.kind == "rows" else None

    def _told(self, rows: int) -> None:
        self.the_run.scoring_begins()
        self.progress(rows, self.the_run.scoring_seconds)

    def _check_unchanged(self, entry: Path, taken: Signature) -> None:
        now = Signature.of(entry)
        if now is None:
            raise _EntryChanged("removed")
        if now != taken:
            raise _EntryChanged(now.change_from(taken))

    def _fail(self, entry: Path, record: EntryRecord, reason: str) -> None:
        """Record the entry as failed (with a dead-letter note), keeping its committed rows."""
        committed = self.the_run.committed(record.split)
        record.status, record.reason, record.rows = FAILED, reason, committed.rows
        self.ledger.put(record)
        self._close_entry(record, splits.given_up(record.split, committed, self.opts,
                                                  [(str(entry), f"entry failed: {reason}")]))
        self.failed_now.append(entry.name)
        self.notify(f"entry {entry.name} failed, recorded and skipped: {reason}")

    def _close_entry(self, record: EntryRecord, result: SplitResult) -> None:
        """The entry's last rows (or its committed ones, failed) committed with its final record."""
        profile = self._profile(result.state)
        record.profile = profile.to_json()
        record.drift = drift.compare(self.the_run.reference, profile).to_json()
        if record.status == SCORED:
            record.window = asdict(self._window(record, profile))
        self.ledger.put(record)
        self.the_run.commit(result, self.ledger.to_json())
        self._write_manifest()

    def _labels(self) -> list[str]:
        """The labels the current model writes (none: an embedding model, or --emit without them)."""
        model_dir = self.the_run.model_dir
        return model_dir.spec.labels if splits.emits_labels(model_dir, self.opts) else []

    def _profile(self, state: SplitState) -> drift.Profile:
        labels = self._labels()
        if state.profile and state.profile["labels"] == labels:
            return drift.Profile.from_json(state.profile)
        return drift.Profile.empty(labels)

    def _window(self, record: EntryRecord, profile: drift.Profile) -> DriftWindow:
        """The entry and the scored entries before it, by the same model, summed: the latest
        drift_window of them, else back until drift.MIN_ROWS rows (or the first)."""
        names, total = [record.name], profile
        before = [r for r in self.ledger.records if r.name != record.name]
        for r in reversed(before):
            if len(names) == self.drift_window or (self.drift_window is None and total.rows >= drift.MIN_ROWS):
                break
            if (r.model.checksum if r.model else None) != record.model.checksum:
                break  # another model's scores: not comparable with this reference
            if r.status == SCORED and r.profile:
                total = total.merge(drift.Profile.from_json(r.profile))
                names.append(r.name)
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
        manifest = replace(self.the_run.manifest([self._input()], self.the_run.totals()),
                           units_done=self.ledger.named(SCORED), units_failed=self.ledger.named(FAILED),
                           entries=self.ledger.to_json()["entries"], units_scored_now=self.scored_now,
                           units_failed_now=self.failed_now)
        manifest = self._with_drift(manifest)
        self.outdir.write_manifest(manifest)
        self.manifest = manifest
        if self.opts.metrics_file:
            write_metrics(self.opts.metrics_file, manifest, str(self.the_run.out),
                          EXIT_ENTRIES_FAILED if self.failed_now else 0)

    def _with_drift(self, manifest: Manifest) -> Manifest:
        """Drift is measured per entry (EntryRecord.drift) and judged per entry over its window
        (EntryRecord.window, against its nearest reference candidate): the manifest's "drift" is
        the largest among the windows of the entries scored by this process (with the candidate it
        was measured against as "reference_profile"), "profile" merges every entry's of the
        current labels, and each window over the warning level is a warning."""
        labels, reference = self._labels(), self.the_run.reference  # none: no labels written
        profile = drift.Profile.empty(labels)
        for r in self.ledger.records:
            if r.profile and r.profile["labels"] == labels:
                profile = profile.merge(drift.Profile.from_json(r.profile))
        now = [DriftWindow(**r.window) for r in self.ledger.records
               if r.name in self.scored_now and r.window]
        # judged drifts first: one measured on too few rows neither warns nor fails the run
        worst = max(now, key=lambda w: (not w.drift.get("too_few_rows"), w.drift["max_psi"] or 0.0),
                    default=None)
        warnings = self.the_run.column_warnings() + self.the_run.reference_warnings
        for window in now:
            warnings += [f"{window.label()}: {w}" for w in drift.Drift.from_json(window.drift).warnings()]
        worst_drift = (drift.Drift.from_json(worst.drift) if worst
                       else drift.compare(reference, drift.Profile.empty(labels)))
        return replace(self.the_run.with_drift(manifest, worst_drift),
                       profile=profile.to_json(), summary=profile.summary(),
                       drift_entry=worst.entries[-1] if worst else None,
                       drift_window=worst.entries if worst else None, warnings=warnings)
