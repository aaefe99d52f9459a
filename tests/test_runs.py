"""scorer.runs: what every engine shares: the counters, a split writer's row accounting and its
checkpoints committed by the run, resume identity, the manifest (computed once), loading the model."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest
from click.testing import CliRunner

from scorer import classifier, commit, drift, source, splits
from scorer.cli import main
from scorer.errors import OutputError
from scorer.options import RunOptions
from scorer.prepared import ScoreStats
from scorer.runs import Counters, Run
from scorer.splits import Piece, Split, SplitResult, SplitWriter
from scorer.tables import chunk_table, scored_table
from tests.conftest import SAMPLE, with_spec_reference

INPUT = [{"path": "in.jsonl", "size": 1}]  # an input fingerprint: what resume identity compares
SPLIT = Split("00000", splits.FILE, (Piece("in.jsonl", "jsonl"),))


def scored(the_run: Run, texts: list, offset: int = 0) -> pa.Table:
    """The scored_table() of one chunk of `texts` (None: a row that cannot be scored)."""
    chunk = source.Chunk(pa.table({"text": texts}), texts, [None] * len(texts), "in.jsonl", offset)
    prepared = the_run.scorer.prepare(chunk.texts, chunk.read_errors)
    return scored_table(chunk_table(chunk, the_run.opts, the_run.output_columns), the_run.scorer, prepared,
                        the_run.scorer.infer(prepared), the_run.opts)


def opened(tiny_scorer, out, **options) -> Run:
    the_run = Run(RunOptions(**options), out)
    the_run.load_scorer(None, tiny_scorer)
    outdir = the_run.open(INPUT)
    outdir.prepare()
    return the_run


def written(the_run: Run, texts: list, offset: int = 0, attempt: str = "a1") -> SplitWriter:
    """A SplitWriter of SPLIT (from its committed rows on) that has written `texts`, the run
    committing its checkpoints (every --rows-per-file rows)."""
    writer = SplitWriter(SPLIT, attempt, the_run.scorer, the_run.opts, the_run.out,
                         the_run.committed(SPLIT.id), None)
    writer.on_checkpoint = lambda: the_run.commit(SplitResult(SPLIT.id, attempt, writer.state(), ScoreStats()))
    writer.write(scored(the_run, texts, offset))
    return writer


def completed(the_run: Run, writer: SplitWriter) -> None:
    """The split's end: its open parts closed and committed."""
    writer.close_parts()
    writer.complete = True
    assert the_run.commit(SplitResult(SPLIT.id, writer.attempt, writer.state(), ScoreStats()))


def progress_json(out) -> dict:
    return json.loads((out / commit.STATE_DIR / "progress.json").read_text())


def test_counters_read_a_checkpoint_from_before_rows_windowed_and_add_up():
    old = {"rows_out": 5, "rows_dead_lettered": 2, "rows_with_error": 3, "rows_truncated": 1,
           "error_reasons": {"empty text": 3}}
    c = Counters.from_json(old)
    assert (c.rows_windowed, c.rows_in, c.rows_scored) == (0, 7, 4)
    assert Counters.from_json(c.to_json()) == c
    c.error_reasons["null text"] = 1
    assert old["error_reasons"] == {"empty text": 3}  # a copy: the checkpoint's dict is not shared


@pytest.mark.parametrize("dead_letter", [False, True])
def test_a_split_writer_accounts_for_every_row_and_the_run_commits_every_rows_per_file(
        tiny_scorer, tmp_path, dead_letter):
    out = tmp_path / "out"
    the_run = opened(tiny_scorer, out, rows_per_file=2,
                     dead_letter=str(tmp_path / "dead") if dead_letter else None)
    writer = written(the_run, ["good", None, "fine", "", "ok"])
    # 5 rows, a checkpoint every 2: the 5th row is written but not committed yet
    assert (writer.rows, writer.since) == (5, 1)
    assert progress_json(out)["rows"] == 4
    assert Counters.from_json(progress_json(out)["counters"]).rows_in == 4
    completed(the_run, writer)
    c = writer.counters
    assert (c.rows_in, c.rows_with_error, c.rows_scored) == (5, 2, 3)
    assert (c.rows_out, c.rows_dead_lettered) == ((3, 2) if dead_letter else (5, 0))
    assert c.error_reasons == {"null text": 1, "empty text": 1}
    assert progress_json(out)["counters"] == c.to_json()
    assert sum(p["rows"] for p in progress_json(out)["parts"]) == c.rows_out


def test_the_manifest_counts_rows_one_way_and_its_rate_only_this_process_s_rows(tiny_scorer, tmp_path):
    out = tmp_path / "out"
    first = opened(tiny_scorer, out, rows_per_file=3)
    written(first, ["a", "b", "c", "d"])  # killed after 3 committed
    first.outdir.abandon()

    again = opened(tiny_scorer, out, rows_per_file=3)
    assert again.outdir.resumed and again.outdir.progress.rows == 3
    completed(again, written(again, ["d", None], offset=3, attempt="a2"))
    again.started -= 20  # twenty seconds ago, and its first batch scored ten seconds ago:
    again.scoring_begins()
    again.scoring_started -= 10  # 2 rows scored by this process: 0.2 rows/s, 0.1 overall
    manifest = again.manifest([{"path": "in.jsonl"}], again.totals())
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_scored) == (5, 5, 4)
    assert manifest.rows_per_second == pytest.approx(0.2, abs=0.01)
    assert manifest.rows_per_second_overall == pytest.approx(0.1, abs=0.01)
    assert manifest.scoring_seconds == pytest.approx(10, abs=0.5)
    assert manifest.timing["total_seconds"] >= 20
    assert manifest.options["rows_per_file"] == 3 and "overwrite" not in manifest.options


