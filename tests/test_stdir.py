"""Reading a sentence-transformers directory: what it is, and everything refused (exit 4) with
what is supported named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scorer import modeldir, stdir
from scorer.errors import ModelError


def copy_of(st_reference, case: str, tmp_path: Path) -> Path:
    target = tmp_path / case
    shutil.copytree(st_reference[case].path, target)
    return target


def edit_json(file: Path, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def test_reads_modules_pooling_dense_normalize_and_prompts(st_reference):
    model = modeldir.read(st_reference["mean_prompt_lowercase_v5"].path)
    assert isinstance(model, stdir.SentenceTransformerDir) and model.kind == "embedding"
    assert model.head.pooling == "mean" and model.head.normalize and len(model.head.dense) == 1
    assert model.dimension == 20 and model.max_length == 24 and model.lowercase
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    assert set(model.id.checksums) >= {"modules.json", "config.json", "model.safetensors",
                                          "1_Pooling/config.json", "2_Dense/model.safetensors"}


def test_the_packaged_minilm_reads_as_its_sentence_transformers_directory(st_reference):
    model = modeldir.read(st_reference["all-minilm-l6-v2"].path)
    assert (model.head.pooling, model.head.normalize, model.max_length) == ("mean", True, 256)
    assert model.head.dense == () and model.checkpoint.architecture == "BertModel"


@pytest.mark.parametrize("change, message", [
    (lambda d: d[1].update(type="my_package.CustomPooling"),
     r"module type 'my_package.CustomPooling' is not supported .*runs no code.*Pooling of mode mean, cls, max"),
    (lambda d: d.insert(1, {"idx": 1, "name": "x", "path": "", "type": "sentence_transformers.models.LayerNorm"}),
     "module type 'sentence_transformers.models.LayerNorm' is not supported"),
    (lambda d: (d[1].update(type=d[2]["type"]), d[2].update(type="sentence_transformers.models.Pooling")),
     "modules Transformer -> Normalize -> Pooling are not supported"),
    (lambda d: d[1].update(path="../elsewhere"), "module path '../elsewhere' is not a folder inside"),
])
def test_refuses_modules_it_cannot_reproduce(st_reference, tmp_path, change, message):
    model = copy_of(st_reference, "max_normalize_v5", tmp_path)
    edit_json(model / "modules.json", change)
    with pytest.raises(ModelError, match=message):
        modeldir.read(model)


@pytest.mark.parametrize("mode", ["weightedmean", "lasttoken", ["mean", "max"]])
def test_refuses_a_pooling_mode_it_lacks(st_reference, tmp_path, mode):
    model = copy_of(st_reference, "mean", tmp_path)
    edit_json(model / "1_Pooling" / "config.json", lambda d: d.update(pooling_mode=mode))
    with pytest.raises(ModelError, match=r"pooling mode .* is not supported; scorer pools with one "
                                         "of mean, cls, max, mean_sqrt_len_tokens"):
        modeldir.read(model)


def test_refuses_custom_code_in_the_encoder_config(st_reference, tmp_path):
    model = copy_of(st_reference, "mean", tmp_path)
    edit_json(model / "config.json", lambda d: d.update(auto_map={"AutoModel": "modeling.My"}))
    with pytest.raises(ModelError, match="auto_map"):
        modeldir.read(model)


def test_refuses_a_dense_layer_it_cannot_reproduce(st_reference, tmp_path):
    model = copy_of(st_reference, "cls_dense_normalize", tmp_path)
    config = model / "2_Dense" / "config.json"
    edit_json(config, lambda d: d.update(activation_function="my_package.Swoosh"))
    with pytest.raises(ModelError, match="activation_function 'my_package.Swoosh' is not supported"):
        modeldir.read(model)
    edit_json(config, lambda d: d.update(activation_function="torch.nn.modules.activation.Tanh"))
    (model / "2_Dense" / "model.safetensors").rename(model / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no model.safetensors .only pytorch_model.bin: scorer reads "
                                         "safetensors only"):
        modeldir.read(model)


def test_refuses_another_task_and_pooling_that_leaves_out_the_prompt(st_reference, tmp_path):
    model = copy_of(st_reference, "mean_prompt_lowercase_v5", tmp_path)
    edit_json(model / "1_Pooling" / "config.json", lambda d: d.update(include_prompt=False))
    with pytest.raises(ModelError, match="include_prompt false"):
        modeldir.read(model)
    other = copy_of(st_reference, "mean", tmp_path)
    edit_json(other / "sentence_bert_config.json", lambda d: d.update(transformer_task="text-generation"))
    with pytest.raises(ModelError, match="transformer_task 'text-generation' is not supported"):
        modeldir.read(other)
