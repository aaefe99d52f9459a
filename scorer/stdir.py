"""A sentence-transformers model directory, read as data: which modules, their settings, weights.

    <model>/
      modules.json                      the modules in order: Transformer, Pooling, [Dense...], [Normalize]
      config.json, model.safetensors    the Transformer's Hugging Face encoder (here, or in its folder)
      tokenizer files                   the encoder's tokenizer
      sentence_bert_config.json         max_seq_length, do_lower_case (v6: the tokenizer's model_max_length)
      config_sentence_transformers.json prompts ({"query": "query: "}), default_prompt_name
      1_Pooling/config.json             the pooling mode
      2_Dense/config.json + model.safetensors   optional: a linear layer + activation
      3_Normalize/                      optional, may be absent: L2 normalisation

Module types are matched by name against the ones sentence-transformers writes (up to v5:
`sentence_transformers.models.Pooling`; v6: `sentence_transformers.sentence_transformer.modules.
pooling.Pooling`, ...); nothing is ever imported from the directory. Anything scorer cannot
reproduce exactly (another module, a pooling mode it lacks, a setting that changes the arithmetic)
is refused with a ModelError (exit 4) naming what is supported.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scorer import fileio
from scorer.embedding import ACTIVATIONS, POOLINGS, DenseLayer, EmbeddingHead
from scorer.errors import ModelError
from scorer.hf import checkpoint as hf_checkpoint
from scorer.hf import convert
from scorer.modelid import ModelId, combined_checksum

MODULES_FILE = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
# The Transformer's settings file: sentence_bert_config.json, or (very old saves) one per family.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json",
                       "sentence_distilbert_config.json", "sentence_camembert_config.json",
                       "sentence_albert_config.json", "sentence_xlm-roberta_config.json")
WEIGHTS_FILE = "model.safetensors"

# Module type names as sentence-transformers writes them into modules.json: `models.X` up to v5,
# the class's module path (and its package's export) from v6.
_V6_MODULES = {"Transformer": "sentence_transformers.base.modules.transformer",
               "Pooling": "sentence_transformers.sentence_transformer.modules.pooling",
               "Dense": "sentence_transformers.base.modules.dense",
               "Normalize": "sentence_transformers.base.modules.normalize"}
MODULE_TYPES = {
    f"{name_prefix}": kind
    for kind, v6 in _V6_MODULES.items()
    for name_prefix in (f"sentence_transformers.models.{kind}", f"{v6}.{kind}",
                        f"{v6.rpartition('.')[0]}.{kind}")
}
SUPPORTED_TEXT = ("a Transformer (a BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT or DeBERTa-v2 "
                  "encoder), a Pooling of mode " + ", ".join(POOLINGS) + ", then optional Dense "
                  "layers and an optional Normalize")

# Legacy Pooling keys (one boolean per mode) -> ours; v6 writes "pooling_mode" instead.
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean",
                   "pooling_mode_lasttoken": "lasttoken"}
# What the Transformer module of a text model says in v6 (anything else: another modality or task).
_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
_SENTENCE_EMBEDDING = "sentence_embedding"


@dataclass
class SentenceTransformerDir:
    """A sentence-transformers directory as scorer runs it: the encoder checkpoint, the tokenizer's
    settings, and the head after the encoder (pooling, dense layers, normalisation)."""

    path: Path
    checkpoint: hf_checkpoint.Checkpoint  # the Transformer module's encoder
    head: EmbeddingHead
    max_length: int  # tokens, special tokens included
    lowercase: bool  # do_lower_case: the tokenizer lowercases first
    prompts: dict[str, str] = field(default_factory=dict)  # name -> text put before each input
    default_prompt: str | None = None  # the prompt's name used when none is asked for
    similarity: str | None = None  # similarity_fn_name, as recorded (information only)
    checksums: dict = field(default_factory=dict)  # file (relative path) -> sha256, every file read
    name: str = ""  # default: the directory's name
    kind: str = "embedding"

    def __post_init__(self):
        self.name = self.name or self.path.name

    @property
    def dimension(self) -> int:
        """The vectors' width: the last dense layer's, else the encoder's hidden size."""
        return self.head.dimension or _hidden_size(self.checkpoint)

    @functools.cached_property
    def id(self) -> ModelId:
        """What identifies the output's model: its path, and the sha256 of every file read (the
        checksum covering them all)."""
        return ModelId(self.name, None, str(self.path), combined_checksum(self.checksums),
                       kind=self.kind, architecture=self.checkpoint.architecture,
                       dimension=self.dimension, checksums=self.checksums)

    def prompt_text(self, name: str | None) -> str:
        """The text put before every input for prompt `name` (None: the default prompt, if any)."""
        if name is None:
            return self.prompts.get(self.default_prompt, "") if self.default_prompt else ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise ModelError(f"{self.path}: no prompt {name!r} in {ST_CONFIG} (prompts: {known})")
        return self.prompts[name]


