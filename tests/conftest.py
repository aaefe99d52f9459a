"""Shared fixtures: a tiny randomly initialised BERT model directory (seconds to load and
compile), the real packaged default model for the few end-to-end tests, and tiny Hugging Face
checkpoints with transformers' own output for them (`hf_reference`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Compiled XLA programs persist in a cache; tests get a fresh one, shared by their subprocesses.
os.environ["SCORER_XLA_CACHE"] = tempfile.mkdtemp(prefix="scorer-test-xla-")
# Arms scorer.faults' crash/pause hooks for the tests and their subprocesses (nowhere else).
os.environ["SCORER_FAULT_HOOKS_KEY"] = "scorer-tests-082fd63a25415cded44c2f397f43b1db"

import scorer  # noqa: F401  (sets HF_HUB_OFFLINE and KERAS_BACKEND before TensorFlow loads)
from scorer import backbone as backbones
from scorer import classifier, modeldir, modelspec

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"

TINY_BERT = {"vocabulary_size": 30522, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
             "intermediate_dim": 64, "max_sequence_length": 128, "num_segments": 2}


def make_tiny_model(path: Path, labels=("negative", "positive"), problem_type="single_label",
                    seed: int = 1, max_length: int = 64, name: str = "tiny") -> Path:
    """A randomly initialised 2-layer BERT with the real MiniLM tokenizer, saved in our format."""
    import keras

    keras.utils.set_random_seed(seed)
    spec = modelspec.ModelSpec(
        name=name, labels=list(labels), problem_type=problem_type, max_length=max_length,
        base={"kind": "config", "architecture": "BertBackbone", "config": TINY_BERT},
        tokenizer_file="tokenizer.json", training={"note": "random weights, for tests"})
    model = classifier.build_from_spec(spec)
    path.mkdir(parents=True, exist_ok=True)
    classifier.save_weights(model, path / spec.weights_file, scope="all")
    shutil.copy(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json", path / "tokenizer.json")
    modelspec.write_spec(path, spec)
    return path


def with_spec_reference(model: Path, whole, parts: dict | None = None) -> Path:
    """Write into model's spec the drift reference the fine-tuning job records: the whole
    validation set's drift.Profile and (parts: {training source: Profile}) one per source."""
    spec = modeldir.read(model).spec
    data = {"validation": {"rows": whole.rows, "sha256": "0" * 64}}
    spec.reference = {"data": data, "profile": whole.to_json()}
    if parts is not None:
        spec.reference["parts"] = [{"name": name, "data": {"validation": {"rows": p.rows, "sha256": "0" * 64}},
                                    "profile": p.to_json()} for name, p in parts.items()]
    modelspec.write_spec(model, spec)
    return model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_multilabel_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny_ml",
                           labels=("a", "b", "c"), problem_type="multi_label", name="tiny-ml")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_model):
    from scorer import Scorer

    return Scorer.load(tiny_model)


@pytest.fixture(scope="session")
def default_scorer():
    from scorer import Scorer

    return Scorer.load()


