"""scorer.drift: the streaming profile of what a run scored, PSI against the model's reference,
`scorer profile`, the manifest's drift, its warning and --max-drift's exit code, over resumed runs
and --follow entries."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scorer import drift
from scorer.cli import main
from scorer.errors import ModelError
from tests.conftest import REPO, SAMPLE, with_spec_reference

LABELS = ["negative", "positive"]


def test_profile_counts_bins_unscored_rows_and_low_confidence():
    p = drift.Profile.empty(LABELS)
    probs = np.array([[0.05, 0.95], [0.55, 0.45], [np.nan, np.nan], [1.0, 0.0], [0.6, 0.4]])
    p.add(probs, np.array([5, 20, 0, 130, 8]))
    assert (p.rows, p.scored, p.predicted, p.low_confidence) == (5, 4, [3, 1], 1)  # 0.55 only
    assert p.probability_hist[0] == [1, 0, 0, 0, 0, 1, 1, 0, 0, 1]  # 1.0 in the last bin
    assert p.probability_hist[1] == [1, 0, 0, 0, 2, 0, 0, 0, 0, 1]
    # length bins: 0 (not scored), then from 1, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512 tokens
    assert p.length_hist == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert p.tokens == 163
    assert p.summary() == {"predicted_share": {"negative": 0.75, "positive": 0.25},
                           "low_confidence_share": 0.25, "unscored_share": 0.2, "mean_tokens": 40.75}


def test_merge_of_chunks_is_the_profile_of_all_rows_and_json_round_trips():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[rng.random(500) < 0.1] = np.nan
    lengths = rng.integers(1, 600, 500)
    whole = drift.Profile.empty(["a", "b", "c"])
    whole.add(probs, lengths)
    parts = [drift.Profile.empty(["a", "b", "c"]) for _ in range(3)]
    for part, rows in zip(parts, np.array_split(np.arange(500), 3)):
        part.add(probs[rows], lengths[rows])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged == whole
    assert drift.Profile.from_json(json.loads(json.dumps(whole.to_json()))) == whole
    with pytest.raises(ValueError):
        whole.merge(drift.Profile.empty(LABELS))


def test_profile_from_json_refuses_other_bins():
    bad = drift.Profile.empty(LABELS).to_json()
    bad["length_hist"] = [0, 0, 0]
    with pytest.raises(ModelError, match="bins are not this scorer's"):
        drift.Profile.from_json(bad)
    with pytest.raises(ModelError, match="not a profile"):
        drift.Profile.from_json({"labels": LABELS, "colour": 1})


@pytest.mark.parametrize("max_tokens", [64, 128, 200, 512, 600])
def test_capping_the_lengths_is_counting_texts_cut_at_the_max_length(max_tokens):
    rng = np.random.default_rng(0)
    positive = rng.random(2000)
    probs, lengths = np.stack([1 - positive, positive], axis=1), rng.integers(0, 1500, 2000)
    whole, cut = drift.Profile.empty(LABELS), drift.Profile.empty(LABELS)
    whole.add(probs, lengths)
    cut.add(probs, np.minimum(lengths, max_tokens))
    capped = whole.lengths_capped(max_tokens)
    assert capped.length_hist == cut.length_hist and sum(capped.length_hist) == 2000
    assert capped.probability_hist == whole.probability_hist and capped.tokens == whole.tokens
    reference = drift.Reference(whole, "spec", None, [drift.ReferencePart("part", whole)])
    measured = drift.compare(reference.lengths_capped(max_tokens), cut)
    assert measured.psi[drift.TEXT_LENGTH] == 0.0 and measured.length_cap == max_tokens
    assert measured.to_json()["text_length_capped_at"] == max_tokens


def test_the_sidecar_of_a_hugging_face_checkpoint_is_beside_its_directory(tmp_path):
    ours = SimpleNamespace(path=tmp_path / "sentiment", checkpoint=None)
    theirs = SimpleNamespace(path=tmp_path / "distilbert-sst2", checkpoint=object())
    assert drift.sidecar_path(ours) == tmp_path / "sentiment" / "scorer_reference.json"
    assert drift.sidecar_path(theirs) == tmp_path / "distilbert-sst2.scorer_reference.json"


def test_psi_by_hand():
    assert drift.psi([10, 20, 70], [10, 20, 70]) == 0.0
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert drift.psi([50, 50], [30, 70]) == pytest.approx(expected)
    # an empty bin counts as PSI_FLOOR of the rows, so one new bin is finite but large
    floor = drift.PSI_FLOOR
    assert drift.psi([100, 0], [50, 50]) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - floor) * math.log(0.5 / floor))
    assert drift.psi([0, 0], [1, 2]) == 0.0  # nothing to compare with


def test_sample_is_seeded_uniform_and_keeps_input_order():
    items = list(range(10_000))
    a, b = drift.sample(iter(items), 100, 3), drift.sample(iter(items), 100, 3)
    assert a == b and len(a) == 100 and a == sorted(a)
    assert drift.sample(iter(items), 100, 4) != a
    assert 3500 < np.mean(a) < 6500  # not the first 100
    assert drift.sample(iter(range(5)), 100, 0) == [0, 1, 2, 3, 4]


# --- a reference with parts: one profile per training source --------------------------------

SST2, IMDB = "sst2", "imdb_reviews"


def lengths_of(kind: str, n: int, rng) -> np.ndarray:
    """Token counts like one-sentence phrases, long reviews, or neither (mid-length texts)."""
    low, high = {"short": (5, 30), "long": (150, 500), "medium": (50, 95)}[kind]
    return rng.integers(low, high, n)


def profile_of(*kinds: str, rows: int = 1000, seed: int = 0) -> drift.Profile:
    """rows texts of each kind, with probabilities drawn alike for every kind."""
    rng = np.random.default_rng(seed)
    p = drift.Profile.empty(LABELS)
    for kind in kinds:
        positive = rng.beta(2, 2, rows)
        p.add(np.stack([1 - positive, positive], axis=1), lengths_of(kind, rows, rng))
    return p


@pytest.fixture(scope="module")
def two_sources() -> drift.Reference:
    short, long = profile_of("short", seed=1), profile_of("long", seed=2)
    return drift.Reference(short.merge(long), "spec", None,
                           [drift.ReferencePart(SST2, short), drift.ReferencePart(IMDB, long)])


@pytest.mark.parametrize("kind, nearest", [("short", SST2), ("long", IMDB)])
def test_a_batch_like_one_source_is_measured_against_that_part(two_sources, kind, nearest):
    batch = profile_of(kind, rows=500, seed=3)
    d = drift.compare(two_sources, batch)
    assert d.part == nearest and d.max_psi < drift.PSI_WARNING and d.warnings() == []
    assert d.psi == drift.psi_by_feature(two_sources.profile_of(nearest), batch)
    assert set(d.candidates) == {drift.WHOLE, SST2, IMDB}
    assert d.candidates[nearest] == d.max_psi
    assert d.candidates[drift.WHOLE] > drift.PSI_WARNING  # the whole alone would have warned
    assert d.to_json()["part"] == nearest and d.to_json()["candidates"] == d.candidates


def test_a_batch_like_no_source_crosses_and_the_warning_names_the_nearest(two_sources):
    d = drift.compare(two_sources, profile_of("medium", rows=500, seed=3))
    assert all(v > drift.PSI_WARNING for v in d.candidates.values())
    assert d.max_psi == min(d.candidates.values())
    name = f"part {d.part}" if d.part else "the whole"
    [warning] = d.warnings()
    assert warning.startswith("drift: PSI above 0.1 (moderate shift) against the nearest of the "
                              f"model's 3 reference candidates ({name}): text_length ")


def test_the_whole_is_chosen_when_nearest_and_on_a_tie(two_sources):
    mixed = profile_of("short", "long", rows=500, seed=3)
    d = drift.compare(two_sources, mixed)
    assert d.part is None and d.max_psi < drift.PSI_WARNING
    assert d.psi == drift.psi_by_feature(two_sources.profile, mixed)
    assert d.candidates[drift.WHOLE] < min(d.candidates[SST2], d.candidates[IMDB])
    one_source = drift.Reference(two_sources.profile, "spec", None,
                                 [drift.ReferencePart(SST2, two_sources.profile)])
    tie = drift.compare(one_source, profile_of("short", rows=500, seed=3))
    assert tie.candidates[drift.WHOLE] == tie.candidates[SST2] and tie.part is None


def test_a_reference_without_parts_is_compared_as_before(two_sources):
    single = drift.Reference(two_sources.profile, "spec", None)
    batch = profile_of("short", rows=500, seed=3)
    d = drift.compare(single, batch)
    assert d.psi == drift.psi_by_feature(single.profile, batch) and d.part is None
    assert d.candidates == {drift.WHOLE: d.max_psi}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(d.psi.items(), key=lambda kv: -kv[1])
                      if v > drift.PSI_WARNING)
    assert d.warnings() == [f"drift: PSI above 0.1 (moderate shift) against the model's reference: {shown}"]


def test_below_min_rows_the_psi_is_recorded_but_not_judged(two_sources):
    """PSI over 10 bins is noise for a small batch: recorded with too_few_rows, no warning, and
    --max-drift does not fire; from MIN_ROWS rows on the same shift is judged."""
    few = profile_of("medium", rows=drift.MIN_ROWS - 1, seed=3)
    d = drift.compare(two_sources, few)
    assert d.max_psi > 0.25 and d.rows == drift.MIN_ROWS - 1 and d.too_few_rows
    assert d.warnings() == [] and d.exceeds(0.25) is None and not d.judged
    recorded = d.to_json()
    assert recorded["max_psi"] == d.max_psi and {k: recorded[k] for k in ("rows", "too_few_rows", "min_rows")} == {
        "rows": drift.MIN_ROWS - 1, "too_few_rows": True, "min_rows": drift.MIN_ROWS}
    assert drift.Drift.from_json(d.to_json()) == d
    enough = profile_of("medium", rows=drift.MIN_ROWS, seed=3)
    d = drift.compare(two_sources, enough)
    assert not d.too_few_rows and d.judged and len(d.warnings()) == 1
    assert d.exceeds(0.25) == max(d.psi.items(), key=lambda kv: kv[1])
    # a manifest's drift from before MIN_ROWS is judged as it was then
    old = {k: v for k, v in d.to_json().items() if k not in ("rows", "too_few_rows", "min_rows")}
    assert drift.Drift.from_json(old).judged


def spec_model(reference: dict, tmp_path) -> SimpleNamespace:
    """What find_reference reads of a model directory whose spec holds `reference`."""
    return SimpleNamespace(path=tmp_path, checkpoint=None, spec=SimpleNamespace(reference=reference),
                           id={"checksum": "0" * 64})


def spec_reference(whole: drift.Profile, parts: list[tuple[str, dict]] | None) -> dict:
    """The spec's reference as the fine-tuning job writes it (parts: absent when None)."""
    data = {"validation": {"rows": whole.rows, "sha256": "0" * 64}}
    reference = {"data": data, "profile": whole.to_json()}
    if parts is not None:
        reference["parts"] = [{"name": name, "data": data, "profile": profile} for name, profile in parts]
    return reference