def is_sentence_transformers(path: Path) -> bool:
    return (Path(path) / MODULES_FILE).is_file()


def read(path: Path, name: str = "") -> SentenceTransformerDir:
    """Read and check a sentence-transformers directory (ModelError naming what is supported)."""
    path = Path(path).resolve()
    modules = _modules(path)
    kinds = [m[0] for m in modules]
    if (kinds[:2] != ["Transformer", "Pooling"]
            or any(k != "Dense" for k in kinds[2:len(kinds) - (kinds[-1] == "Normalize")])):
        raise ModelError(f"{path / MODULES_FILE}: modules {' -> '.join(kinds)} are not supported; "
                         f"scorer reads {SUPPORTED_TEXT}")
    files: dict[str, str] = {}

    def read_json(relative: str) -> dict:
        data = fileio.read_object(path / relative, ModelError)
        files[relative] = fileio.sha256_file(path / relative)
        return data

    files[MODULES_FILE] = fileio.sha256_file(path / MODULES_FILE)
    transformer_dir = modules[0][1]
    settings_file = next((transformer_dir / n for n in TRANSFORMER_CONFIGS
                          if (path / transformer_dir / n).is_file()), None)
    settings = read_json(str(settings_file)) if settings_file else {}
    _check_transformer_settings(settings, path / (settings_file or transformer_dir))
    ckpt = _encoder(path / transformer_dir)
    files.update({str(transformer_dir / k): v for k, v in ckpt.checksums.items()})
    hidden = _hidden_size(ckpt)
    pooling = _pooling(read_json(str(modules[1][1] / "config.json")), path / modules[1][1], hidden)
    dense, width = [], hidden
    for _, folder in [m for m in modules if m[0] == "Dense"]:
        layer = _dense(read_json(str(folder / "config.json")), path / folder, width)
        files[str(folder / WEIGHTS_FILE)] = fileio.sha256_file(path / folder / WEIGHTS_FILE)
        dense.append(layer)
        width = layer.weight.shape[0]
    normalize = kinds[-1] == "Normalize"
    if normalize and (path / modules[-1][1] / "config.json").is_file():
        _check_io_names(read_json(str(modules[-1][1] / "config.json")), path / modules[-1][1])
    st_config = read_json(ST_CONFIG) if (path / ST_CONFIG).is_file() else {}
    prompts, default_prompt = _prompts(st_config, path / ST_CONFIG)
    if not pooling[1] and any(prompts.values()):
        raise ModelError(f"{path / modules[1][1] / 'config.json'}: include_prompt false (prompt "
                         "tokens left out of the pooling) is not supported")
    head = EmbeddingHead(pooling[0], tuple(dense), normalize)
    return SentenceTransformerDir(
        path=path, checkpoint=ckpt, head=head,
        max_length=_max_length(settings, ckpt, path / transformer_dir),
        lowercase=bool(settings.get("do_lower_case", False)), prompts=prompts,
        default_prompt=default_prompt, similarity=st_config.get("similarity_fn_name"),
        checksums=dict(sorted(files.items())), name=name)


