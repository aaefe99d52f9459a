"""TensorFlow start-up, done once per process and kept quiet.

TensorFlow's native code prints several lines (oneDNN notice, CUDA probing) straight to file
descriptor 2 while it loads and first looks for devices, before any log level applies; a
pipeline's stderr should carry scorer's own messages. Set SCORER_TF_STARTUP_LOG=1 to see them.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import sys
from pathlib import Path

from scorer.errors import ConfigError

_gpus: list | None = None
_CACHE_MIN_FREE_BYTES = 1 << 30
# glibc malloc arenas a scoring process may use. glibc's default (8 per core) gives each of the
# tokenizer's, TensorFlow's and the pipeline's threads an arena of its own; freed chunk-sized
# buffers then stay scattered over them, and an embedding run's RSS climbed with its rows (1.6 GB
# at 100,000 rows, 2.3 GB at 1M, still rising). Two keeps it flat (docs/benchmarks.md, Memory).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
threads_in_use: int | None = None


def force_offline() -> None:
    """Nothing is ever downloaded: HF_HUB_OFFLINE=1 whatever the environment says, also for a
    huggingface_hub that the embedding program imported before scorer (it reads the variable
    once, at import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this cgroup may use (cgroup v2 cpu.max, or v1 cfs quota/period); None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may really use: its CPU affinity, capped by a container's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def xla_cache_dir() -> str | None:
    """Where compiled XLA programs persist across runs, so an hourly cron job does not compile
    every hour: $SCORER_XLA_CACHE (empty: off), else $XDG_CACHE_HOME/scorer/xla or
    ~/.cache/scorer/xla. None when it cannot be created."""
    path = os.environ.get("SCORER_XLA_CACHE")
    if path == "":
        return None
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "scorer", "xla")
    try:
        os.makedirs(path, exist_ok=True)
        # TensorFlow fails the model call when a cache write fails: keep clear of a full disk.
        if shutil.disk_usage(path).free < _CACHE_MIN_FREE_BYTES:
            return None
    except OSError:
        return None
    return path


def threads_setting() -> int | None:
    """$SCORER_THREADS as a thread count (None when unset or empty)."""
    value = os.environ.get("SCORER_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"SCORER_THREADS={value!r}: give a whole number of threads, 1 or more "
                          "(or unset it: the cores this process may use)")
    return int(value)


def glibc() -> bool:
    """Whether this process runs on GNU libc (whose malloc limit_malloc_arenas sets)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such name here (macOS, musl)
        return False


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` for the threads started from here on, unless the
    environment sets MALLOC_ARENA_MAX (the user's value stands). False where there is nothing to
    cap (not glibc, e.g. musl or macOS) or glibc refused."""
    if "MALLOC_ARENA_MAX" in os.environ or not glibc():
        return False
    try:
        return ctypes.CDLL(None).mallopt(_M_ARENA_MAX, count) == 1
    except (OSError, AttributeError):
        return False


def start(threads: int | None = None) -> list:
    """Import TensorFlow and keras-hub, size their thread pools, cap malloc's arenas, and list the
    GPUs, with native start-up output silenced. threads (default: available_cpus()) bounds
    TensorFlow's and the tokenizer's pools so that a container's CPU quota is not oversubscribed."""
    global _gpus, threads_in_use
    configured = threads_setting()  # checked even when TensorFlow has already started
    if _gpus is not None:
        return _gpus
    threads_in_use = threads or configured or available_cpus()
    limit_malloc_arenas()  # before TensorFlow and the tokenizer start their threads
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads_in_use))  # the tokenizer's pool
    cache = xla_cache_dir()
    if cache and "tf_xla_persistent_cache_directory" not in os.environ.get("TF_XLA_FLAGS", ""):
        os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") +
                                      f" --tf_xla_persistent_cache_directory={cache}").strip()
    quiet = os.environ.get("SCORER_TF_STARTUP_LOG") != "1"
    if quiet:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        import keras_hub  # noqa: F401  (imports keras, which reads KERAS_BACKEND)

        tf.get_logger().setLevel("ERROR")  # per-shape retracing warnings are by design here
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads_in_use)
            tf.config.threading.set_inter_op_parallelism_threads(threads_in_use)
        except RuntimeError:  # the embedding program already ran TensorFlow: keep its pools
            threads_in_use = tf.config.threading.get_intra_op_parallelism_threads() or threads_in_use
        _gpus = tf.config.list_physical_devices("GPU")
    finally:
        if quiet:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    return _gpus


def require_openvino():
    """The openvino module (`--precision int8`, scorer.quantized); ConfigError (exit 2) naming
    the extra when it is not installed. Here, below scorer.classifier, which checks it before a
    model is loaded."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("--precision int8 needs OpenVINO: pip install 'scorer[openvino]'") from None
    return openvino