def make_hf_checkpoint(path: Path, model_type: str, seed: int = 0) -> Path:
    """A tiny random Hugging Face-format checkpoint (config.json, model.safetensors with HF tensor
    names, the MiniLM tokenizer) of model_type 'bert' or 'distilbert', as `from_pretrained` users
    have on disk."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    vocab, hidden, inter, layers, positions = 30522, 32, 64, 2, 128

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ln(prefix):
        return {prefix + ".weight": np.ones(hidden, np.float32), prefix + ".bias": np.zeros(hidden, np.float32)}

    t = {}
    if model_type == "bert":
        config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": vocab,
                  "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
                  "intermediate_size": inter, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                  "attention_probs_dropout_prob": 0.1, "max_position_embeddings": positions,
                  "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}
        t.update({"embeddings.word_embeddings.weight": w(vocab, hidden),
                  "embeddings.position_embeddings.weight": w(positions, hidden),
                  "embeddings.token_type_embeddings.weight": w(2, hidden),
                  **ln("embeddings.LayerNorm"),
                  "pooler.dense.weight": w(hidden, hidden), "pooler.dense.bias": w(hidden)})
        for i in range(layers):
            p = f"encoder.layer.{i}."
            for name, shape in [("attention.self.query", (hidden, hidden)),
                                ("attention.self.key", (hidden, hidden)),
                                ("attention.self.value", (hidden, hidden)),
                                ("attention.output.dense", (hidden, hidden)),
                                ("intermediate.dense", (inter, hidden)), ("output.dense", (hidden, inter))]:
                t[p + name + ".weight"], t[p + name + ".bias"] = w(*shape), w(shape[0])
            t.update(ln(p + "attention.output.LayerNorm"))
            t.update(ln(p + "output.LayerNorm"))
    else:
        config = {"model_type": "distilbert", "architectures": ["DistilBertModel"], "vocab_size": vocab,
                  "dim": hidden, "n_layers": layers, "n_heads": 2, "hidden_dim": inter,
                  "activation": "gelu", "dropout": 0.1, "attention_dropout": 0.1,
                  "max_position_embeddings": positions, "pad_token_id": 0}
        t.update({"distilbert.embeddings.word_embeddings.weight": w(vocab, hidden),
                  "distilbert.embeddings.position_embeddings.weight": w(positions, hidden),
                  **ln("distilbert.embeddings.LayerNorm")})
        for i in range(layers):
            p = f"distilbert.transformer.layer.{i}."
            for name, shape in [("attention.q_lin", (hidden, hidden)), ("attention.k_lin", (hidden, hidden)),
                                ("attention.v_lin", (hidden, hidden)), ("attention.out_lin", (hidden, hidden)),
                                ("ffn.lin1", (inter, hidden)), ("ffn.lin2", (hidden, inter))]:
                t[p + name + ".weight"], t[p + name + ".bias"] = w(*shape), w(shape[0])
            t.update(ln(p + "sa_layer_norm"))
            t.update(ln(p + "output_layer_norm"))
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file(t, str(path / "model.safetensors"))
    src = backbones.packaged_path("all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, path / name)
    return path


# ---------------------------------------------------------------------------- Hugging Face reference
# Tiny Hugging Face checkpoints and what transformers + PyTorch (in .venv-hfref, never in .venv)
# make of them: the independent reference for scorer's import of such checkpoints.

HF_REFERENCE = REPO / "tests" / "hf_reference"
HF_REFERENCE_PYTHON = REPO / ".venv-hfref" / "bin" / "python"
HF_REFERENCE_CASES = ("bert", "bert_vocab_only", "bert_multilabel", "bert_no_labels", "distilbert",
                      "roberta", "xlm_roberta", "albert", "deberta_v3")
_LONG_REVIEW = ("The film was a delight from start to finish, although the long and tedious second act "
                "made us wonder whether the director had ever met an editor. ")
HF_REFERENCE_TEXTS = (
    "Hello world.",
    "ok",
    "The film was a DELIGHT from start to finish!",
    "i did NOT enjoy the Long and Tedious second act.",
    "Café naïve résumé: Zoë and José visited Zürich and São Paulo.",
    "東京は日本の首都です。中文 水 火",
    "Great phone 😀👍 would buy again 🎉",
    "  leading and trailing spaces,\ttabs and\nnew lines  ",
    "x" * 250,  # one word longer than WordPiece's 100-character limit
    _LONG_REVIEW * 4,  # a little over the max length
    _LONG_REVIEW * 20,  # far over it
    " ".join(f"word{i} café 東京 😀" for i in range(200)),  # far over it, with every kind of symbol
)


@dataclass(frozen=True)
class HFReferenceCase:
    """One tiny Hugging Face checkpoint (tests/hf_reference/make_checkpoints.py) and transformers'
    output for `texts` (tests/hf_reference/score.py). The directory is shared by the session: copy
    it before changing anything in it."""

    name: str
    path: Path  # the save_pretrained directory
    texts: tuple[str, ...]
    labels: tuple[str, ...]  # in label-id order
    problem_type: str | None  # config.problem_type, e.g. "multi_label_classification"; often None
    max_length: int  # min(tokenizer's model_max_length, the model's position limit)
    token_ids: tuple[tuple[int, ...], ...]  # per text, special tokens included, truncated
    logits: np.ndarray  # (texts, labels), float64 holding transformers' float32 values
    probabilities: np.ndarray  # softmax, or sigmoid when multi-label; same shape

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"


def run_hf_reference(script: str, *args: str | Path) -> None:
    """Run a tests/hf_reference script in .venv-hfref; a failure fails the test with its stderr."""
    if not HF_REFERENCE_PYTHON.exists():
        pytest.fail(f"{HF_REFERENCE_PYTHON} is missing: run `./install.sh test` to create .venv-hfref "
                    "(transformers + PyTorch CPU, the Hugging Face reference)", pytrace=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([str(HF_REFERENCE_PYTHON), str(HF_REFERENCE / script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}", pytrace=False)


def hf_reference_scores(checkpoints: dict[str, Path], texts: tuple[str, ...],
                        work: Path) -> dict[str, HFReferenceCase]:
    """transformers' tokens, logits and probabilities for `texts` on each checkpoint (one process)."""
    work.mkdir(parents=True, exist_ok=True)
    texts_json = work / "texts.json"
    texts_json.write_text(json.dumps(list(texts)), encoding="utf-8")
    args = []
    for name, path in checkpoints.items():
        args += [path, texts_json, work / f"{name}.json"]
    run_hf_reference("score.py", *args)
    cases = {}
    for name, path in checkpoints.items():
        out = json.loads((work / f"{name}.json").read_text(encoding="utf-8"))
        cases[name] = HFReferenceCase(
            name=name, path=path, texts=texts, labels=tuple(out["labels"]),
            problem_type=out["problem_type"], max_length=out["max_length"],
            token_ids=tuple(tuple(ids) for ids in out["token_ids"]),
            logits=np.array(out["logits"], dtype=np.float64).reshape(len(texts), -1),
            probabilities=np.array(out["probabilities"], dtype=np.float64).reshape(len(texts), -1))
    return cases


