"""Thread sizing: CPU affinity capped by a container's cgroup CPU quota."""

import os
import subprocess
import sys

from scorer import runtime


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    write(tmp_path, "cpu.max", "150000 100000\n")
    assert runtime.cgroup_cpu_quota(tmp_path) == 1.5
    write(tmp_path, "cpu.max", "max 100000\n")
    assert runtime.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path, "cpu/cpu.cfs_quota_us", "50000\n")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000\n")
    assert runtime.cgroup_cpu_quota(tmp_path) == 0.5
    assert runtime.available_cpus(tmp_path) == 1
    write(tmp_path, "cpu/cpu.cfs_quota_us", "-1\n")
    assert runtime.available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_no_cgroup_files_means_affinity(tmp_path):
    assert runtime.cgroup_cpu_quota(tmp_path) is None
    assert runtime.available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_tensorflow_and_tokenizer_pools_follow_scorer_threads():
    """In a fresh process (TensorFlow sizes its pools once), SCORER_THREADS=3 sizes TensorFlow's
    intra- and inter-op pools and the tokenizer's (RAYON_NUM_THREADS)."""
    probe = ("from scorer import runtime; runtime.start(); import os, tensorflow as tf; "
             "print(runtime.threads_in_use, tf.config.threading.get_intra_op_parallelism_threads(), "
             "tf.config.threading.get_inter_op_parallelism_threads(), os.environ['RAYON_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", probe], env={**env, "SCORER_THREADS": "3"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "3", "3", "3"]


def test_scorer_threads_sets_the_count_and_a_bad_value_is_a_config_error(monkeypatch):
    import pytest

    from scorer.errors import ConfigError

    monkeypatch.setenv("SCORER_THREADS", " 3 ")
    assert runtime.threads_setting() == 3
    monkeypatch.setenv("SCORER_THREADS", "")
    assert runtime.threads_setting() is None
    for value in ("abc", "0", "-1", "2.5", "1e3"):
        monkeypatch.setenv("SCORER_THREADS", value)
        with pytest.raises(ConfigError, match=f"SCORER_THREADS={value!r}: give a whole number"):
            runtime.start()


ARENA_PROBE = """
import ctypes, sys, tempfile, threading
from scorer import runtime
runtime.start()
held, barrier = [], threading.Barrier(24)
def work():
    held.append(bytearray(100_000))  # below the mmap threshold: from this thread's arena
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(24)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(f))
    libc.fclose(ctypes.c_void_p(f))
    print(open(out.name).read().count("<heap nr="))
"""


def heaps_after_24_threads(env: dict) -> int:
    done = subprocess.run([sys.executable, "-c", ARENA_PROBE], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_malloc_arenas_are_capped_unless_the_environment_sets_them():
    """glibc gives each new thread an arena of its own (up to 8 per core): an embedding run's RSS
    climbed with its rows as freed buffers stayed scattered over them. After runtime.start() 24
    threads allocating at once share MALLOC_ARENAS arenas; MALLOC_ARENA_MAX, when set, stands."""
    import pytest

    if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        pytest.fail("this test reads glibc's malloc_info: run it on a glibc Linux (CI is one)")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert heaps_after_24_threads(env) <= 2  # runtime.MALLOC_ARENAS
    assert heaps_after_24_threads({**env, "MALLOC_ARENA_MAX": "6"}) == 6
