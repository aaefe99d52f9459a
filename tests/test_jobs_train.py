"""jobs.train on long texts: a text over the max length is trained on as one window a epoch and
evaluated as all its windows combined, as `scorer run` scores it."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from jobs import finetune, metrics
from jobs.data import LabeledData
from scorer import Scorer

FILLER = "the a film movie story plot actor scene was is very quite and but with of".split()


def long_rows(n: int, seed: int) -> list[dict]:
    """~40-word texts whose label word comes last, past the first 16-token window."""
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choices(FILLER, k=40) + [["bad", "good"][i % 2]]),
             "label": ["negative", "positive"][i % 2]} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_job_on_long_texts_trains_on_windows_and_evaluates_them_combined(tiny_model, tmp_path):
    val_rows = long_rows(40, 1)
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(write_jsonl(tmp_path / "t.jsonl", long_rows(120, 0))),
        "--validation", str(write_jsonl(tmp_path / "v.jsonl", val_rows)), "--base", str(tiny_model),
        "--name", "long", "--out", str(out), "--epochs", "1", "--max-length", "16",
        "--learning-rate", "1e-2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "on 120 rows (480 windows)" in r.stderr  # 41 tokens: windows of 14 sharing 4, at 0, 10, 20, 30
    spec = json.loads((out / "scorer_model.json").read_text())
    assert spec["training"]["config"]["long_text"] == "window" and spec["max_length"] == 16
    # the recorded validation metrics are those of the saved model scored with windows, not cut
    val = LabeledData([row["text"] for row in val_rows],
                      np.array([["negative", "positive"].index(row["label"]) for row in val_rows]))
    names = spec["labels"]
    windows = metrics.evaluate(lambda t: Scorer.load(out, long_text="window").probabilities(t)[0],
                               val, names, False)
    cut = metrics.evaluate(lambda t: Scorer.load(out, long_text="truncate").probabilities(t)[0],
                           val, names, False)
    recorded = spec["metrics"]["validation"]
    assert recorded["accuracy"] == windows["accuracy"]
    assert recorded["ece"] == pytest.approx(windows["ece"], abs=1e-4)
    assert recorded["roc_auc"] == pytest.approx(windows["roc_auc"], abs=1e-3)
    assert abs(recorded["ece"] - cut["ece"]) > 1e-3 or abs(recorded["roc_auc"] - cut["roc_auc"]) > 1e-3
