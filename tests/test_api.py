"""scorer.api: the Scorer contract (prepare -> infer -> columns), and windows over long texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scorer import Scorer
from scorer.api import combine_windows
from scorer.modelspec import Temperatures

LONG = ("the plot drifts, the acting is wooden and the score is loud; yet the last act is a "
        "small miracle of timing and grace. ") * 6


@pytest.fixture(scope="module")
def windowed(tiny_model):
    return Scorer.load(tiny_model, max_length=16, long_text="window", max_windows=4)


def test_combine_windows_averages_logits_by_hand():
    # text 0: windows with logits (0, 1) and (2, 0) -> mean (1, 0.5); text 1: one window (0, 0)
    def softmax(z):
        e = np.exp(np.array(z, float) - max(z))
        return e / e.sum()

    probs = np.array([softmax([0, 1]), softmax([2, 0]), softmax([0, 0])], np.float32)
    out = combine_windows(probs, np.array([0, 0, 1]), 2, multi_label=False)
    np.testing.assert_allclose(out, [softmax([1, 0.5]), [0.5, 0.5]], atol=1e-6)
    sigmoid = lambda z: 1 / (1 + np.exp(-np.array(z, float)))  # noqa: E731
    probs = np.array([sigmoid([-1, 3]), sigmoid([1, 1])], np.float32)
    out = combine_windows(probs, np.array([0, 0]), 1, multi_label=True)
    np.testing.assert_allclose(out, [sigmoid([0, 2])], atol=1e-6)


def test_a_windowed_text_gets_its_own_temperature_by_hand():
    # text 0: windows (0, 1) and (2, 0) -> mean (1, 0.5) x temperature 1 / windowed 0.5 -> (2, 1);
    # text 1, one window (0, 3): unscaled
    def softmax(z):
        e = np.exp(np.array(z, float) - max(z))
        return e / e.sum()

    probs = np.array([softmax([0, 1]), softmax([2, 0]), softmax([0, 3])], np.float32)
    out = combine_windows(probs, np.array([0, 0, 1]), 2, multi_label=False,
                          temperatures=Temperatures(1.0, 0.5))
    np.testing.assert_allclose(out, [softmax([2, 1]), softmax([0, 3])], atol=1e-6)


def test_the_spec_windowed_temperature_applies_to_windowed_texts_only(tiny_model, tmp_path):
    """A copy of the tiny model whose spec has windowed_temperature 0.5 (temperature 1): a
    one-window text scores as before, a windowed one with its mean window logits doubled."""
    import shutil

    from scorer import api, modelspec

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    spec = json.loads((copy / modelspec.SPEC_FILE).read_text())
    spec["windowed_temperature"] = 0.5
    (copy / modelspec.SPEC_FILE).write_text(json.dumps(spec))
    plain = Scorer.load(tiny_model, max_length=16, long_text="window", max_windows=4)
    hot = Scorer.load(copy, max_length=16, long_text="window", max_windows=4)
    texts = ["a short one", " ".join(["the film was long and slow"] * 6)]
    before = plain.probabilities(texts)[0]
    after = hot.probabilities(texts)[0]
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    doubled = api.probabilities_of(api.logits_of(before[1:], False) * 2.0, False)[0]
    np.testing.assert_allclose(after[1], doubled, atol=1e-5)
    assert not np.allclose(after[1], before[1], atol=1e-3)


def test_a_long_text_is_the_mean_of_its_windows_scored_one_by_one(windowed):
    enc = windowed.encoder
    ids, text_of, windows, truncated = enc.tokenize_windows([LONG])
    assert windows[0] == 4 and truncated[0] and len(ids) == 4
    cls, sep = ids[0][0], ids[0][-1]
    for window in ids:  # each window has the special tokens, and overlaps the one before
        assert window[0] == cls and window[-1] == sep and len(window) <= 16
    assert ids[1][1:1 + enc.window_overlap] == ids[0][-1 - enc.window_overlap:-1]
    by_hand = []
    for window in ids:  # each window as a batch of its own
        lengths = np.array([len(window)], np.int32)
        batch = enc.pad([window], lengths, np.array([0]), 16, 4)
        by_hand.append(windowed.predictor(batch)[0])
    logits = np.log(np.array(by_hand, np.float64))
    mean = logits.mean(axis=0)
    expected = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
    probs, errors = windowed.probabilities([LONG, "short and sweet"])
    assert errors == [None, None]
    np.testing.assert_allclose(probs[0], expected, atol=1e-5)
    prepared = windowed.prepare([LONG, "short and sweet", None])
    assert prepared.windows().tolist() == [4, 1, 0]
    assert prepared.truncated().tolist() == [True, False, False]


def test_windows_are_packed_with_short_texts(windowed):
    chunk = windowed.encoder.encode([LONG, "good", "bad film"])
    assert len(chunk.lengths) == 6 and chunk.text_of.tolist() == [0, 0, 0, 0, 1, 2]
    # short sequences, windows included, share packed rows: no window padded to the max length
    packed = [b for b in chunk.batches if b.slot_ids is not None]
    assert packed and sum(len(b.rows) for b in packed) == 6


def test_the_windows_column_and_a_huge_text_stays_bounded(windowed):
    table = windowed.score_columns(["x " * 5_000_000, "fine", ""])  # a 10 MB text
    assert table.column("windows").to_pylist() == [4, 1, None]
    assert table.column("error").to_pylist() == [None, None, "empty text"]
    assert windowed.prepare(["x " * 5_000_000]).encoded.lengths.sum() <= 4 * 16


def test_window_is_the_default_and_truncate_has_no_windows_column(tiny_model, tiny_scorer):
    assert tiny_scorer.windowed  # Scorer.load() as every engine calls it: api.DEFAULT_LONG_TEXT
    table = tiny_scorer.score_columns([LONG, "a film"])
    assert table.column("windows").to_pylist()[1] == 1 and table.column("windows").to_pylist()[0] > 1
    truncating = Scorer.load(tiny_model, long_text="truncate")
    assert not truncating.windowed
    assert "windows" not in truncating.score_columns([LONG, "a film"]).column_names
    assert truncating.prepare([LONG]).truncated().tolist() == [True]
    with pytest.raises(ValueError, match="long_text"):
        Scorer.load(long_text="chunk")


def with_temperature(model, tmp_path, temperature):
    import json
    import shutil

    out = tmp_path / f"t{temperature}"
    shutil.copytree(model, out)
    spec = json.loads((out / "scorer_model.json").read_text())
    spec["temperature"] = temperature
    (out / "scorer_model.json").write_text(json.dumps(spec))
    return out


def test_the_models_temperature_divides_its_logits(tiny_model, tiny_scorer, tmp_path):
    texts = ["a gorgeous film", "dull", "an ok film with a long and winding plot"]
    plain = tiny_scorer.probabilities(texts)[0].astype(np.float64)
    hot = Scorer.load(with_temperature(tiny_model, tmp_path, 2.0)).probabilities(texts)[0]
    z = np.log(plain) / 2.0
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(hot, expected, atol=1e-6)
    assert (hot.argmax(1) == plain.argmax(1)).all()


def test_a_temperature_outside_its_range_is_a_model_error(tiny_model, tmp_path):
    from click.testing import CliRunner

    from scorer.cli import main

    r = CliRunner().invoke(main, ["info", "--model", str(with_temperature(tiny_model, tmp_path, 0))])
    assert r.exit_code == 4 and "'temperature' must be from 0.01 to 100" in r.output
