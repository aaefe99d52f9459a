"""Fine-tuning from a Hugging Face classifier, and `scorer export` back to one that transformers
loads with the same probabilities (transformers + PyTorch in .venv-hfref, as in test_hf.py)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from jobs import base as job_base
from jobs import finetune
from scorer import Scorer, classifier, modelspec
from scorer.cli import main
from scorer.heads import HEAD_DENSE, HEAD_NAME
from scorer.hf import checkpoint, convert
from tests.conftest import hf_reference_scores

TOLERANCE = 1e-5
POSITIVE = ["a gorgeous witty film", "a delight", "moving and funny", "great acting", "superb"]
NEGATIVE = ["dull and lifeless", "a tedious mess", "boring plot", "awful acting", "a waste of time"]


def labelled(path, names, n=120, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            label = rng.randrange(len(names))
            words = rng.choice(POSITIVE if label % 2 else NEGATIVE)
            f.write(json.dumps({"text": f"{words} {rng.randrange(1000)}", "label": names[label]}) + "\n")
    return path


def finetune_from(base, out, names, *extra):
    train = labelled(out.parent / f"{out.name}.jsonl", names)
    r = CliRunner().invoke(finetune.main, [
        "--train", str(train), "--base", str(base), "--name", out.name, "--out", str(out),
        "--epochs", "1", "--max-length", "64", *extra], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out, r


def model_probabilities(model, case, rows):
    """The Keras model's probabilities for the case's texts `rows` from transformers' token ids."""
    length = max(len(case.token_ids[i]) for i in rows)
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for j, i in enumerate(rows):
        ids[j, : len(case.token_ids[i])] = case.token_ids[i]
        mask[j, : len(case.token_ids[i])] = 1
    logits = np.asarray(model({"token_ids": ids, "padding_mask": mask}, training=False), np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def lora_spec(case, labels):
    ckpt = checkpoint.read(case.path)
    base = {"kind": "hf_dir", "path": str(case.path), "sha256": ckpt.checksums}
    spec = modelspec.ModelSpec(name="x", labels=labels, base=base, pooling="cls", lora_rank=4,
                              head_activation=convert.head_activation(ckpt))
    return ckpt, spec


def test_finetune_starts_from_the_checkpoints_head_when_the_labels_match(hf_reference):
    case = hf_reference["distilbert"]
    ckpt, spec = lora_spec(case, list(case.labels))
    model = classifier.build_from_spec(spec)
    message = job_base.start_from_checkpoint(model, spec, ckpt)
    assert message == "head: DistilBertForSequenceClassification's, labels ['negative', 'positive']"
    # LoRA starts at zero, so before training the model is the checkpoint, head and all
    rows = [0, 2, 3]
    np.testing.assert_allclose(model_probabilities(model, case, rows), case.probabilities[rows],
                               atol=TOLERANCE, rtol=0)


def test_finetune_keeps_the_dense_layer_but_starts_a_new_classifier_for_other_labels(hf_reference):
    case = hf_reference["roberta"]
    ckpt, spec = lora_spec(case, ["x", "y", "z"])
    model = classifier.build_from_spec(spec)
    message = job_base.start_from_checkpoint(model, spec, ckpt)
    assert "a new classifier layer" in message
    tensors = ckpt.tensors()
    np.testing.assert_array_equal(np.asarray(model.get_layer(HEAD_DENSE).kernel),
                                  tensors["classifier.dense.weight"].T)
    assert model.get_layer(HEAD_NAME).kernel.shape == (32, 3)


@pytest.fixture(scope="module")
def lora_from_distilbert(hf_reference, tmp_path_factory):
    case = hf_reference["distilbert"]
    return finetune_from(case.path, tmp_path_factory.mktemp("ft") / "lora", list(case.labels))


def test_finetune_cli_from_a_checkpoint_records_it(hf_reference, lora_from_distilbert, tmp_path):
    out, r = lora_from_distilbert
    assert "head: DistilBertForSequenceClassification's, labels ['negative', 'positive']" in r.stderr
    spec = json.loads((out / "scorer_model.json").read_text())
    case = hf_reference["distilbert"]
    assert spec["base"] == {"kind": "hf_dir", "path": str(case.path.resolve()),
                            "sha256": checkpoint.read(case.path).checksums}
    assert spec["pooling"] == "cls" and spec["head_activation"] == "relu" and spec["lora_rank"] == 8
    record = spec["training"]["base_checkpoint"]
    assert record["architecture"] == "DistilBertForSequenceClassification"
    assert record["checksums"] == checkpoint.read(case.path).checksums
    probs, errors = Scorer.load(out).probabilities(["a gorgeous witty film", "a tedious mess"])
    assert errors == [None, None] and probs[0, 1] > probs[1, 1]


def export(model, out):
    return CliRunner().invoke(main, ["export", str(model), str(out)])


def assert_transformers_agrees(model_dir, exported, texts, work):
    ref = hf_reference_scores({"exported": exported}, tuple(texts), work)["exported"]
    ours = Scorer.load(model_dir, long_text="truncate")  # as transformers scores a long text
    np.testing.assert_allclose(ours.probabilities(list(texts))[0], ref.probabilities,
                               atol=TOLERANCE, rtol=0)
    assert list(ref.labels) == ours.spec.labels and ref.max_length == ours.spec.max_length
    return ref


def test_export_of_a_lora_model_loads_in_transformers_with_our_probabilities(
        hf_reference, lora_from_distilbert, tmp_path):
    model, _ = lora_from_distilbert
    r = export(model, tmp_path / "exported")
    assert r.exit_code == 0, r.output
    assert "exported DistilBertForSequenceClassification (2 labels)" in r.output
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["problem_type"] == "single_label_classification"
    ref = assert_transformers_agrees(model, tmp_path / "exported", hf_reference["distilbert"].texts,
                                     tmp_path / "ref")
    # LoRA was merged: the exported model is not the checkpoint it started from
    assert np.abs(ref.probabilities - hf_reference["distilbert"].probabilities).max() > 1e-4


def test_export_folds_the_models_temperature_into_the_classifier(hf_reference, lora_from_distilbert,
                                                                 tmp_path):
    model, _ = lora_from_distilbert
    calibrated = tmp_path / "calibrated"
    shutil.copytree(model, calibrated)
    spec = json.loads((calibrated / "scorer_model.json").read_text())
    spec["temperature"] = 1.7
    (calibrated / "scorer_model.json").write_text(json.dumps(spec))
    assert export(calibrated, tmp_path / "exported").exit_code == 0
    assert_transformers_agrees(calibrated, tmp_path / "exported", hf_reference["distilbert"].texts[:4],
                               tmp_path / "ref")


def test_export_of_a_full_fine_tune_with_berts_pooler(hf_reference, tmp_path):
    """An encoder-only BERT base (the ref checkpoint without its head), --full --pooling pooled:
    exported as BertForSequenceClassification with the pooler the model trained."""
    from safetensors.numpy import load_file, save_file

    case = hf_reference["bert"]
    encoder = tmp_path / "bert-encoder"
    encoder.mkdir()
    for f in case.path.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            (encoder / f.name).write_bytes(f.read_bytes())
    config = json.loads((case.path / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (encoder / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(case.path / "model.safetensors"))
    save_file({k.removeprefix("bert."): v for k, v in tensors.items() if k.startswith("bert.")},
              str(encoder / "model.safetensors"), metadata={"format": "pt"})
    model, _ = finetune_from(encoder, tmp_path / "full", ["sad", "happy"], "--full", "--pooling", "pooled")
    assert export(model, tmp_path / "exported").exit_code == 0
    assert_transformers_agrees(model, tmp_path / "exported", case.texts, tmp_path / "ref")


def test_export_refuses_mean_pooling_in_one_line_naming_the_pooling_to_train_with(tmp_path):
    r = export("default", tmp_path / "x")
    assert r.exit_code == 4
    assert r.output.strip().startswith("error: ") and "\n" not in r.output.strip()
    assert "mean pooling" in r.output and "--pooling pooled" in r.output
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_non_empty_directory(hf_reference, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("mine")
    r = export(hf_reference["bert"].path, tmp_path / "x")
    assert r.exit_code == 5 and "not empty" in r.output
    assert (tmp_path / "x" / "keep").read_text() == "mine"
