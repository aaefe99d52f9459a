"""scorer.manifest: the one reader of _manifest.json, on every version scorer has written
(tests/manifests/, named by the commit whose writer they follow) and on what it writes now."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from scorer import drift, follow, manifest, metrics, pipeline
from scorer.cli import drift_exceeded, summary_line
from scorer.errors import InputError
from scorer.manifest import Manifest
from scorer.options import RunOptions
from scorer.report import read_manifest
from tests.conftest import SAMPLE, with_spec_reference

KEPT = Path(__file__).parent / "manifests"
VERSIONS = sorted(p.name for p in KEPT.glob("*.json"))


def kept(name: str) -> dict:
    return json.loads((KEPT / name).read_text())


def test_every_kept_version_is_here():
    assert VERSIONS == ["485bc55-first.json", "4c0af71-dead-letter.json", "56ab92b-drift-parts.json",
                        "5c0b1a1-follow.json", "5c0b1a1-run.json", "66fa700-drift.json",
                        "d708981-follow.json", "fb17e59-follow.json", "fb17e59-run.json"]


@pytest.mark.parametrize("name", VERSIONS)
def test_every_kept_version_reads_and_makes_its_metrics(name, tmp_path):
    data = kept(name)
    shutil.copy(KEPT / name, tmp_path / manifest.MANIFEST)
    m = manifest.read(tmp_path)
    assert m == Manifest.from_json(data)
    assert (m.rows_in, m.rows_out, m.rows_scored) == (data["rows_in"], data["rows_out"], data["rows_scored"])
    assert m.model.name == "tiny" and m.model.checksum == data["model"]["checksum"]
    assert m.timing["total_seconds"] == data["timing"]["total_seconds"]
    assert m.rows_dead_lettered == data.get("rows_dead_lettered", 0)
    assert (m.dead_letter.path if m.dead_letter else None) == (data.get("dead_letter") or {}).get("path")
    assert m.followed == ("units_done" in data)
    assert drift_exceeded(m, 0.5) is None
    prom = tmp_path / "scorer.prom"
    metrics.write_metrics(prom, m, "out", 0)
    assert f'scorer_rows_in{{output="out"}} {data["rows_in"]}\n' in prom.read_text()


def test_what_older_versions_lack_reads_as_absent():
    first = Manifest.from_json(kept("485bc55-first.json"))
    assert first.rows_dead_lettered == 0 and first.dead_letter is None and first.warnings == []
    assert first.profile is None and first.drift is None and first.rows_per_second is None
    assert drift_exceeded(first, 0.01) is None
    before_parts = Manifest.from_json(kept("66fa700-drift.json"))
    assert before_parts.drift.reference is None and before_parts.drift.candidates == {}
    assert before_parts.drift.rows == 0 and not before_parts.drift.too_few_rows  # before MIN_ROWS
    assert before_parts.profile["labels"] == ["negative", "positive"] and before_parts.rows_windowed == 0
    followed = Manifest.from_json(kept("5c0b1a1-follow.json"))
    assert followed.units_done == ["a.jsonl"] and followed.entries[0]["status"] == "scored"


def test_report_refuses_a_manifest_without_a_profile(tmp_path):
    shutil.copy(KEPT / "4c0af71-dead-letter.json", tmp_path / manifest.MANIFEST)
    with pytest.raises(InputError, match="has no profile of its rows"):
        read_manifest(str(tmp_path))
    shutil.copy(KEPT / "56ab92b-drift-parts.json", tmp_path / manifest.MANIFEST)
    assert read_manifest(str(tmp_path)).profile["labels"] == ["negative", "positive"]


def test_no_manifest_or_one_that_is_no_object_is_one_error(tmp_path):
    with pytest.raises(InputError, match="no _manifest.json; is it the output of a finished run"):
        manifest.read(tmp_path)
    (tmp_path / manifest.MANIFEST).write_text("[1]")
    with pytest.raises(InputError):
        manifest.read(tmp_path)


def test_every_key_written_now_is_read(tiny_model, tmp_path):
    """The writer (scorer.runs, scorer.follow) and the reader agree on the fields: a key written
    and not read would be dropped by everything that reads the manifest."""
    result = pipeline.run([str(SAMPLE / "sst2_dev_sample.jsonl")], tmp_path / "out", tiny_model, RunOptions())
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(SAMPLE / "sst2_dev_sample.jsonl", landing / "a.jsonl")
    followed = follow.follow(landing, tmp_path / "followed", tiny_model, RunOptions(), once=True,
                             settle_seconds=0)
    known = {f.name for f in fields(Manifest)}
    for data in (result.manifest, followed.manifest):
        assert set(data) <= known
    assert Manifest.from_json(followed.manifest).units_done == ["a.jsonl"]
    m = manifest.read(tmp_path / "out")
    assert m.rows_in == 300 and m.model.path == str(tiny_model) and m.drift.reference is None
    assert summary_line(m, tmp_path / "out").startswith("scored 300 rows into ")


def without_comment(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "_fixture"}


TODAY = {"run": "fb17e59-run.json", "follow": "d708981-follow.json"}  # the format written now


@pytest.mark.parametrize("name", TODAY.values())
def test_todays_format_is_written_back_as_it_was_read(name):
    """to_json is from_json's inverse on what the writer writes today: every key, in its place."""
    data = without_comment(kept(name))
    assert json.dumps(Manifest.from_json(data).to_json()) == json.dumps(data)


def keys_of(value):
    """A JSON value's keys at every level, in order (its numbers and strings left out)."""
    if isinstance(value, dict):
        return [(k, keys_of(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [keys_of(v) for v in value]
    return None


def test_the_writer_writes_the_keys_it_wrote_before(tiny_model, tmp_path):
    """The runs of TODAY's manifests again (the last writers before the manifest was typed): a
    batch run with bad rows, dead letters and a drift reference, and a --follow --once with an
    entry that fails; the manifests written have the same keys in the same order, nested ones
    too."""
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model, model)
    first = pipeline.run([str(SAMPLE / "sst2_dev_sample.jsonl")], tmp_path / "first", model, RunOptions())
    with_spec_reference(model, drift.Profile.from_json(first.manifest["profile"]))
    data = tmp_path / "in.jsonl"
    lines = (SAMPLE / "sst2_dev_sample.jsonl").read_text().splitlines()
    data.write_text("\n".join(lines[:100] + ['{"text": null}', '{"text": ""}'] + lines[100:200]) + "\n")
    result = pipeline.run([str(data)], tmp_path / "out", model,
                          RunOptions(dead_letter=str(tmp_path / "dead"), rows_per_file=60))
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(data, landing / "a.jsonl")
    (landing / "b.jsonl").write_text('{"other": 1}\n')
    followed = follow.follow(landing, tmp_path / "followed", model,
                             RunOptions(dead_letter=str(tmp_path / "fdead")), once=True, settle_seconds=0)
    for out, name in ((tmp_path / "out", TODAY["run"]), (tmp_path / "followed", TODAY["follow"])):
        written = json.loads((out / manifest.MANIFEST).read_text())
        assert keys_of(written) == keys_of(without_comment(kept(name)))
    assert keys_of(result.manifest) == keys_of({k: v for k, v in without_comment(kept(TODAY["run"])).items()
                                                if k != "identity"})
    assert keys_of(followed.manifest) == keys_of(without_comment(kept(TODAY["follow"])))