def _modules(path: Path) -> list[tuple[str, Path]]:
    """(kind, folder relative to path) of each module in modules.json order."""
    raw = _read_json_any(path / MODULES_FILE)
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise ModelError(f"{path / MODULES_FILE}: expected a non-empty list of modules")
    out = []
    for module in sorted(raw, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx"), int) else 0):
        type_name, folder = module.get("type"), module.get("path", "")
        if type_name not in MODULE_TYPES:
            raise ModelError(f"{path / MODULES_FILE}: module type {type_name!r} is not supported "
                             f"(scorer runs no code from a model directory); scorer reads "
                             f"{SUPPORTED_TEXT}")
        if not isinstance(folder, str) or not (path / folder).resolve().is_relative_to(path):
            raise ModelError(f"{path / MODULES_FILE}: module path {folder!r} is not a folder "
                             "inside the model directory")
        out.append((MODULE_TYPES[type_name], Path(folder)))
    return out


def _read_json_any(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{file}: not readable JSON ({e})") from None


def _encoder(folder: Path) -> hf_checkpoint.Checkpoint:
    ckpt = hf_checkpoint.read(folder, classifier=False)
    convert.check_config(ckpt)
    return ckpt


def _hidden_size(ckpt: hf_checkpoint.Checkpoint) -> int:
    key = "dim" if ckpt.model_type == "distilbert" else "hidden_size"
    return int(ckpt.config[key])


def _check_transformer_settings(settings: dict, where: Path) -> None:
    """Refuse a Transformer setting that changes what the encoder computes (another task or
    modality, extra model or config arguments)."""
    def refuse(what):
        raise ModelError(f"{where}: {what} is not supported; scorer reads text feature-extraction "
                         "Transformer modules")

    if settings.get("transformer_task", "feature-extraction") != "feature-extraction":
        refuse(f"transformer_task {settings['transformer_task']!r}")
    if "modality_config" in settings and settings["modality_config"] != _TEXT_MODALITY:
        refuse(f"modality_config {settings['modality_config']!r}")
    if settings.get("module_output_name", "token_embeddings") != "token_embeddings":
        refuse(f"module_output_name {settings['module_output_name']!r}")
    for key in ("model_args", "model_kwargs", "config_args", "config_kwargs", "processing_kwargs"):
        extra = {k: v for k, v in (settings.get(key) or {}).items() if k != "trust_remote_code"}
        if extra:
            refuse(f"{key} {extra!r}")
    for key in ("query_length", "document_length", "query_expansion"):
        if settings.get(key) is not None:
            refuse(key)
    if not isinstance(settings.get("do_lower_case", False), bool):
        refuse("a do_lower_case that is not true or false")


def _max_length(settings: dict, ckpt: hf_checkpoint.Checkpoint, folder: Path) -> int:
    """max_seq_length (up to v5), else the tokenizer's model_max_length (v6 keeps it there), never
    past the position limit."""
    length = settings.get("max_seq_length")
    tokenizer_args = settings.get("tokenizer_args") or settings.get("processor_kwargs") or {}
    if length is None:
        length = tokenizer_args.get("model_max_length")
    if length is None and (folder / "tokenizer_config.json").is_file():
        length = fileio.read_object(folder / "tokenizer_config.json", ModelError).get("model_max_length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 2):
        raise ModelError(f"{folder}: max_seq_length {length!r} is not an integer of at least 2")
    return ckpt.max_length(length)


def _pooling(config: dict, where: Path, hidden: int) -> tuple[str, bool]:
    """(pooling mode, include_prompt) of a Pooling module's config."""
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [ours for key, ours in _LEGACY_POOLING.items() if config.get(key)]
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLINGS:
        raise ModelError(f"{where / 'config.json'}: pooling mode {mode!r} is not supported; scorer "
                         f"pools with one of {', '.join(POOLINGS)}")
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension", hidden))
    if dimension != hidden:
        raise ModelError(f"{where / 'config.json'}: embedding dimension {dimension} is not the "
                         f"encoder's hidden size {hidden}")
    return mode, bool(config.get("include_prompt", True))


def _check_io_names(config: dict, where: Path) -> None:
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _SENTENCE_EMBEDDING) != _SENTENCE_EMBEDDING:
            raise ModelError(f"{where / 'config.json'}: {key} {config[key]!r} is not supported "
                             f"(scorer applies Dense and Normalize to the {_SENTENCE_EMBEDDING})")


def _dense(config: dict, where: Path, width: int) -> DenseLayer:
    """A Dense module: its config and safetensors weights (linear.weight [out, in], ...)."""
    _check_io_names(config, where)
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise ModelError(f"{where / 'config.json'}: activation_function {activation!r} is not "
                         f"supported (one of {', '.join(sorted(ACTIVATIONS))})")
    in_features, out_features = config.get("in_features"), config.get("out_features")
    if in_features != width or not isinstance(out_features, int) or out_features < 1:
        raise ModelError(f"{where / 'config.json'}: in_features {in_features!r} / out_features "
                         f"{out_features!r} do not follow the module before ({width} features)")
    weights_file = where / WEIGHTS_FILE
    if not weights_file.is_file():
        pickled = [n for n in ("pytorch_model.bin",) if (where / n).is_file()]
        raise ModelError(f"{where}: no {WEIGHTS_FILE}" + (f" (only {pickled[0]}: scorer reads "
                                                           "safetensors only)" if pickled else ""))
    tensors = _read_tensors(weights_file)
    bias = bool(config.get("bias", True))
    residual = bool(config.get("use_residual", False))
    expected = {"linear.weight": (out_features, in_features)}
    if bias:
        expected["linear.bias"] = (out_features,)
    if residual and in_features != out_features:
        expected["residual.weight"] = (out_features, in_features)
    if set(tensors) != set(expected):
        raise ModelError(f"{weights_file}: tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelError(f"{weights_file}: {name} has shape {tensors[name].shape}, not {shape}")
    f32 = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return DenseLayer(weight=f32["linear.weight"], bias=f32.get("linear.bias"),
                      activation=ACTIVATIONS[activation], residual=residual,
                      residual_weight=f32.get("residual.weight"))


def _prompts(config: dict, where: Path) -> tuple[dict[str, str], str | None]:
    if config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        raise ModelError(f"{where}: model_type {config['model_type']!r} is not supported (scorer "
                         "reads SentenceTransformer embedding models)")
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in prompts.items()):
        raise ModelError(f"{where}: 'prompts' must map names to texts")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelError(f"{where}: default_prompt_name {default!r} is not among the prompts")
    return dict(prompts), default


def _read_tensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{file}: unreadable weights ({e})") from None
