"""The Python API, and the contract every engine wraps: load a model once, score texts.

    s = Scorer.load()                         # or Scorer.load("models/sentiment")
    s.score(["a gorgeous film", "dull"])      # -> [Prediction(label='positive', ...), ...]
    s.score_columns(texts)                    # -> Arrow table of output columns (what run() writes)
    s.embed(texts)                            # -> float32 [n, hidden]: what the classifier head reads

    Scorer.load(emit="label,embedding")       # score_columns() / run() write both, one forward pass
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scorer import backbone as backbones
from scorer import classifier, encode, modeldir, quantized, runtime
from scorer.classifier import BOTH, FEATURES, PROBABILITIES
from scorer.embedder import EMBEDDING, EMBEDDING_DTYPES, LABEL, Embedder, embedding_array, parse_emit
from scorer.embedding import combine_windows as combine_window_vectors
from scorer.errors import ConfigError, ModelError
from scorer.modelspec import Temperatures
from scorer.prepared import Prepared, ScoreStats, prepare
from scorer.stdir import SentenceTransformerDir


@dataclass
class Prediction:
    label: str | None
    label_id: int | None
    score: float | None  # probability of `label`
    probabilities: dict[str, float] | None
    labels: list[str] | None = None  # multi-label: every label at or above the threshold
    error: str | None = None
    embedding: list[float] | None = None  # emit="label,embedding": what the head read


LONG_TEXT = ("truncate", "window")  # what happens to a text over the max length
# Measured on 2,000 IMDB dev reviews with the default model (README "Long texts"): windows 0.9220
# accuracy, truncation 0.8635; a short text costs the same either way.
DEFAULT_LONG_TEXT = "window"


def output_names(multi_label: bool, prefix: str = "", windows: bool = False,
                 emit: tuple[str, ...] = (LABEL,)) -> list[str]:
    """A classifier's output columns (Scorer.columns), for what it emits."""
    names = (["label", "label_id", "score", "probabilities"] + (["labels"] if multi_label else [])
             if LABEL in emit else [])
    names += [EMBEDDING] if EMBEDDING in emit else []
    return [prefix + n for n in names + (["windows"] if windows else []) + ["error"]]


@dataclass
class Outputs:
    """What Scorer.infer gives when the scorer emits embeddings (emit label alone: the
    probabilities array itself), rows in input order, NaN rows where a text was not scored."""

    probabilities: np.ndarray | None  # [n, labels]; None: labels not emitted
    embeddings: np.ndarray | None  # [n, hidden] float32, what the head read; None: not emitted


