"""TensorFlow start-up, done once per process and kept quiet.

TensorFlow's native code prints several lines (oneDNN notice, CUDA probing) straight to file
descriptor 2 while it loads and first looks for devices, before any log level applies; a
pipeline's stderr should carry scorer's own messages. Set SCORER_TF_STARTUP_LOG=1 to see them.
"""

from __future__ import annotations

import os
import sys

_gpus: list | None = None


def start() -> list:
    """Import TensorFlow and keras-hub and list the GPUs, native start-up output silenced."""
    global _gpus
    if _gpus is not None:
        return _gpus
    quiet = os.environ.get("SCORER_TF_STARTUP_LOG") != "1"
    if quiet:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        import keras_hub  # noqa: F401  (imports keras, which reads KERAS_BACKEND)

        tf.get_logger().setLevel("ERROR")  # per-shape retracing warnings are by design here
        _gpus = tf.config.list_physical_devices("GPU")
    finally:
        if quiet:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    return _gpus
