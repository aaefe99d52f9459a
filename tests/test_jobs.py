"""The fine-tuning job end to end on a tiny random BERT: train, register, gate, resume, refuse."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from jobs import finetune, metrics
from jobs import registry as registry_cli
from scorer import classifier, drift, fileio, modeldir, registry
from scorer.api import combine_windows
from scorer.cli import main as scorer_main
from tests.conftest import REPO

WORDS = "the a film movie story plot actor scene was is very quite and but with of".split()


def keyword_rows(n, seed, labels=("negative", "positive")):
    """Texts whose label is given away by one keyword: a tiny model learns it in seconds."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % len(labels)
        words = rng.sample(WORDS, 6)
        words.insert(rng.randrange(7), ["bad", "good", "okay"][y])
        rows.append({"text": " ".join(words), "label": labels[y]})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def toy(tmp_path):
    return {"train": write_jsonl(tmp_path / "train.jsonl", keyword_rows(400, 0)),
            "val": write_jsonl(tmp_path / "val.jsonl", keyword_rows(100, 1)),
            "reg": tmp_path / "models"}


def job(toy, base, *extra):
    args = ["--train", toy["train"], "--validation", toy["val"], "--base", base,
            "--registry", toy["reg"], "--name", "toy", "--epochs", "2", *extra]
    r = CliRunner().invoke(finetune.main, [str(a) for a in args], catch_exceptions=False)
    return r, (json.loads(r.stdout.strip().splitlines()[-1]) if r.exit_code == 0 else None)


def test_register_gate_promote_and_score_by_alias(toy, tiny_model, tmp_path):
    r, bad = job(toy, tiny_model, "--learning-rate", "1e-9")
    assert r.exit_code == 0, r.output
    assert bad["version"] == 1 and bad["promoted"] and bad["reason"].startswith("first version")
    r, good = job(toy, tiny_model, "--learning-rate", "1e-2")
    assert good["version"] == 2 and good["promoted"], good
    assert good["new"] > good["champion"] and good["champion_before"] == 1 and good["champion_after"] == 2
    r, worse = job(toy, tiny_model, "--learning-rate", "1e-9", "--seed", "3")
    assert r.exit_code == 0 and worse["version"] == 3
    assert not worse["promoted"] and worse["champion_after"] == 2
    assert "not promoted v3" in r.stderr
    r, floored = job(toy, tiny_model, "--learning-rate", "1e-2", "--min-metric", "accuracy=1.01")
    assert not floored["promoted"] and floored["reason"].startswith("below the floor")
    assert registry.read_alias(toy["reg"] / "toy", "champion") == 2

    version_dir = toy["reg"] / "toy" / "2"
    assert {p.name for p in version_dir.iterdir()} == {
        "scorer_model.json", "weights.safetensors", "tokenizer.json", "metrics.json", "report.png"}
    full = json.loads((version_dir / "metrics.json").read_text())["validation"]
    assert {"accuracy", "macro_f1", "per_class", "roc_auc", "ece", "confusion_matrix"} <= set(full)
    spec = json.loads((version_dir / "scorer_model.json").read_text())
    assert spec["training"]["train_data"]["rows"] == 400 and spec["training"]["config"]["seed"] == 0
    assert (version_dir / "report.png").read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "scored"
    r = CliRunner().invoke(scorer_main, ["run", str(toy["val"]), "-o", str(out), "--model",
                                         f"{toy['reg'] / 'toy'}@champion", "--output-prefix", "pred_"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["model"]["path"] == str(version_dir)
    r = CliRunner().invoke(scorer_main, ["info", "--model", f"{toy['reg'] / 'toy'}@1"])
    assert r.exit_code == 0 and "model:        toy" in r.output

    r = CliRunner().invoke(registry_cli.main, ["list", str(toy["reg"] / "toy")])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 5
    assert "champion" in r.output.splitlines()[2]  # version 2
    r = CliRunner().invoke(registry_cli.main, ["promote", str(toy["reg"] / "toy"), "1"])
    assert json.loads(r.output) == {"alias": "champion", "version": 1, "previous": 2}
    r = CliRunner().invoke(scorer_main, ["info", "--model", f"{toy['reg'] / 'toy'}@nope"])
    assert r.exit_code == 4 and "no alias 'nope'" in r.stderr


def test_out_mode_writes_a_model_directory_with_a_split(toy, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(finetune, "stderr_is_terminal", lambda: True)
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(toy["train"]), "--base", str(tiny_model), "--name", "toy", "--out", str(out),
        "--epochs", "1", "--full", "--learning-rate", "1e-3", "--validation-fraction", "0.2"],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "scorer_model.json").read_text())
    assert spec["lora_rank"] is None and spec["training"]["validation_data"]["rows"] == 80
    assert spec["training"]["train_data"]["rows"] == 320
    assert spec["training"]["data_report"]["validation"]["split_from_train"] == 0.2
    # the model's drift reference: its validation rows, as scored by the model it saved
    reference = spec["reference"]
    assert reference["data"]["validation"] == spec["training"]["validation_data"]
    assert reference["profile"]["rows"] == reference["profile"]["scored"] == 80
    found, _ = drift.find_reference(modeldir.read(out))
    assert found.source == "spec" and found.profile.labels == ["negative", "positive"]
    # on a terminal: a bar redrawn in place at every step (10 of them), which log lines overwrite
    assert r.stderr.count("\r\033[Kepoch 1 [") == 10 and "10/10 loss" in r.stderr
    assert "\r\033[Kepoch 1: validation" in r.stderr
    r = CliRunner().invoke(finetune.main, [
        "--train", str(toy["train"]), "--validation", str(toy["val"]), "--validation-fraction", "0.2",
        "--name", "toy", "--out", str(out)])
    assert r.exit_code == 2 and "not with --validation" in r.output


