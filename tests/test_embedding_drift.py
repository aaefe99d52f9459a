"""Drift for embedding runs: `scorer profile` records a sentence-transformers model's reference
(its vectors' norms and their spread along the first principal directions of the sample), and
a run's manifest measures the same against it, so --max-drift works for embedding jobs; the same
for a classifier's --emit embedding run, against `scorer profile --emit embedding`'s reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer import drift
from scorer.cli import main
from tests.conftest import SAMPLE


def gaussian(n: int, dim: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Vectors whose variance falls along the first axes (scale 8, 4, 2, 1, ...), the first axis
    shifted by `shift`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) * (8.0 / 2.0 ** np.minimum(np.arange(dim), 6))
    x[:, 0] += shift
    return x


def test_a_basis_holds_the_samples_principal_directions_and_deciles():
    reference = gaussian(2000)
    basis = drift.EmbeddingBasis.of(reference)
    directions = np.array(basis.directions)
    assert directions.shape == (drift.EMBEDDING_DIRECTIONS, 16)
    np.testing.assert_allclose(directions @ directions.T, np.eye(8), atol=1e-9)  # orthonormal
    assert abs(directions[0, 0]) > 0.99  # the direction of most variance first
    norms, projections = basis.histograms(reference)
    for counts in [norms, *projections]:
        assert len(counts) == drift.EMBEDDING_BINS and max(counts) - min(counts) <= 2  # a tenth each


def test_embedding_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    basis = drift.EmbeddingBasis.of(gaussian(2000))
    reference = drift.Profile.empty([])
    reference.add_embeddings(gaussian(2000), np.full(2000, 20), basis)

    def psis(vectors):
        profile = drift.Profile.empty([])
        profile.add_embeddings(vectors, np.full(len(vectors), 20), basis)
        return drift.psi_by_feature(reference, profile)

    same = psis(gaussian(1000, seed=1))
    assert set(same) == {"text_length", "embedding_norm", *(f"embedding_pc{j}" for j in range(1, 9))}
    assert max(same.values()) < drift.PSI_WARNING
    moved = psis(gaussian(1000, seed=1, shift=8.0))  # one standard deviation along the first direction
    assert moved["embedding_pc1"] > 0.25 and moved["embedding_norm"] > drift.PSI_WARNING


def test_unit_vectors_have_no_norm_psi_and_profiles_merge_and_round_trip():
    x = gaussian(500)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    basis = drift.EmbeddingBasis.of(unit)
    assert basis.norm_edges == []  # a normalising model's norm says nothing
    a, b = drift.Profile.empty([]), drift.Profile.empty([])
    a.add_embeddings(unit[:200], np.full(200, 9), basis)
    b.add_embeddings(np.vstack([unit[200:], np.full((1, 16), np.nan)]), np.full(301, 9), basis)
    merged = a.merge(b)
    assert (merged.rows, merged.scored) == (501, 500) and sum(merged.projection_hist[0]) == 500
    assert drift.Profile.from_json(json.loads(json.dumps(merged.to_json()))) == merged
    assert "embedding_norm" not in drift.psi_by_feature(merged, merged)
    again = drift.EmbeddingBasis.from_json(json.loads(json.dumps(basis.to_json())), "basis")
    assert again == basis


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_profile_then_run_measures_an_embedding_runs_drift(st_reference, tmp_path, monkeypatch):
    """The reference sits beside the sentence-transformers directory (never inside it); a run of
    data like it records small PSIs, a run of other text passes --max-drift (exit 9)."""
    monkeypatch.setattr(drift, "MIN_ROWS", 10, raising=False)  # small test batches are judged
    model = tmp_path / "st-model"
    shutil.copytree(st_reference["mean"].path, model)
    sst2 = SAMPLE / "sst2_dev_sample.parquet"
    r = run_cli("profile", model, sst2)
    assert r.exit_code == 0, r.output
    sidecar = tmp_path / ("st-model" + drift.CHECKPOINT_SIDECAR_SUFFIX)
    reference = json.loads(sidecar.read_text())
    assert len(reference["embedding_basis"]["directions"]) == drift.EMBEDDING_DIRECTIONS
    assert reference["profile"]["rows"] == 300 and len(reference["profile"]["projection_hist"]) == 8

    r = run_cli("run", sst2, "-o", tmp_path / "same", "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 0, r.output
    same = json.loads((tmp_path / "same" / "_manifest.json").read_text())
    assert same["drift"]["reference"] == str(sidecar)
    assert {f"embedding_pc{j}" for j in range(1, 9)} <= set(same["drift"]["psi"])
    assert same["drift"]["max_psi"] < 0.01  # the very rows the reference was made of

    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"invoice {i} : 4{i} units of part {i * 7} shipped"}) + "\n"
                             for i in range(300)))
    r = run_cli("run", other, "-o", tmp_path / "other", "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    assert "passes --max-drift 0.25" in r.output and "embedding_pc" in r.output
    assert (tmp_path / "other" / "_SUCCESS").exists()  # the vectors are committed all the same


# ------------------------------------------------ a classifier's vectors (--emit embedding)

def other_text(path):
    """300 lines of text unlike SST-2's sentences."""
    path.write_text("".join(json.dumps({"text": f"invoice {i} : 4{i} units of part {i * 7} shipped"}) + "\n"
                            for i in range(300)))
    return path


