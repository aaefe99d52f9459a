"""One contestant of bench/throughput.py, in a process of its own:

    python bench/contestants.py NAME TEXTS.parquet MODEL_DIR RESULT.json

NAME is scorer, scorer_hf, scorer_int8, scorer_hf_int8 (`--precision int8`) or tutorial (the
product's venv), hf_pipeline, onnx, onnx_optimized or onnx_int8 (onnxruntime's dynamic int8
quantization of onnx_optimized) (the bench venv, which has torch, transformers and onnxruntime;
the product's venv does not). Each
loads the same weights (MODEL_DIR/hf: a BertForSequenceClassification checkpoint; MODEL_DIR/scorer,
when there is one, the same as a scorer model directory), times load and warm-up apart from the
steady-state pass, and writes the argmax of every row. scorer reads MODEL_DIR/scorer, scorer_hf
the Hugging Face directory MODEL_DIR/hf as it is. TEXTS.parquet is named after its data set
(short, medium or long), optionally with a suffix: long-100.parquet.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH = 32


def scorer_pipeline(data: str, model: Path, precision: str = "auto"):
    """The whole tool, Parquet -> Parquet with I/O, through scorer.run with one loaded Scorer
    (model: a scorer model directory or a Hugging Face checkpoint directory): the warm-up pass
    compiles every shape the data needs; the timed pass is steady state."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scorer import Scorer, run

    t0 = time.perf_counter()
    s = Scorer.load(model, precision=precision)
    load = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="scorer-bench-out-"))

    def go(_texts):
        result = run([data], out, scorer_=s, overwrite=True)
        m = result.manifest
        labels = pa.concat_tables(pq.read_table(out / p["file"]) for p in m["parts"]).column("label_id")
        return np.array(labels.to_pylist()), m["real_tokens"], m["padded_tokens"]

    return load, go


def tutorial(texts, model_dir: Path, fixed: int):
    """The tutorial way: one tokenizer call per sentence padded to a fixed length (64 for short
    texts, the model's 128 for medium ones, 512 for long), Keras model.predict(batch_size=32),
    no XLA."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import scorer  # noqa: F401  (environment defaults)
    from scorer import encode, modeldir
    from scorer import backbone as backbones
    from scorer import classifier

    t0 = time.perf_counter()
    md = modeldir.read(model_dir / "scorer")
    model = classifier.load_keras_model(md)
    model.compile(jit_compile=False)
    tokenizer = encode.load_tokenizer(backbones.tokenizer_path(md.spec.base), fixed)
    load = time.perf_counter() - t0

    def run(batch_texts):
        ids = np.zeros((len(batch_texts), fixed), np.int32)
        lengths = np.zeros(len(batch_texts), np.int32)
        for i, text in enumerate(batch_texts):  # per-sentence calls, as in the tutorial
            enc = tokenizer.encode(text).ids
            ids[i, : len(enc)] = enc
            lengths[i] = len(enc)
        mask = (np.arange(fixed)[None, :] < lengths[:, None]).astype(np.int32)
        logits = model.predict({"token_ids": ids, "padding_mask": mask}, batch_size=BATCH, verbose=0)
        return logits.argmax(1), int(mask.sum()), ids.size

    return load, run


def hf_pipeline(texts, model_dir: Path, long: bool):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir / "hf")
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device="cpu",
                    truncation=True, max_length=512 if long else 128, batch_size=BATCH)
    load = time.perf_counter() - t0
    label_id = model.config.label2id

    def run(batch_texts):
        out = pipe(list(batch_texts))
        enc = tok(list(batch_texts), truncation=True, max_length=512 if long else 128)
        real = sum(len(x) for x in enc["input_ids"])
        # the pipeline pads each batch of 32 to its longest row
        padded = sum(max(len(x) for x in enc["input_ids"][i:i + BATCH]) * len(enc["input_ids"][i:i + BATCH])
                     for i in range(0, len(batch_texts), BATCH))
        return np.array([label_id[o["label"]] for o in out]), real, padded

    return load, run


def onnx_runtime(texts, model_dir: Path, long: bool, variant: str):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    path = model_dir / {"onnx": "model.onnx", "onnx_optimized": "model_optimized.onnx",
                        "onnx_int8": "model_int8.onnx"}[variant]
    t0 = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(model_dir / "hf" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512 if long else 128)
    load = time.perf_counter() - t0

    def run(batch_texts):
        encs = tok.encode_batch_fast(list(batch_texts))
        lengths = np.array([len(e.ids) for e in encs])
        order = np.argsort(lengths, kind="stable")  # length-sorted batches, padded to the longest
        out = np.zeros(len(batch_texts), np.int64)
        padded = 0
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            width = lengths[rows].max()
            ids = np.zeros((len(rows), width), np.int64)
            for i, r in enumerate(rows):
                ids[i, : lengths[r]] = encs[r].ids
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            logits = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                        "token_type_ids": np.zeros_like(ids)})[0]
            out[rows] = logits.argmax(1)
            padded += ids.size
        return out, int(lengths.sum()), padded

    return load, run


def main(name: str, data: str, model_dir: str, result_path: str) -> None:
    texts = pq.read_table(data).column("text").to_pylist()
    dataset = Path(data).stem.split("-")[0]
    long = dataset == "long"
    model_dir = Path(model_dir)
    if name.startswith("scorer"):
        load, run = scorer_pipeline(data, model_dir / ("hf" if name.startswith("scorer_hf") else "scorer"),
                                    "int8" if name.endswith("_int8") else "auto")
    elif name == "tutorial":
        load, run = tutorial(texts, model_dir, {"short": 64, "medium": 128}.get(dataset, 512))
    elif name == "hf_pipeline":
        load, run = hf_pipeline(texts, model_dir, long)
    else:
        load, run = onnx_runtime(texts, model_dir, long, variant=name)
    t0 = time.perf_counter()
    run(texts if name.startswith("scorer") else texts[: 2 * BATCH])  # warm-up
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictions, real, padded = run(texts)
    seconds = time.perf_counter() - t0
    Path(result_path).write_text(json.dumps({
        "contestant": name, "rows": len(texts), "load_seconds": load, "warmup_seconds": warmup,
        "steady_seconds": seconds, "real_tokens": real, "padded_tokens": padded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "argmax": [int(x) for x in predictions]}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
