"""The Hugging Face reference itself (tests/hf_reference/, the `hf_reference` fixture): the tiny
checkpoints are what they claim to be, transformers' outputs are consistent, and the details a
converter can get wrong (layer_norm_eps, the activation, RoBERTa's token-type row) do move the
reference's output, so that a test comparing against it can catch them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests import conftest
from tests.conftest import HF_REFERENCE_CASES, HF_REFERENCE_TEXTS, hf_reference_scores

ARCHITECTURES = {
    "bert": "BertForSequenceClassification",
    "bert_vocab_only": "BertForSequenceClassification",
    "bert_multilabel": "BertForSequenceClassification",
    "bert_no_labels": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlm_roberta": "XLMRobertaForSequenceClassification",
    "albert": "AlbertForSequenceClassification",
    "deberta_v3": "DebertaV2ForSequenceClassification",
}
# The tokenizer files each case has, and those it must not have.
TOKENIZER_FILES = {
    "bert": ({"tokenizer.json", "vocab.txt"}, set()),
    "bert_vocab_only": ({"vocab.txt", "tokenizer_config.json"}, {"tokenizer.json"}),
    "bert_multilabel": ({"tokenizer.json"}, set()),
    "bert_no_labels": ({"tokenizer.json"}, set()),
    "distilbert": ({"tokenizer.json", "vocab.txt"}, set()),
    "roberta": ({"vocab.json", "merges.txt", "tokenizer.json"}, set()),
    "xlm_roberta": ({"tokenizer.json", "sentencepiece.bpe.model"}, set()),
    "albert": ({"spiece.model", "tokenizer_config.json"}, {"tokenizer.json"}),
    "deberta_v3": ({"tokenizer.json", "spm.model"}, set()),
}
LONG = [i for i, text in enumerate(HF_REFERENCE_TEXTS) if len(text) > 1000]


def config_of(case) -> dict:
    return json.loads((case.path / "config.json").read_text())


def test_missing_reference_environment_fails_and_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "HF_REFERENCE_PYTHON", tmp_path / "no-venv" / "bin" / "python")
    with pytest.raises(pytest.fail.Exception, match=r"run `\./install\.sh test`"):
        conftest.run_hf_reference("score.py")


def test_every_case_is_made(hf_reference):
    assert sorted(hf_reference) == sorted(HF_REFERENCE_CASES) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_checkpoint_has_its_architecture_and_files(hf_reference, name):
    case = hf_reference[name]
    files = {p.name for p in case.path.iterdir()}
    assert config_of(case)["architectures"] == [ARCHITECTURES[name]]
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= files
    assert "pytorch_model.bin" not in files
    present, absent = TOKENIZER_FILES[name]
    assert present <= files, files
    assert not absent & files, files


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_every_parameter_is_perturbed(hf_reference, name):
    """No tensor is left at a constant init value (LayerNorm weights of 1, biases of 0)."""
    tensors = load_file(str(hf_reference[name].path / "model.safetensors"))
    constant = [key for key, value in tensors.items() if np.ptp(value) == 0]
    assert constant == []


def test_configs_are_the_ones_the_cases_are_about(hf_reference):
    bert = config_of(hf_reference["bert"])
    assert (bert["hidden_size"], bert["num_hidden_layers"], bert["num_attention_heads"],
            bert["intermediate_size"], bert["hidden_act"], bert["layer_norm_eps"],
            bert["type_vocab_size"]) == (32, 2, 2, 37, "gelu", 1e-7, 2)
    roberta = config_of(hf_reference["roberta"])
    assert (roberta["pad_token_id"], roberta["max_position_embeddings"], roberta["type_vocab_size"],
            roberta["hidden_act"], roberta["layer_norm_eps"]) == (1, 66, 1, "gelu_new", 1e-5)
    roberta_tensors = load_file(str(hf_reference["roberta"].path / "model.safetensors"))
    assert np.abs(roberta_tensors["roberta.embeddings.token_type_embeddings.weight"]).max() > 0
    albert = config_of(hf_reference["albert"])
    assert (albert["embedding_size"], albert["hidden_size"]) == (16, 32)
    deberta = config_of(hf_reference["deberta_v3"])
    assert {k: deberta[k] for k in ("relative_attention", "position_buckets", "max_relative_positions",
                                    "pos_att_type", "norm_rel_ebd", "share_att_key",
                                    "position_biased_input", "type_vocab_size", "pooler_hidden_act",
                                    "layer_norm_eps")} == {
        "relative_attention": True, "position_buckets": 8, "max_relative_positions": -1,
        "pos_att_type": ["p2c", "c2p"], "norm_rel_ebd": "layer_norm", "share_att_key": True,
        "position_biased_input": False, "type_vocab_size": 0, "pooler_hidden_act": "gelu",
        "layer_norm_eps": 1e-7}
    vocab_only = json.loads((hf_reference["bert_vocab_only"].path / "tokenizer_config.json").read_text())
    assert vocab_only["do_lower_case"] is True
    assert vocab_only["model_max_length"] == 40 < config_of(hf_reference["bert_vocab_only"])["max_position_embeddings"]


def test_labels_and_problem_types(hf_reference):
    assert hf_reference["bert"].labels == ("sad", "meh", "happy")
    assert hf_reference["bert_multilabel"].labels == ("toxic", "obscene", "threat", "insult")
    assert hf_reference["bert_multilabel"].problem_type == "multi_label_classification"
    assert hf_reference["bert_multilabel"].multi_label
    # transformers 5 leaves the default labels out of config.json; they read as LABEL_0, LABEL_1
    assert "id2label" not in config_of(hf_reference["bert_no_labels"])
    assert hf_reference["bert_no_labels"].labels == ("LABEL_0", "LABEL_1")
    assert not any(hf_reference[name].multi_label for name in HF_REFERENCE_CASES if name != "bert_multilabel")


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_probabilities_are_the_logits_activation(hf_reference, name):
    case = hf_reference[name]
    assert case.logits.shape == case.probabilities.shape == (len(HF_REFERENCE_TEXTS), len(case.labels))
    if case.multi_label:
        expected = 1 / (1 + np.exp(-case.logits))
    else:
        exp = np.exp(case.logits - case.logits.max(axis=1, keepdims=True))
        expected = exp / exp.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(case.probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(case.probabilities, expected, atol=1e-6)
    # the texts differ, and so do their outputs (a model that ignores its input would not)
    assert np.ptp(case.probabilities, axis=0).max() > 0.05


MAX_LENGTHS = {name: 64 for name in HF_REFERENCE_CASES} | {"bert_vocab_only": 40}


@pytest.mark.parametrize("name", HF_REFERENCE_CASES)
def test_long_texts_are_truncated_to_max_length(hf_reference, name):
    case = hf_reference[name]
    assert case.max_length == MAX_LENGTHS[name]
    lengths = [len(ids) for ids in case.token_ids]
    assert all(2 < n <= case.max_length for n in lengths), lengths
    assert LONG and all(lengths[i] == case.max_length for i in LONG), lengths
    assert lengths[0] < case.max_length  # "Hello world."
    assert len({ids[0] for ids in case.token_ids}) == 1  # every text starts with the same [CLS] / <s>
    assert len({ids[-1] for ids in case.token_ids}) == 1  # and ends with the same [SEP] / </s>


def test_lowercasing_follows_the_tokenizer(hf_reference):
    """bert is cased, bert_vocab_only lowercases (do_lower_case in tokenizer_config.json only)."""
    def ids(name, text):
        return hf_reference[name].token_ids[HF_REFERENCE_TEXTS.index(text)]
    upper, lower = "The film was a DELIGHT from start to finish!", "Hello world."
    assert len(ids("bert", upper)) > len(ids("bert_vocab_only", upper))  # DELIGHT: pieces vs a word
    assert "HELLO" not in (hf_reference["bert_vocab_only"].path / "vocab.txt").read_text()
    assert ids("bert_vocab_only", lower)  # tokenized at all


# ---------------------------------------------------------------------------- sensitivity
# Variants of a case that a careless converter would produce; the reference's output must move
# by much more than float32 noise (~1e-6) for each, or a test against the reference could not
# tell. The smallest move, exact GELU against its tanh approximation, is a few 1e-4: a test that
# compares probabilities with the reference must use a tolerance below SENSITIVITY to catch it.
SENSITIVITY = 1e-4


def edit_config(**changes):
    def edit(path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        config.update(changes)
        (path / "config.json").write_text(json.dumps(config))
    return edit


def zero_tensor(key: str):
    def edit(path: Path) -> None:
        tensors = load_file(str(path / "model.safetensors"))
        tensors[key] = np.zeros_like(tensors[key])
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return edit


VARIANTS = {
    "bert, layer_norm_eps 1e-12": ("bert", edit_config(layer_norm_eps=1e-12)),
    "roberta, layer_norm_eps 1e-12": ("roberta", edit_config(layer_norm_eps=1e-12)),
    "deberta_v3, layer_norm_eps 1e-12": ("deberta_v3", edit_config(layer_norm_eps=1e-12)),
    "roberta, gelu for gelu_new": ("roberta", edit_config(hidden_act="gelu")),
    "bert, gelu_new for gelu": ("bert", edit_config(hidden_act="gelu_new")),
    "roberta, no token-type row": ("roberta", zero_tensor("roberta.embeddings.token_type_embeddings.weight")),
}


@pytest.fixture(scope="module")
def variant_scores(hf_reference, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_variants")
    checkpoints = {}
    for i, (name, edit) in enumerate(VARIANTS.values()):
        path = root / f"variant{i}"
        shutil.copytree(hf_reference[name].path, path)
        edit(path)
        checkpoints[f"variant{i}"] = path
    scores = hf_reference_scores(checkpoints, HF_REFERENCE_TEXTS, root / "scores")
    return dict(zip(VARIANTS, scores.values()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_misread_detail_moves_the_reference(hf_reference, variant_scores, variant):
    original = hf_reference[VARIANTS[variant][0]]
    changed = variant_scores[variant]
    assert changed.token_ids == original.token_ids
    assert np.abs(changed.probabilities - original.probabilities).max() > SENSITIVITY