def test_weight_average_is_saved_and_leaves_the_training_path_alone(toy, tiny_model, tmp_path):
    """--ema-decay: the averaged weights are evaluated and saved, while training goes on from the raw
    weights, so those follow the same path (same validation figures) as a run without it."""
    def run(out, *extra):
        r = CliRunner().invoke(finetune.main, [
            "--train", str(toy["train"]), "--validation", str(toy["val"]), "--base", str(tiny_model),
            "--name", "toy", "--out", str(out), "--epochs", "3", "--full", "--learning-rate", "1e-3",
            *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        spec = json.loads((out / "scorer_model.json").read_text())
        return r, spec["training"], classifier.read_weights(out / "weights.safetensors")

    _, plain, plain_weights = run(tmp_path / "plain")
    r, averaged, averaged_weights = run(tmp_path / "averaged", "--ema-decay", "0.9")
    assert [h["validation_raw_weights"] for h in averaged["history"]] == \
        [h["validation"] for h in plain["history"]]
    assert [h["validation"] for h in averaged["history"]] != [h["validation"] for h in plain["history"]]
    assert "validation_raw_weights" not in plain["history"][0]
    assert "(averaged weights; raw weights " in r.stderr
    best = averaged["history"][averaged["best_epoch"] - 1]["validation"]
    saved = json.loads((tmp_path / "averaged" / "metrics.json").read_text())["validation"]
    assert saved["accuracy"] == best["accuracy"] and saved["macro_f1"] == best["macro_f1"]
    moved = max(float(np.max(np.abs(averaged_weights[k] - plain_weights[k]))) for k in plain_weights)
    assert moved > 1e-4


def test_killed_job_resumes_from_its_checkpoint(toy, tiny_model):
    cmd = [sys.executable, "-m", "jobs.finetune", "--train", str(toy["train"]), "--validation",
           str(toy["val"]), "--base", str(tiny_model), "--registry", str(toy["reg"]), "--name", "toy",
           "--epochs", "3", "--checkpoint-every", "4", "--batch-size", "8", "--ema-decay", "0.9"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    state, averages = None, False
    while time.time() < deadline and proc.poll() is None:
        found = list((toy["reg"] / "toy" / "_runs").glob("*/checkpoint/state.json"))
        try:  # a checkpoint is replaced by a rename: it may vanish between glob and read
            state = json.loads(found[0].read_text()) if found else state
            averages = averages or (found and found[0].with_name("averages.safetensors").is_file())
        except FileNotFoundError:
            continue
        if state and state["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state is not None and proc.returncode == -signal.SIGKILL, "no checkpoint before the kill"
    assert averages  # the weight average is part of the checkpoint
    assert not registry.versions(toy["reg"] / "toy")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from the checkpoint at epoch" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1 and summary["promoted"]
    assert not (toy["reg"] / "toy" / "_runs").exists()  # cleaned up after success


@pytest.mark.parametrize("train_rows, val_rows, extra, message", [
    ([], None, [], "no usable rows"),
    ([{"text": "a", "label": "x"}] * 10, [{"text": "b", "label": "x"}], [], "only one class"),
    (keyword_rows(40, 0), [{"text": "b", "label": "other"}], [], "outside"),
    (keyword_rows(40, 0, ("n", "p", "o")), keyword_rows(9, 1, ("n", "o", "p")) + [{"text": "z", "label": "q"}],
     [], "outside"),
    (keyword_rows(40, 0), None, ["--label-names", "a,b"], "outside ['a', 'b']"),
    ([{"text": "a", "y": 1}], None, [], "no label column 'label'"),
])
def test_bad_data_stops_the_job_with_a_clear_message(tmp_path, tiny_model, train_rows, val_rows,
                                                     extra, message):
    args = ["--train", str(write_jsonl(tmp_path / "t.jsonl", train_rows)), "--base", str(tiny_model),
            "--registry", str(tmp_path / "reg"), "--name", "x", *extra]
    if val_rows is not None:
        args += ["--validation", str(write_jsonl(tmp_path / "v.jsonl", val_rows))]
    r = CliRunner().invoke(finetune.main, args)
    assert r.exit_code == 6 or (message == "no usable rows" and r.exit_code in (3, 6)), r.output
    assert message in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not registry.versions(tmp_path / "reg" / "x")


def test_unseen_validation_label_is_fatal(tmp_path, tiny_model):
    names = ("n", "p", "o")
    train = [r for r in keyword_rows(60, 0, names) if r["label"] != "o"]
    args = ["--train", str(write_jsonl(tmp_path / "t.jsonl", train)),
            "--validation", str(write_jsonl(tmp_path / "v.jsonl", keyword_rows(9, 1, names))),
            "--label-names", "n,p,o", "--base", str(tiny_model), "--registry", str(tmp_path / "r"),
            "--name", "x"]
    r = CliRunner().invoke(finetune.main, args)
    assert r.exit_code == 6 and "validation labels never seen in training: ['o']" in r.stderr


def test_metrics_against_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = metrics.classification_metrics(y, probs, ["n", "p"])
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["p"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["roc_auc"] == 1.0  # every positive scores above every negative
    assert metrics.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == 0.875
    # ECE: confidences 0.9, 0.6 (wrong), 0.65, 0.8 each fall in a bin of their own
    assert m["ece"] == pytest.approx(0.25 * (0.1 + 0.6 + 0.35 + 0.2))


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_hugging_face_checkpoint_as_base(toy, tmp_path, model_type):
    from tests.conftest import make_hf_checkpoint

    ckpt = make_hf_checkpoint(tmp_path / model_type, model_type)
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(toy["train"]), "--validation", str(toy["val"]), "--base", str(ckpt),
        "--name", "hf", "--out", str(out), "--epochs", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "scorer_model.json").read_text())
    assert spec["base"] == {"kind": "hf_dir", "path": str(ckpt.resolve()), "sha256": {
        name: fileio.sha256_file(ckpt / name) for name in ("config.json", "model.safetensors")}}
    r = CliRunner().invoke(scorer_main, ["run", str(toy["val"]), "-o", str(tmp_path / "s"),
                                         "--model", str(out), "--output-prefix", "p_"])
    assert r.exit_code == 0, r.output
    assert "scored 100 rows" in r.stderr


def test_multi_label_job(tmp_path, tiny_model):
    rng = random.Random(0)
    rows = []
    for i in range(300):
        tags = [t for t in ("good", "long", "funny") if rng.random() < 0.5]
        words = rng.sample(WORDS, 5) + tags
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": tags})
    out = tmp_path / "ml"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(write_jsonl(tmp_path / "t.jsonl", rows)), "--base", str(tiny_model),
        "--name", "tags", "--out", str(out), "--multi-label", "--epochs", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "scorer_model.json").read_text())
    assert spec["problem_type"] == "multi_label" and spec["labels"] == ["funny", "good", "long"]
    assert {"subset_accuracy", "micro_f1", "macro_f1"} <= set(spec["metrics"]["validation"])
    s = CliRunner().invoke(scorer_main, ["run", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "s"),
                                         "--model", str(out), "--output-prefix", "p_"])
    assert s.exit_code == 0, s.output


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_p])
    overconfident = np.exp(logits * 2.5) / np.exp(logits * 2.5).sum(1, keepdims=True)
    t = metrics.fit_temperature(y, overconfident, multi_label=False)
    assert t == pytest.approx(2.5, rel=0.08)
    calibrated = metrics.with_temperature(overconfident, t, False)
    assert metrics.expected_calibration_error(y, calibrated) < metrics.expected_calibration_error(y, overconfident) / 3
    assert (calibrated.argmax(1) == overconfident.argmax(1)).all()


