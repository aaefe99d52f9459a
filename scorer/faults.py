"""Crash points for the kill tests (tests/test_resume.py), in the manner of SQLite's test hooks.

With SCORER_CRASH_AT=<point>[:<n>] in the environment, the process SIGKILLs itself the n-th time
(default: first) it passes `point`: a real, unannounced death at a chosen moment (mid-read,
mid-part-file, between a part's rename and the checkpoint, mid-manifest), which no timing-based
kill could hit reliably. Unset, `point` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_target, _, _nth = os.environ.get("SCORER_CRASH_AT", "").partition(":")
_remaining = int(_nth or 1)


def point(name: str) -> None:
    global _remaining
    if name == _target:
        _remaining -= 1
        if _remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
