"""scorer's embeddings against sentence-transformers itself (SentenceTransformer.encode in
.venv-hfref), and the Embedder's behaviour: prompts, windows, rows it cannot embed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HF_REFERENCE_TEXTS, ST_PACKAGED, ST_REFERENCE_CASES
from scorer import Scorer
from scorer.embedding import combine_windows
from scorer.errors import ModelError

# Largest |scorer - sentence-transformers| per model over HF_REFERENCE_TEXTS (measured: 1e-7 to
# 1e-5; the bound leaves float32 rounding room). mean_sqrt_len_dense2 is not normalised and its
# values reach ~50, so its absolute differences are the largest.
MAX_ABS_DIFF = {"mean": 1e-5, "cls_dense_normalize": 1e-5, "max_normalize_v5": 1e-5,
                "mean_sqrt_len_dense2": 1e-4, "mean_prompt_lowercase_v5": 1e-5,
                "distilbert_cls": 1e-5, ST_PACKAGED: 1e-5}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("case", ST_REFERENCE_CASES + (ST_PACKAGED,))
def test_embeddings_equal_sentence_transformers(st_reference, case):
    """Every pooling mode, with and without Dense / Normalize, v5 and v6 layouts, a prompt and
    do_lower_case, and the packaged all-MiniLM-L6-v2: texts over the max length cut as there."""
    ref = st_reference[case]
    embedder = Scorer.load(ref.path, long_text="truncate", prompt=ref.prompt)
    assert embedder.encoder.max_length == ref.max_seq_length
    ours = embedder.embed(list(HF_REFERENCE_TEXTS))
    assert ours.dtype == np.float32 and ours.shape == ref.embeddings.shape
    assert cosines(ours.astype(np.float64), ref.embeddings).min() >= 0.99999
    assert np.abs(ours - ref.embeddings).max() <= MAX_ABS_DIFF[case]


def test_unpacked_batches_embed_as_packed_ones(st_reference):
    ref = st_reference["cls_dense_normalize"]
    packed = Scorer.load(ref.path, long_text="truncate")
    unpacked = Scorer.load(ref.path, long_text="truncate", packing=False)
    assert packed.encoder.pack_length and not unpacked.encoder.pack_length
    texts = list(HF_REFERENCE_TEXTS)
    np.testing.assert_allclose(packed.embed(texts), unpacked.embed(texts), atol=1e-5)


def test_a_long_text_is_the_normalised_mean_of_its_windows(st_reference):
    ref = st_reference["cls_dense_normalize"]  # normalises; max_seq_length 24
    windowed = Scorer.load(ref.path, max_windows=64)
    long_text = HF_REFERENCE_TEXTS[-2]
    prepared = windowed.prepare([long_text])
    assert prepared.windows()[0] > 1
    per_window = np.concatenate([windowed.predictor(b)[np.argsort(b.rows)]
                                 for b in prepared.encoded.batches])  # [windows, dim]
    mean = per_window.mean(axis=0)
    vector = windowed.embed([long_text])[0]
    np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-6)
    truncated = Scorer.load(ref.path, long_text="truncate").embed([long_text])[0]
    assert float(vector @ truncated) < 0.9999  # windows see the whole text, truncation its start


def test_combine_windows_means_then_normalises_only_texts_of_several_windows():
    vectors = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    text_of = np.array([0, 1, 1])
    combined = combine_windows(vectors, text_of, 2, normalize=True)
    np.testing.assert_allclose(combined, [[3.0, 4.0], [2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    np.testing.assert_allclose(combine_windows(vectors, text_of, 2, normalize=False),
                               [[3.0, 4.0], [0.5, 0.5]], rtol=1e-6)


def test_rows_that_cannot_be_embedded_are_nan_and_say_why(st_reference):
    embedder = Scorer.load(st_reference["mean"].path)
    texts = ["fine", None, "   ", 7]
    vectors = embedder.embed(texts)
    assert np.isfinite(vectors[0]).all() and np.isnan(vectors[1:]).all()
    columns = embedder.score_columns(texts).to_pydict()
    assert columns["error"] == [None, "null text", "empty text", "text is not a string (int)"]
    assert columns["embedding"][1] is None and len(columns["embedding"][0]) == embedder.dimension


def test_prompts_are_named_in_the_models_config(st_reference):
    path = st_reference["mean_prompt_lowercase_v5"].path
    with pytest.raises(ModelError, match=r"no prompt 'question'.*prompts: document, passage, query"):
        Scorer.load(path, prompt="question")
    query = Scorer.load(path, prompt="query", long_text="truncate").embed(["Hello world."])
    plain = Scorer.load(path, long_text="truncate").embed(["Hello world."])
    assert float(query[0] @ plain[0]) < 0.9999  # the prompt is part of what is embedded


def test_an_embedding_model_has_no_labels(st_reference):
    embedder = Scorer.load(st_reference["mean"].path)
    with pytest.raises(ModelError, match="embedding model"):
        embedder.score(["a text"])


def test_a_classifier_takes_no_prompt(tiny_model):
    with pytest.raises(ModelError, match="prompts are for sentence-transformers models"):
        Scorer.load(tiny_model, prompt="query")


# ---------------------------------------------------------------------------- scorer run / info

def run_cli(*args):
    from click.testing import CliRunner

    from scorer.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def texts_parquet(path, texts) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array(list(texts), pa.string()),
                             "label": pa.array(["x"] * len(texts))}), path)
    return str(path)


def part_table(output):
    import pyarrow.parquet as pq

    return pq.read_table(sorted(output.rglob("part-*.parquet"))[0])


def test_run_with_the_packaged_minilm_writes_sentence_transformers_vectors(st_reference, tmp_path):
    """`--model all-minilm-l6-v2` (a name `scorer info` lists) writes 384-dim unit vectors equal
    to SentenceTransformer.encode's, as fixed_size_list<float32>[384], beside the input columns
    (a `label` input column is no clash for an embedding model)."""
    data = texts_parquet(tmp_path / "in.parquet", HF_REFERENCE_TEXTS)
    result = run_cli("run", data, "-o", tmp_path / "out", "--model", ST_PACKAGED, "--long-text", "truncate")
    assert result.exit_code == 0, result.output
    table = part_table(tmp_path / "out")
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[384]"
    assert table.column("label").to_pylist() == ["x"] * len(HF_REFERENCE_TEXTS)
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float64)
    ref = st_reference[ST_PACKAGED].embeddings
    assert cosines(vectors, ref).min() >= 0.99999 and np.abs(vectors - ref).max() <= 1e-5
    assert "packaged:     default (this classifier); all-minilm-l6-v2" in run_cli("info").output


def test_run_windows_prompt_and_float16(st_reference, tmp_path):
    ref = st_reference["mean_prompt_lowercase_v5"]
    data = texts_parquet(tmp_path / "in.parquet", HF_REFERENCE_TEXTS[:4] + (None,) + HF_REFERENCE_TEXTS[-2:])
    result = run_cli("run", data, "-o", tmp_path / "out", "--model", ref.path, "--prompt", "query",
                     "--embedding-dtype", "float16")
    assert result.exit_code == 0, result.output
    table = part_table(tmp_path / "out")
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: halffloat>[20]"
    assert table.column("error").to_pylist()[4] == "null text"
    assert table.column("windows").to_pylist()[-1] > 1
    vectors = table.column("embedding").to_pylist()
    expected = Scorer.load(ref.path, prompt="query").embed(list(HF_REFERENCE_TEXTS[-2:]))
    np.testing.assert_allclose(np.array(vectors[-2:], np.float32), expected, atol=2e-3)
    assert vectors[4] is None


def test_info_shows_an_embedding_models_kind_dimension_pooling_and_max_length(st_reference):
    result = run_cli("info", "--model", st_reference["cls_dense_normalize"].path)
    assert result.exit_code == 0, result.output
    for line in ("kind:         embedding (sentence-transformers)", "dimension:    16",
                 "pooling:      cls, then dense 32->16 + tanh", "normalize:    yes (unit vectors)",
                 "max length:   24 tokens"):
        assert line in result.output


def test_run_refuses_a_prompt_for_a_classifier_and_an_unsupported_model(st_reference, tiny_model, tmp_path):
    data = texts_parquet(tmp_path / "in.parquet", ["a text"])
    result = run_cli("run", data, "-o", tmp_path / "out", "--model", tiny_model, "--prompt", "query")
    assert result.exit_code == 4 and "prompts are for sentence-transformers models" in result.output
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(st_reference["mean"].path, bad)
    pooling = bad / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace('"mean"', '"lasttoken"'))
    result = run_cli("info", "--model", bad)
    assert result.exit_code == 4 and "pooling mode 'lasttoken' is not supported" in result.output


# ---------------------------------------------------------------------------- a classifier's embeddings

LONG = "the film was long, slow and in the end rather moving " * 30  # several windows of 64 tokens


def head_probabilities(scorer_, features: np.ndarray) -> np.ndarray:
    """The classifier head (its last dense layer, softmax) applied to features by hand."""
    head = scorer_.predictor.model.get_layer("classifier_head")
    logits = features.astype(np.float64) @ head.kernel.numpy() + head.bias.numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_a_classifier_embeds_what_its_head_reads(tiny_model):
    """embed() on a classifier: the vectors the head turns into its probabilities, packed or not."""
    texts = ["a gorgeous film", "dull", "not bad at all, really", None]
    model = Scorer.load(tiny_model, long_text="truncate")
    features = model.embed(texts)
    assert features.dtype == np.float32 and features.shape == (4, 32)
    assert np.isnan(features[3]).all() and np.isfinite(features[:3]).all()
    probs, errors = model.probabilities(texts)
    np.testing.assert_allclose(head_probabilities(model, features[:3]), probs[:3], atol=1e-5)
    unpacked = Scorer.load(tiny_model, long_text="truncate", packing=False)
    np.testing.assert_allclose(unpacked.embed(texts[:3]), features[:3], atol=1e-5)


def test_emit_label_and_embedding_gives_both_from_one_forward_pass(tiny_model):
    texts = ["a gorgeous film", "dull", LONG]
    both = Scorer.load(tiny_model, emit="label,embedding")
    labels_only = Scorer.load(tiny_model)
    inferred = both.infer(both.prepare(texts))
    np.testing.assert_allclose(inferred.probabilities, labels_only.probabilities(texts)[0], atol=1e-6)
    np.testing.assert_allclose(inferred.embeddings, labels_only.embed(texts), atol=1e-6)
    predictions = both.score(texts[:2])
    assert predictions[0].label in ("negative", "positive") and len(predictions[0].embedding) == 32
    columns = both.score_columns(texts).column_names
    assert columns == ["label", "label_id", "score", "probabilities", "embedding", "windows", "error"]
    only = Scorer.load(tiny_model, emit="embedding")
    assert only.score_columns(texts).column_names == ["embedding", "windows", "error"]
    with pytest.raises(ModelError, match="gives no labels: use embed"):
        only.score(texts)


def test_a_classifier_embeds_a_long_text_as_the_mean_of_its_windows(tiny_model):
    """Not normalised (a classifier's features are not unit vectors): the plain mean."""
    model = Scorer.load(tiny_model, max_windows=16)
    prepared = model.prepare([LONG])
    assert prepared.windows()[0] > 1
    per_window = np.concatenate([model.predictor.outputs(b, "features")[0][np.argsort(b.rows)]
                                 for b in prepared.encoded.batches])  # [windows, hidden]
    np.testing.assert_allclose(model.embed([LONG])[0], per_window.mean(axis=0), atol=1e-5)


def test_run_emit_label_embedding_writes_both_beside_the_input(tiny_model, tmp_path):
    texts = ["a gorgeous film", "dull", None, LONG]
    data = texts_parquet(tmp_path / "in.parquet", texts)
    result = run_cli("run", data, "-o", tmp_path / "both", "--model", tiny_model, "--emit", "embedding,label",
                     "--embedding-dtype", "float16", "--output-prefix", "pred_")
    assert result.exit_code == 0, result.output
    table = part_table(tmp_path / "both")
    assert table.column_names == ["text", "label", "row_id", "pred_label", "pred_label_id", "pred_score",
                                  "pred_probabilities", "pred_embedding", "pred_windows", "pred_error"]
    assert str(table.schema.field("pred_embedding").type) == "fixed_size_list<element: halffloat>[32]"
    vectors = table.column("pred_embedding").to_pylist()
    assert vectors[2] is None and table.column("pred_error").to_pylist()[2] == "null text"
    model = Scorer.load(tiny_model)
    expected = model.embed([t for t in texts if t is not None])
    np.testing.assert_allclose(np.array([v for v in vectors if v is not None], np.float32), expected,
                               rtol=2e-3, atol=2e-3)
    labels_run = run_cli("run", data, "-o", tmp_path / "labels", "--model", tiny_model, "--output-prefix", "pred_")
    assert labels_run.exit_code == 0, labels_run.output
    assert (part_table(tmp_path / "labels").column("pred_label").to_pylist()
            == table.column("pred_label").to_pylist())
    manifest = json.loads((tmp_path / "both" / "_manifest.json").read_text())
    assert manifest["options"]["emit"] == "label,embedding" and manifest["profile"]["scored"] == 3


def test_run_emit_embedding_alone_writes_no_label_columns(tiny_model, tmp_path):
    data = texts_parquet(tmp_path / "in.parquet", ["a gorgeous film", "dull"])
    result = run_cli("run", data, "-o", tmp_path / "out", "--model", tiny_model, "--emit", "embedding",
                     "--long-text", "truncate")
    assert result.exit_code == 0, result.output
    table = part_table(tmp_path / "out")
    assert table.column_names == ["text", "label", "row_id", "embedding", "error"]
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[32]"
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist(), np.float32),
                               Scorer.load(tiny_model).embed(["a gorgeous film", "dull"]), atol=1e-5)


def test_run_refuses_emit_it_cannot_do(st_reference, tiny_model, tmp_path):
    data = texts_parquet(tmp_path / "in.parquet", ["a text"])
    result = run_cli("run", data, "-o", tmp_path / "a", "--model", tiny_model, "--emit", "labels")
    assert result.exit_code == 2 and "give label, embedding or label,embedding" in result.output
    result = run_cli("run", data, "-o", tmp_path / "b", "--model", st_reference["mean"].path, "--emit", "label")
    assert result.exit_code == 4 and "is an embedding model: it has no labels to emit" in result.output
    result = run_cli("run", data, "-o", tmp_path / "c", "--model", tiny_model, "--embedding-dtype", "float16")
    assert result.exit_code == 4 and "the embedding dtype is for embeddings" in result.output