def manifest_of(out) -> dict:
    return json.loads((out / "_manifest.json").read_text())


@pytest.fixture
def classifier_with_references(tiny_model, tmp_path):
    """A copy of the tiny classifier with both references of the SST-2 sample beside it: of its
    labels (`scorer profile`) and of its vectors (`scorer profile --emit embedding`)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    sst2 = SAMPLE / "sst2_dev_sample.parquet"
    for extra in ([], ["--emit", "embedding"]):
        r = run_cli("profile", model, sst2, *extra)
        assert r.exit_code == 0, r.output
    return model


def test_a_classifiers_emit_embedding_run_is_measured_against_a_reference_of_its_vectors(
        classifier_with_references, tmp_path, monkeypatch):
    """`scorer profile MODEL DATA --emit embedding` records the vectors the head reads in a file
    of their own beside the label reference; an --emit embedding run gets an embedding model's
    drift against it (with a norm PSI: a classifier's vectors are not unit vectors), and
    --max-drift exits 9 on other text after committing the vectors."""
    monkeypatch.setattr(drift, "MIN_ROWS", 10, raising=False)  # small test batches are judged
    model = classifier_with_references
    sidecar = model / drift.EMBEDDING_SIDECAR_NAME
    reference = json.loads(sidecar.read_text())
    assert reference["profile"]["labels"] == [] and reference["profile"]["rows"] == 300
    assert len(reference["embedding_basis"]["mean"]) == 32 and reference["embedding_basis"]["norm_edges"]
    assert json.loads((model / drift.SIDECAR_NAME).read_text())["profile"]["labels"] == ["negative", "positive"]

    sst2 = SAMPLE / "sst2_dev_sample.parquet"
    r = run_cli("run", sst2, "-o", tmp_path / "same", "--model", model, "--emit", "embedding", "--max-drift", "0.25")
    assert r.exit_code == 0, r.output
    same = manifest_of(tmp_path / "same")
    assert same["drift"]["reference"] == str(sidecar)
    assert set(same["drift"]["psi"]) == {"text_length", "embedding_norm", *(f"embedding_pc{j}" for j in range(1, 9))}
    assert same["drift"]["max_psi"] < 0.01  # the very rows the reference was made of
    assert same["profile"]["rows"] == 300 and sum(same["profile"]["norm_hist"]) == 300

    r = run_cli("run", other_text(tmp_path / "other.jsonl"), "-o", tmp_path / "other", "--model", model,
                "--emit", "embedding", "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    assert "passes --max-drift 0.25" in r.output and "embedding_pc" in r.output
    assert (tmp_path / "other" / "_SUCCESS").exists()  # the vectors are committed all the same


def test_a_classifiers_vectors_of_too_few_rows_are_recorded_not_judged_and_labels_keep_label_drift(
        classifier_with_references, tmp_path):
    model = classifier_with_references
    r = run_cli("run", other_text(tmp_path / "other.jsonl"), "-o", tmp_path / "few", "--model", model,
                "--emit", "embedding", "--max-drift", "0.25")
    assert r.exit_code == 0, r.output  # 300 rows < drift.MIN_ROWS: recorded, not judged
    few = manifest_of(tmp_path / "few")["drift"]
    assert few["too_few_rows"] and few["rows"] == 300 and few["min_rows"] == drift.MIN_ROWS
    assert few["psi"]["embedding_pc1"] >= 0 and "warning: drift" not in r.output

    r = run_cli("run", SAMPLE / "sst2_dev_sample.parquet", "-o", tmp_path / "both", "--model", model,
                "--emit", "label,embedding")
    assert r.exit_code == 0, r.output
    both = manifest_of(tmp_path / "both")
    assert both["drift"]["reference"] == str(model / drift.SIDECAR_NAME)
    assert set(both["drift"]["psi"]) == {"probability:negative", "probability:positive", "text_length"}


def test_a_reference_of_the_other_kind_is_refused(classifier_with_references, tmp_path):
    model = classifier_with_references
    data = SAMPLE / "sst2_dev_sample.parquet"
    r = run_cli("run", data, "-o", tmp_path / "a", "--model", model, "--emit", "embedding",
                "--reference", model / drift.SIDECAR_NAME)
    assert r.exit_code == 4 and "a reference of labels, not of embeddings" in r.output
    r = run_cli("run", data, "-o", tmp_path / "b", "--model", model,
                "--reference", model / drift.EMBEDDING_SIDECAR_NAME)
    assert r.exit_code == 4 and "a reference of embeddings, not of labels" in r.output
    r = run_cli("profile", model, data, "--emit", "label,embedding")
    assert r.exit_code == 2 and "--emit" in r.output


def test_scorer_drift_judges_a_classifiers_vector_outputs_together(classifier_with_references, tmp_path):
    """Two --emit embedding runs of 150 rows, too few alone, judged together against the
    reference of the classifier's vectors; an output of labels is not summed with them."""
    model = classifier_with_references
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    outs = []
    for i, half in enumerate((texts[:150], texts[150:])):
        path = tmp_path / f"half{i}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in half))
        r = run_cli("run", path, "-o", tmp_path / f"out{i}", "--model", model, "--emit", "embedding")
        assert r.exit_code == 0, r.output
        outs.append(tmp_path / f"out{i}")
    r = run_cli("drift", *outs, "--json", "--max-drift", "0.25")
    assert r.exit_code == 0, r.output
    together = json.loads(r.output.splitlines()[0])
    assert together["reference"] == str(model / drift.EMBEDDING_SIDECAR_NAME)
    assert together["rows"] == 300 and together["max_psi"] < 0.01 and "embedding_pc1" in together["psi"]

    r = run_cli("run", path, "-o", tmp_path / "labels", "--model", model)
    assert r.exit_code == 0, r.output
    r = run_cli("drift", outs[0], tmp_path / "labels")
    assert r.exit_code == 3 and "judge each kind apart" in r.output


def test_max_drift_without_a_reference_of_the_classifiers_vectors_says_how_to_make_one(tiny_model, tmp_path):
    r = run_cli("run", SAMPLE / "sst2_dev_sample.parquet", "-o", tmp_path / "out", "--model", tiny_model,
                "--emit", "embedding", "--max-drift", "0.25")
    assert r.exit_code == 4 and "make one with `scorer profile MODEL DATA --emit embedding`" in r.output
