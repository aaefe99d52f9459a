"""Hugging Face classifier checkpoints scored as they are, checked against transformers itself.

The reference (tests/conftest.py `hf_reference`) is transformers + PyTorch CPU in .venv-hfref:
tiny seeded random checkpoints of every supported architecture, and transformers' token ids and
probabilities for texts short and far over the max length. Tolerance: 1e-5 absolute on
probabilities (float32 arithmetic in two frameworks; measured differences are ~1e-7).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer import Scorer, modeldir
from scorer.cli import main
from scorer.errors import ModelError
from tests.conftest import HF_REFERENCE_CASES, hf_reference_scores

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def loaded(hf_reference):
    # transformers truncates a long text: the reference is compared with --long-text truncate
    return {name: Scorer.load(case.path, long_text="truncate") for name, case in hf_reference.items()}


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_probabilities_equal_transformers(hf_reference, loaded, name):
    case, scorer_ = hf_reference[name], loaded[name]
    probs, errors = scorer_.probabilities(list(case.texts))
    assert errors == [None] * len(case.texts)
    np.testing.assert_allclose(probs, case.probabilities, atol=TOLERANCE, rtol=0)
    # and the logits, up to softmax's constant: near-saturated probabilities would hide a drift
    np.testing.assert_allclose(_logits(probs, case.multi_label), _logits(case.probabilities, case.multi_label),
                               atol=1e-3, rtol=0)
    assert scorer_.spec.labels == list(case.labels)
    assert scorer_.spec.max_length == case.max_length
    assert scorer_.spec.problem_type == ("multi_label" if case.multi_label else "single_label")


def _logits(probs, multi_label: bool) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), 1e-30, 1)
    if multi_label:
        return np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))
    return np.log(p) - np.log(p).mean(axis=1, keepdims=True)


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_token_ids_equal_transformers_on_the_rust_tokenizer(hf_reference, loaded, name):
    case, scorer_ = hf_reference[name], loaded[name]
    ids, lengths, truncated = scorer_.encoder.tokenize(list(case.texts))
    assert [tuple(i) for i in ids] == list(case.token_ids)
    assert truncated.any() and lengths.max() == case.max_length
    assert type(scorer_.encoder.tokenizer).__module__.startswith("tokenizers")


def test_packing_only_where_it_is_proven(hf_reference, loaded):
    """BERT packs several texts a row (and its probabilities above are from packed rows: the short
    texts); every other architecture takes the padded bucket path."""
    packed = {name for name, s in loaded.items() if s.encoder.pack_length}
    assert packed == {"bert", "bert_vocab_only", "bert_multilabel", "bert_no_labels"}
    case = hf_reference["bert"]
    unpacked = Scorer.load(case.path, packing=False, long_text="truncate").probabilities(list(case.texts))[0]
    np.testing.assert_allclose(unpacked, case.probabilities, atol=TOLERANCE, rtol=0)


def test_labels_and_problem_type_come_from_the_config(hf_reference, loaded):
    assert loaded["bert_no_labels"].spec.labels == ["LABEL_0", "LABEL_1"]
    multi = hf_reference["bert_multilabel"]
    predictions = loaded["bert_multilabel"].score(list(multi.texts))
    for p, row in zip(predictions, multi.probabilities):
        assert p.labels == [n for n, v in zip(multi.labels, row) if v >= 0.5]


def test_sharded_safetensors_score_the_same(hf_reference, tmp_path):
    from safetensors.numpy import load_file, save_file

    case = hf_reference["roberta"]
    sharded = tmp_path / "sharded"
    shutil.copytree(case.path, sharded)
    tensors = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(sharded / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    probs = Scorer.load(sharded, long_text="truncate").probabilities(list(case.texts))[0]
    np.testing.assert_allclose(probs, case.probabilities, atol=TOLERANCE, rtol=0)
    assert set(modeldir.read(sharded).id.checksums) == {"config.json", *set(weight_map.values())}


# ----------------------------------------------------------------------------- refused, exit 4

def _copy(case, tmp_path, name="ckpt"):
    out = tmp_path / name
    shutil.copytree(case.path, out)
    return out


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _info_fails(path, *expected):
    result = CliRunner().invoke(main, ["info", "--model", str(path)])
    assert result.exit_code == 4, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line
    for text in expected:
        assert text in line
    return line


def test_pickled_weights_only_are_refused_with_how_to_convert(hf_reference, tmp_path):
    path = _copy(hf_reference["bert"], tmp_path)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    _info_fails(path, "pytorch_model.bin", "safetensors", "save_pretrained")


def test_custom_code_is_refused(hf_reference, tmp_path):
    path = _copy(hf_reference["bert"], tmp_path)
    _edit_config(path, auto_map={"AutoModelForSequenceClassification": "modeling_x.Model"})
    _info_fails(path, "auto_map")
    path = _copy(hf_reference["bert"], tmp_path, "tok")
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.Tok", None]}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="auto_map"):
        Scorer.load(path)


@pytest.mark.parametrize("model_type,architecture", [
    ("electra", "ElectraForSequenceClassification"), ("modernbert", "ModernBertForSequenceClassification"),
    ("bert", "BertForTokenClassification"), ("t5", "T5ForSequenceClassification")])
def test_other_architectures_are_refused_naming_what_is_supported(hf_reference, tmp_path,
                                                                  model_type, architecture):
    path = _copy(hf_reference["bert"], tmp_path)
    _edit_config(path, model_type=model_type, architectures=[architecture])
    _info_fails(path, architecture, "BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT and DeBERTa")


@pytest.mark.parametrize("change,expected", [
    ({"hidden_act": "quick_gelu"}, "hidden_act 'quick_gelu'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"is_decoder": True}, "decoder"),
    ({"problem_type": "regression"}, "regression")])
def test_config_fields_that_change_the_arithmetic_are_refused(hf_reference, tmp_path, change, expected):
    path = _copy(hf_reference["bert"], tmp_path)
    _edit_config(path, **change)
    _info_fails(path, expected)


def test_a_tensor_the_conversion_does_not_use_is_refused(hf_reference, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = _copy(hf_reference["bert"], tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["bert.encoder.layer.0.attention.self.distance_embedding.weight"] = np.zeros((3, 4), np.float32)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="does not use"):
        Scorer.load(path)


# ----------------------------------------------------------------------------- where a model is accepted

def test_scorer_info_shows_a_checkpoint(hf_reference):
    case = hf_reference["distilbert"]
    result = CliRunner().invoke(main, ["info", "--model", str(case.path)])
    assert result.exit_code == 0, result.output
    assert "DistilBertForSequenceClassification (distilbert)" in result.output
    assert "first token -> dense + relu -> classifier" in result.output
    assert f"max length:   {case.max_length} tokens" in result.output
    assert "model.safetensors: " in result.output and "config.json: " in result.output


def test_scorer_run_scores_a_checkpoint_and_identifies_it(hf_reference, tmp_path):
    import pyarrow as pa

    case = hf_reference["xlm_roberta"]
    pq.write_table(pa.table({"text": list(case.texts)}), tmp_path / "in.parquet")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"),
                                       "--model", str(case.path), "--long-text", "truncate"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out" / "part-00000-00000.parquet")
    np.testing.assert_allclose(np.array(table.column("probabilities").to_pylist()),
                               case.probabilities, atol=TOLERANCE, rtol=0)
    assert table.column("label").to_pylist() == [case.labels[i] for i in case.probabilities.argmax(1)]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    model = manifest["model"]
    assert model["architecture"] == "XLMRobertaForSequenceClassification"
    assert model["labels"] == list(case.labels)
    assert set(model["checksums"]) == {"config.json", "model.safetensors"}
    metadata = pq.read_metadata(tmp_path / "out" / "part-00000-00000.parquet").metadata
    assert b"XLMRobertaForSequenceClassification" in metadata[b"scorer.model"]


def test_max_length_option_caps_a_checkpoints_length(hf_reference):
    case = hf_reference["bert"]
    s = Scorer.load(case.path, max_length=16)
    ids, lengths, truncated = s.encoder.tokenize(list(case.texts))
    assert lengths.max() == 16 and truncated.sum() > truncated.size // 3


def test_follow_scores_landed_files_with_a_checkpoint(hf_reference, tmp_path):
    case = hf_reference["albert"]
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.txt").write_text("\n".join(case.texts[:4]) + "\n")
    result = CliRunner().invoke(main, ["run", "--follow", str(landing), "--once", "-o",
                                       str(tmp_path / "out"), "--model", str(case.path),
                                       "--settle-seconds", "0"])
    assert result.exit_code == 0, result.output
    parts = json.loads((tmp_path / "out" / "_manifest.json").read_text())["parts"]
    assert len(parts) == 1, parts
    table = pq.read_table(tmp_path / "out" / parts[0]["file"])
    np.testing.assert_allclose(np.array(table.column("probabilities").to_pylist()),
                               case.probabilities[:4], atol=TOLERANCE, rtol=0)


def test_evaluate_measures_a_checkpoint(hf_reference, loaded, tmp_path):
    from jobs import evaluate

    case = hf_reference["distilbert"]
    data = tmp_path / "labelled.jsonl"
    predicted = case.probabilities.argmax(axis=1)
    cut = loaded["distilbert"].encoder.tokenize(list(case.texts))[2]
    short = np.flatnonzero(~cut)  # one window each: scored as transformers scores them
    assert 6 <= len(short) < len(case.texts)
    data.write_text("".join(json.dumps({"text": case.texts[i], "label": case.labels[predicted[i]]}) + "\n"
                            for i in short))
    result = CliRunner().invoke(evaluate.main, ["--data", str(data), "--model", str(case.path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] == 1.0


@pytest.mark.parametrize("name", ["roberta", "albert", "deberta_v3"])
def test_windows_carry_each_architectures_special_tokens(hf_reference, name):
    case = hf_reference[name]
    s = Scorer.load(case.path, long_text="window")
    long_text = case.texts[-1]
    ids, text_of, windows, truncated = s.encoder.tokenize_windows([long_text])
    first = case.token_ids[-1]  # transformers' truncated encoding = our first window
    assert tuple(ids[0]) == first and windows[0] > 2
    for window in ids:
        assert window[0] == first[0] and window[-1] == first[-1] and len(window) <= case.max_length
    probs, _ = s.probabilities([long_text, case.texts[0]])
    np.testing.assert_allclose(probs[1], case.probabilities[0], atol=TOLERANCE, rtol=0)
