"""Model stage: the directory format, strict loading, device policy, compiled inference."""

import json
import shutil

import numpy as np
import pytest

from scorer import Scorer, classifier, fileio, modeldir
from scorer.errors import ModelError
from scorer.heads import HEAD_NAME
from tests.conftest import SAMPLE, make_tiny_model


def copy_model(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_spec_round_trips_and_records_checksums(tiny_model):
    md = modeldir.read(tiny_model)
    assert md.spec.labels == ["negative", "positive"]
    assert set(md.spec.checksums) == {"weights.safetensors", "tokenizer.json"}
    assert md.id.name == "tiny" and len(md.id.checksum) == 64


def test_default_model_is_packaged_and_small():
    md = modeldir.read(None)
    assert md.spec.base == {"kind": "packaged", "id": "all-minilm-l6-v2"}
    assert md.spec.lora_rank and md.spec.tokenizer_file is None
    size = sum(f.stat().st_size for f in md.path.iterdir())
    assert size < 5 * 2**20


def test_default_model_classifies_sst2_dev_sentences(default_scorer):
    """The packaged model as scoring loads it (base encoder, adapter, head, temperature), on 300
    SST-2 dev sentences it was never trained on: measured 0.88-0.89 on the whole dev set."""
    rows = [json.loads(line) for line in (SAMPLE / "sst2_dev_sample.jsonl").read_text().splitlines()]
    predictions = default_scorer.score([row["text"] for row in rows])
    assert all(p.error is None for p in predictions)
    accuracy = np.mean([p.label == row["gold_label"] for p, row in zip(predictions, rows)])
    assert accuracy >= 0.85, accuracy


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "weights.safetensors").write_bytes(b"\0" * 100), "does not match"),
    (lambda d: (d / "weights.safetensors").unlink(), "missing weights.safetensors"),
    (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer.json"),
    (lambda d: (d / "scorer_model.json").unlink(), "no scorer_model.json"),
    (lambda d: (d / "scorer_model.json").write_text("{"), "not readable JSON"),
    (lambda d: _edit_spec(d, labels=[]), "'labels' must be"),
    (lambda d: _edit_spec(d, labels=["a", "a"]), "duplicate"),
    (lambda d: _edit_spec(d, pooling="max"), "'pooling'"),
    (lambda d: _edit_spec(d, checksums={}), "no checksum recorded"),
    (lambda d: _edit_spec(d, format_version=99), "newer than this"),
])
def test_broken_model_directories_fail_before_loading(tiny_model, tmp_path, damage, message):
    d = copy_model(tiny_model, tmp_path)
    damage(d)
    with pytest.raises(ModelError, match=message):
        Scorer.load(d)


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Scorer.load(tmp_path / "nope")


def test_weights_of_the_wrong_model_are_refused(tiny_model, tiny_multilabel_model, tmp_path):
    d = copy_model(tiny_model, tmp_path)
    shutil.copy(tiny_multilabel_model / "weights.safetensors", d / "weights.safetensors")
    spec = json.loads((d / "scorer_model.json").read_text())
    spec["checksums"]["weights.safetensors"] = fileio.sha256_file(d / "weights.safetensors")
    (d / "scorer_model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="shape"):
        Scorer.load(d)


def _edit_spec(d, **changes):
    spec = json.loads((d / "scorer_model.json").read_text())
    spec.update(changes)
    (d / "scorer_model.json").write_text(json.dumps(spec))


def test_device_policy():
    assert classifier.choose_device(gpus=[]) == classifier.DevicePolicy("/CPU:0", "float32")
    gpu = classifier.choose_device(gpus=["fake-gpu"])
    assert gpu == classifier.DevicePolicy("/GPU:0", "mixed_float16") and gpu.mixed
    assert classifier.choose_device(gpus=["g"], precision="float32").dtype == "float32"
    with pytest.raises(ValueError):
        classifier.choose_device(gpus=[], precision="int4")


def test_mixed_precision_path_gives_float32_probabilities(tiny_model):
    """The GPU code path (a mixed policy) run on the CPU: backbone in float16, head and output
    float32, the same labels as float32 and probabilities close to them."""
    texts = ["a gorgeous , witty , seductive movie .", "dull and tedious", "fine"]
    full = Scorer.load(tiny_model, precision="float32")
    mixed = Scorer.load(tiny_model, precision="mixed_float16")
    layer_dtypes = {l.dtype_policy.name for l in mixed.predictor.model.layers if l.weights}
    assert "mixed_float16" in layer_dtypes
    head = mixed.predictor.model.get_layer(HEAD_NAME)
    assert head.compute_dtype == "float32"
    p_full, _ = full.probabilities(texts)
    p_mixed, _ = mixed.probabilities(texts)
    assert p_mixed.dtype == np.float32
    np.testing.assert_allclose(p_mixed, p_full, atol=2e-2)
    np.testing.assert_allclose(p_mixed.sum(1), 1.0, atol=1e-5)


def test_batched_scores_equal_one_by_one_scores_in_input_order(tiny_scorer):
    texts = ["short", "a somewhat longer sentence about a film", "x " * 40, "mid length text here",
             "ok", "the plot , such as it is , is a mess of a thousand tiny pieces"] * 5
    together, _ = tiny_scorer.probabilities(texts)
    for i, t in enumerate(texts[:6]):
        alone, _ = tiny_scorer.probabilities([t])
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)
    np.testing.assert_allclose(together[:6], together[6:12], atol=1e-6)


