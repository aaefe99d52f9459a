"""A Hugging Face checkpoint directory, as `save_pretrained` leaves it, read without running it.

    <checkpoint>/
      config.json                       architecture, sizes, id2label, problem_type, ...
      model.safetensors                 or model-0000N-of-0000M.safetensors + model.safetensors.index.json
      tokenizer.json | vocab.txt | vocab.json + merges.txt | spiece.model | sentencepiece.bpe.model
      tokenizer_config.json, special_tokens_map.json

Only safetensors weights are read (a pickle can run code when loaded); a config or tokenizer
config that names custom code (`auto_map`) is refused, and nothing is ever imported from the
directory. `read()` checks all of it and records the sha256 of the config and every weight file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scorer import fileio
from scorer.errors import ModelError
from scorer.modelspec import SPEC_FILE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                   "flax_model.msgpack")

# model_type -> the sequence classifier class transformers saves for it.
CLASSIFIERS = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlm-roberta": "XLMRobertaForSequenceClassification",
    "albert": "AlbertForSequenceClassification",
    "deberta-v2": "DebertaV2ForSequenceClassification",
}
# Encoders a model of ours may be fine-tuned from (a base model or a classifier's encoder).
ENCODERS = {
    "bert": ("BertModel", "BertForMaskedLM", "BertForPreTraining"),
    "distilbert": ("DistilBertModel", "DistilBertForMaskedLM"),
    "roberta": ("RobertaModel", "RobertaForMaskedLM"),
    "xlm-roberta": ("XLMRobertaModel", "XLMRobertaForMaskedLM"),
    "albert": ("AlbertModel", "AlbertForMaskedLM", "AlbertForPreTraining"),
    "deberta-v2": ("DebertaV2Model", "DebertaV2ForMaskedLM"),
}
SUPPORTED_TEXT = ("BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT and DeBERTa-v2/v3 "
                  "*ForSequenceClassification checkpoints")
# Absolute positions start after padding_idx in these (RoBERTa's create_position_ids_from_input_ids).
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta")
_NO_LIMIT = 1_000_000  # transformers' "no model_max_length" is a huge number


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict
    model_type: str
    architecture: str  # the class named in config.json's `architectures`
    weight_files: tuple[str, ...]  # safetensors file names, in the directory
    checksums: dict  # file name -> sha256: config.json and every weight file

    @property
    def is_classifier(self) -> bool:
        return self.architecture == CLASSIFIERS.get(self.model_type)

    @property
    def labels(self) -> list[str]:
        """Label names in id order: config.json's id2label, else LABEL_0, LABEL_1, ..."""
        id2label = self.config.get("id2label") or {}
        n = len(id2label) or int(self.config.get("num_labels", 2))
        try:
            names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
        except AttributeError:
            raise ModelError(f"{self.path / CONFIG_FILE}: 'id2label' must be an object") from None
        if len(set(names)) != len(names):
            raise ModelError(f"{self.path / CONFIG_FILE}: 'id2label' has duplicate names {names}")
        return names

    @property
    def problem_type(self) -> str:
        """Ours: multi_label (sigmoid, every label >= threshold) or single_label (softmax)."""
        kind = self.config.get("problem_type")
        if kind == "multi_label_classification":
            return "multi_label"
        if kind in (None, "single_label_classification"):
            return "single_label"
        raise ModelError(f"{self.path / CONFIG_FILE}: problem_type {kind!r} is not a classifier's "
                         "(single_label_classification or multi_label_classification)")

    @property
    def position_limit(self) -> int:
        """The longest input the position embeddings cover, special tokens included."""
        limit = int(self.config.get("max_position_embeddings", 512))
        if self.model_type in POSITION_OFFSET_TYPES:
            limit -= int(self.config.get("pad_token_id", 1)) + 1
        return limit

    def max_length(self, tokenizer_max: int | None) -> int:
        """The smaller of the tokenizer's model_max_length and the position limit."""
        if tokenizer_max and 0 < tokenizer_max < _NO_LIMIT:
            return min(int(tokenizer_max), self.position_limit)
        return self.position_limit

    def tensors(self) -> dict[str, np.ndarray]:
        """Every weight tensor by its Hugging Face name (all shards)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        out: dict[str, np.ndarray] = {}
        for name in self.weight_files:
            try:
                out.update(load_file(str(self.path / name)))
            except (SafetensorError, OSError, ValueError) as e:
                raise ModelError(f"{self.path / name}: unreadable weights ({e})") from None
        return out


def is_checkpoint(path: Path) -> bool:
    """A directory that looks like a Hugging Face checkpoint (config.json, no spec of ours)."""
    return (path / CONFIG_FILE).is_file() and not (path / SPEC_FILE).exists()


def read(path: Path, classifier: bool = True) -> Checkpoint:
    """Read and check a checkpoint directory; classifier=False accepts a bare encoder too."""
    path = Path(path)
    config = fileio.read_object(path / CONFIG_FILE, ModelError)
    if "auto_map" in config:
        raise ModelError(f"{path / CONFIG_FILE}: names custom code (auto_map); scorer never runs "
                         "code from a model directory")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not architectures:
        raise ModelError(f"{path / CONFIG_FILE}: no 'architectures'; scorer reads {SUPPORTED_TEXT}")
    architecture = str(architectures[0])
    accepted = (CLASSIFIERS.get(model_type),) + (() if classifier else ENCODERS.get(model_type, ()))
    if model_type not in CLASSIFIERS or architecture not in accepted:
        raise ModelError(f"{path}: {architecture} ({model_type}) is not supported; scorer reads "
                         f"{SUPPORTED_TEXT}")
    weight_files = _weight_files(path)
    checksums = {name: fileio.sha256_file(path / name) for name in (CONFIG_FILE,) + weight_files}
    return Checkpoint(path.resolve(), config, model_type, architecture, weight_files, checksums)


def _weight_files(path: Path) -> tuple[str, ...]:
    if (path / WEIGHTS_INDEX).is_file():
        index = fileio.read_object(path / WEIGHTS_INDEX, ModelError)
        files = sorted(set((index.get("weight_map") or {}).values()))
        for name in files:
            if Path(name).name != name or not (path / name).is_file():
                raise ModelError(f"{path / WEIGHTS_INDEX}: shard {name!r} is not a file in {path}")
        if not files:
            raise ModelError(f"{path / WEIGHTS_INDEX}: empty weight_map")
        return tuple(files)
    if (path / WEIGHTS_FILE).is_file():
        return (WEIGHTS_FILE,)
    pickled = [n for n in PICKLED_WEIGHTS if (path / n).is_file()]
    if pickled:
        raise ModelError(f"{path}: has only {pickled[0]}; scorer reads safetensors only (a pickle "
                         "can run code when loaded). Convert it once where you trust it: "
                         "model = AutoModelForSequenceClassification.from_pretrained(dir); "
                         "model.save_pretrained(dir, safe_serialization=True)")
    raise ModelError(f"{path}: no {WEIGHTS_FILE}")


# ----------------------------------------------------------------------------- tokenizer

def load_tokenizer(path: Path):
    """transformers' AutoTokenizer for the directory (tokenizer.json, vocab.txt, vocab.json +
    merges.txt or a SentencePiece model), offline. Returns (its Rust `tokenizers.Tokenizer`,
    the pad id, model_max_length); scoring encodes with the Rust tokenizer alone."""
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file() and "auto_map" in fileio.read_object(tokenizer_config, ModelError):
        raise ModelError(f"{tokenizer_config}: names custom code (auto_map); scorer never runs "
                         "code from a model directory")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                         trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a missing or broken tokenizer
        raise ModelError(f"{path}: cannot load its tokenizer ({_first_line(e)})") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"{path}: its tokenizer has no fast (Rust) backend")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return backend, int(pad_id), tok.model_max_length


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
