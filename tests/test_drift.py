"""scorer.drift: the streaming profile of what a run scored, PSI against the model's reference,
`scorer profile`, the manifest's drift, its warning and --max-drift's exit code, over resumed runs
and --follow entries."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer import drift
from scorer.cli import main
from scorer.errors import ModelError
from tests.conftest import REPO, SAMPLE

LABELS = ["negative", "positive"]


def test_profile_counts_bins_unscored_rows_and_low_confidence():
    p = drift.Profile.empty(LABELS)
    probs = np.array([[0.05, 0.95], [0.55, 0.45], [np.nan, np.nan], [1.0, 0.0], [0.6, 0.4]])
    p.add(probs, np.array([5, 20, 0, 130, 8]))
    assert (p.rows, p.scored, p.predicted, p.low_confidence) == (5, 4, [3, 1], 1)  # 0.55 only
    assert p.probability_hist[0] == [1, 0, 0, 0, 0, 1, 1, 0, 0, 1]  # 1.0 in the last bin
    assert p.probability_hist[1] == [1, 0, 0, 0, 2, 0, 0, 0, 0, 1]
    # length bins: 0 (not scored), then from 1, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512 tokens
    assert p.length_hist == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert p.tokens == 163
    assert p.summary() == {"predicted_share": {"negative": 0.75, "positive": 0.25},
                           "low_confidence_share": 0.25, "unscored_share": 0.2, "mean_tokens": 40.75}


def test_merge_of_chunks_is_the_profile_of_all_rows_and_json_round_trips():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[rng.random(500) < 0.1] = np.nan
    lengths = rng.integers(1, 600, 500)
    whole = drift.Profile.empty(["a", "b", "c"])
    whole.add(probs, lengths)
    parts = [drift.Profile.empty(["a", "b", "c"]) for _ in range(3)]
    for part, rows in zip(parts, np.array_split(np.arange(500), 3)):
        part.add(probs[rows], lengths[rows])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged == whole
    assert drift.Profile.from_json(json.loads(json.dumps(whole.to_json()))) == whole
    with pytest.raises(ValueError):
        whole.merge(drift.Profile.empty(LABELS))


def test_profile_from_json_refuses_other_bins():
    bad = drift.Profile.empty(LABELS).to_json()
    bad["length_hist"] = [0, 0, 0]
    with pytest.raises(ModelError, match="bins are not this scorer's"):
        drift.Profile.from_json(bad)
    with pytest.raises(ModelError, match="not a profile"):
        drift.Profile.from_json({"labels": LABELS, "colour": 1})


def test_the_sidecar_of_a_hugging_face_checkpoint_is_beside_its_directory(tmp_path):
    ours = SimpleNamespace(path=tmp_path / "sentiment", checkpoint=None)
    theirs = SimpleNamespace(path=tmp_path / "distilbert-sst2", checkpoint=object())
    assert drift.sidecar_path(ours) == tmp_path / "sentiment" / "scorer_reference.json"
    assert drift.sidecar_path(theirs) == tmp_path / "distilbert-sst2.scorer_reference.json"


def test_psi_by_hand():
    assert drift.psi([10, 20, 70], [10, 20, 70]) == 0.0
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert drift.psi([50, 50], [30, 70]) == pytest.approx(expected)
    # an empty bin counts as PSI_FLOOR of the rows, so one new bin is finite but large
    floor = drift.PSI_FLOOR
    assert drift.psi([100, 0], [50, 50]) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - floor) * math.log(0.5 / floor))
    assert drift.psi([0, 0], [1, 2]) == 0.0  # nothing to compare with


def test_sample_is_seeded_uniform_and_keeps_input_order():
    items = list(range(10_000))
    a, b = drift.sample(iter(items), 100, 3), drift.sample(iter(items), 100, 3)
    assert a == b and len(a) == 100 and a == sorted(a)
    assert drift.sample(iter(items), 100, 4) != a
    assert 3500 < np.mean(a) < 6500  # not the first 100
    assert drift.sample(iter(range(5)), 100, 0) == [0, 1, 2, 3, 4]


# --- scorer profile and scorer run ---------------------------------------------------------


@pytest.fixture
def model(tiny_model, tmp_path):
    """A private copy of the tiny model: `scorer profile` writes its sidecar there."""
    return shutil.copytree(tiny_model, tmp_path / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 SST-2 sentences, and the same with every second text emptied."""
    tmp = tmp_path_factory.mktemp("drift-data")
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    (tmp / "same.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp / "emptied.jsonl").write_text("".join(json.dumps({"text": "" if i % 2 else t}) + "\n"
                                               for i, t in enumerate(texts)))
    return tmp


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def manifest(out):
    return json.loads((out / "_manifest.json").read_text())


