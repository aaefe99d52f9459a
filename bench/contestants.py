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

The embedding task (`bench/throughput.py --task embedding`): MODEL_DIR is a sentence-transformers
directory (the packaged all-MiniLM-L6-v2) and MODEL_DIR.onnx/ its encoder's ONNX export
(export_onnx.py --embedding); every contestant truncates at its max_seq_length (256) and writes
its vectors to RESULT.npy. scorer_embed (the product's venv): the whole Parquet -> Parquet run,
--long-text truncate; st_encode / st_encode_best (.venv-hfref): SentenceTransformer.encode at
its default batch size (32) / at the fastest of 16, 32, 64 and 128 (each timed on the data);
onnx_embed / onnx_embed_optimized (the bench venv): ONNX Runtime on the export (plain /
transformer-optimized), length-sorted batches of 32, mean pooling and normalisation in NumPy.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # .venv-hfref (st_encode) has none: it reads TEXTS.json, written beside TEXTS.parquet
    pa = pq = None

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


def onnx_session(model: Path, tokenizer: Path, max_length: int):
    """An ONNX Runtime CPU session on every core, and its tokenizer (unpadded, cut at max_length)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return session, tok


def onnx_batches(session, tok, texts):
    """The texts in length-sorted batches of BATCH, each padded to its longest, through the
    session: (the batch's rows, its attention mask, the session's first output) for each; the
    mask's sum and size are the batch's real and padded tokens."""
    encs = tok.encode_batch_fast(list(texts))
    lengths = np.array([len(e.ids) for e in encs])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), BATCH):
        rows = order[start:start + BATCH]
        width = lengths[rows].max()
        ids = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, : lengths[r]] = encs[r].ids
        mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
        yield rows, mask, session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]


def onnx_runtime(texts, model_dir: Path, long: bool, variant: str):
    path = model_dir / {"onnx": "model.onnx", "onnx_optimized": "model_optimized.onnx",
                        "onnx_int8": "model_int8.onnx"}[variant]
    t0 = time.perf_counter()
    session, tok = onnx_session(path, model_dir / "hf" / "tokenizer.json", 512 if long else 128)
    load = time.perf_counter() - t0

    def run(batch_texts):
        out = np.zeros(len(batch_texts), np.int64)
        real = padded = 0
        for rows, mask, logits in onnx_batches(session, tok, batch_texts):
            out[rows] = logits.argmax(1)
            real, padded = real + int(mask.sum()), padded + mask.size
        return out, real, padded

    return load, run


def scorer_embed(data: str, model: Path):
    """The whole tool on a sentence-transformers directory, cut at its max length as
    SentenceTransformer.encode does; the warm-up pass compiles every shape."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from scorer import Scorer, run

    t0 = time.perf_counter()
    s = Scorer.load(model, long_text="truncate")
    load = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="scorer-bench-embed-"))

    def go(_texts):
        m = run([data], out, scorer_=s, overwrite=True, long_text="truncate").manifest
        vectors = pa.concat_tables(pq.read_table(out / p["file"]) for p in m["parts"]).column("embedding")
        return np.array(vectors.to_pylist(), np.float32), m["real_tokens"], m["padded_tokens"]

    return load, go


ST_BATCH_SIZES = (16, 32, 64, 128)  # st_encode_best tries each; 32 is encode()'s default


def st_encode(texts, model: Path, best: bool):
    """SentenceTransformer.encode on PyTorch CPU (normalised as the model's Normalize module does)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    t0 = time.perf_counter()
    st = SentenceTransformer(str(model), device="cpu")
    load = time.perf_counter() - t0
    tok = st.tokenizer
    chosen = {"batch_size": 32}

    def tokens(batch_texts, batch_size):
        """(real, padded) tokens of encode()'s batches: counted after the timed pass."""
        ids = tok(list(batch_texts), truncation=True, max_length=st.max_seq_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # encode() sorts by length
        padded = sum(max(len(ids[i]) for i in order[k:k + batch_size]) * len(order[k:k + batch_size])
                     for k in range(0, len(order), batch_size))
        return sum(len(x) for x in ids), padded

    def go(batch_texts):
        if best and len(batch_texts) > 2 * BATCH:  # the timed pass: the fastest batch size
            timings = {}
            for size in ST_BATCH_SIZES:
                t = time.perf_counter()
                st.encode(list(batch_texts), batch_size=size)
                timings[size] = time.perf_counter() - t
            chosen["batch_size"] = min(timings, key=timings.get)
            chosen["timings"] = timings
        vectors = st.encode(list(batch_texts), batch_size=chosen["batch_size"], convert_to_numpy=True)
        return vectors.astype(np.float32), None, None

    chosen["count"] = lambda batch_texts: tokens(batch_texts, chosen["batch_size"])
    return load, go, chosen


def onnx_embed(texts, model: Path, optimized: bool):
    """ONNX Runtime on the encoder's export, mean pooling over real tokens, L2 normalisation."""
    export = Path(str(model) + ".onnx")
    t0 = time.perf_counter()
    max_length = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"]
    session, tok = onnx_session(export / ("model_optimized.onnx" if optimized else "model.onnx"),
                                model / "tokenizer.json", max_length)
    load = time.perf_counter() - t0

    def run(batch_texts):
        out = None
        real = padded = 0
        for rows, mask, hidden in onnx_batches(session, tok, batch_texts):  # hidden: [batch, width, dim]
            pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.zeros((len(batch_texts), pooled.shape[1]), np.float32)
            out[rows] = pooled
            real, padded = real + int(mask.sum()), padded + mask.size
        return out, real, padded

    return load, run


def read_texts(data: str) -> list:
    if pq is None:
        return json.loads(Path(data).with_suffix(".json").read_text(encoding="utf-8"))
    return pq.read_table(data).column("text").to_pylist()


def main_embedding(name: str, data: str, model: Path, result_path: str) -> None:
    texts = read_texts(data)
    extra = {}
    if name == "scorer_embed":
        load, run = scorer_embed(data, model)
    elif name.startswith("st_encode"):
        load, run, extra = st_encode(texts, model, best=name == "st_encode_best")
    else:
        load, run = onnx_embed(texts, model, optimized=name == "onnx_embed_optimized")
    t0 = time.perf_counter()
    run(texts if name == "scorer_embed" else texts[: 2 * BATCH])  # warm-up
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors, real, padded = run(texts)
    seconds = time.perf_counter() - t0
    if real is None:
        real, padded = extra["count"](texts)
    if name == "st_encode_best":  # the timed pass is the chosen batch size's; the search is apart
        seconds = extra["timings"][extra["batch_size"]]
    np.save(str(result_path) + ".npy", vectors)
    Path(result_path).write_text(json.dumps({
        "contestant": name, "rows": len(texts), "load_seconds": load, "warmup_seconds": warmup,
        "steady_seconds": seconds, "real_tokens": real, "padded_tokens": padded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch_size": extra.get("batch_size"),
        "batch_size_seconds": {str(k): v for k, v in extra.get("timings", {}).items()}}))


EMBEDDING_CONTESTANTS = ("scorer_embed", "st_encode", "st_encode_best", "onnx_embed", "onnx_embed_optimized")


def main(name: str, data: str, model_dir: str, result_path: str) -> None:
    if name in EMBEDDING_CONTESTANTS:
        return main_embedding(name, data, Path(model_dir), result_path)
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
