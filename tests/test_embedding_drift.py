"""Drift for embedding runs: `scorer profile` records a sentence-transformers model's reference
(its vectors' norms and their spread along the first principal directions of the sample), and
a run's manifest measures the same against it, so --max-drift works for embedding jobs."""

from __future__ import annotations

import json
import shutil

import numpy as np
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