def test_compiled_shapes_stay_within_the_encoders_set(tiny_scorer):
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 200, size=400)]
    tiny_scorer.probabilities(texts)
    assert tiny_scorer.predictor.shapes_seen <= set(tiny_scorer.encoder.shapes())


def test_score_api_returns_labels_probabilities_and_errors(tiny_scorer):
    preds = tiny_scorer.score(["a fine film", "", None, "  "])
    ok = preds[0]
    assert ok.label in ("negative", "positive") and ok.error is None
    assert ok.label == max(ok.probabilities, key=ok.probabilities.get)
    assert abs(sum(ok.probabilities.values()) - 1) < 1e-5 and ok.score == ok.probabilities[ok.label]
    assert [p.error for p in preds[1:]] == ["empty text", "null text", "empty text"]
    assert all(p.label is None and p.probabilities is None for p in preds[1:])


def test_multi_label_outputs_labels_above_threshold(tiny_multilabel_model):
    s = Scorer.load(tiny_multilabel_model)
    table = s.score_columns(["one text", "another one", ""])
    rows = table.to_pylist()
    for row in rows[:2]:
        assert row["labels"] == [n for n, p in zip("abc", row["probabilities"]) if p >= 0.5]
        assert all(0 <= p <= 1 for p in row["probabilities"])
    assert rows[2]["labels"] is None and rows[2]["error"] == "empty text"


def test_model_that_needs_all_weights_refuses_a_partial_file(tmp_path):
    d = make_tiny_model(tmp_path / "m")
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(d / "weights.safetensors"))
    tensors.pop("token_embedding/embeddings")
    save_file(tensors, str(d / "weights.safetensors"))
    _edit_spec(d, checksums={"weights.safetensors": fileio.sha256_file(d / "weights.safetensors"),
                             "tokenizer.json": fileio.sha256_file(d / "tokenizer.json")})
    with pytest.raises(ModelError, match="no weights for"):
        Scorer.load(d)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooled"])
def test_packed_rows_give_the_same_probabilities_as_one_text_a_row(tmp_path, pooling):
    """Packing several texts into a row (own positions, attention within the text, pooling per
    text) must not change any text's result."""
    d = make_tiny_model(tmp_path / "m")
    _edit_spec(d, pooling=pooling)
    texts = ["a", "short one", "the film was a quiet , funny and moving story " * 3,
             "x " * 150, "another short text", "ok", "mid sized sentence about a movie plot"] * 7
    packed = Scorer.load(d, packing=True)
    plain = Scorer.load(d, packing=False)
    assert packed.encoder.pack_length == 64 and plain.encoder.pack_length is None
    p_packed, _ = packed.probabilities(texts)
    p_plain, _ = plain.probabilities(texts)
    np.testing.assert_allclose(p_packed, p_plain, atol=2e-5)
    chunk = packed.encoder.encode(texts)
    assert any(b.slots is not None and len(b.rows) > b.token_ids.shape[0] for b in chunk.batches)
    assert chunk.padded_tokens < plain.encoder.encode(texts).padded_tokens
