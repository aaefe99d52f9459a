"""Score texts with a Hugging Face sequence-classification checkpoint the way transformers does:
the independent reference that scorer's import (and export) of such checkpoints is checked
against. Run with .venv-hfref/bin/python (transformers + PyTorch CPU):

    .venv-hfref/bin/python tests/hf_reference/score.py CKPT_DIR TEXTS_JSON OUT_JSON [CKPT_DIR TEXTS_JSON OUT_JSON ...]

TEXTS_JSON holds a list of strings. Each text is tokenized on its own by AutoTokenizer with
truncation to max_length (the smaller of the tokenizer's model_max_length and the model's position
limit) and scored by AutoModelForSequenceClassification in fp32, eval mode, on the CPU. OUT_JSON
gets {"labels": [...] in id order, "problem_type": ..., "max_length": N, "token_ids": [[...] per
text], "logits": [[...]], "probabilities": [[...]]} (softmax, or sigmoid when problem_type is
multi_label_classification). Several checkpoints in one call share one start-up of torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a reference never downloads anything

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

MULTI_LABEL = "multi_label_classification"


def position_limit(model: PreTrainedModel) -> int:
    """How many tokens the model's position embeddings take. RoBERTa-style embeddings (RoBERTa,
    XLM-R, CamemBERT, ...) number positions from pad_token_id + 1, which uses up that many rows."""
    limit = model.config.max_position_embeddings
    embeddings = getattr(model.base_model, "embeddings", None)
    if hasattr(embeddings, "create_position_ids_from_input_ids") and hasattr(embeddings, "padding_idx"):
        limit -= embeddings.padding_idx + 1
    return limit


def score(checkpoint: Path, texts: list[str]) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()
    config = model.config
    max_length = min(tokenizer.model_max_length, position_limit(model))
    token_ids, logits = [], []
    with torch.inference_mode():
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            token_ids.append(encoded["input_ids"][0].tolist())
            logits.append(model(**encoded).logits[0])
    stacked = torch.stack(logits) if logits else torch.empty(0, config.num_labels)
    if config.problem_type == MULTI_LABEL:
        probabilities = torch.sigmoid(stacked)
    else:
        probabilities = torch.softmax(stacked, dim=-1)
    return {"labels": [config.id2label[i] for i in range(config.num_labels)],
            "problem_type": config.problem_type, "max_length": max_length, "token_ids": token_ids,
            "logits": stacked.tolist(), "probabilities": probabilities.tolist()}


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 3:
        print("usage: score.py CKPT_DIR TEXTS_JSON OUT_JSON [CKPT_DIR TEXTS_JSON OUT_JSON ...]",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and CI has 2 cores
    for checkpoint, texts_json, out_json in zip(argv[0::3], argv[1::3], argv[2::3]):
        texts = json.loads(Path(texts_json).read_text(encoding="utf-8"))
        result = score(Path(checkpoint), texts)
        Path(out_json).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