def test_find_reference_reads_the_spec_s_parts(two_sources, tmp_path):
    whole = two_sources.profile
    parts = [(p.name, p.profile.to_json()) for p in two_sources.parts]
    found, warnings = drift.find_reference(spec_model(spec_reference(whole, parts), tmp_path))
    assert found == two_sources and warnings == []
    assert found.profile_of(None) == whole and found.profile_of(IMDB) == two_sources.parts[1].profile
    assert found.profile_of("a source of an earlier model") is None
    old, _ = drift.find_reference(spec_model(spec_reference(whole, None), tmp_path))
    assert old == drift.Reference(whole, "spec", None) and old.parts == []


def test_a_malformed_part_is_a_model_error_naming_it(two_sources, tmp_path):
    whole, short = two_sources.profile, two_sources.parts[0].profile.to_json()
    other_bins = {**short, "length_hist": [0, 0, 0]}
    other_labels = drift.Profile.empty(["a", "b"]).to_json()
    cases = [([(SST2, short), (IMDB, other_bins)], r"'reference.parts\[1\]' \(.*imdb.*\): its bins are not"),
             ([(SST2, short), (IMDB, {"labels": LABELS, "colour": 1})], r"parts\[1\]' .*: not a profile"),
             ([(SST2, other_labels)], r"parts\[0\]' .*: labels \['a', 'b'\] are not the whole reference's"),
             ([("", short)], r"parts\[0\]': needs a 'name'"),
             ([(SST2, short), (SST2, short)], r"parts\[1\]': needs a 'name'.*unique"),
             ([(drift.WHOLE, short)], r"parts\[0\]': needs a 'name'.*not 'all'")]
    for parts, message in cases:
        with pytest.raises(ModelError, match=message):
            drift.find_reference(spec_model(spec_reference(whole, parts), tmp_path))
    for bad in ({"name": SST2}, ["not", "a", "list"]):
        reference = {**spec_reference(whole, None), "parts": bad}
        with pytest.raises(ModelError, match="'reference.parts"):
            drift.find_reference(spec_model(reference, tmp_path))


