"""scorer.faults' hooks in a real process: a pause with SCORER_PAUSE_RELEASE names its process
and ends when the release file is deleted; without the suite's key nothing fires."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import REPO

PASSES = "from scorer import faults; faults.point('encode'); faults.point('write'); print('went on')"


def test_a_released_pause_names_its_process_and_goes_on(tmp_path):
    release = tmp_path / "release"
    release.write_text("")
    env = {**os.environ, "SCORER_PAUSE_AT": "write", "SCORER_PAUSE_RELEASE": str(release)}
    proc = subprocess.Popen([sys.executable, "-c", PASSES], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / f"release.{proc.pid}").exists():
            assert proc.poll() is None and time.time() < deadline, "the process did not pause"
            time.sleep(0.05)
        assert (tmp_path / f"release.{proc.pid}").read_text() == "write\n"
        time.sleep(0.5)
        assert proc.poll() is None  # paused while the release file exists
        release.unlink()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out == "went on\n"


def test_without_the_suites_key_no_hook_fires(tmp_path):
    release = tmp_path / "release"
    release.write_text("")
    env = {**os.environ, "SCORER_PAUSE_AT": "write", "SCORER_PAUSE_RELEASE": str(release),
           "SCORER_CRASH_AT": "encode", "SCORER_FAULT_HOOKS_KEY": "not the key"}
    proc = subprocess.run([sys.executable, "-c", PASSES], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "went on\n", proc.stderr
    assert list(tmp_path.iterdir()) == [release]