def test_calibrate_fits_one_window_and_windowed_texts_apart():
    """One-window texts over-confident (logits x 2.5), windowed ones under-confident (x 0.6):
    one temperature each recovers both, where one for all could not."""
    rng = np.random.default_rng(1)
    n = 4000
    logits = rng.normal(0, 2.0, size=(n, 2))
    y = np.array([rng.choice(2, p=np.exp(z) / np.exp(z).sum()) for z in logits])
    windows = np.where(np.arange(n) % 2 == 0, 1, 3)
    scale = np.where(windows > 1, 0.6, 2.5)[:, None]
    probs = np.exp(logits * scale) / np.exp(logits * scale).sum(1, keepdims=True)
    cal = metrics.calibrate(y, probs, windows, multi_label=False)
    assert cal.temperature == pytest.approx(2.5, rel=0.1)
    assert cal.windowed_temperature == pytest.approx(0.6, rel=0.1)
    assert cal.one_window.rows == cal.windowed.rows == n // 2 and cal.all.rows == n
    assert cal.all.ece_after < 0.03 < cal.all.ece_before
    one = metrics.fit_temperature(y, probs, False)
    assert cal.all.ece_after < metrics.expected_calibration_error(y, metrics.with_temperature(probs, one, False)) / 2
    few = metrics.calibrate(y[:150], probs[:150], windows[:150], multi_label=False)
    assert few.windowed_temperature is None and few.windowed.rows == 75  # under MIN_WINDOWED_ROWS