@pytest.fixture(scope="session")
def hf_reference(tmp_path_factory) -> dict[str, HFReferenceCase]:
    """Every tiny Hugging Face checkpoint by case name (HF_REFERENCE_CASES), with transformers'
    output for HF_REFERENCE_TEXTS. Made once per session (about half a minute)."""
    root = tmp_path_factory.mktemp("hf_reference")
    run_hf_reference("make_checkpoints.py", root / "checkpoints")
    checkpoints = {name: root / "checkpoints" / name for name in HF_REFERENCE_CASES}
    return hf_reference_scores(checkpoints, HF_REFERENCE_TEXTS, root / "scores")


def wait_for_port(port: int, what: str, seconds: float = 30) -> None:
    """Wait until a server of the test's own accepts connections on 127.0.0.1:port."""
    import socket
    import time

    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"{what} did not start"
            time.sleep(0.1)


# ---------------------------------------------------------------------------- sentence-transformers reference
# Tiny seeded sentence-transformers models and what SentenceTransformer.encode makes of
# HF_REFERENCE_TEXTS with them (tests/hf_reference/make_st_models.py, in .venv-hfref), plus the
# packaged all-MiniLM-L6-v2 encoded as it is.

ST_REFERENCE_CASES = ("mean", "cls_dense_normalize", "max_normalize_v5", "mean_sqrt_len_dense2",
                      "mean_prompt_lowercase_v5", "distilbert_cls")
ST_PACKAGED = "all-minilm-l6-v2"


@dataclass(frozen=True)
class STReference:
    path: Path  # the saved model (shared by the session: copy it before changing anything)
    max_seq_length: int
    prompt: str | None  # the prompt name it was encoded with
    embeddings: np.ndarray  # [texts, dim] float64 holding sentence-transformers' float32 values


@pytest.fixture(scope="session")
def st_reference(tmp_path_factory) -> dict[str, STReference]:
    """Every case of ST_REFERENCE_CASES and ST_PACKAGED by name (about 45 s, once a session)."""
    root = tmp_path_factory.mktemp("st_reference")
    texts_json = root / "texts.json"
    texts_json.write_text(json.dumps(list(HF_REFERENCE_TEXTS)), encoding="utf-8")
    packaged = backbones.packaged_path("all-minilm-l6-v2")
    run_hf_reference("make_st_models.py", root, texts_json, f"{ST_PACKAGED}={packaged}")
    out = {}
    for name in ST_REFERENCE_CASES + (ST_PACKAGED,):
        result = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
        out[name] = STReference(packaged if name == ST_PACKAGED else root / name,
                                result["max_seq_length"], result["prompt"],
                                np.array(result["embeddings"], dtype=np.float64))
    return out


def ray_inputs(tmp: Path) -> list[str]:
    """What the Ray engine tests score (tests/test_ray.py, tests/test_ray_cluster.py): the SST-2
    sample as Parquet (300 rows, row groups of 64) and its first 120 texts as JSON Lines, line 7
    not JSON and line 50 a null text."""
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    pq.write_table(pa.table({"text": texts, "n": list(range(300))}), tmp / "a.parquet", row_group_size=64)
    lines = [json.dumps({"text": t, "n": i}) for i, t in enumerate(texts[:120])]
    lines[7], lines[50] = "{not json", json.dumps({"text": None, "n": 50})
    (tmp / "b.jsonl").write_text("\n".join(lines) + "\n")
    return [str(tmp / "a.parquet"), str(tmp / "b.jsonl")]
