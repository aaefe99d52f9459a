"""scorer.pipeline, the local engine: splits through the threaded stages over a Run, progress
reporting."""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest

from scorer import pipeline
from scorer.errors import OutputError
from scorer.splits import SplitWriter


@pytest.fixture
def ten_rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i}: a fine film"}) + "\n" for i in range(10)))
    return str(path)


def test_progress_is_told_the_rows_scored_so_far(tiny_scorer, ten_rows, tmp_path):
    calls = []
    pipeline.run([ten_rows], tmp_path / "out", scorer_=tiny_scorer, chunk_rows=4,
                 progress=lambda rows, seconds: calls.append((rows, seconds)))
    assert [rows for rows, _ in calls] == [4, 8, 10]  # after each chunk (of one batch each)
    assert all(b >= a >= 0 for (_, a), (_, b) in zip(calls, calls[1:]))


def test_one_scorer_serves_two_runs_and_each_manifest_counts_its_own(tiny_scorer, ten_rows, tmp_path):
    first = pipeline.run([ten_rows], tmp_path / "one", scorer_=tiny_scorer).manifest
    second = pipeline.run([ten_rows], tmp_path / "two", scorer_=tiny_scorer).manifest
    assert second["real_tokens"] == first["real_tokens"] > 0
    assert second["rows_in"] == second["rows_out"] == 10


def test_rows_lost_between_reading_and_writing_fail_the_run(tiny_scorer, ten_rows, tmp_path,
                                                           monkeypatch):
    write = SplitWriter.write

    def drop_the_last_row(self, scored):
        write(self, scored.slice(0, max(scored.num_rows - 1, 0)))

    monkeypatch.setattr(SplitWriter, "write", drop_the_last_row)
    with pytest.raises(OutputError, match="read 10 rows but accounted for 9"):
        pipeline.run([ten_rows], tmp_path / "out", scorer_=tiny_scorer)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_failing_write_stage_leaves_only_committed_parts(tiny_scorer, ten_rows, tmp_path,
                                                          monkeypatch):
    write = SplitWriter.write

    def fail_on_the_third_split(self, scored):  # the file is cut every 3 rows
        if self.split.id == "00002":
            raise OSError("disk gone")
        write(self, scored)

    monkeypatch.setattr(SplitWriter, "write", fail_on_the_third_split)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk gone"):
        pipeline.run([ten_rows], out, scorer_=tiny_scorer, chunk_rows=3, rows_per_file=3)
    assert ds.dataset(out, format="parquet").count_rows() == 6  # two checkpoints, nothing open


def test_progress_moves_within_a_chunk(tiny_scorer, tmp_path):
    """Progress came once a chunk was written: on a CPU, a chunk of 8,192 rows showed nothing
    for minutes (issue 21). It comes as the model's batches are done, rows/s from the first."""
    src = tmp_path / "in.txt"
    review = "a slow start, then a film of real grace and wit " * 4  # ~45 tokens: 2 to a packed row
    src.write_text("".join(f"{i}: {review}\n" for i in range(600)))
    calls = []
    pipeline.run([str(src)], tmp_path / "out", scorer_=tiny_scorer, chunk_rows=1000,
                 progress=lambda rows, seconds: calls.append((rows, seconds)))
    rows = [r for r, _ in calls]
    assert rows == sorted(rows) and rows[-1] == 600
    assert any(0 < r < 600 for r in rows), rows  # one chunk of 600 rows, reported batch by batch
    assert all(seconds >= 0 for _, seconds in calls)
