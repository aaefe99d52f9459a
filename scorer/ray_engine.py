"""`scorer run ... --engine ray`: a run's splits executed on a Ray cluster, committed by the driver.

    driver : plans the run and commits (scorer.runs.Run.execute / Run.commit): it reads the
             first rows to check their columns, keeps each scoring actor busy with one split
             at a time and commits each result as it comes, in any order
    actors : --workers of them (SplitWorker), each loading the model once; an actor executes a
             split where it runs: reads it from the inputs, scores it and writes its part files
             under the attempt's own directory of the output (scorer.splits.execute_split),
             then returns metadata only (a SplitResult: counts, timings, tokens, part names)
    GPUs   : one per actor when the cluster has GPUs

No row travels between the driver and the actors, so the driver's load is flat in the number of
rows. Inputs, output and dead letters must be reachable from every node under the same name:
object storage (s3://, gs://), or a file system every node mounts.

An actor that dies mid-split (its process killed, its node lost) loses only its attempt: the
split goes to another actor under a new attempt name (up to MAX_ATTEMPTS), the dead actor is
replaced, and the manifest's engine facts count the retry. An attempt of a split that is already
committed (a duplicate) is deleted by the commit, never committed twice.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import ray
from ray import cloudpickle

from scorer import faults, overlap, source, splits
from scorer.api import Scorer
from scorer.drift import EmbeddingBasis
from scorer.errors import InputError, Interrupted, ModelError, OutputError
from scorer.options import RunOptions
from scorer.runs import Run, RunResult, load_scorer
from scorer.splits import Split, SplitResult, SplitState

MAX_ATTEMPTS = 4  # of one split whose actors die; then the run fails (and resumes from its commits)
ACTOR_START_SECONDS = 900  # with no split running: an actor (its model loaded) must be up by then
STOP_POLL_SECONDS = 0.5  # the driver's waits on Ray end this often to see a stop request


def run(inputs: list[str], output, model=None, options: RunOptions | None = None,
        address: str | None = None, workers: int = 1, progress=None) -> RunResult:
    the_run = Run(options or RunOptions(), output)
    opts = the_run.opts
    if opts.flush_seconds or "-" in inputs:
        raise InputError("--engine ray reads files and object stores, not standard input")
    expanded = source.expand_inputs(inputs, opts.format)
    overlap.check_apart([i.path for i in expanded], output, opts.dead_letter)
    # The driver reads the model's spec (the run's identity, the column check, drift) and never
    # loads the model: TensorFlow does not start here, the actors score.
    the_run.read_model(model)
    return the_run.execute(expanded, RayEngine(str(the_run.model_dir.path), workers, address, progress))


class SplitWorker:
    """A scoring actor: the model loaded once, then one split at a time."""

    def __init__(self, model: str, opts: RunOptions):
        self.opts = opts
        self.scorer: Scorer = load_scorer(model, opts)

    def where(self) -> "ActorPlace":
        """Where the actor runs (the driver waits for it: the actor is up, its model loaded)."""
        return ActorPlace(socket.gethostname(), os.getpid(), os.getpriority(os.PRIO_PROCESS, 0))

    def execute(self, split: Split, output, attempt: str, committed: SplitState,
                bad_rows_allowed: int | None, embedding_basis: EmbeddingBasis | None) -> SplitResult:
        return splits.execute_split(split, self.scorer, self.opts, output, attempt=attempt,
                                    committed=committed, bad_rows_allowed=bad_rows_allowed,
                                    embedding_basis=embedding_basis)


@dataclass(frozen=True)
class ActorPlace:
    host: str
    pid: int
    niceness: int  # the raylet's worker_niceness (Ray's default 15; ours 0 on a Ray we start)


class StopRequests:
    """SIGTERM and SIGINT while the driver executes splits: the run stops between commits as
    scorer.cli's stop_on_signals stops it (Interrupted: exit 128 + signal, committed splits kept).

    Two things of Ray's stand in the way. ray.init() takes SIGTERM over: a Python handler that
    exits at once (a driver that started its own cluster tears it down first), with abseil's
    failure handler in front, which arms a 3 s alarm that aborts the process (SIGABRT, a core
    dump) while that handler works; listen() takes the signals back, C level included. And the
    driver waits inside Ray's C++ core, whose signal check passes on only KeyboardInterrupt and
    SystemExit: an Interrupted raised there by a handler would be dropped, the stop lost. So the
    handlers here only note the signal; the waits end every STOP_POLL_SECONDS and the stop is
    raised from check(). The handlers from before are put back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._kept: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # else: Python sends none here
            self._kept = {s: h for s in (signal.SIGTERM, signal.SIGINT)
                          if (h := signal.getsignal(s)) is not None}  # None: not Python's to change
        self.listen()
        return self

    def listen(self) -> None:
        for signum in self._kept:
            signal.signal(signum, self._note)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._kept.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame) -> None:
        self.signum = self.signum or signum

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum, signal.Signals(self.signum).name)

    def wait_for_one(self, refs: list, seconds: float | None = None):
        """The first of `refs` that is ready (None: none within `seconds`), or Interrupted."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            self.check()
            ready, _ = ray.wait(refs, num_returns=1, timeout=STOP_POLL_SECONDS)
            if ready:
                return ready[0]
            if deadline is not None and time.monotonic() > deadline:
                return None


@dataclass
class Attempt:
    """A split given to an actor."""

    split: Split
    name: str  # the attempt's directory: splits.attempt_dir(split.id, name)
    actor: ray.actor.ActorHandle


class RayEngine:
    """Executes a run's splits on --workers actors (scorer.runs.Engine)."""

    def __init__(self, model: str, workers: int, address: str | None = None, progress=None):
        self.model, self.workers, self.address, self.progress = model, workers, address, progress
        self.gpus_per_worker = 0
        self.facts = {"name": "ray", "workers": workers, "gpus_per_worker": 0,
                      "ray_version": ray.__version__, "split_attempts": 0, "split_retries": 0,
                      "actors_lost": 0, "result_bytes": 0, "hosts": [], "worker_niceness": []}

    def execute(self, the_run: Run, pending: list[Split]) -> None:
        if not pending:
            return
        # The run's first rows' columns are checked, and the output made ready, before Ray
        # starts and before any actor writes: a wrong column fails fast, without touching an
        # --overwrite target.
        the_run.start(_first_rows(pending, the_run.opts))
        with StopRequests() as stop:
            self._join_cluster()
            stop.listen()  # again: ray.init() takes SIGTERM over
            self._execute(the_run, pending, stop)

    def _execute(self, the_run: Run, pending: list[Split], stop: "StopRequests") -> None:
        basis = the_run.reference.basis if the_run.reference else None
        actor_class = ray.remote(SplitWorker).options(num_cpus=1, num_gpus=self.gpus_per_worker,
                                                      max_restarts=0, max_task_retries=0)
        queue = deque(pending)
        tries: dict[str, int] = {}
        starting: dict[ray.ObjectRef, ray.actor.ActorHandle] = {}
        running: dict[ray.ObjectRef, Attempt] = {}
        idle: list[ray.actor.ActorHandle] = []
        actors: list[ray.actor.ActorHandle] = []
        rows_done = 0

        def new_actor() -> None:
            actor = actor_class.remote(self.model, the_run.opts)
            actors.append(actor)
            starting[actor.where.remote()] = actor

        try:
            for _ in range(min(self.workers, len(pending))):
                new_actor()
            while queue or running:
                while idle and queue:
                    split, actor = queue.popleft(), idle.pop()
                    tries[split.id] = tries.get(split.id, 0) + 1
                    attempt = Attempt(split, f"{tries[split.id]}-{uuid.uuid4().hex[:8]}", actor)
                    running[actor.execute.remote(split, the_run.out, attempt.name,
                                                 the_run.committed(split.id),
                                                 the_run.bad_rows_allowed(split.id), basis)] = attempt
                    self.facts["split_attempts"] += 1
                # with no split running, splits wait for an actor to start
                ref = stop.wait_for_one([*running, *starting],
                                        None if running or idle else ACTOR_START_SECONDS)
                if ref is None:
                    raise OutputError(f"no scoring actor started in {ACTOR_START_SECONDS} s (is a CPU"
                                      f"{' and a GPU' if self.gpus_per_worker else ''} free on the "
                                      "cluster?); the committed splits are kept: run the same "
                                      "command again to resume")
                if ref in starting:
                    actor = starting.pop(ref)
                    idle.append(actor)
                    self._record_host(_get(ref, "start a scoring actor"))
                    continue
                attempt = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if e.actor_init_failed:
                        raise ModelError(f"a scoring actor could not load the model: {e}") from None
                    self._lost(the_run, attempt, e, tries)
                    queue.appendleft(attempt.split)
                    ray.kill(attempt.actor, no_restart=True)  # dead, or unreachable for now
                    new_actor()
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise e.cause from None  # the split's own error: a bad column, --max-errors
                idle.append(attempt.actor)
                # all the driver gets, sized as Ray serialises it (nothing here deserialises)
                self.facts["result_bytes"] += len(cloudpickle.dumps(result))
                the_run.commit(result)
                rows_done += result.rows_read
                if self.progress:
                    self.progress(rows_done, time.time() - the_run.started)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _join_cluster(self) -> None:
        if not ray.is_initialized():
            # The fault hooks of the tests (scorer.faults; inert without the suite's key) reach
            # the actors, where splits run.
            hooks = {k: os.environ[k] for k in faults.ENVIRONMENT if k in os.environ}
            if self.address is None:
                # The Ray started here runs its workers at nice 0, not Ray's default 15: at 15,
                # Ray's own processes preempt an actor's intra-op threads, which then wait on each
                # other (measured, default model, 20,000 SST-2 rows, 1 worker --threads 2: 430-456
                # rows/s at 15, 582-585 at 0; the local engine 533-570). A cluster's nodes keep
                # their own setting (docs/scaling.md: `RAY_worker_niceness=0 ray start ...`).
                os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **hooks}})
        self.gpus_per_worker = 1 if ray.cluster_resources().get("GPU", 0) else 0
        self.facts["gpus_per_worker"] = self.gpus_per_worker

    def _lost(self, the_run: Run, attempt: Attempt, error: Exception, tries: dict[str, int]) -> None:
        """An actor died holding `attempt`: its files go, the split is tried again."""
        self.facts["actors_lost"] += 1
        the_run.outdir.discard_attempt(splits.attempt_dir(attempt.split.id, attempt.name))
        if tries[attempt.split.id] >= MAX_ATTEMPTS:
            raise OutputError(f"split {attempt.split.id}: its scoring actor died in each of "
                              f"{MAX_ATTEMPTS} attempts (the latest: {str(error).splitlines()[0]}); "
                              "the committed splits are kept: run the same command again to resume")
        self.facts["split_retries"] += 1

    def _record_host(self, where: ActorPlace) -> None:
        if where.host not in self.facts["hosts"]:
            self.facts["hosts"].append(where.host)
        if where.niceness not in self.facts["worker_niceness"]:
            self.facts["worker_niceness"].append(where.niceness)


def _get(ref, doing: str):
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise ModelError(f"could not {doing}: {e}") from None


def _first_rows(pending: list[Split], opts: RunOptions):
    """The first chunk of the first pending split that has rows (None: none has)."""
    for split in pending:
        first = splits.first_chunk(split, opts)
        if first is not None:
            return first
    return None
