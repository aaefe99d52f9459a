"""scorer.splits: planning (footers only), the executor (rows written under the attempt's own
directory, metadata returned) and the commit protocol over it (scorer.runs.Run.commit): a
duplicate attempt deleted, resume skipping committed splits, the same rows as one stream."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from scorer import commit, pipeline, source, splits
from scorer.errors import DataError
from scorer.options import RunOptions
from scorer.runs import Run
from scorer.splits import Piece, Split, SplitResult


def write_parquet(path, texts, row_group_size):
    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), path,
                   row_group_size=row_group_size)
    return str(path)


@pytest.fixture
def inputs(tmp_path):
    """10 rows in row groups of 3, 3, 3, 1; a 2-row file; JSON Lines; a hive directory."""
    a = write_parquet(tmp_path / "a.parquet", [f"film {i} was fine" for i in range(10)], 3)
    b = write_parquet(tmp_path / "b.parquet", ["short", "shorter"], 5)
    c = tmp_path / "c.jsonl"
    c.write_text("".join(json.dumps({"text": f"line {i}", "n": i}) + "\n" for i in range(7)))
    for part in ("x", "y"):
        (tmp_path / "d" / f"k={part}").mkdir(parents=True)
        write_parquet(tmp_path / "d" / f"k={part}" / "f.parquet", [f"{part} {i}" for i in range(4)], 2)
    return [a, b, str(c), str(tmp_path / "d")]


def row_ids(chunks) -> list[str]:
    return [f"{c.source}:{c.offset + i}" for c in chunks for i in range(len(c))]


def test_a_plan_packs_row_groups_into_splits_from_the_footers_alone(inputs, monkeypatch):
    def no_rows(*args, **kwargs):
        raise AssertionError("planning read rows")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", no_rows)
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", no_rows)
    a, b, c, d = inputs
    the_plan = splits.plan(source.expand_inputs(inputs), rows_per_split=6)
    assert [(s.id, s.kind, s.rows) for s in the_plan] == [
        ("00000", "parquet", 6), ("00001", "parquet", 6), ("00002", "file", 6), ("00003", "file", 1),
        ("00004", "parquet", 6), ("00005", "parquet", 2)]
    # a's last two row groups and all of b (a small file) share a split; positions count on
    assert the_plan[1].pieces == (Piece(a, "parquet", a, (2, 4), 6, 4), Piece(b, "parquet", b, (0, 1), 0, 2))
    # c.jsonl: cut at the 7th line's start (lines of 27 bytes)
    assert [s.pieces for s in the_plan[2:4]] == [
        (Piece(c, "jsonl", first_row=0, rows=6, byte_range=(0, 6 * 27), first_line=0),),
        (Piece(c, "jsonl", first_row=6, rows=1, byte_range=(6 * 27, 7 * 27), first_line=6),)]
    x, y = f"{d}/k=x/f.parquet", f"{d}/k=y/f.parquet"
    assert [(p.member, p.row_groups, p.first_row) for s in the_plan[4:] for p in s.pieces] == [
        (x, (0, 2), 0), (y, (0, 1), 0), (y, (1, 2), 2)]
    assert [Split.from_json(json.loads(json.dumps(s.to_json()))) for s in the_plan] == the_plan
    # a row group over the target is a split of its own; stdin is one split
    big = splits.plan([source.Input(a, "parquet")], rows_per_split=2)
    assert [s.rows for s in big] == [3, 3, 3, 1]
    assert [(s.kind, s.pieces) for s in splits.plan([source.Input("-", "jsonl")], 100)] == [
        ("stream", (Piece("-", "jsonl"),))]


def test_the_splits_read_exactly_the_rows_of_the_whole_inputs(inputs):
    expanded = source.expand_inputs(inputs)
    whole = row_ids(source.read_chunks(expanded, "text", chunk_rows=2))
    parts = [row_ids(source.read_chunks(s.inputs(), "text", chunk_rows=2))
             for s in splits.plan(expanded, rows_per_split=4)]
    assert [i for ids in parts for i in ids] == whole and len(whole) == 10 + 2 + 7 + 8
    assert parts[1] == [f"{inputs[0]}:{i}" for i in (3, 4, 5)]  # a range keeps its file's positions


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_a_line_file_is_cut_at_line_starts_and_its_pieces_read_as_the_whole_file(tmp_path, fmt):
    """Blank lines (not JSON Lines records), a line over --max-line-bytes, a byte-order mark,
    invalid UTF-8, no final line end: the pieces give the rows, positions and line numbers of
    reading the file whole."""
    lines = [b"\xef\xbb\xbf" + line(fmt, "first"), b"", line(fmt, "x" * 300), b"  ", line(fmt, "ok"),
             b"\xff\xfe not utf-8", line(fmt, "\u00e9t\u00e9"), b"", b"", line(fmt, "last")]
    path = tmp_path / f"in.{'jsonl' if fmt == 'jsonl' else 'txt'}"
    path.write_bytes(b"\n".join(lines))
    inputs = source.expand_inputs([str(path)])

    def read(chunks):
        return [(f"{c.source}:{c.offset + i}", c.lines[i], c.texts[i], c.read_errors[i])
                for c in chunks for i in range(len(c))]

    whole = read(source.read_chunks(inputs, "text", chunk_rows=2, max_line_bytes=100))
    for rows_per_split in (1, 2, 3, 100):
        the_plan = splits.plan(inputs, rows_per_split, max_line_bytes=100)
        assert [s.kind for s in the_plan] == ["file"] * len(the_plan)
        assert sum(s.rows for s in the_plan) == len(whole)
        pieces = [read(source.read_chunks(s.inputs(), "text", chunk_rows=2, max_line_bytes=100))
                  for s in the_plan]
        assert [len(p) for p in pieces] == [s.rows for s in the_plan]
        assert [row for p in pieces for row in p] == whole, rows_per_split
        assert [Split.from_json(json.loads(json.dumps(s.to_json()))) for s in the_plan] == the_plan
    assert len(splits.plan(inputs, 3)) == (2 if fmt == "jsonl" else 4)  # 6 records, 10 lines
    too_long = [row for row in whole if row[3] and "line too long" in row[3]]
    assert [row[1] for row in too_long] == [3] and whole[-1][1:3] == (10, "last" if fmt == "text" else "last")


def line(fmt: str, text: str) -> bytes:
    return (json.dumps({"text": text}) if fmt == "jsonl" else text).encode()


def test_compressed_remote_and_csv_line_files_stay_whole(tmp_path):
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(b"")
    csv = tmp_path / "in.csv"
    csv.write_text('text\n"two\nlines"\nb\n')
    the_plan = splits.plan([source.Input(str(gz), "jsonl"), source.Input(str(csv), "csv"),
                            source.Input("s3://bkt/in.jsonl", "jsonl")], rows_per_split=1)
    assert [(s.kind, s.pieces[0].byte_range) for s in the_plan] == [("file", None)] * 3


class Reversed:
    """An engine that executes the splits last first, each twice (a retry racing the first
    attempt), and commits the second attempt before the first."""

    def __init__(self):
        self.results: list[SplitResult] = []
        self.commits: list[bool] = []

    def execute(self, the_run: Run, pending: list[Split]) -> None:
        the_run.start(splits.first_chunk(pending[0], the_run.opts))
        for split in reversed(pending):
            committed = sorted(the_run.outdir.out.root.glob("part-*"))
            first, second = (splits.execute_split(split, the_run.scorer, the_run.opts, the_run.out)
                             for _ in range(2))
            # rows travel no further than the attempts' own directories
            assert sorted(the_run.outdir.out.root.glob("part-*")) == committed
            self.results.append(SplitResult.from_json(json.loads(json.dumps(first.to_json()))))
            self.commits += [the_run.commit(second), the_run.commit(self.results[-1])]


def output_rows(out) -> list[dict]:
    return ds.dataset(out, format="parquet").to_table().to_pylist()


def test_any_order_and_duplicate_attempts_commit_the_same_output_as_the_local_engine(
        tiny_scorer, inputs, tmp_path):
    opts = RunOptions(rows_per_file=4, chunk_rows=3, dead_letter=str(tmp_path / "dead"))
    expanded = source.expand_inputs(inputs)
    local = pipeline.run(inputs, tmp_path / "local", scorer_=tiny_scorer, options=opts).manifest
    opts.dead_letter = str(tmp_path / "dead2")
    the_run = Run(opts, tmp_path / "out")
    the_run.load_scorer(None, tiny_scorer)
    engine = Reversed()
    manifest = the_run.execute(expanded, engine).manifest

    assert len(the_run.plan) == 8  # a: 3, 3, 3 + 1 rows; b; c: 4, 3; d's two files
    assert engine.commits == [True, False] * 8  # each duplicate deleted, never committed
    assert [p.name for p in sorted((tmp_path / "out").glob("part-*"))] == \
        [p.name for p in sorted((tmp_path / "local").glob("part-*"))]
    assert output_rows(tmp_path / "out") == output_rows(tmp_path / "local")
    assert not (tmp_path / "out" / commit.STATE_DIR).exists()
    for key in ("rows_in", "rows_out", "rows_scored", "parts", "real_tokens", "padded_tokens"):
        assert manifest[key] == local[key], key
    assert [(p["file"], p["rows"]) for p in manifest["parts"]][3:6] == [
        ("part-00003-00000.parquet", 2), ("part-00004-00000.parquet", 4),
        ("part-00005-00000.parquet", 3)]  # c.jsonl: 7 rows, cut every 4 (--rows-per-file)
    assert manifest["splits"] == {"planned": 8, "executed_now": 8, "attempts_discarded": 8}
    assert manifest["timing"]["encode_seconds"] > 0 and manifest["timing"]["infer_seconds"] > 0
    result = engine.results[0]  # the last split's metadata: nothing of its rows
    assert result.split == "00007" and result.state.rows == result.rows_read == 4
    assert result.state.parts == [{"file": "part-00007-00000.parquet", "rows": 4,
                                   "bytes": (tmp_path / "out" / "part-00007-00000.parquet").stat().st_size}]
    assert result.score.real_tokens > 0 and result.host


def test_a_resume_skips_the_committed_splits_and_keeps_the_recorded_plan(tiny_scorer, inputs, tmp_path,
                                                                        monkeypatch):
    reference = pipeline.run(inputs, tmp_path / "ref", scorer_=tiny_scorer, rows_per_file=4)
    out = tmp_path / "out"
    executed = []
    execute = splits.execute_split

    def dies_after_two_splits(split, *args, **kwargs):
        if len(executed) == 2:
            raise KeyboardInterrupt  # as a killed driver, between commits
        executed.append(split.id)
        return execute(split, *args, **kwargs)

    monkeypatch.setattr(splits, "execute_split", dies_after_two_splits)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(inputs, out, scorer_=tiny_scorer, rows_per_file=4)
    progress = json.loads((out / commit.STATE_DIR / "progress.json").read_text())
    assert sorted(progress["splits"]) == ["00000", "00001"] and progress["rows"] == 6

    executed.clear()
    monkeypatch.setattr(splits, "execute_split", lambda split, *a, **k: executed.append(split.id) or
                        execute(split, *a, **k))

    def no_new_plan(*args, **kwargs):
        raise AssertionError("a resume planned again")

    monkeypatch.setattr(splits, "plan", no_new_plan)
    manifest = pipeline.run(inputs, out, scorer_=tiny_scorer, rows_per_file=4).manifest
    assert executed == ["00002", "00003", "00004", "00005", "00006", "00007"]
    assert manifest["resumed"] and manifest["rows_resumed_from_checkpoint"] == 6
    assert output_rows(out) == output_rows(tmp_path / "ref")
    assert manifest["parts"] == reference.manifest["parts"]


def test_a_split_goes_on_from_the_rows_committed_inside_it(tiny_scorer, tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl.gz"  # compressed: one split, whatever its rows
    path.write_bytes(gzip.compress("".join(json.dumps({"text": f"review {i}"}) + "\n"
                                           for i in range(10)).encode()))
    pipeline.run([str(path)], tmp_path / "ref", scorer_=tiny_scorer, rows_per_file=4, chunk_rows=2)
    write = splits.SplitWriter.write

    def fails_at_row_8(self, scored):
        if self.rows >= 8:
            raise OSError("disk gone")
        write(self, scored)

    monkeypatch.setattr(splits.SplitWriter, "write", fails_at_row_8)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        pipeline.run([str(path)], out, scorer_=tiny_scorer, rows_per_file=4, chunk_rows=2)
    state = json.loads((out / commit.STATE_DIR / "progress.json").read_text())["splits"]["00000"]
    assert (state["rows"], state["complete"], len(state["parts"])) == (8, False, 2)
    assert not list((out / commit.STATE_DIR / "attempts").iterdir())  # the failed attempt's, gone

    monkeypatch.setattr(splits.SplitWriter, "write", write)
    manifest = pipeline.run([str(path)], out, scorer_=tiny_scorer, rows_per_file=4, chunk_rows=2).manifest
    assert manifest["rows_resumed_from_checkpoint"] == 8
    assert [p["file"] for p in manifest["parts"]] == [f"part-00000-0000{i}.parquet" for i in range(3)]
    assert output_rows(out) == output_rows(tmp_path / "ref")


def test_a_split_over_the_bad_row_limit_is_not_committed(tiny_scorer, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["good", "", "fine", "", ""]))
    with pytest.raises(DataError, match=rf"more than 2 bad rows \(--max-errors\); the latest: {path}:4: "
                                        "empty text"):
        pipeline.run([str(path)], tmp_path / "out", scorer_=tiny_scorer, max_errors="2")
    progress = json.loads((tmp_path / "out" / commit.STATE_DIR / "progress.json").read_text())
    assert progress["splits"] == {} and progress["rows"] == 0


def test_a_split_whose_rows_fill_rows_per_file_is_committed_once(tiny_scorer, tmp_path, monkeypatch):
    """The checkpoint at a split's last row is its completing commit: one progress.json write for
    a split of --rows-per-file rows (not its part's, then the split's end with nothing new). A
    split whose rows the plan does not know (compressed) still commits at every --rows-per-file
    rows."""
    lines = tmp_path / "a.jsonl"  # two splits of exactly 4 rows
    lines.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(8)))
    parquet = write_parquet(tmp_path / "b.parquet", [f"film {i}" for i in range(4)], 2)  # 4 rows
    packed = tmp_path / "c.jsonl.gz"  # one split: 10 rows, not known to the plan
    packed.write_bytes(gzip.compress("".join(json.dumps({"text": f"review {i}"}) + "\n"
                                             for i in range(10)).encode()))
    commits, checkpoints = [], []
    run_commit, checkpoint = Run.commit, commit.OutputDir.checkpoint

    def counted_commit(self, result):
        commits.append((result.split, result.state.rows, result.complete))
        return run_commit(self, result)

    def counted_checkpoint(self, progress):
        checkpoints.append(progress.rows)
        checkpoint(self, progress)

    monkeypatch.setattr(Run, "commit", counted_commit)
    monkeypatch.setattr(commit.OutputDir, "checkpoint", counted_checkpoint)
    manifest = pipeline.run([str(lines), parquet, str(packed)], tmp_path / "out", scorer_=tiny_scorer,
                            rows_per_file=4, chunk_rows=3).manifest
    assert commits == [("00000", 4, True), ("00001", 4, True), ("00002", 4, True),
                       ("00003", 4, False), ("00003", 8, False), ("00003", 10, True)]
    assert checkpoints == [4, 8, 12, 16, 20, 22]  # one progress.json write (and fsync) per commit
    assert manifest["rows_in"] == 22 and [p["rows"] for p in manifest["parts"]] == [4, 4, 4, 4, 4, 2]
