"""A scorer model -> a Hugging Face *ForSequenceClassification checkpoint transformers loads.

    scorer model (base encoder + LoRA + head, or all weights)
      -> the Keras model, LoRA merged into the kernels (a LoRA layer's `kernel` is the merged one)
      -> encoder tensors under their Hugging Face names: keras-hub's own converter is run with a
         recorder instead of a checkpoint, which learns, for every backbone variable, the
         Hugging Face tensor and the index map (transpose, reshape, slice) it came through;
         names and shapes come from the base checkpoint, so a base that has none cannot export
      -> the head: the dense layer + activation (BERT's pooler, RoBERTa's classifier.dense,
         DistilBERT's pre_classifier) and the classifier layer, divided by the model's
         temperature (its calibration), which gives the same probabilities (transformers
         truncates, so a windowed_temperature has nothing to apply to there and is not exported)
      -> config.json (id2label, problem_type, the activation the model really computes),
         model.safetensors, the tokenizer files with model_max_length = the model's max length

Only heads a transformers class computes can be exported: mean pooling has none.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np

from scorer import backbone as backbones
from scorer import classifier
from scorer.errors import ModelError, OutputError
from scorer.heads import HEAD_DENSE, HEAD_NAME
from scorer.hf import checkpoint, convert
from scorer.hf.tensors import hooked, tensor_key
from scorer.modeldir import ModelDir

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                    "sentencepiece.bpe.model", "added_tokens.json")
# The head activation each transformers classifier computes after its first-token pooling.
_CLASS_HEAD = {"bert": "tanh", "albert": "tanh", "roberta": "tanh", "xlm-roberta": "tanh",
               "distilbert": "relu"}


def export(model_dir: ModelDir, out: Path) -> dict:
    """Write model_dir as a transformers checkpoint into out (new or empty); returns its config."""
    base = _base_checkpoint(model_dir)
    head = _head_layout(model_dir, base)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty")
    model = classifier.load_keras_model(model_dir)
    backbone = classifier.backbone_layer(model)
    if backbone is None:
        raise ModelError(f"{model_dir.path}: the model has no keras-hub backbone")
    tensors = _encoder_tensors(base, backbone)
    tensors.update(_head_tensors(model, base, head, model_dir.spec.temperature))
    config = _config(model_dir, base)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              str(out / checkpoint.WEIGHTS_FILE), metadata={"format": "pt"})
    (out / checkpoint.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    _write_tokenizer(model_dir, base, out)
    return config


def _base_checkpoint(model_dir: ModelDir) -> checkpoint.Checkpoint:
    if model_dir.checkpoint is not None:
        return model_dir.checkpoint
    base = model_dir.spec.base
    if base["kind"] not in ("packaged", "hf_dir"):
        raise ModelError(f"{model_dir.path}: its encoder has no Hugging Face base checkpoint "
                         "(base kind 'config') to take tensor names and shapes from: cannot export")
    if base["kind"] == "hf_dir":
        return backbones.hf_base(base)  # read when its recorded sha256 were checked
    return checkpoint.read(backbones.checkpoint_dir(base), classifier=False)


def _head_layout(model_dir: ModelDir, base: checkpoint.Checkpoint) -> str:
    """'pooled' (BERT's pooler in the backbone) or 'dense' (our head_dense); else refuse."""
    spec = model_dir.spec
    if spec.pooling == "pooled" and spec.head_activation is None and base.model_type in ("bert", "albert"):
        return "pooled"
    wanted = _CLASS_HEAD.get(base.model_type) or convert.head_activation(base)
    if spec.pooling == "cls" and spec.head_activation == wanted:
        return "dense"
    raise ModelError(
        f"{model_dir.path}: {spec.pooling} pooling" + (f" + dense {spec.head_activation}" if spec.head_activation else "")
        + f" has no transformers {checkpoint.CLASSIFIERS[base.model_type]} head; train with "
        + ("--pooling pooled" if base.model_type in ("bert", "albert") else "this base's Hugging Face classifier as --base")
        + " to export")


class _Recorder:
    """keras-hub's loader interface: instead of loading, records where each variable came from.
    get_tensor returns the flat indices of the named tensor in its checkpoint shape, so the
    converter's hook (a transpose, reshape or slice) turns them into the index map."""

    def __init__(self, shapes: dict[str, tuple], prefix: str):
        self.shapes = shapes
        self.prefix = prefix
        self.records: list[tuple[str, np.ndarray, object]] = []

    def key(self, name: str) -> str:
        return tensor_key(self.shapes, name, self.prefix)

    def get_tensor(self, name: str) -> np.ndarray:
        shape = self.shapes[self.key(name)]
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        index = hooked(self, keras_variable, hf_weight_key, hook_fn)
        self.records.append((self.key(hf_weight_key), np.asarray(index), keras_variable))


def _encoder_tensors(base: checkpoint.Checkpoint, backbone) -> dict[str, np.ndarray]:
    if base.model_type == "deberta-v2":
        raise ModelError("export of DeBERTa-based models is not supported")
    module_name, prefix = convert.KERAS_HUB_CONVERTERS[base.model_type]
    converter = importlib.import_module(f"keras_hub.src.utils.transformers.{module_name}")
    shapes = {k: v.shape for k, v in base.tensors().items()}
    recorder = _Recorder(shapes, prefix)
    converter.convert_weights(backbone, recorder, base.config)
    flat: dict[str, np.ndarray] = {}  # classifier tensor name -> values, flat
    shape_of: dict[str, tuple] = {}
    for key, index, variable in recorder.records:
        name = prefix + key.removeprefix(prefix)
        shape_of[name] = shapes[key]
        values = flat.setdefault(name, np.zeros(int(np.prod(shapes[key])), np.float32))
        values[index.ravel()] = np.asarray(variable, dtype=np.float32).ravel()
    tensors = {name: values.reshape(shape_of[name]) for name, values in flat.items()}
    if base.model_type in ("roberta", "xlm-roberta"):  # undo convert._roberta_embeddings' fold
        _roberta_positions(base, backbone, tensors, prefix, shapes, recorder)
    return tensors


def _roberta_positions(base, backbone, tensors, prefix, shapes, recorder) -> None:
    """Our table holds positions from padding_idx + 1 with token type 0 added: write it back
    there, with a zero token-type embedding, which gives transformers the same sums."""
    offset = int(base.config.get("pad_token_id", 1)) + 1
    table = np.asarray(backbone.embeddings.position_embedding.position_embeddings, np.float32)
    positions = np.zeros(shapes[recorder.key("embeddings.position_embeddings.weight")], np.float32)
    positions[offset:offset + len(table)] = table
    tensors[prefix + "embeddings.position_embeddings.weight"] = positions
    tensors[prefix + "embeddings.token_type_embeddings.weight"] = np.zeros(
        shapes[recorder.key("embeddings.token_type_embeddings.weight")], np.float32)


def _head_tensors(model, base: checkpoint.Checkpoint, head: str,
                  temperature: float) -> dict[str, np.ndarray]:
    dense_w, dense_b, out_w, out_b = convert.head_tensor_names(base)
    final = model.get_layer(HEAD_NAME)
    t = temperature  # logits / t is exactly (kernel / t) x + bias / t
    tensors = {out_w: np.asarray(final.kernel).T / t, out_b: np.asarray(final.bias) / t}
    if head == "dense":
        dense = model.get_layer(HEAD_DENSE)
        tensors.update({dense_w: np.asarray(dense.kernel).T, dense_b: np.asarray(dense.bias)})
    return tensors  # "pooled": the pooler came with the encoder (BERT / ALBERT)


def _config(model_dir: ModelDir, base: checkpoint.Checkpoint) -> dict:
    spec = model_dir.spec
    config = {k: v for k, v in base.config.items()
              if k not in ("id2label", "label2id", "num_labels", "problem_type", "architectures",
                           "_name_or_path", "transformers_version")}
    config["architectures"] = [checkpoint.CLASSIFIERS[base.model_type]]
    config["id2label"] = {str(i): name for i, name in enumerate(spec.labels)}
    config["label2id"] = {name: i for i, name in enumerate(spec.labels)}
    config["problem_type"] = ("multi_label_classification" if spec.problem_type == "multi_label"
                              else "single_label_classification")
    if spec.base["kind"] == "packaged" and model_dir.checkpoint is None:
        # keras-hub's BERT, which the packaged base loads through, computes the tanh GELU
        config["hidden_act"] = "gelu_new"
        config["layer_norm_eps"] = 1e-12
    return config


def _write_tokenizer(model_dir: ModelDir, base: checkpoint.Checkpoint, out: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (base.path / name).is_file():
            shutil.copy(base.path / name, out / name)
    if model_dir.spec.tokenizer_file:  # the model's own tokenizer wins over the base's
        shutil.copy(model_dir.path / model_dir.spec.tokenizer_file, out / "tokenizer.json")
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["model_max_length"] = model_dir.spec.max_length  # scorer's truncation, kept
    config_path.write_text(json.dumps(config, indent=2) + "\n")
