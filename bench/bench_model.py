"""Build the benchmark's models.

    .venv/bin/python bench/bench_model.py OUT_DIR                          # MiniLM, two formats
    .venv-bench/bin/python bench/bench_model.py --base OUT_DIR TOKENIZER_DIR  # BERT-base shaped

MiniLM (scorer's venv): OUT_DIR/scorer: a scorer model directory (packaged MiniLM, BERT pooled
output, a fixed 2-class head: seed 0, normal(0, 0.5)); OUT_DIR/hf: the same as a Hugging Face
BertForSequenceClassification checkpoint (for transformers and the ONNX export).

Base (the bench venv, transformers + torch): OUT_DIR/hf: a BertForSequenceClassification of BERT-base
shape (12 layers, hidden 768, 12 heads, intermediate 3072, 512 positions, exact GELU) with seeded
random weights (speed does not depend on the values; the 2-class head is normal(0, 0.5) as above),
saved with save_pretrained, with TOKENIZER_DIR's tokenizer files (the MiniLM checkpoint's: the
vocabulary size is taken from it). A randomly initialised BERT gives nearly the same pooled output
for every text, so the head's bias is set to put the decision boundary at the median logit
difference of the first 256 SST-2 dev sentences: both labels occur, and the contestants' argmax
agreement says something.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
LABELS = ["negative", "positive"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HEAD_SEED, HEAD_STD = 0, 0.5


def head_kernel(hidden: int) -> np.ndarray:
    """The fixed 2-class head, [hidden, 2]."""
    return np.random.default_rng(HEAD_SEED).normal(0, HEAD_STD, (hidden, len(LABELS))).astype(np.float32)


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dst / name)


def minilm(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import scorer  # noqa: F401  (environment defaults)
    from safetensors.numpy import load_file, save_file

    from scorer import backbone as backbones
    from scorer import modelspec
    from scorer.heads import HEAD_NAME

    kernel = head_kernel(384)
    bias = np.zeros(len(LABELS), np.float32)
    spec = modelspec.ModelSpec(name="bench-minilm-fixed-head", labels=LABELS,
                              base={"kind": "packaged", "id": "all-minilm-l6-v2"}, pooling="pooled",
                              max_length=512,  # as the other contestants truncate long texts
                              training={"note": "fixed seeded head for benchmarks; not trained"})
    (out / "scorer").mkdir(parents=True, exist_ok=True)
    save_file({f"{HEAD_NAME}/kernel": kernel, f"{HEAD_NAME}/bias": bias},
              str(out / "scorer" / spec.weights_file))
    modelspec.write_spec(out / "scorer", spec)

    src = backbones.packaged_path("all-minilm-l6-v2")
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    tensors = {("bert." + k if not k.startswith("bert.") else k): v
               for k, v in load_file(str(src / "model.safetensors")).items()
               if not k.endswith("position_ids")}
    tensors["classifier.weight"] = np.ascontiguousarray(kernel.T)  # HF Linear: [out, in]
    tensors["classifier.bias"] = bias
    save_file(tensors, str(hf / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], num_labels=2,
                  id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    (hf / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(src, hf)


def bert_base(out: Path, tokenizer_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    config = BertConfig(vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, hidden_act="gelu",
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # a wide head, as the MiniLM one, so that argmax margins are not tiny
        model.classifier.weight.copy_(torch.from_numpy(head_kernel(config.hidden_size).T.copy()))
        model.classifier.bias.zero_()
        model.classifier.bias[1] = -calibration_median(model, tokenizer_dir)
    hf = out / "hf"
    model.save_pretrained(hf)
    copy_tokenizer(tokenizer_dir, hf)


def calibration_median(model, tokenizer_dir: Path) -> float:
    """Median of logit(positive) - logit(negative) over the first 256 SST-2 dev sentences."""
    import torch
    from transformers import AutoTokenizer

    texts = [json.loads(line)["text"] for _, line in zip(range(256), open(DATA / "sst2" / "dev.jsonl"))]
    batch = AutoTokenizer.from_pretrained(tokenizer_dir)(texts, padding=True, truncation=True,
                                                         max_length=128, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return float((logits[:, 1] - logits[:, 0]).median())


if __name__ == "__main__":
    if sys.argv[1] == "--base":
        bert_base(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        minilm(Path(sys.argv[1]))
