"""`scorer report OUT`: one PNG of a finished run; matplotlib stays off the scoring path."""

from __future__ import annotations

import shutil
import subprocess
import sys

from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO, SAMPLE


def test_report_draws_a_run_against_its_reference(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    data = str(SAMPLE / "sst2_dev_sample.jsonl")
    assert CliRunner().invoke(main, ["profile", str(model), data, "--rows", "100"]).exit_code == 0
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["run", data, "-o", str(out), "--model", str(model)]).exit_code == 0
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    png = out / "_report.png"  # readers of the output skip names starting with _
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    r = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "r.png")])
    assert r.exit_code == 0 and (tmp_path / "r.png").stat().st_size > 20_000


def test_report_refusals_are_one_line(tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 3 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no _manifest.json; is it the output of a finished run?"]
    (tmp_path / "_manifest.json").write_text('{"rows_in": 1}')
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 3 and "has no profile of its rows" in r.stderr
    (tmp_path / "_manifest.json").write_text('{"profile": {"labels": ["a"]}}')
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "error: scorer report needs matplotlib: pip install 'matplotlib~=3.11.2'"]


def test_the_scoring_path_does_not_import_matplotlib():
    code = ("import sys, scorer.cli, scorer.pipeline, scorer.follow, scorer.drift, scorer.metrics; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_the_picture_says_which_reference_the_grey_bars_are():
    from dataclasses import replace

    from scorer.drift import Drift
    from scorer.report import reference_caption

    assert reference_caption(Drift(None)) == "no reference (see `scorer profile`)"
    assert reference_caption(Drift("spec", candidates={"all": 0.2})) == (
        "grey: the model's reference (spec)")
    parts = Drift("spec", part="sst2", candidates={"all": 2.3, "sst2": 0.02, "imdb": 9.0})
    assert reference_caption(parts) == (
        "grey: the nearest of the reference's 3 candidates, part sst2")
    assert reference_caption(replace(parts, part=None)).endswith("candidates, the whole")
