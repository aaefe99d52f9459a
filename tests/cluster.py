"""A real multi-node Ray cluster on this machine, for tests: a head node and worker nodes, each
started by `ray start` (`--num-cpus 1`) in a session of its own, and ended by pid.

    with LocalCluster.start(nodes=2) as cluster:    # cluster.address = "127.0.0.1:<port>"
        ...  scorer run ... --engine ray --address cluster.address
        cluster.nodes[1].kill()                      # a worker node lost: all its processes SIGKILLed

How a node's processes are known: `ray start` runs in a new session (setsid), and every process
it starts (GCS, raylet, agents, log monitor) and every worker its raylet forks inherit that
session id, though Ray gives workers process groups of their own. So a node is "the processes
whose session id is the pid of its `ray start`" (read from /proc), which holds after `ray start`
has exited and its daemons were reparented. Other engineers run Ray on the same machine: nothing
here uses `ray stop` or a process name, and every port is a free one chosen here (Ray's defaults
for the client server, dashboard and agents are fixed numbers that two clusters would share).
Every started node is also ended at interpreter exit, so a failing or interrupted test session
leaves no Ray process behind (only a SIGKILL of pytest itself can).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
START_SECONDS = 240  # `ray start` of one node; minutes on a loaded 2-core machine are possible
OBJECT_STORE_BYTES = 150 * 1024 * 1024  # per node: tests move little data; /dev/shm is shared
_STARTED: list["RayNode"] = []  # every node started by this process, ended at exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(session_id: int) -> list[int]:
    """Live (non-zombie) processes of ours in the session `session_id`, from /proc."""
    pids = []
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            owner = os.stat(f"/proc/{entry}").st_uid
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == session_id and owner == uid and state != "Z":
            pids.append(int(entry))
    return pids


def kill_session(session_id: int, what: str, seconds: float = 60) -> None:
    """SIGKILL every process of ours in the session `session_id` (a `ray start`, or a driver
    started with start_new_session and the local cluster it started), and wait until none is
    left."""
    deadline = time.time() + seconds
    while pids := session_processes(session_id):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.time() > deadline:
            raise RuntimeError(f"{what}: processes {pids} outlived SIGKILL for {seconds} s")
        time.sleep(0.1)


@dataclass
class RayNode:
    """One `ray start`ed node: its session id (the pid of its `ray start`) names its processes."""

    name: str
    session_id: int
    temp_dir: Path
    ended: bool = False  # once ended, the session id may name a stranger's new session

    def pids(self) -> list[int]:
        return [] if self.ended else session_processes(self.session_id)

    def kill(self, seconds: float = 60) -> None:
        """SIGKILL every process of the node (a node lost), and wait until none is left."""
        kill_session(self.session_id, f"ray node {self.name}", seconds)
        self.ended = True


@dataclass
class LocalCluster:
    """A head node and worker nodes on this machine; `address` is the head's GCS."""

    address: str
    root: Path
    # Token authentication, with a token of the cluster's own: Ray turns it on for `ray start
    # --head` whenever ~/.ray/auth_token exists (a local ray.init() writes one), and a node or
    # driver must then present the same token. Every process of the cluster and every driver
    # run against it gets these variables (LocalCluster.env).
    env: dict[str, str] = field(default_factory=lambda: {"RAY_AUTH_MODE": "token",
                                                         "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    nodes: list[RayNode] = field(default_factory=list)

    @classmethod
    def start(cls, nodes: int = 2) -> "LocalCluster":
        """Start the head and nodes - 1 worker nodes and wait until all are alive in the cluster.
        Anything started is ended again if this fails."""
        port = free_port()
        cluster = cls(address=f"127.0.0.1:{port}", root=Path(tempfile.mkdtemp(prefix="scorer-ray-")))
        try:
            cluster.nodes.append(cluster._start_node("head", ["--head", "--port", str(port),
                                                             "--ray-client-server-port", str(free_port()),
                                                             "--dashboard-port", str(free_port()),
                                                             "--include-dashboard", "false"]))
            for i in range(1, nodes):
                cluster.nodes.append(cluster._start_node(f"node{i}", ["--address", cluster.address]))
            cluster.wait_for_nodes(nodes)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_node(self, name: str, role: list[str]) -> RayNode:
        # Short paths: Ray's Unix sockets live under the temp dir and a socket path has 107 bytes.
        temp_dir = self.root / name
        cmd = [str(RAY), "start", *role, "--num-cpus", "1", "--temp-dir", str(temp_dir),
               "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
               "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()),
               "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
               # 0 and 0: workers bind ports the OS chooses, not Ray's shared default range.
               "--min-worker-port", "0", "--max-worker-port", "0"]
        log = (self.root / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **self.env})
        node = RayNode(name, proc.pid, temp_dir)
        _STARTED.append(node)
        try:
            rc = proc.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            node.kill()
            proc.wait()
            raise RuntimeError(f"`ray start` of {name} took over {START_SECONDS} s; its output:\n"
                               f"{self.log(name)}") from None
        finally:
            log.close()
        if rc != 0:
            raise RuntimeError(f"`ray start` of {name} exited {rc}:\n{self.log(name)}")
        return node

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-4000:]

    def wait_for_nodes(self, alive: int, seconds: float = START_SECONDS) -> None:
        """Wait until the cluster counts `alive` live nodes (asked from a fresh process, so
        that the caller's own Ray state is untouched)."""
        self.run_python(_COUNT_ALIVE_NODES, str(alive), str(seconds), seconds=seconds + 120)

    def run_python(self, code: str, *args: str, seconds: float = 300) -> str:
        """Run `code` in a Python process connected to the cluster (sys.argv[1] is its address);
        its stdout, or RuntimeError with its output."""
        proc = subprocess.run([sys.executable, "-c", code, self.address, *args], capture_output=True,
                              text=True, timeout=seconds, env={**os.environ, **self.env})
        if proc.returncode != 0:
            raise RuntimeError(f"a Ray driver on {self.address} exited {proc.returncode}:\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return proc.stdout

    def pids(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.pids()]

    def stop(self) -> None:
        """End every process of every node by pid (workers first, the head last)."""
        for node in reversed(self.nodes):
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_COUNT_ALIVE_NODES = """
import sys, time
import ray
address, alive, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False)
deadline = time.time() + seconds
while (n := sum(1 for node in ray.nodes() if node["Alive"])) < alive:
    if time.time() > deadline:
        sys.exit(f"{n} of {alive} Ray nodes alive after {seconds:.0f} s: {ray.nodes()}")
    time.sleep(0.5)
"""


@atexit.register
def _end_started_nodes() -> None:
    for node in _STARTED:
        try:
            node.kill()
        except Exception:  # noqa: BLE001  (exit cleanup: end what can be ended)
            pass
