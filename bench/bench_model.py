"""Build the benchmark's model in two formats from the same weights:

    .venv/bin/python bench/bench_model.py OUT_DIR

OUT_DIR/scorer: a scorer model directory (packaged MiniLM, BERT pooled output, a fixed 2-class
head: seed 0, normal(0, 0.5)); OUT_DIR/hf: the same as a Hugging Face
BertForSequenceClassification checkpoint (for transformers and the ONNX export).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scorer  # noqa: E402,F401
from scorer import backbone as backbones  # noqa: E402
from scorer import classifier, modeldir  # noqa: E402


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.5, (384, 2)).astype(np.float32)
    bias = np.zeros(2, np.float32)
    spec = modeldir.ModelSpec(name="bench-minilm-fixed-head", labels=["negative", "positive"],
                              base={"kind": "packaged", "id": "all-minilm-l6-v2"}, pooling="pooled",
                              max_length=512,  # as the other contestants truncate long texts
                              training={"note": "fixed seeded head for benchmarks; not trained"})
    (out / "scorer").mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import load_file, save_file

    save_file({f"{classifier.HEAD_NAME}/kernel": kernel, f"{classifier.HEAD_NAME}/bias": bias},
              str(out / "scorer" / spec.weights_file))
    modeldir.write_spec(out / "scorer", spec)

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
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, hf / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
