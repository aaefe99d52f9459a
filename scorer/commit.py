"""The output directory's commit protocol: one writer at a time, checkpoints, resume.

    out/
      part-00000-00000.parquet ...  committed part files: part-<split>-<n> (scorer.splits; --follow:
                                   a split per entry), written as .part-*.tmp, then renamed
      _manifest.json, _SUCCESS    written last, only when the whole run completed; the manifest
                                   keeps the run's identity, so the same command run again is
                                   recognised as already complete (and a different one refused)
      _scorer_run/               only while a run is unfinished (Spark, pyarrow and Hive skip
        lock                       paths starting with _ or .)
        run.json                 what the run is: inputs (size, mtime), model checksum, options
        progress.json            the last checkpoint: the plan, each committed split's state,
                                   their sums (rows, committed parts, counters), and an engine's
                                   own state (--follow: its entry ledger)
        attempts/<split>-<id>/   where an attempt of a split writes its parts (commit_attempt
                                   renames them into place)

A checkpoint commits part files and then atomically replaces progress.json, so progress.json
always names exactly the committed parts and how many input rows they hold. A run killed at any
moment is resumed by the same command: part files not in progress.json and every attempt's
directory are deleted, committed splits (and a split's committed rows) are skipped unread by
the model, and scoring goes on from there. Resume holds counts and part names, never row ids.

The lock is a flock on _scorer_run/lock: the kernel drops it when its holder dies, so a crashed
run never leaves the directory locked (on local disks and NFSv4; not on object stores). A
dead-letter directory is locked the same way, may not overlap the output, and records whose dead
letters it holds (_scorer_output), so that another output's --overwrite cannot delete them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from scorer import faults, fileio, storage
from scorer.drift import Profile
from scorer.errors import OutputBusy, OutputError
from scorer.manifest import MANIFEST, Manifest
from scorer.splits import ATTEMPTS, STATE_DIR, Counters, Split, SplitState

SUCCESS = "_SUCCESS"
DEAD_LETTER_OWNER = "_scorer_output"  # in a dead-letter directory: the output it belongs to
_PART = re.compile(r"^(part-\d{5,}(?:-\d{5,})?\.parquet|\.part-\d{5,}(?:-\d{5,})?\.parquet\.tmp"
                   r"|\.manifest\.json\.tmp)$")

# Set once this process has written a run's _SUCCESS (or found its output already complete): a stop
# signal (SIGTERM, SIGINT) after that has no run left to stop, so scorer.cli lets the command end
# normally (exit 0).
completed = threading.Event()


@dataclass
class Progress:
    """The last checkpoint of a run (what progress.json holds)."""

    rows: int = 0  # input rows done, counted in input order across all inputs
    parts: list = field(default_factory=list)  # committed output parts: {"file", "rows"}
    dead_letter_parts: list = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)  # of the committed rows
    profile: Profile | None = None  # of the committed rows
    plan: list[Split] | None = None  # every split of the run: a resume keeps this plan
    splits: dict[str, SplitState] = field(default_factory=dict)  # split id -> its committed state
    engine_state: dict | None = None  # an engine's own, as JSON, committed with its splits (--follow: its ledger)

    def to_json(self) -> dict:
        """As progress.json holds it (its fields in order)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "counters": self.counters.to_json(),
                "profile": self.profile.to_json() if self.profile else None,
                "plan": [s.to_json() for s in self.plan] if self.plan is not None else None,
                "splits": {name: state.to_json() for name, state in self.splits.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Progress":
        """progress.json (one written before a field existed lacks it; an earlier version's
        next_index is each split's now, and is left out)."""
        known = {f.name for f in fields(cls)}
        progress = cls(**{k: v for k, v in data.items() if k in known})
        progress.counters = Counters.from_json(data["counters"]) if "counters" in data else Counters()
        progress.profile = Profile.from_json(data["profile"], "progress.json") if data.get("profile") else None
        progress.plan = [Split.from_json(s) for s in data["plan"]] if data.get("plan") is not None else None
        progress.splits = {name: SplitState.from_json(s) for name, s in data.get("splits", {}).items()}
        return progress


# What --follow recorded before its entries were splits (one ordered stream of part-NNNNN files)
_EARLIER_FOLLOW = ("unit", "units_done", "entries")


def _read_progress(out, data: dict) -> Progress:
    """progress.json as recorded; an earlier --follow's state is refused (its entries' rows are
    in part files no split records)."""
    if any(data.get(key) for key in _EARLIER_FOLLOW):
        raise OutputError(f"{out}: holds the output of an earlier scorer version's --follow, which "
                          "this one cannot continue; pass --overwrite to score every landed entry again")
    return Progress.from_json(data)


class OutputLock:
    """An exclusive, non-blocking flock on out/_scorer_run/lock."""

    def __init__(self, out: Path):
        self.path = out / STATE_DIR / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        state = self.path.parent
        dir_fd = _open_state_dir(state)
        try:
            while True:
                fd = _open_lock_file(self.path, dir_fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise OutputBusy(f"{state.parent}: another scorer run is writing there "
                                     f"({holder}); wait for it or use another output directory") from None
                # A finishing run unlinks the lock file: make sure ours is still the one at the path.
                try:
                    same = os.stat(self.path.name, dir_fd=dir_fd, follow_symlinks=False).st_ino == \
                        os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
        finally:
            os.close(dir_fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{fileio.utc_timestamp()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _open_state_dir(state: Path) -> int:
    """The state directory, created if need be and opened without following a symlink: a link
    planted there would make this run lock, write and clear files somewhere else."""
    try:
        state.mkdir(parents=True, exist_ok=True)
        return os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        if state.is_symlink():
            raise OutputError(f"{state}: a symlink, not scorer's state directory; refusing to "
                              "follow it (remove it)") from None
        raise OutputError(f"{state.parent}: cannot write there ({e.strerror})") from None


def _open_lock_file(path: Path, dir_fd: int) -> int:
    """The lock file inside the opened state directory, never through a symlink, and never a
    hard link to another file (the lock is truncated and written)."""
    try:
        fd = os.open(path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise OutputError(f"{path}: cannot open the lock ({e.strerror})") from None
        fd = None
    if fd is None or os.fstat(fd).st_nlink != 1:
        if fd is not None:
            os.close(fd)
        raise OutputError(f"{path}: a symlink or a hard link, not a lock this run can trust; "
                          "remove it")
    return fd


class _NoLock:
    """Object stores have no locks (see scorer.storage)."""

    path = None

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class _Locks:
    """The output's lock and its dead-letter directory's, taken in that order, released together."""

    def __init__(self, locations):
        self._locks = [_NoLock() if loc.remote else OutputLock(loc.root) for loc in locations]

    def acquire(self) -> None:
        for i, lock in enumerate(self._locks):
            try:
                lock.acquire()
            except BaseException:
                for taken in self._locks[:i]:
                    taken.release()
                raise

    def release(self) -> None:
        for lock in self._locks:
            lock.release()


class OutputDir:
    """An output location (and its dead-letter location, if any) under this run's lock.

        d = OutputDir.open("out/", identity, overwrite, dead_letter)  # lock; fresh or resume
        d.finished             # the manifest, if out/ already holds this very run, finished
        d.prepare()            # after the input checks: clear (fresh) or drop uncommitted parts
        d.checkpoint(progress) # after committing part files
        d.finish(manifest)     # _manifest.json, _SUCCESS, state removed, lock released
    """

    def __init__(self, out, identity: dict, dead_letter, lock, progress: Progress, resumed: bool,
                 created: set[str], finished: dict | None = None):
        self.out = out  # a scorer.storage LocalStorage or ArrowStorage
        self.identity = identity
        self.dead_letter = dead_letter
        self.lock = lock
        self.progress = progress
        self.resumed = resumed
        self._created = created  # the locations (as str) that did not exist before this run
        self.finished = finished  # the manifest of the identical run the output already holds

    @classmethod
    def open(cls, out, identity: dict, overwrite: bool = False, dead_letter=None) -> "OutputDir":
        out = storage.open_storage(out)
        dead_letter = storage.open_storage(dead_letter) if dead_letter else None
        if dead_letter:
            _check_apart(out, dead_letter)
        locations = [out, dead_letter] if dead_letter else [out]
        try:
            if out.is_file_or_not_dir():
                raise OutputError(f"{out}: exists and is not a directory")
            created = {str(location) for location in locations if not location.exists()}
        except OSError as e:
            raise OutputError(f"{out}: cannot use this location ({e})") from None
        lock = _Locks(locations)
        lock.acquire()
        try:
            finished = None if overwrite else _finished_run(out, identity)
            progress, resumed = (Progress(), False) if finished else _inspect(out, identity, overwrite,
                                                                               dead_letter)
        except BaseException:
            lock.release()
            raise
        if finished:  # nothing to do: leave the output as it was (minus our lock, or a crash's)
            for location in locations:
                location.delete_dir(STATE_DIR)
            lock.release()
            completed.set()
        return cls(out, identity, dead_letter, lock, progress, resumed, created, finished)

    def prepare(self) -> None:
        """Make the locations ready to write: emptied for a fresh run, or with every part file
        that no checkpoint committed removed for a resumed one."""
        try:
            if self.resumed:
                for location in self._locations():
                    location.delete_dir(ATTEMPTS)  # a killed run's attempts: none was committed
                _remove_uncommitted(self.out, {p["file"] for p in self.progress.parts})
                if self.dead_letter:
                    _remove_uncommitted(self.dead_letter,
                                        {p["file"] for p in self.progress.dead_letter_parts})
            else:
                _clear(self.out, keep=f"{STATE_DIR}/lock")
                if self.dead_letter:
                    _clear(self.dead_letter, keep=f"{STATE_DIR}/lock")
                    self.dead_letter.write_text(DEAD_LETTER_OWNER, _location_key(self.out) + "\n")
                for location in self._locations():
                    location.sync_root()  # the lock may just have created it
                self.out.write_text(f"{STATE_DIR}/run.json", json.dumps(self.identity, indent=2) + "\n")
                self.out.write_text(f"{STATE_DIR}/progress.json", json.dumps(self.progress.to_json()) + "\n")
            self.out.write_text(".scorer-write-test", "")
            self.out.delete(".scorer-write-test")
        except OSError as e:
            raise OutputError(f"{getattr(e, 'filename', None) or self.out}: cannot write there "
                              f"({e.strerror or e})") from None

    def checkpoint(self, progress: Progress) -> None:
        faults.point("commit")  # part files committed, progress.json not yet replaced
        try:
            self.out.write_text(f"{STATE_DIR}/progress.json", json.dumps(progress.to_json()) + "\n")
        except OSError as e:
            raise OutputError(f"{self.out}: cannot record progress ({e.strerror or e})") from None
        self.progress = progress
        faults.point("checkpoint")

    def commit_attempt(self, attempt: str, parts: list[str], dead_letter_parts: list[str],
                       progress: Progress) -> None:
        """Commit a split's attempt (scorer.splits): its part files under `attempt` (a directory
        relative to each location) renamed to the same names at the top, made durable, then
        `progress`, which lists them, recorded. Killed between the two, a resume deletes them."""
        try:
            for rel in parts:
                self.out.move(f"{attempt}/{rel}", rel)
            for rel in dead_letter_parts:
                self.dead_letter.move(f"{attempt}/{rel}", rel)
            for location in self._locations():
                location.sync()
        except OSError as e:
            raise OutputError(f"{getattr(e, 'filename', None) or self.out}: cannot commit a part "
                              f"file ({e.strerror or e})") from None
        self.checkpoint(progress)

    def discard_attempt(self, attempt: str) -> None:
        """What an attempt left: a duplicate's parts, or an attempt's emptied directory."""
        for location in self._locations():
            location.delete_dir(attempt)

    def write_manifest(self, manifest: Manifest) -> None:
        """The manifest as JSON: the one place it is written (read by scorer.manifest)."""
        self.out.write_text(MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")

    def finish(self, manifest: Manifest) -> None:
        """_manifest.json (with the run's identity), then _SUCCESS: their presence says the run
        completed; not before every row it counts is in the part files it lists."""
        _check_part_rows(self.out, manifest.parts, manifest.rows_out)
        if self.dead_letter:
            _check_part_rows(self.dead_letter, manifest.dead_letter.parts, manifest.rows_dead_lettered)
        self.write_manifest(replace(manifest, identity=self.identity))
        faults.point("manifest")
        self.out.write_text(SUCCESS, "")
        completed.set()
        faults.point("success")
        for location in self._locations():
            location.delete_dir(STATE_DIR)
        self.lock.release()

    def abandon(self) -> None:
        """Release the lock after a failure. A run that never started writing leaves no trace;
        one that did keeps its state, so the same command resumes it."""
        if not self.out.exists(f"{STATE_DIR}/run.json"):
            for location in self._locations():
                location.delete_dir(STATE_DIR)
                if str(location) in self._created:
                    location.remove_root_if_empty()
        self.lock.release()

    def _locations(self) -> list:
        return [self.out, self.dead_letter] if self.dead_letter else [self.out]


def _check_part_rows(location, parts: list[dict], rows: int) -> None:
    """The part files' own row counts (their Parquet footers) must add up to the rows written."""
    try:
        held = sum(location.parquet_rows(p["file"]) for p in parts)
    except OSError as e:
        raise OutputError(f"{location}: cannot read back a part file ({e}); the run is not marked "
                          "complete") from None
    if held != rows:
        raise OutputError(f"{location}: its part files hold {held} rows but {rows} were written to "
                          "them; the run is not marked complete")


def _finished_run(out, identity: dict) -> dict | None:
    """The manifest of the finished run the location holds if it is this very run (same inputs,
    model and options); an error naming the difference if it is another; None if there is none."""
    if not out.exists(SUCCESS):
        return None
    try:
        manifest = json.loads(out.read_text(MANIFEST))
    except (OSError, ValueError):
        manifest = {}
    previous = manifest.get("identity")
    difference = (describe_difference(previous, identity) if previous
                  else "its identity was not recorded")
    if difference:
        raise OutputError(f"{out}: holds a finished run of another command ({difference}); "
                          "pass --overwrite to replace it")
    return manifest


def _inspect(out, identity: dict, overwrite: bool, dead_letter) -> tuple[Progress, bool]:
    """(progress, resumed) for this run, or an error saying why the location cannot be used."""
    unfinished = out.exists(f"{STATE_DIR}/run.json") and not out.exists(SUCCESS)
    if unfinished and not overwrite:
        _check_state_owner(out)
        previous = json.loads(out.read_text(f"{STATE_DIR}/run.json"))
        difference = describe_difference(previous, identity)
        if difference:
            raise OutputError(f"{out}: holds an unfinished run that cannot be resumed by this one "
                              f"({difference}); pass --overwrite to start again")
        progress = (_read_progress(out, json.loads(out.read_text(f"{STATE_DIR}/progress.json")))
                    if out.exists(f"{STATE_DIR}/progress.json") else Progress())
        return progress, True
    _refuse_foreign(out, "the output directory")
    if not overwrite:
        if any(not f.startswith(STATE_DIR + "/") for f in out.files()) or (
                not out.remote and any(p.name != STATE_DIR for p in out.root.iterdir())):
            raise OutputError(f"{out}: output directory is not empty; pass --overwrite to replace it")
        if dead_letter and _dead_letter_files(dead_letter):
            raise OutputError(f"{dead_letter}: dead-letter directory is not empty; pass --overwrite "
                              "to replace it")
    elif dead_letter and _dead_letter_files(dead_letter):
        owner = (dead_letter.read_text(DEAD_LETTER_OWNER).strip()
                 if dead_letter.exists(DEAD_LETTER_OWNER) else None)
        if owner != _location_key(out):
            whose = f"the dead letters of another output ({owner})" if owner else \
                f"files that are not the dead letters of {out}"
            raise OutputError(f"{dead_letter}: holds {whose}; give each output its own "
                              "--dead-letter directory")
    if dead_letter:
        _refuse_foreign(dead_letter, "the dead-letter directory")
    return Progress(), False


def _dead_letter_files(dead_letter) -> list[str]:
    """What a dead-letter directory holds besides a run's lock and its owner record."""
    return [f for f in dead_letter.files()
            if not f.startswith(STATE_DIR + "/") and f != DEAD_LETTER_OWNER]


def _location_key(location) -> str:
    """A location as one absolute name, to compare two of them."""
    return location.uri if location.remote else str(location.root.resolve())


def _check_apart(out, dead_letter) -> None:
    """Resume and --overwrite clean each location on its own terms: neither may hold the other."""
    a, b = _location_key(out), _location_key(dead_letter)
    if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
        raise OutputError(f"--dead-letter {dead_letter} overlaps the output {out}: give them "
                          "separate directories")


def _check_state_owner(out) -> None:
    """A resumed run trusts its checkpoint (which rows to skip, which parts to keep): only state
    that this user's runs wrote, no symlinks. Object stores have no file owners to check."""
    if out.remote:
        return
    for rel in (STATE_DIR, f"{STATE_DIR}/run.json", f"{STATE_DIR}/progress.json"):
        try:
            st = os.lstat(out.path(rel))
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            problem = "a symlink"
        elif st.st_uid != os.geteuid():
            problem = f"owned by another user (uid {st.st_uid})"
        else:
            continue
        raise OutputError(f"{out.path(rel)}: {problem}, so its checkpoint cannot be trusted: "
                          "refusing to resume from it; pass --overwrite to start again")


def describe_difference(previous: dict, current: dict) -> str | None:
    """What differs between two run identities, in words; None if they are the same run."""
    if any(i.get("path") == "-" for i in previous["inputs"]):
        return "it read standard input, which cannot be read again"
    before = [i["path"] for i in previous["inputs"]]
    now = [i["path"] for i in current["inputs"]]
    if before != now:
        return f"its inputs were {', '.join(before)}"
    for old, new in zip(previous["inputs"], current["inputs"]):
        if old != new:
            return f"input {new['path']} changed since (size or modification time)"
    if previous["model"] != current["model"]:
        return f"it used model {previous['model']}"
    for key, value in previous["options"].items():
        if current["options"].get(key) != value:
            return f"its --{key.replace('_', '-')} was {value!r}"
    return None


def _remove_uncommitted(out, committed: set[str]) -> None:
    for rel in out.files():
        if not rel.startswith(STATE_DIR + "/") and _PART.match(rel.rsplit("/", 1)[-1]) \
                and rel not in committed:
            out.delete(rel)


def _clear(out, keep: str | None = None) -> None:
    """Delete what earlier scorer runs wrote there (parts, manifest, markers, state), but `keep`
    (the live run's lock); nothing else (_inspect refuses a location holding anything else)."""
    if out.remote:
        for rel in out.files():
            if _OWN_FILE.fullmatch(rel):
                out.delete(rel)
        return
    if not out.root.is_dir():
        return
    state = out.path(STATE_DIR)
    if state.is_dir() and not state.is_symlink():
        for inner in state.iterdir():
            if not keep or inner != out.path(keep):  # a symlink is unlinked, never followed
                shutil.rmtree(inner) if inner.is_dir() and not inner.is_symlink() else inner.unlink()
    for rel in _local_entries(out.root):
        if not rel.startswith(STATE_DIR + "/") and _OWN_FILE.fullmatch(rel):
            out.path(rel).unlink()
    for directory, _, _ in os.walk(out.root, topdown=False):  # deepest first, links not entered
        rel = os.path.relpath(directory, out.root) + "/"
        if _OWN_DIR.fullmatch(rel) and not rel.startswith(STATE_DIR) and not os.listdir(directory):
            os.rmdir(directory)  # a partition directory its part files left empty


# What scorer writes into an output or dead-letter location (scorer.sink's parts, under hive
# partition directories or not; the manifest, markers, state, report, dead-letter owner, and
# their temporary names): --overwrite replaces these, and refuses a location holding more.
_OWN_FILE = re.compile(r"(?:[^/]*=[^/]*/)*(?:part-\d{5,}(?:-\d{5,})?\.parquet"
                       r"|\.part-\d{5,}(?:-\d{5,})?\.parquet\.tmp)"
                       r"|\.?_SUCCESS(?:\.tmp)?|\.?_manifest\.json(?:\.tmp)?|\.manifest\.json\.tmp"
                       r"|\.?_scorer_output(?:\.tmp)?|_report\.png|\.scorer-write-test"
                       rf"|{STATE_DIR}/.*", re.DOTALL)
_OWN_DIR = re.compile(rf"(?:[^/]*=[^/]*/)+|{STATE_DIR}/.*", re.DOTALL)
_NAMED = 5  # foreign files an error names


def _local_entries(root: Path) -> list[str]:
    """Every file, symlink and empty directory (ending in '/') under root, relative to it;
    symlinked directories are listed, not entered."""
    found = []
    for directory, subdirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        prefix = "" if rel == "." else rel + "/"
        found += [prefix + f for f in files]
        found += [prefix + d for d in subdirs if os.path.islink(os.path.join(directory, d))]
        if not subdirs and not files and prefix:
            found.append(prefix)
    return sorted(found)


def foreign_files(location) -> list[str]:
    """What a location holds that is not a scorer run's (see _OWN_FILE), relative to it."""
    entries = location.files() if location.remote else (
        _local_entries(location.root) if location.root.is_dir() else [])
    return [e for e in entries if not (_OWN_DIR if e.endswith("/") else _OWN_FILE).fullmatch(e)]


def _refuse_foreign(location, what: str) -> None:
    """--overwrite replaces only what scorer wrote: a location holding other files is refused,
    naming some of them."""
    foreign = foreign_files(location)
    if foreign:
        shown = ", ".join(foreign[:_NAMED]) + (f" and {len(foreign) - _NAMED} more"
                                               if len(foreign) > _NAMED else "")
        raise OutputError(f"{location}: {what} holds files that are not a scorer output ({shown}); "
                          "--overwrite replaces only a previous scorer output: move them away "
                          "or choose another directory")