def test_the_job_reads_logits_from_probabilities_as_scoring_does():
    """Calibration (jobs.metrics.with_temperature) and the windows' combination at scoring
    (scorer.api.combine_windows) both go back from probabilities to logits; a confident model's
    near-0 probabilities (1e-20 is a float32 a softmax gives) must come out the same in both."""
    probs = np.array([[1e-20, 1.0], [0.3, 0.7], [1.0, 0.0]], np.float32)
    for multi_label in (False, True):
        one_window_each = combine_windows(probs, np.arange(3), 3, multi_label)
        np.testing.assert_allclose(metrics.with_temperature(probs, 1.0, multi_label), one_window_each,
                                   rtol=1e-5, atol=0)
    # T = 2 halves the logits: log(1e-20) / 2 -> 1e-10, by hand
    hot = metrics.with_temperature(probs, 2.0, multi_label=False)
    assert hot[0, 0] == pytest.approx(1e-10, rel=1e-4)
    assert hot[1, 1] == pytest.approx(np.sqrt(0.7) / (np.sqrt(0.3) + np.sqrt(0.7)), rel=1e-6)


def test_the_job_fits_and_records_a_temperature_that_scoring_applies(toy, tiny_model, tmp_path):
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(toy["train"]), "--validation", str(toy["val"]), "--base", str(tiny_model),
        "--name", "cal", "--out", str(out), "--epochs", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "scorer_model.json").read_text())
    calibration = spec["training"]["calibration"]
    assert spec["temperature"] == calibration["temperature"] != 1.0
    assert spec["windowed_temperature"] is calibration["windowed_temperature"] is None  # all short
    assert calibration["all"]["nll_after"] <= calibration["all"]["nll_before"]
    assert json.loads((out / "metrics.json").read_text())["calibration"] == calibration
    # scoring with the spec's temperature gives the validation metrics the job reported
    from jobs import evaluate

    e = CliRunner().invoke(evaluate.main, ["--data", str(toy["val"]), "--model", str(out)])
    measured = json.loads(e.stdout.strip().splitlines()[-1])
    assert measured["ece"] == pytest.approx(spec["metrics"]["validation"]["ece"], abs=1e-4)


