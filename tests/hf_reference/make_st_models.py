"""Write tiny, seeded sentence-transformers models, one sub-directory of OUT_DIR per case, as
`SentenceTransformer.save` writes them, and what `SentenceTransformer.encode` makes of TEXTS_JSON
with each (the independent reference for scorer's embeddings). Run with .venv-hfref/bin/python
(sentence-transformers + transformers + torch):

    .venv-hfref/bin/python tests/hf_reference/make_st_models.py OUT_DIR TEXTS_JSON [NAME=MODEL_DIR ...]

OUT_DIR/<case>/ is the model and OUT_DIR/<case>.json {"max_seq_length": N, "prompt": NAME or null,
"embeddings": [[...] per text]}. Cases cover every pooling mode scorer reads, with and without
Dense and Normalize, directories as v6 saves them and as v5 did (`sentence_transformers.models.X`
type names, a Normalize without a folder, max_seq_length and do_lower_case in
sentence_bert_config.json). Each NAME=MODEL_DIR (e.g. the packaged all-MiniLM-L6-v2) is encoded as it
is into OUT_DIR/NAME.json."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a reference never downloads anything

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import BertModel, DistilBertConfig, DistilBertModel

from make_checkpoints import POSITIONS, bert_config, bert_tokenizer, distilbert_tokenizer, perturb


@dataclass(frozen=True)
class DenseSpec:
    out_features: int
    activation: torch.nn.Module
    bias: bool = True
    residual: bool = False


@dataclass(frozen=True)
class STCase:
    name: str
    pooling: str
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = False
    max_seq_length: int | None = 24  # None: the tokenizer's / position limit
    encoder: str = "bert"  # or "distilbert"
    lowercase_tokenizer: bool = True
    v5_layout: bool = False  # rewrite as sentence-transformers up to v5 saved it
    prompts: dict = field(default_factory=dict)
    prompt: str | None = None  # encode with this prompt name
    seed: int = 0


CASES = (
    STCase("mean", "mean", seed=11),
    STCase("cls_dense_normalize", "cls", (DenseSpec(16, torch.nn.Tanh()),), normalize=True, seed=12),
    STCase("max_normalize_v5", "max", normalize=True, v5_layout=True, seed=13),
    STCase("mean_sqrt_len_dense2", "mean_sqrt_len_tokens",
           (DenseSpec(24, torch.nn.Identity(), bias=False), DenseSpec(24, torch.nn.GELU(), residual=True)),
           max_seq_length=None, seed=14),
    STCase("mean_prompt_lowercase_v5", "mean", (DenseSpec(20, torch.nn.ReLU()),), normalize=True,
           lowercase_tokenizer=False, v5_layout=True, prompts={"query": "query: ", "passage": "passage: "},
           prompt="query", seed=15),
    STCase("distilbert_cls", "cls", normalize=True, encoder="distilbert", seed=16),
)

V5_TYPES = {"Transformer": "sentence_transformers.models.Transformer",
            "Pooling": "sentence_transformers.models.Pooling",
            "Dense": "sentence_transformers.models.Dense",
            "Normalize": "sentence_transformers.models.Normalize"}


LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}


def encoder_dir(case: STCase, work: Path) -> Path:
    """A tiny perturbed Hugging Face encoder with its tokenizer, saved under work."""
    torch.manual_seed(case.seed)
    if case.encoder == "bert":
        tokenizer = bert_tokenizer(lowercase=case.lowercase_tokenizer)(work)
        model = BertModel(bert_config(len(tokenizer), {}))
    else:
        tokenizer = distilbert_tokenizer(work)
        model = DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2,
                                                 hidden_dim=37, activation="gelu",
                                                 max_position_embeddings=POSITIONS, pad_token_id=0))
    perturb(model.eval(), case.seed)
    target = work / f"hf-{case.name}"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build(case: STCase, work: Path) -> SentenceTransformer:
    kwargs = {"max_seq_length": case.max_seq_length} if case.max_seq_length else {}
    transformer = Transformer(str(encoder_dir(case, work)), **kwargs)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), case.pooling)]
    width = transformer.get_embedding_dimension()
    generator = torch.Generator().manual_seed(case.seed)
    for spec in case.dense:
        dense = Dense(width, spec.out_features, bias=spec.bias, activation_function=spec.activation,
                      use_residual=spec.residual)
        with torch.no_grad():
            for param in dense.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        modules.append(dense)
        width = spec.out_features
    if case.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, prompts=case.prompts or None, device="cpu")


def to_v5_layout(case: STCase, path: Path) -> None:
    """modules.json with v5's type names, no Normalize folder, the Pooling's legacy one-boolean-
    per-mode keys, max_seq_length and do_lower_case in sentence_bert_config.json (as v5 saved)."""
    modules = json.loads((path / "modules.json").read_text())
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        module["type"] = V5_TYPES[kind]
        if kind == "Normalize":
            shutil.rmtree(path / module["path"])
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    pooling_file = path / modules[1]["path"] / "config.json"
    pooling = json.loads(pooling_file.read_text())
    legacy = {"word_embedding_dimension": pooling["embedding_dimension"]}
    legacy.update({key: pooling["pooling_mode"] == mode for key, mode in LEGACY_POOLING.items()})
    pooling_file.write_text(json.dumps(legacy))
    settings = {"max_seq_length": case.max_seq_length, "do_lower_case": not case.lowercase_tokenizer}
    (path / "sentence_bert_config.json").write_text(json.dumps(settings))


def encode(model_dir: Path, texts: list[str], prompt: str | None) -> dict:
    model = SentenceTransformer(str(model_dir), device="cpu")
    embeddings = model.encode(texts, prompt_name=prompt, batch_size=4, convert_to_numpy=True)
    return {"max_seq_length": model.max_seq_length, "prompt": prompt,
            "embeddings": embeddings.astype("float64").tolist()}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: make_st_models.py OUT_DIR TEXTS_JSON [NAME=MODEL_DIR ...]", file=sys.stderr)
        return 2
    out_dir, texts = Path(argv[0]), json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # tiny models, and CI has 2 cores
    with tempfile.TemporaryDirectory() as work:
        for case in CASES:
            target = out_dir / case.name
            build(case, Path(work)).save(str(target))
            if case.v5_layout:
                to_v5_layout(case, target)
            result = encode(target, texts, case.prompt)
            (out_dir / f"{case.name}.json").write_text(json.dumps(result), encoding="utf-8")
    for extra in argv[2:]:
        name, _, model_dir = extra.partition("=")
        result = encode(Path(model_dir), texts, None)
        (out_dir / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