def test_resume_identity_holds_the_output_shaping_options_only(tiny_scorer, tmp_path):
    out = tmp_path / "out"
    first = opened(tiny_scorer, out, rows_per_file=3)
    written(first, ["a", "b", "c", "d"])
    first.outdir.abandon()

    busier = Run(RunOptions(rows_per_file=3, queue_depth=5, threads=1), out)  # same output
    busier.load_scorer(None, tiny_scorer)
    assert busier.open(INPUT).resumed
    busier.outdir.abandon()
    other = Run(RunOptions(rows_per_file=3, output_prefix="pred_"), out)  # another output
    other.load_scorer(None, tiny_scorer)
    with pytest.raises(OutputError, match="--output-prefix was .."):
        other.open(INPUT)


def test_a_run_counts_its_own_scoring_not_what_the_scorer_did_before(tiny_scorer, tmp_path):
    tiny_scorer.probabilities(["warm the scorer up"])
    assert tiny_scorer.stats.real_tokens > 0
    the_run = opened(tiny_scorer, tmp_path / "out")
    assert the_run.scorer.stats.real_tokens == 0
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "two words"}\n')
    split = Split("00000", splits.FILE, (Piece(str(path), "jsonl"),))
    the_run.commit(splits.execute_split(split, the_run.scorer, the_run.opts, the_run.out))
    manifest = the_run.manifest([], the_run.totals())
    assert manifest.real_tokens == tiny_scorer.stats.real_tokens > 0


def test_the_ray_driver_reads_the_spec_without_building_the_keras_model(tiny_model, tmp_path,
                                                                         monkeypatch):
    def no_keras(*args, **kwargs):
        raise AssertionError("the driver built a Keras model")

    monkeypatch.setattr(classifier, "load_keras_model", no_keras)
    the_run = Run(RunOptions(long_text="truncate"), tmp_path / "out")
    model_dir = the_run.read_model(tiny_model)
    assert the_run.scorer is None and model_dir.spec.labels == ["negative", "positive"]
    assert (the_run.multi_label, the_run.windowed) == (False, False)
    assert the_run.open(INPUT).identity["model"] == model_dir.id.checksum


def test_a_run_is_measured_against_the_nearest_part_of_a_multi_source_reference(tiny_model, tiny_scorer,
                                                                                  tmp_path, monkeypatch):
    """A model trained on one-sentence phrases and long reviews: a batch of phrases only is what
    it was made for (its part: no warning), though against the mixture of both it shifts."""
    def texts(name):
        return [json.loads(line)["text"] for line in (SAMPLE / name).read_text().splitlines()]

    sst2, imdb = "sst2", "imdb_reviews"
    phrases = drift.profile_texts(tiny_scorer, texts("sst2_dev_sample.jsonl"))
    reviews = drift.profile_texts(tiny_scorer, texts("imdb_dev_sample.jsonl"))
    whole = phrases.merge(reviews)
    parts = with_spec_reference(shutil.copytree(tiny_model, tmp_path / "parts"), whole,
                                {sst2: phrases, imdb: reviews})
    alone = with_spec_reference(shutil.copytree(tiny_model, tmp_path / "alone"), whole)
    batch = str(SAMPLE / "sst2_dev_sample.jsonl")

    r = CliRunner().invoke(main, ["run", batch, "-o", str(tmp_path / "out"), "--model", str(parts),
                                  "--max-drift", "0.25"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["drift"]["part"] == sst2 and m["drift"]["max_psi"] < drift.PSI_WARNING
    assert set(m["drift"]["candidates"]) == {"all", sst2, imdb}
    assert m["drift"]["candidates"]["all"] > 0.25 and m["drift"]["candidates"][sst2] == m["drift"]["max_psi"]
    assert m["reference_profile"] == phrases.to_json()  # what `scorer report` draws
    assert "warning:" not in r.stderr

    monkeypatch.setattr(drift, "MIN_ROWS", 300)  # the 300 phrases judged: this test is about parts
    r = CliRunner().invoke(main, ["run", batch, "-o", str(tmp_path / "whole"), "--model", str(alone)])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "whole" / "_manifest.json").read_text())
    assert m["drift"]["part"] is None and m["drift"]["candidates"] == {"all": m["drift"]["max_psi"]}
    assert m["drift"]["psi"]["text_length"] > 0.25 and m["reference_profile"] == whole.to_json()
    assert "warning: drift: PSI above 0.1 (moderate shift) against the model's reference: " in r.stderr

    spec = json.loads((parts / "scorer_model.json").read_text())
    spec["reference"]["parts"][1]["profile"]["length_hist"] = [0, 0, 0]  # another scorer's bins
    (parts / "scorer_model.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["run", batch, "-o", str(tmp_path / "refused"), "--model", str(parts)])
    assert r.exit_code == 4 and r.stderr.strip().splitlines() == [
        f"error: {parts}: 'reference.parts[1]' ({imdb}): its bins are not this scorer's (10 probability "
        "bins, 12 length bins); profile the model again"]