def test_the_job_calibrates_windowed_texts_apart_and_scoring_agrees(tiny_model, tmp_path, monkeypatch):
    """Validation with short texts and texts over --max-length: two temperatures in the spec, and
    scoring the validation set (jobs.evaluate, the Scorer) gives the job's own figures."""
    monkeypatch.setattr(metrics, "MIN_WINDOWED_ROWS", 40)
    short = keyword_rows(60, 1)
    long = [{"text": " ".join([r["text"]] + random.Random(i).sample(WORDS, 12)), "label": r["label"]}
            for i, r in enumerate(keyword_rows(60, 2))]
    val = write_jsonl(tmp_path / "val.jsonl", short + long)
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(300, 0))
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", str(train), "--validation", str(val), "--base", str(tiny_model), "--name", "w",
        "--out", str(out), "--epochs", "1", "--max-length", "12"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    spec = json.loads((out / "scorer_model.json").read_text())
    calibration = spec["training"]["calibration"]
    assert spec["windowed_temperature"] == calibration["windowed_temperature"] is not None
    assert calibration["windowed"]["rows"] == 60 and calibration["one_window"]["rows"] == 60
    from jobs import evaluate

    e = CliRunner().invoke(evaluate.main, ["--data", str(val), "--model", str(out)])
    measured = json.loads(e.stdout.strip().splitlines()[-1])
    assert measured["ece"] == pytest.approx(spec["metrics"]["validation"]["ece"], abs=1e-4)
    assert measured["accuracy"] == pytest.approx(spec["metrics"]["validation"]["accuracy"])


def test_the_reference_has_a_part_per_training_source(tiny_model, tmp_path, monkeypatch):
    """Two --train files, validation split off them: the spec's reference profiles the whole
    validation set and each source's rows apart (scorer.drift compares a run with the nearest)."""
    from jobs import train as train_mod

    monkeypatch.setattr(train_mod, "MIN_REFERENCE_PART_ROWS", 20)
    short = write_jsonl(tmp_path / "short.jsonl", keyword_rows(200, 0))
    long = write_jsonl(tmp_path / "long.jsonl", [
        {"text": " ".join([r["text"]] + random.Random(i).sample(WORDS, 10)), "label": r["label"]}
        for i, r in enumerate(keyword_rows(200, 5))])
    out = tmp_path / "m"
    r = CliRunner().invoke(finetune.main, [
        "--train", f"phrases={short}", "--train", str(long), "--base", str(tiny_model), "--name", "p",
        "--out", str(out), "--epochs", "1", "--validation-fraction", "0.2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    reference = json.loads((out / "scorer_model.json").read_text())["reference"]
    parts = reference["parts"]
    assert [p["name"] for p in parts] == ["phrases", "long"]  # named, and after its file
    rows = [p["data"]["validation"]["rows"] for p in parts]
    assert all(30 <= n <= 50 for n in rows)  # a fifth of each source's 200 (whole texts, by group)
    assert sum(rows) == reference["data"]["validation"]["rows"] == reference["profile"]["rows"]
    lengths = [np.average(np.arange(len(p["profile"]["length_hist"])), weights=p["profile"]["length_hist"])
               for p in parts]
    assert lengths[0] < lengths[1]  # the long source's part has the longer texts
