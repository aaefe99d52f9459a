"""The Python API for an embedding model (a sentence-transformers directory): the same stages as
api.Scorer (prepare, infer, columns), so every engine runs it, with vectors for output instead of
labels. Scorer.load returns one for a sentence-transformers directory.

    e = Scorer.load("/models/all-MiniLM-L6-v2")   # a sentence-transformers directory: an Embedder
    e.embed(["a gorgeous film", "dull"])           # -> float32 [2, 384]; NaN rows for unusable texts
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from scorer import backbone as backbones
from scorer import classifier, encode, runtime
from scorer.embedding import EmbeddingPredictor, combine_windows
from scorer.errors import ConfigError, ModelError
from scorer.hf import convert
from scorer.prepared import Prepared, ScoreStats, prepare
from scorer.stdir import SentenceTransformerDir

EMBEDDING = "embedding"
LABEL = "label"
EMIT = (LABEL, EMBEDDING)  # --emit: what the output columns hold, in this order
EMBEDDING_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}  # --embedding-dtype


def parse_emit(value: str | None) -> tuple[str, ...] | None:
    """--emit "label,embedding" (any order) -> ("label", "embedding"); None: the model's own
    output (a classifier's labels, an embedding model's vectors)."""
    if value is None:
        return None
    given = [v.strip() for v in str(value).split(",")]
    unknown = [v for v in given if v not in EMIT]
    if unknown or not given:
        raise ValueError(f"emit {value!r}: give label, embedding or label,embedding")
    return tuple(kind for kind in EMIT if kind in given)


class Embedder:
    """Vectors for texts from a sentence-transformers model, as SentenceTransformer.encode makes
    them (a text over the max length: windows, or with long_text="truncate", cut as there)."""

    def __init__(self, model_dir: SentenceTransformerDir, predictor: EmbeddingPredictor,
                 encoder: encode.BatchEncoder, prompt: str = "", embedding_dtype: str = "float32"):
        self.model_dir = model_dir
        self.spec = None  # no labels, no calibration: a classifier's spec has nothing to say here
        self.predictor = predictor
        self.encoder = encoder
        self.stats = ScoreStats()
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"embedding_dtype must be one of {tuple(EMBEDDING_DTYPES)}, not {embedding_dtype!r}")
        self.embedding_type = EMBEDDING_DTYPES[embedding_dtype]  # of the embedding column's values
        self.prompt = prompt  # put before every text (config_sentence_transformers.json's prompts)
        self.emit = (EMBEDDING,)

    @classmethod
    def build(cls, model_dir: SentenceTransformerDir, *, max_length: int | None, batch_tokens: int,
              precision: str, jit_compile: bool, threads: int | None, packing: bool,
              overlap: int | None, max_windows: int, prompt: str | None,
              embedding_dtype: str = "float32", emit: tuple[str, ...] | None = None) -> "Embedder":
        """The Embedder for a read directory (Scorer.load's options, already checked there)."""
        if emit is not None and LABEL in emit:
            raise ModelError(f"{model_dir.path} is an embedding model: it has no labels to emit "
                             "(--emit embedding, its default)")
        runtime.start(threads)
        policy = classifier.choose_device(precision=precision)
        if policy.int8:
            raise ConfigError("--precision int8 is for classifiers; an embedding model runs in "
                              "float32 (or mixed precision on a GPU)")
        ckpt = model_dir.checkpoint
        backbone = convert.build_backbone(ckpt, ckpt.tensors(), dtype=policy.dtype)
        predictor = EmbeddingPredictor(backbone, model_dir.head, policy, jit_compile)
        length = min(max_length or model_dir.max_length, model_dir.max_length)
        tokenizer, pad_id = backbones.hf_tokenizer(ckpt.path, length)
        if model_dir.lowercase:
            lowercase_first(tokenizer)
        pack = encode.DEFAULT_PACK_LENGTH if packing and predictor.packable else None
        encoder = encode.BatchEncoder(tokenizer, length, batch_tokens, pack_length=pack,
                                      pad_id=pad_id, window_overlap=overlap, max_windows=max_windows)
        return cls(model_dir, predictor, encoder, model_dir.prompt_text(prompt), embedding_dtype)

    def reset_stats(self) -> None:
        self.stats = ScoreStats()

    @property
    def multi_label(self) -> bool:
        return False

    @property
    def windowed(self) -> bool:
        return self.encoder.window_overlap is not None

    @property
    def dimension(self) -> int:
        return self.model_dir.dimension

    def prepare(self, texts: list, read_errors: list | None = None) -> Prepared:
        """As Scorer.prepare, the prompt put before each usable text."""
        return prepare(self.encoder, self.stats, texts, read_errors, self.prompt)

    def infer(self, prepared: Prepared) -> np.ndarray:
        """Vectors [n, dim] float32 in input order; NaN rows where a text was not embedded."""
        t0 = time.perf_counter()
        out = np.full((len(prepared.errors), self.dimension), np.nan, dtype=np.float32)
        chunk = prepared.encoded
        if chunk is not None:
            sequences = np.empty((len(chunk.lengths), self.dimension), dtype=np.float32)
            for batch in chunk.batches:
                sequences[batch.rows] = self.predictor(batch)
            if chunk.text_of is not None:
                sequences = combine_windows(sequences, chunk.text_of, len(chunk.windows),
                                            self.model_dir.head.normalize)
            out[prepared.valid] = sequences
            self.stats.real_tokens += chunk.real_tokens
            self.stats.padded_tokens += chunk.padded_tokens
        self.stats.infer_seconds += time.perf_counter() - t0
        return out

    def columns(self, prepared: Prepared, vectors: np.ndarray, prefix: str = "") -> pa.Table:
        """embedding (fixed_size_list<float32>[dim], null where the row has an error), windows
        (with windows), error."""
        ok = np.array([e is None for e in prepared.errors], dtype=bool)
        columns = {EMBEDDING: embedding_array(vectors, ok, self.embedding_type)}
        if self.windowed:
            columns["windows"] = pa.array(prepared.windows(), pa.int32(), mask=~ok)
        columns["error"] = pa.array(prepared.errors, pa.string())
        return pa.table({prefix + k: v for k, v in columns.items()})

    def score_columns(self, texts: list, read_errors: list | None = None, prefix: str = "") -> pa.Table:
        """All three stages on one chunk, on this thread."""
        prepared = self.prepare(texts, read_errors)
        return self.columns(prepared, self.infer(prepared), prefix)

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim]; a row of NaN where a text cannot be embedded (None, not a
        string, empty: see Scorer.prepare's reasons)."""
        return self.vectors(self.prepare(list(texts)))

    def vectors(self, prepared: Prepared) -> np.ndarray:
        """embed() of a prepared chunk (as api.Scorer.vectors): infer's vectors."""
        return self.infer(prepared)

    def probabilities(self, texts: list):
        raise ModelError(f"{self.model_dir.path} is an embedding model: it has no labels (embed())")

    def score(self, texts: list[str]):
        raise ModelError(f"{self.model_dir.path} is an embedding model: it has no labels (embed())")


def output_names(prefix: str = "", windows: bool = False) -> list[str]:
    """The columns an embedding model writes (Embedder.columns)."""
    return [prefix + n for n in [EMBEDDING] + (["windows"] if windows else []) + ["error"]]


def embedding_array(vectors: np.ndarray, ok: np.ndarray, dtype=pa.float32()) -> pa.Array:
    """[n, dim] -> fixed_size_list<dtype>[dim], null where not ok."""
    flat = pa.array(np.nan_to_num(vectors).ravel(), pa.float32()).cast(dtype)
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1], mask=pa.array(~ok))


def lowercase_first(tokenizer) -> None:
    """do_lower_case: a Lowercase normalizer put first, as sentence-transformers does (unless the
    normalizer already is, or has, one)."""
    from tokenizers import normalizers

    current = tokenizer.normalizer
    if isinstance(current, normalizers.Lowercase):
        return
    if isinstance(current, normalizers.Sequence):
        if any(isinstance(n, normalizers.Lowercase) for n in current):
            return
        tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *current])
        return
    rest = [current] if current is not None else []
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])