# --- scorer profile and scorer run ---------------------------------------------------------


@pytest.fixture
def model(tiny_model, tmp_path):
    """A private copy of the tiny model: `scorer profile` writes its sidecar there."""
    return shutil.copytree(tiny_model, tmp_path / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 SST-2 sentences, and 600 (them twice: a shift is judged from drift.MIN_ROWS rows on)
    with every second text emptied."""
    tmp = tmp_path_factory.mktemp("drift-data")
    texts = pq.read_table(SAMPLE / "sst2_dev_sample.parquet").column("text").to_pylist()
    assert len(texts) < drift.MIN_ROWS <= 2 * len(texts)
    (tmp / "same.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp / "emptied.jsonl").write_text("".join(json.dumps({"text": "" if i % 2 else t}) + "\n"
                                               for i, t in enumerate(texts * 2)))
    return tmp


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def manifest(out):
    return json.loads((out / "_manifest.json").read_text())


def test_profile_writes_a_sidecar_that_runs_compare_with(model, data, tmp_path):
    r = invoke("profile", model, data / "same.jsonl", "--rows", "1000")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((model / drift.SIDECAR_NAME).read_text())
    assert sidecar["format"] == drift.REFERENCE_FORMAT and sidecar["profile"]["rows"] == 300
    assert sidecar["data"]["rows_profiled"] == 300 and sidecar["data"]["seed"] == 0
    # the same rows scored by a run: its profile is the reference, every PSI 0, no warning
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "out", "--model", model, "--chunk-rows", "64")
    assert r.exit_code == 0, r.output
    m = manifest(tmp_path / "out")
    assert m["profile"] == sidecar["profile"]
    assert m["drift"]["reference"] == str(model / drift.SIDECAR_NAME)
    assert m["drift"]["psi"] == {"probability:negative": 0.0, "probability:positive": 0.0, "text_length": 0.0}
    assert m["reference_profile"] == sidecar["profile"] and "warning:" not in r.stderr


def test_drift_warns_and_max_drift_exits_9_with_the_output_committed(model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    r = invoke("run", data / "emptied.jsonl", "-o", tmp_path / "warned", "--model", model)
    assert r.exit_code == 0, r.output
    psi = manifest(tmp_path / "warned")["drift"]["psi"]
    assert psi["text_length"] > 1  # half the rows now have no tokens
    assert f"warning: drift: PSI above 0.1 (moderate shift) against the model's reference: " \
           f"text_length {psi['text_length']:.3f}" in r.stderr
    out = tmp_path / "gated"
    r = invoke("run", data / "emptied.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: drift PSI {psi['text_length']:.3f} (text_length) passes --max-drift 0.25; the output "
        "is committed (the scores are right, the data moved)")
    assert (out / "_SUCCESS").exists() and manifest(out)["rows_out"] == 600
    assert manifest(out)["drift"]["rows"] == 600 and not manifest(out)["drift"]["too_few_rows"]
    # the same command again: already complete, and still the same answer for the scheduler
    r = invoke("run", data / "emptied.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 9 and "already complete" in r.stderr
    # under the limit: exit 0
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "fine", "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 0, r.output


def test_max_drift_without_a_reference_is_refused_before_scoring(model, data, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", data / "same.jsonl", "-o", out, "--model", model, "--max-drift", "0.25")
    assert r.exit_code == 4, r.output
    assert r.stderr.startswith("error: --max-drift needs a reference for model") and len(
        r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    r = invoke("run", data / "same.jsonl", "-o", out, "--model", model)  # no reference: no drift
    assert r.exit_code == 0
    assert manifest(out)["drift"] == {"reference": None, "psi": {}, "max_psi": None, "warning_level": 0.1,
                                      "note": "the model has no reference: see `scorer profile`",
                                      "part": None, "candidates": {}, "rows": 0, "too_few_rows": False,
                                      "min_rows": drift.MIN_ROWS, "text_length_capped_at": None}


def test_a_small_in_domain_batch_is_too_few_rows_to_judge(tmp_path):
    """60 SST-2 dev sentences scored by the default model: their PSI against its reference is
    noise (issue 21: 0.35, exit 9 under the README's --max-drift 0.25); recorded with
    too_few_rows, no warning, exit 0, and --metrics-file says so."""
    sentences = (SAMPLE / "sst2_dev_sample.jsonl").read_text().splitlines()[60:120]  # PSI 0.31
    batch = tmp_path / "hour.jsonl"
    batch.write_text("\n".join(sentences) + "\n")
    prom = tmp_path / "scorer.prom"
    r = invoke("run", batch, "-o", tmp_path / "out", "--max-drift", "0.25", "--metrics-file", prom)
    assert r.exit_code == 0, r.output
    d = manifest(tmp_path / "out")["drift"]
    assert d["max_psi"] > 0.25 and d["psi"]  # recorded: what it would have judged
    assert (d["rows"], d["too_few_rows"], d["min_rows"]) == (60, True, drift.MIN_ROWS)
    assert "warning:" not in r.stderr and "drift" not in r.stderr
    from prometheus_client.parser import text_string_to_metric_families

    samples = {s.name: s.value for f in text_string_to_metric_families(prom.read_text()) for s in f.samples}
    assert samples["scorer_drift_too_few_rows"] == 1 and samples["scorer_drift_rows"] == 60
    assert samples["scorer_exit_code"] == 0


def test_truncate_compares_lengths_with_the_reference_cut_alike(model, tmp_path):
    """--long-text truncate counts a text's tokens up to the max length, a reference counts them
    over all its windows: in-domain long reviews scored with truncate show no length drift the
    window run does not (the reference's lengths are capped at the max length first)."""
    reviews = (SAMPLE / "imdb_dev_sample.jsonl").read_text().splitlines()
    batch = tmp_path / "reviews.jsonl"
    batch.write_text("\n".join(reviews * 9) + "\n")  # 360 rows: judged
    assert invoke("profile", model, batch).exit_code == 0  # windows, as by default
    runs = {}
    for long_text in ("window", "truncate"):
        r = invoke("run", batch, "-o", tmp_path / long_text, "--model", model, "--long-text", long_text)
        assert r.exit_code == 0, r.output
        runs[long_text] = (manifest(tmp_path / long_text)["drift"], r.stderr)
    (window, _), (truncate, stderr) = runs["window"], runs["truncate"]
    assert window["psi"][drift.TEXT_LENGTH] == truncate["psi"][drift.TEXT_LENGTH] == 0.0
    assert truncate["text_length_capped_at"] == 64 and window["text_length_capped_at"] is None
    assert not truncate["too_few_rows"] and drift.TEXT_LENGTH not in stderr
    capped = manifest(tmp_path / "truncate")["reference_profile"]["length_hist"]
    assert capped == manifest(tmp_path / "truncate")["profile"]["length_hist"]


def test_a_sidecar_of_another_model_is_not_used(model, tiny_multilabel_model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl", "-o", tmp_path / "ref.json").exit_code == 0
    other = shutil.copytree(model, tmp_path / "retrained")
    spec = json.loads((other / "scorer_model.json").read_text())
    (other / "scorer_model.json").write_text(json.dumps({**spec, "version": "2"}))
    shutil.copy(tmp_path / "ref.json", other / drift.SIDECAR_NAME)
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "out", "--model", other)
    assert r.exit_code == 0, r.output
    assert "warning: drift not computed: " in r.stderr and "run `scorer profile` again" in r.stderr
    assert manifest(tmp_path / "out")["drift"]["psi"] == {}
    # given explicitly, a reference file is used as it is
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "explicit", "--model", model,
               "--reference", tmp_path / "ref.json")
    assert manifest(tmp_path / "explicit")["drift"]["reference"] == str(tmp_path / "ref.json")
    r = invoke("run", data / "same.jsonl", "-o", tmp_path / "missing", "--model", model,
               "--reference", tmp_path / "nope.json")
    assert r.exit_code == 4 and "--reference" in r.stderr and "no such file" in r.stderr


def test_a_killed_run_resumed_has_the_profile_of_an_uninterrupted_one(model, data, tmp_path):
    args = ["run", str(data / "emptied.jsonl"), "--model", str(model), "--chunk-rows", "32",
            "--rows-per-file", "70"]
    assert invoke(*args, "-o", tmp_path / "whole").exit_code == 0
    env = {**os.environ, "SCORER_CRASH_AT": "checkpoint:2"}
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *args, "-o", str(tmp_path / "resumed")],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    r = invoke(*args, "-o", tmp_path / "resumed")
    # killed at its 2nd checkpoint: two 70-row splits committed, once each
    assert r.exit_code == 0 and "resumed after 140 committed rows" in r.stderr
    assert manifest(tmp_path / "resumed")["profile"] == manifest(tmp_path / "whole")["profile"]


def test_follow_measures_drift_per_entry(model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(data / "same.jsonl", landing / "a.jsonl")
    shutil.copy(data / "emptied.jsonl", landing / "b.jsonl")
    out = tmp_path / "out"
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0")
    assert r.exit_code == 0, r.output
    m = manifest(out)
    a, b = m["entries"]
    assert a["drift"]["psi"]["text_length"] == 0.0 and a["profile"]["rows"] == 300
    assert b["drift"]["psi"]["text_length"] > 1 and b["profile"]["rows"] == 600
    assert m["drift"] == b["drift"] and m["drift_entry"] == "b.jsonl"
    assert m["profile"]["rows"] == 900 and m["profile"]["scored"] == 600
    assert "warning: entry b.jsonl: drift: PSI above 0.1" in r.stderr and "entry a.jsonl" not in r.stderr
    # enough rows to be judged alone (a smaller entry is judged with b.jsonl's: see the window test)
    (landing / "c.jsonl").write_text((data / "same.jsonl").read_text() * 2)
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0",
               "--max-drift", "0.25")
    assert r.exit_code == 0, r.output  # this invocation scored c.jsonl only: no drift
    shutil.copy(data / "emptied.jsonl", landing / "d.jsonl")
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0",
               "--max-drift", "0.25")
    assert r.exit_code == 9 and "(text_length) passes --max-drift 0.25" in r.stderr


