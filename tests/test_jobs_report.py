"""jobs.report: report.png when matplotlib (the `report` extra) is installed; one line when not."""

import json
import random
import sys

from click.testing import CliRunner

from jobs import finetune


def test_without_matplotlib_the_job_finishes_and_says_report_png_was_not_written(
        tiny_model, tmp_path, monkeypatch):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.sample("the a film was very quite and".split(), 4) + [word]),
             "label": label} for word, label in [("bad", "negative"), ("good", "positive")] * 40]
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(train), "--base", str(tiny_model), "--name", "x", "--out", str(out),
        "--epochs", "1"])
    assert r.exit_code == 0, r.output
    assert "warning: report.png not written: matplotlib is not installed: " \
           "pip install 'scorer[report]'" in r.stderr.splitlines()
    assert (out / "scorer_model.json").is_file() and not (out / "report.png").exists()
    assert json.loads(r.stdout.strip().splitlines()[-1])["model"] == str(out)
