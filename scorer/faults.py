"""Crash and pause points for the kill tests (tests/test_resume.py), in the manner of SQLite's
test hooks.

With SCORER_CRASH_AT=<point>[:<n>] in the environment, the process SIGKILLs itself the n-th time
(default: first) it passes `point`: a real, unannounced death at a chosen moment (mid-read,
mid-part-file, between a part's rename and the checkpoint, mid-manifest), which no timing-based
kill could hit reliably. SCORER_PAUSE_AT=<point>[:<n>] instead stops there until a signal ends
the process, so a test can act on a run that is certainly still in progress (a fast run could
otherwise finish first). SCORER_TERM_AT=<point>[:<n>] sends the process a SIGTERM there (a stop
request landing at an exact moment). Unset, `point` is three string comparisons.

With SCORER_PAUSE_RELEASE=<path> as well, a pause first creates `<path>.<pid>` (its pid) and
lasts only while <path> exists: a test can then find the processes that reached the point (Ray
actors: not its children, and Ray's handlers own their signals), act on them (SIGKILL one, lose a
node) and let the others go on by deleting <path>. A process started after that passes at once.

scorer.ray_engine hands these variables (ENVIRONMENT) on to its actors, so that the tests reach
the processes where splits run.

The hooks act only when SCORER_FAULT_HOOKS_KEY also holds the test suite's key, which
tests/conftest.py sets for every test and its subprocesses (only its sha256 is here, and tests/
is not installed or copied into the image): a bare SCORER_CRASH_AT in a production environment,
set by mistake or left over, does nothing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time


ENVIRONMENT = ("SCORER_FAULT_HOOKS_KEY", "SCORER_CRASH_AT", "SCORER_PAUSE_AT", "SCORER_TERM_AT",
               "SCORER_PAUSE_RELEASE")
_KEY_SHA256 = "4e8c700aaf9f4489727ae180019def90b0c3e34a0c74401ea287bca9879befa9"


def _armed() -> bool:
    key = os.environ.get("SCORER_FAULT_HOOKS_KEY", "")
    return hashlib.sha256(key.encode()).hexdigest() == _KEY_SHA256


def _parse(variable: str) -> list:
    target, _, nth = (os.environ.get(variable, "") if _armed() else "").partition(":")
    return [target, int(nth or 1)]


_crash = _parse("SCORER_CRASH_AT")
_pause = _parse("SCORER_PAUSE_AT")
_term = _parse("SCORER_TERM_AT")


def point(name: str) -> None:
    if _passed(_crash, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _passed(_term, name):
        os.kill(os.getpid(), signal.SIGTERM)
    if _passed(_pause, name):
        release = os.environ.get("SCORER_PAUSE_RELEASE") if _armed() else None
        if release:
            with open(f"{release}.{os.getpid()}", "w") as f:
                f.write(f"{name}\n")
        while not release or os.path.exists(release):  # without release: until SIGTERM's
            time.sleep(0.05)  # handler raises here (pause only at main-thread points)


def _passed(hook: list, name: str) -> bool:
    """True the n-th time `name` is passed, for hook = [point, n]."""
    if name != hook[0]:
        return False
    hook[1] -= 1
    return hook[1] == 0