class Scorer:
    def __init__(self, model_dir: modeldir.ModelDir, predictor: classifier.Predictor,
                 encoder: encode.BatchEncoder, emit: tuple[str, ...] = (LABEL,),
                 embedding_dtype: str = "float32"):
        self.model_dir = model_dir
        self.spec = model_dir.spec
        self.predictor = predictor
        self.encoder = encoder
        self.stats = ScoreStats()
        self.emit = emit  # the output columns' kinds: labels, embeddings or both
        self.embedding_type = EMBEDDING_DTYPES[embedding_dtype]  # of the embedding column's values

    @classmethod
    def load(cls, model=None, *, max_length: int | None = None,
             batch_tokens: int = encode.DEFAULT_BATCH_TOKENS, precision: str = "auto",
             jit_compile: bool = True, threads: int | None = None,
             packing: bool = True, long_text: str = DEFAULT_LONG_TEXT,
             max_windows: int = encode.DEFAULT_MAX_WINDOWS,
             overlap: int | None = None, prompt: str | None = None,
             embedding_dtype: str = "float32", emit: str | None = None) -> "Scorer":
        """Load a model directory (None: the packaged default), checking every checksum first
        (or a model modeldir.read has read and checked).
        threads sizes TensorFlow's and the tokenizer's pools (default: the usable cores).
        long_text: a text over the max length is cut there ("truncate"), or scored as up to
        max_windows overlapping windows whose logits are averaged ("window"), each sharing
        `overlap` tokens with the one before (default: window_overlap(max length)).
        A sentence-transformers directory loads as an embedder.Embedder (`embed(texts)`), its
        texts prefixed with the prompt named `prompt` (config_sentence_transformers.json).
        emit: what the output columns hold, "label" (a classifier's default), "embedding" (an
        embedding model's, and a classifier's head input alone) or "label,embedding" (both, from
        one forward pass)."""
        if long_text not in LONG_TEXT:
            raise ValueError(f"long_text must be one of {LONG_TEXT}, not {long_text!r}")
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"embedding_dtype must be one of {tuple(EMBEDDING_DTYPES)}, not {embedding_dtype!r}")
        emits = parse_emit(emit)
        md = model if isinstance(model, (modeldir.ModelDir, SentenceTransformerDir)) else modeldir.read(model)
        if md.kind == "embedding":
            length = min(max_length or md.max_length, md.max_length)
            return Embedder.build(md, max_length=max_length, batch_tokens=batch_tokens,
                                  precision=precision, jit_compile=jit_compile, threads=threads,
                                  packing=packing, max_windows=max_windows, prompt=prompt,
                                  embedding_dtype=embedding_dtype, emit=emits,
                                  overlap=_overlap(long_text, overlap, length))
        if prompt is not None:
            raise ModelError(f"{md.path}: prompts are for sentence-transformers models, not classifiers")
        emits = emits or (LABEL,)
        if embedding_dtype != "float32" and EMBEDDING not in emits:
            raise ModelError(f"{md.path}: the embedding dtype is for embeddings: a sentence-transformers "
                             "model's, or a classifier's with --emit embedding")
        runtime.start(threads)
        spec = md.spec
        policy = classifier.choose_device(precision=precision)
        if policy.int8 and EMBEDDING in emits:  # said before the model loads
            raise ConfigError("--precision int8 gives probabilities only: --emit embedding needs "
                              "float32 or mixed precision")
        keras_model = classifier.load_keras_model(md, dtype=policy.dtype)
        length = min(max_length or spec.max_length, spec.max_length)
        if spec.tokenizer_file:
            tokenizer, pad_id = encode.load_tokenizer(md.path / spec.tokenizer_file, length), None
        elif md.checkpoint is not None:  # read and hashed by modeldir.read: not checked again
            tokenizer, pad_id = backbones.hf_tokenizer(md.checkpoint.path, length)
        else:
            tokenizer, pad_id = backbones.base_tokenizer(spec.base, length)
        pack = encode.DEFAULT_PACK_LENGTH if packing and classifier.packing_supported(keras_model) else None
        encoder = encode.BatchEncoder(tokenizer, length, batch_tokens, pack_length=pack, pad_id=pad_id,
                                      window_overlap=_overlap(long_text, overlap, length),
                                      max_windows=max_windows)
        if policy.int8:
            predictor = quantized.Int8Predictor(keras_model, spec.problem_type, policy,
                                                pooling=spec.pooling, temperature=spec.temperature)
        else:
            predictor = classifier.Predictor(keras_model, spec.problem_type, policy, jit_compile,
                                             pooling=spec.pooling, temperature=spec.temperature)
        return cls(md, predictor, encoder, emits, embedding_dtype)

    def reset_stats(self) -> None:
        """Count from zero again: a Scorer may serve several runs, each reporting its own."""
        self.stats = ScoreStats()

    @property
    def multi_label(self) -> bool:
        return self.spec.problem_type == "multi_label"

    @property
    def windowed(self) -> bool:
        return self.encoder.window_overlap is not None

    # The three stages an engine runs, possibly on different threads: prepare (tokenize and
    # plan batches), infer (the model), columns (Arrow output). Each updates only its own stats.

    def prepare(self, texts: list, read_errors: list | None = None) -> Prepared:
        """Check and tokenize a chunk of texts; rows that cannot be scored get a reason."""
        return prepare(self.encoder, self.stats, texts, read_errors)

    def infer(self, prepared: Prepared) -> "np.ndarray | Outputs":
        """Probabilities [n, labels] in input order, NaN rows where a text was not scored; when
        the scorer emits embeddings, Outputs (both from the same forward pass)."""
        if self.emit == (LABEL,):
            return self._outputs(prepared, PROBABILITIES).probabilities
        return self._outputs(prepared, BOTH if LABEL in self.emit else FEATURES)

    def _outputs(self, prepared: Prepared, which: str) -> Outputs:
        t0 = time.perf_counter()
        n, chunk = len(prepared.errors), prepared.encoded
        out = Outputs(
            np.full((n, len(self.spec.labels)), np.nan, np.float32) if which != FEATURES else None,
            np.full((n, self.predictor.features_width), np.nan, np.float32) if which != PROBABILITIES else None)
        if chunk is not None:
            if which == PROBABILITIES:
                out.probabilities[prepared.valid] = chunk_probabilities(
                    self.predictor, chunk, len(self.spec.labels), self.multi_label, self.spec.temperatures)
            else:
                probs, features = chunk_outputs(self.predictor, chunk, which, self.multi_label,
                                                self.spec.temperatures)
                out.embeddings[prepared.valid] = features
                if probs is not None:
                    out.probabilities[prepared.valid] = probs
            s = self.stats
            s.real_tokens += chunk.real_tokens
            s.padded_tokens += chunk.padded_tokens
        self.stats.infer_seconds += time.perf_counter() - t0
        return out

    def columns(self, prepared: Prepared, inferred: "np.ndarray | Outputs", prefix: str = "") -> pa.Table:
        """The output columns (see output_names) for a prepared and inferred chunk."""
        outputs = inferred if isinstance(inferred, Outputs) else Outputs(inferred, None)
        errors = prepared.errors
        ok = np.array([e is None for e in errors], dtype=bool)
        columns = self._label_columns(outputs.probabilities, ok) if outputs.probabilities is not None else {}
        if outputs.embeddings is not None:
            columns[EMBEDDING] = embedding_array(outputs.embeddings, ok, self.embedding_type)
        if self.windowed:
            columns["windows"] = pa.array(prepared.windows(), pa.int32(), mask=~ok)
        columns["error"] = pa.array(errors, pa.string())
        return pa.table({prefix + k: v for k, v in columns.items()})

    def _label_columns(self, probs: np.ndarray, ok: np.ndarray) -> dict:
        """label, label_id, score, probabilities (and labels, multi-label), null where not ok."""
        label_id = np.where(ok, np.nan_to_num(probs).argmax(axis=1), 0).astype(np.int32)
        score = probs[np.arange(len(ok)), label_id]
        names = np.array(self.spec.labels, dtype=object)
        flat = pa.array(np.nan_to_num(probs).ravel(), pa.float32())
        columns = {
            "label": pa.array(names[label_id], pa.string(), mask=~ok),
            "label_id": pa.array(label_id, pa.int32(), mask=~ok),
            "score": pa.array(score, pa.float32(), mask=~ok),
            "probabilities": _null_where(pa.FixedSizeListArray.from_arrays(flat, probs.shape[1])
                                         .cast(pa.list_(pa.float32())), ~ok),
        }
        if self.multi_label:
            above = probs >= self.spec.threshold
            columns["labels"] = pa.array(
                [list(names[row]) if k else None for row, k in zip(above, ok)], pa.list_(pa.string()))
        return columns

    def probabilities(self, texts: list) -> tuple[np.ndarray, list]:
        """Probabilities [n, labels] (NaN rows where a text cannot be scored) and a reason per row."""
        prepared = self.prepare(texts)
        return self._outputs(prepared, PROBABILITIES).probabilities, prepared.errors

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), hidden]: the vector the classifier head reads for each text (a
        text of several windows: the mean of its windows'); a row of NaN where a text cannot be
        scored (see prepare's reasons)."""
        return self.vectors(self.prepare(list(texts)))

    def vectors(self, prepared: Prepared) -> np.ndarray:
        """embed() of a prepared chunk: [n, hidden] float32, NaN rows where not scored."""
        return self._outputs(prepared, FEATURES).embeddings

    def score_columns(self, texts: list, read_errors: list | None = None, prefix: str = "") -> pa.Table:
        """All three stages on one chunk, on this thread."""
        prepared = self.prepare(texts, read_errors)
        return self.columns(prepared, self.infer(prepared), prefix)

    def score(self, texts: list[str]) -> list[Prediction]:
        """A Prediction per text (with its embedding when the scorer emits both)."""
        if LABEL not in self.emit:
            raise ModelError(f"{self.model_dir.path}: loaded with emit='embedding', it gives no "
                             "labels: use embed(), or load it with emit='label,embedding'")
        table = self.score_columns(list(texts)).to_pylist()
        out = []
        for row in table:
            probs = (dict(zip(self.spec.labels, row["probabilities"]))
                     if row["probabilities"] is not None else None)
            out.append(Prediction(row["label"], row["label_id"], row["score"], probs,
                                  row.get("labels"), row["error"], row.get(EMBEDDING)))
        return out


def run_batches(predictor: classifier.Predictor, chunk: encode.EncodedChunk,
                num_labels: int) -> np.ndarray:
    """Probabilities [rows of the chunk, labels] in the chunk's row order."""
    probs = np.empty((len(chunk.lengths), num_labels), dtype=np.float32)
    for batch in chunk.batches:
        probs[batch.rows] = predictor(batch)
    return probs


def chunk_probabilities(predictor: classifier.Predictor, chunk: encode.EncodedChunk, num_labels: int,
                        multi_label: bool, temperatures: Temperatures | None = None) -> np.ndarray:
    """Probabilities [texts of the chunk, labels]: a windowed text's windows combined (with the
    temperatures the predictor's were divided by, see combine_windows)."""
    sequences = run_batches(predictor, chunk, num_labels)  # [sequences, labels]
    if chunk.text_of is None:
        return sequences
    return combine_windows(sequences, chunk.text_of, len(chunk.windows), multi_label,
                           temperatures)  # [texts, labels]


def chunk_outputs(predictor: classifier.Predictor, chunk: encode.EncodedChunk, which: str, multi_label: bool,
                  temperatures: Temperatures | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(probabilities [texts, labels] or None, features [texts, hidden]) of a chunk, which=BOTH
    or FEATURES: a windowed text's probabilities combined as chunk_probabilities does, its
    features as the mean of its windows' (not normalised: a classifier's features are not unit
    vectors, and one window's are kept as they are)."""
    features = np.empty((len(chunk.lengths), predictor.features_width), np.float32)
    probs = np.empty((len(chunk.lengths), predictor.num_labels), np.float32) if which == BOTH else None
    for batch in chunk.batches:
        out = predictor.outputs(batch, which)
        features[batch.rows] = out[0]
        if probs is not None:
            probs[batch.rows] = out[1]
    if chunk.text_of is None:
        return probs, features
    texts = len(chunk.windows)
    features = combine_window_vectors(features, chunk.text_of, texts, normalize=False)
    if probs is not None:
        probs = combine_windows(probs, chunk.text_of, texts, multi_label, temperatures)
    return probs, features


def windows_per_text(chunk: encode.EncodedChunk) -> np.ndarray:
    """[texts] int: how many windows each text of the chunk was scored as."""
    return chunk.windows if chunk.windows is not None else np.ones(len(chunk.lengths), np.int32)


def window_overlap(max_length: int) -> int:
    """Tokens a window shares with the one before: a quarter of the max length."""
    return max_length // 4


def _overlap(long_text: str, overlap: int | None, max_length: int) -> int | None:
    """The encoder's window overlap for a long_text choice (None: texts over the max length are cut)."""
    if long_text != "window":
        return None
    return window_overlap(max_length) if overlap is None else overlap


def combine_windows(probs: np.ndarray, text_of: np.ndarray, texts: int, multi_label: bool,
                    temperatures: Temperatures | None = None) -> np.ndarray:
    """[windows, labels] probabilities -> [texts, labels]: the mean of each text's window logits,
    through the same softmax / sigmoid. temperatures: the windows' logits were divided by
    temperatures.temperature; each text's mean is divided by its own instead (a text of several
    windows may have its own calibration, Temperatures.per_text)."""
    counts = np.bincount(text_of, minlength=texts).astype(np.float64)[:, None]  # [texts, 1]
    summed = np.zeros((texts, probs.shape[1]))
    np.add.at(summed, text_of, logits_of(probs, multi_label))
    scale = 1.0 if temperatures is None else \
        temperatures.temperature / temperatures.per_text(counts)  # [texts, 1]
    return probabilities_of(summed / counts * scale, multi_label).astype(np.float32)


def logits_of(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    """Logits [n, labels] (float64) that give these probabilities, up to softmax's per-row
    constant (softmax is blind to it, so log probabilities stand for logits exactly). The clip
    keeps a float32 probability as small as 1e-30 (a confident model's) instead of -inf."""
    p = np.clip(probs.astype(np.float64), 1e-30, 1.0)
    return np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16)) if multi_label else np.log(p)


def probabilities_of(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """The model's activation on logits [n, labels]: sigmoid (multi-label) or softmax."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def error_kind(reason: str) -> str:
    """The kind of a row error, for counting: its text up to the first colon."""
    return reason.split(":")[0]


def _null_where(array: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return array
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), pa.nulls(len(array), array.type), array)