def small_batches(data, where, **names: slice):
    """Files of some of the rows of same.jsonl ("same") or emptied.jsonl (names ending "emptied")."""
    where.mkdir(exist_ok=True)
    for name, rows in names.items():
        lines = (data / ("emptied.jsonl" if name.endswith("emptied") else "same.jsonl")).read_text().splitlines()
        (where / f"{name}.jsonl").write_text("\n".join(lines[rows]) + "\n")
    return where


def test_follow_judges_small_entries_over_a_window(model, data, tmp_path):
    """Entries of 200 rows are too few alone: each is judged with the entries before it until
    drift.MIN_ROWS rows (or over the latest --drift-window K), so a shifted small entry still
    warns and fails --max-drift; the window is in the entry's record and the manifest."""
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    landing = small_batches(data, tmp_path / "landing", a=slice(0, 200), b=slice(100, 300))
    out = tmp_path / "out"
    follow = ["run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0"]
    r = invoke(*follow, "--max-drift", "0.25")
    assert r.exit_code == 0, r.output
    a, b = manifest(out)["entries"]
    assert a["drift"]["too_few_rows"] and b["drift"]["too_few_rows"]  # each alone
    assert (a["window"]["entries"], a["window"]["rows"], a["window"]["drift"]["too_few_rows"]) == (
        ["a.jsonl"], 200, True)
    assert (b["window"]["entries"], b["window"]["rows"], b["window"]["drift"]["too_few_rows"]) == (
        ["a.jsonl", "b.jsonl"], 400, False)
    small_batches(data, landing, c_emptied=slice(0, 200))
    r = invoke(*follow, "--drift-window", "1", "--max-drift", "0.25")
    assert r.exit_code == 0, r.output  # alone, c is too few rows to judge
    assert manifest(out)["drift_window"] == ["c_emptied.jsonl"] and manifest(out)["drift"]["too_few_rows"]
    small_batches(data, landing, d_emptied=slice(200, 400))
    r = invoke(*follow, "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    m = manifest(out)
    assert m["drift_window"] == ["c_emptied.jsonl", "d_emptied.jsonl"] and m["drift_entry"] == "d_emptied.jsonl"
    assert m["drift"] == m["entries"][-1]["window"]["drift"] and m["drift"]["rows"] == 400
    assert m["drift"]["psi"]["text_length"] > 0.25 and not m["drift"]["too_few_rows"]
    assert "warning: entry d_emptied.jsonl (judged with the 1 entries before it, from c_emptied.jsonl: " \
           "400 rows): drift: PSI above 0.1" in r.stderr
    assert "(text_length) passes --max-drift 0.25" in r.stderr


def test_scorer_drift_judges_several_small_outputs_together(model, data, tmp_path):
    assert invoke("profile", model, data / "same.jsonl").exit_code == 0
    batches = small_batches(data, tmp_path / "in", a=slice(0, 200), b=slice(100, 300), c_emptied=slice(0, 200))
    for name in ("a", "b", "c_emptied"):
        r = invoke("run", batches / f"{name}.jsonl", "-o", tmp_path / name, "--model", model, "--max-drift", "0.25")
        assert r.exit_code == 0 and "warning:" not in r.stderr, r.output  # each too few alone
    r = invoke("drift", tmp_path / "a", tmp_path / "b", "--max-drift", "0.25", "--json")
    assert r.exit_code == 0, r.output
    together = json.loads(r.stdout)
    assert together["rows"] == 400 and not together["too_few_rows"]
    assert together["outputs"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    summed = drift.Profile.from_json(manifest(tmp_path / "a")["profile"]).merge(
        drift.Profile.from_json(manifest(tmp_path / "b")["profile"]))
    reference = drift.read_sidecar(model / drift.SIDECAR_NAME)
    assert together["psi"] == drift.psi_by_feature(reference.profile, summed)
    assert r.stderr.startswith(f"drift of 2 outputs together (400 rows) against the whole reference: "
                               f"largest PSI {together['max_psi']:.3f}")
    r = invoke("drift", tmp_path / "b", tmp_path / "c_emptied", "--max-drift", "0.25")
    assert r.exit_code == 9, r.output
    assert "warning: drift: PSI above 0.1 (moderate shift) against the model's reference: text_length" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: drift PSI ")
    r = invoke("drift", tmp_path / "c_emptied", "--max-drift", "0.25")
    assert r.exit_code == 0 and "too few rows to judge (fewer than 350): recorded, not judged" in r.stderr
    r = invoke("drift", tmp_path / "a", tmp_path / "in")
    assert r.exit_code == 3 and r.stderr.startswith(f"error: {tmp_path / 'in'}: no _manifest.json")


def test_follow_compares_each_entry_with_its_own_nearest_part(model, data, tiny_scorer, tmp_path):
    phrases = [json.loads(line)["text"] for line in (data / "same.jsonl").read_text().splitlines()]
    reviews = [json.loads(line)["text"] for line in (SAMPLE / "imdb_dev_sample.jsonl").read_text().splitlines()]
    short, long = drift.profile_texts(tiny_scorer, phrases), drift.profile_texts(tiny_scorer, reviews)
    with_spec_reference(model, short.merge(long), {SST2: short, IMDB: long})
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(data / "same.jsonl", landing / "a.jsonl")
    shutil.copy(SAMPLE / "imdb_dev_sample.jsonl", landing / "b.jsonl")
    out = tmp_path / "out"
    r = invoke("run", "--follow", landing, "-o", out, "--model", model, "--once", "--settle-seconds", "0",
               "--max-drift", "0.25")
    assert r.exit_code == 0, r.output
    m = manifest(out)
    a, b = m["entries"]
    assert (a["drift"]["part"], b["drift"]["part"]) == (SST2, IMDB)
    assert a["drift"]["max_psi"] < drift.PSI_WARNING and b["drift"]["max_psi"] < drift.PSI_WARNING
    assert a["drift"]["candidates"]["all"] > drift.PSI_WARNING < b["drift"]["candidates"]["all"]
    worst = max((a, b), key=lambda e: e["drift"]["max_psi"])
    assert m["drift"] == worst["drift"] and m["drift_entry"] == worst["name"]
    assert m["reference_profile"] == (short if worst is a else long).to_json()
    assert "warning:" not in r.stderr


def test_the_default_model_s_reference_parts_are_named_by_dataset():
    """Shown in warnings, `scorer report` and metric labels: a dataset's name, not a path on the
    machine that trained the model."""
    from scorer import modeldir

    reference, _ = drift.find_reference(modeldir.read(None, verify=False))
    assert [p.name for p in reference.parts] == ["sst2", "imdb_reviews"]