def test_profile_writes_a_sidecar_that_runs_compare_with(model, data, tmp_path):
    r = invoke("profile", model, data / "same.jsonl", "--rows", "1000")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((model / drift.SIDECAR_NAME).read_text())
    assert sidecar["format"] == drift.REFERENCE_FORMAT and sidecar["profile"]["rows"] == 300
    assert sidecar["data"]["rows_profiled"] == 300 and sidecar["data"]["seed"] == 0
    # the same rows scored by a run: its profile is the reference, every PSI 0, no warning
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "out", "--model", model, "--chunk-rows", "64")
    assert r.exit_code == 0, r.output
    m = manifest(tmp_path / "out")
    assert m["profile"] == sidecar["profile"]
    assert m["drift"]["reference"] == str(model / drift.SIDECAR_NAME)
    assert m["drift"]["psi"] == {"probability:negative": 0.0, "probability:positive": 0.0, "text_length": 0.0}
    assert m["reference_profile"] == sidecar["profile"] and "warning:" not in r.stderr


def test_drift_warns_and_max_drift_exits_9_with_the_output_committed(model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    r = invoke("run", data / "emptied.jsonl", "-o", tmp_path / "warned", "--model", model)
    assert r.exit_code == 0, r.output
    psi = manifest(tmp_path / "warned")["drift"]["psi"]
    assert psi["text_length"] > 1  # half the rows now have no tokens
    assert f"warning: drift: PSI above 0.1 (moderate shift) against the model's reference: " \
           f"text_length {psi['text_length']:.3f}" in r.stderr
    out = tmp_path / "gated"
    r = invoke("run", data / "emptied.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: drift PSI {psi['text_length']:.3f} (text_length) passes --max-drift 0.25; the output "
        "is committed (the scores are right, the data moved)")
    assert (out / "_SUCCESS").exists() and manifest(out)["rows_out"] == 300
    # the same command again: already complete, and still the same answer for the scheduler
    r = invoke("run", data / "emptied.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 9 and "already complete" in r.stderr
    # under the limit: exit 0
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "fine", "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 0, r.output


def test_max_drift_without_a_reference_is_refused_before_scoring(model, data, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", data / "same.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 4, r.output
    assert r.stderr.startswith("error: --max-drift needs a reference for model") and len(
        r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    r = invoke("run", data / "same.jsonl", "-o", out, "--model", model)  # no reference: no drift
    assert r.exit_code == 0
    assert manifest(out)["drift"] == {"reference": None, "psi": {}, "max_psi": None, "warning_level": 0.1,
                                      "note": "the model has no reference: see `scorer profile`"}


def test_a_sidecar_of_another_model_is_not_used(model, tiny_multilabel_model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl", "-o", tmp_path / "ref.json").exit_code == 0
    other = shutil.copytree(model, tmp_path / "retrained")
    spec = json.loads((other / "scorer_model.json").read_text())
    (other / "scorer_model.json").write_text(json.dumps({**spec, "version": "2"}))
    shutil.copy(tmp_path / "ref.json", other / drift.SIDECAR_NAME)
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "out", "--model", other)
    assert r.exit_code == 0, r.output
    assert "warning: drift not computed: " in r.stderr and "run `scorer profile` again" in r.stderr
    assert manifest(tmp_path / "out")["drift"]["psi"] == {}
    # given explicitly, a reference file is used as it is
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "explicit", "--model", model,
               "--reference", tmp_path / "ref.json")
    assert manifest(tmp_path / "explicit")["drift"]["reference"] == str(tmp_path / "ref.json")
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "missing", "--model", model,
               "--reference", tmp_path / "nope.json")
    assert r.exit_code == 4 and "--reference" in r.stderr and "no such file" in r.stderr


def test_a_killed_run_resumed_has_the_profile_of_an_uninterrupted_one(model, data, tmp_path):
    args = ["run", str(data / "emptied.jsonl"), "--model", str(model), "--chunk-rows", "32",
            "--rows-per-file", "70"]
    assert invoke(*args, "-o", tmp_path / "whole").exit_code == 0
    env = {**os.environ, "SCORER_CRASH_AT": "checkpoint:2"}
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args, "-o", str(tmp_path / "resumed")],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    r = invoke(*args, "-o", tmp_path / "resumed")
    assert r.exit_code == 0 and "resumed after 140 committed rows" in r.stderr
    assert manifest(tmp_path / "resumed")["profile"] == manifest(tmp_path / "whole")["profile"]


def test_follow_measures_drift_per_entry(model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(data / "same.jsonl", landing / "a.jsonl")
    shutil.copy(data / "emptied.jsonl", landing / "b.jsonl")
    out = tmp_path / "out"
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0")
    assert r.exit_code == 0, r.output
    m = manifest(out)
    a, b = m["entries"]
    assert a["drift"]["psi"]["text_length"] == 0.0 and a["profile"]["rows"] == 300
    assert b["drift"]["psi"]["text_length"] > 1 and b["profile"]["rows"] == 300
    assert m["drift"] == b["drift"] and m["drift_entry"] == "b.jsonl"
    assert m["profile"]["rows"] == 600 and m["profile"]["scored"] == 450
    assert "warning: entry b.jsonl: drift: PSI above 0.1" in r.stderr and "entry a.jsonl" not in r.stderr
    shutil.copy(data / "same.jsonl", landing / "c.jsonl")
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0",
               "--max-drift", "0.25")
    assert r.exit_code == 0, r.output  # this invocation scored c.jsonl only: no drift
    shutil.copy(data / "emptied.jsonl", landing / "d.jsonl")
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0",
               "--max-drift", "0.25")
    assert r.exit_code == 9 and "(text_length) passes --max-drift 0.25" in r.stderr
