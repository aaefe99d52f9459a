"""--metrics-file: the run's counters in the Prometheus text format, read back with the
prometheus_client parser; written atomically, also for failed runs, rewritten by --follow."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from scorer import drift, follow, metrics
from scorer.cli import main
from scorer.manifest import Manifest
from tests.conftest import SAMPLE


def parse(path) -> dict:
    """{(name, frozenset(labels)): value}"""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_a_run_writes_its_counters_as_the_prometheus_parser_reads_them(tiny_model, tmp_path):
    out, prom = tmp_path / "out", tmp_path / "scorer.prom"
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.jsonl"), "-o", str(out),
                                  "--model", str(tiny_model), "--metrics-file", str(prom)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "_manifest.json").read_text())
    samples = parse(prom)
    assert all(dict(labels)["output"] == str(out) for _, labels in samples)
    assert value(samples, "scorer_success") == 1 and value(samples, "scorer_exit_code") == 0
    for name in ("rows_in", "rows_scored", "rows_with_error", "rows_dead_lettered", "rows_per_second",
                 "padding_fraction"):
        assert value(samples, f"scorer_{name}") == pytest.approx(m[name]), name
    assert value(samples, "scorer_rows_in") == 300
    for stage in ("read", "encode", "infer", "write", "total"):
        assert value(samples, "scorer_stage_seconds", stage=stage) == pytest.approx(m["timing"][f"{stage}_seconds"])
    assert abs(value(samples, "scorer_finish_time_seconds") - prom.stat().st_mtime) < 5
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_drift_psis_are_metrics(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    data = str(SAMPLE / "sst2_dev_sample.jsonl")
    assert CliRunner().invoke(main, ["profile", str(model), data]).exit_code == 0
    prom = tmp_path / "scorer.prom"
    r = CliRunner().invoke(main, ["run", data, "-o", str(tmp_path / "out"), "--model", str(model),
                                  "--metrics-file", str(prom)])
    assert r.exit_code == 0, r.output
    samples = parse(prom)
    for feature in ("probability:negative", "probability:positive", "text_length"):
        assert value(samples, "scorer_drift_psi", feature=feature) == 0.0
    assert value(samples, "scorer_drift_max_psi") == 0.0
    # a reference without parts: the whole is the one candidate, and the one measured against
    assert value(samples, "scorer_drift_candidate_max_psi", candidate="all") == 0.0
    assert value(samples, "scorer_drift_candidate_chosen", candidate="all") == 1


def test_drift_metrics_tell_which_reference_part_was_nearest(tmp_path):
    sst2, imdb = "sst2", "imdb_reviews"
    measured = drift.Drift("spec", {"probability:negative": 0.01, "probability:positive": 0.01,
                                    "text_length": 0.02}, part=sst2,
                           candidates={"all": 0.667, sst2: 0.02, imdb: 5.1})
    manifest = {"rows_in": 300, "rows_scored": 300, "rows_with_error": 0, "rows_dead_lettered": 0,
                "rows_per_second": 30.0, "padding_fraction": 0.1, "timing": {"total_seconds": 10.0},
                "drift": measured.to_json()}
    prom = tmp_path / "scorer.prom"
    metrics.write_metrics(prom, Manifest.from_json(manifest), "out", 0)
    samples = parse(prom)
    assert value(samples, "scorer_drift_max_psi") == 0.02  # against the nearest: the sst2 part
    assert value(samples, "scorer_drift_psi", feature="text_length") == 0.02
    for candidate, max_psi in measured.candidates.items():
        assert value(samples, "scorer_drift_candidate_max_psi", candidate=candidate) == max_psi
        assert value(samples, "scorer_drift_candidate_chosen", candidate=candidate) == (candidate == sst2)


def test_drift_on_too_few_rows_says_so(tmp_path):
    """Below drift.MIN_ROWS the PSIs are recorded, not judged: a gauge says which."""
    psi = {"probability:negative": 0.35, "probability:positive": 0.35, "text_length": 0.1}
    base = {"rows_in": 60, "rows_scored": 60, "rows_with_error": 0, "rows_dead_lettered": 0,
            "rows_per_second": 30.0, "padding_fraction": 0.1, "timing": {"total_seconds": 10.0}}
    for rows, too_few in ((60, 1), (drift.MIN_ROWS, 0)):
        measured = drift.Drift("spec", psi, rows=rows, too_few_rows=rows < drift.MIN_ROWS)
        prom = tmp_path / f"{rows}.prom"
        metrics.write_metrics(prom, Manifest.from_json({**base, "drift": measured.to_json()}), "out", 0)
        samples = parse(prom)
        assert value(samples, "scorer_drift_too_few_rows") == too_few
        assert value(samples, "scorer_drift_rows") == rows and value(samples, "scorer_drift_max_psi") == 0.35


def test_a_failed_run_says_so(tiny_model, tmp_path):
    prom = tmp_path / "scorer.prom"
    r = CliRunner().invoke(main, ["run", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "out"),
                                  "--model", str(tiny_model), "--metrics-file", str(prom)])
    assert r.exit_code == 3 and r.stderr.count("error:") == 1
    samples = parse(prom)
    assert value(samples, "scorer_success") == 0 and value(samples, "scorer_exit_code") == 3
    assert not any(name == "scorer_rows_in" for name, _ in samples)


def test_an_unwritable_metrics_directory_is_refused_before_scoring(tiny_model, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "sst2_dev_sample.jsonl"), "-o", str(out),
                                  "--model", str(tiny_model), "--metrics-file", str(tmp_path / "no" / "x.prom")])
    assert r.exit_code == 5 and "--metrics-file" in r.stderr and "not a writable directory" in r.stderr
    assert not out.exists()


def test_follow_rewrites_the_metrics_after_each_entry(tiny_model, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        shutil.copy(SAMPLE / "sst2_dev_sample.jsonl", landing / name)
    written = []

    def spy(path, manifest, output, exit_code):
        written.append(manifest.units_done)
        metrics.write_metrics(path, manifest, output, exit_code)

    monkeypatch.setattr(follow, "write_metrics", spy)
    prom = tmp_path / "scorer.prom"
    r = CliRunner().invoke(main, ["run", "--follow", str(landing), "-o", str(tmp_path / "out"), "--once",
                                  "--settle-seconds", "0", "--model", str(tiny_model), "--metrics-file", str(prom)])
    assert r.exit_code == 0, r.output
    assert written[:2] == [["a.jsonl"], ["a.jsonl", "b.jsonl"]]
    assert value(parse(prom), "scorer_rows_in") == 600 and value(parse(prom), "scorer_success") == 1


def test_label_values_are_escaped():
    text = metrics.exposition([metrics.Metric("scorer_x", "help \\ with\nlines",
                                              [({"output": 'a"b\\c\nd'}, 1.5)])])
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"output": 'a"b\\c\nd'} and family.samples[0].value == 1.5
    assert family.documentation == "help \\ with\nlines"
