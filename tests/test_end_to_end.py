"""End to end with the real default model (MiniLM + the committed LoRA adapter and head)."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from scorer.cli import main
from tests.conftest import REPO, SAMPLE

POSITIVE = ["a gorgeous , witty , seductive movie .", "one of the best films of the year , "
            "funny and deeply moving .", "i loved every minute of it ."]
NEGATIVE = ["a dull , tedious mess .", "the worst movie i have seen in years , boring and stupid .",
            "i hated it and wanted my money back ."]


def test_obvious_sentences_get_the_right_labels(default_scorer):
    preds = default_scorer.score(POSITIVE + NEGATIVE)
    assert [p.label for p in preds] == ["positive"] * 3 + ["negative"] * 3
    assert all(p.score > 0.8 for p in preds)


def test_every_sample_format_through_the_cli(tmp_path):
    out = tmp_path / "scored"
    files = [SAMPLE / "sst2_dev_sample.parquet", SAMPLE / "sst2_dev_sample.jsonl",
             SAMPLE / "sst2_dev_sample.txt"]
    r = CliRunner().invoke(main, ["run", *map(str, files), "-o", str(out), "--rows-per-file", "400"])
    assert r.exit_code == 0, r.output
    # a split per input here (each under 400 rows), each its own part file
    parts = [f"part-0000{i}-00000.parquet" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "_manifest.json", *parts]
    assert [pq.read_metadata(out / p).num_rows for p in parts] == [300, 300, 272]
    t = pa.concat_tables([pq.read_table(out / p) for p in parts], promote_options="default")
    assert t.num_rows == 872
    ids = t.column("row_id").to_pylist()
    assert ids[0].endswith("sst2_dev_sample.parquet:0") and ids[300].endswith("sst2_dev_sample.jsonl:0")
    assert ids[600].endswith("sst2_dev_sample.txt:0") and ids[-1].endswith("sst2_dev_sample.txt:271")
    assert t.column("id").to_pylist()[:600] == [f"sst2-dev-{i}" for i in range(600)]
    assert t.column("id").null_count == 272  # the text file has no id column
    assert t.column("error").null_count == 872
    gold = t.column("gold_label").to_pylist()[:600]
    accuracy = sum(g == p for g, p in zip(gold, t.column("label").to_pylist())) / 600
    assert accuracy > 0.85
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_in"] == m["rows_out"] == m["rows_scored"] == 872
    assert m["model"]["name"] == "sentiment" and [i["format"] for i in m["inputs"]] == [
        "parquet", "jsonl", "text"]
    meta = json.loads(pq.read_schema(out / "part-00000-00000.parquet").metadata[b"scorer.model"])
    assert meta == m["model"]
    # drift against the packaged model's reference (its validation set's whole texts: SST-2
    # sentences and IMDB reviews, each source a part): SST-2 dev is nearest the SST-2 part and
    # under the warning level there; against the whole mixture its length would have crossed
    assert m["drift"]["reference"] == "spec"
    assert m["drift"]["part"] == "sst2"
    assert m["drift"]["max_psi"] < 0.1 and "drift" not in r.stderr
    assert m["drift"]["candidates"]["all"] > 0.1


def test_stdin_jsonl_in_a_real_process(tmp_path):
    """The installed console script, as cron or Airflow would call it."""
    out = tmp_path / "o"
    lines = "\n".join(json.dumps({"body": t}) for t in POSITIVE + NEGATIVE) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "scorer.cli", "run", "-", "--format", "jsonl", "--text-column", "body",
         "-o", str(out)], input=lines.encode(), capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert f"scored 6 rows into {out}/" in proc.stderr.decode()
    labels = pq.read_table(out / "part-00000-00000.parquet").column("label").to_pylist()
    assert labels == ["positive"] * 3 + ["negative"] * 3


def test_long_reviews_are_scored_as_windows_by_default(tmp_path):
    """sample_data's 40 IMDB dev reviews (never trained on), as a new user runs them: every
    review over the default model's 128 tokens is scored whole, as windows."""
    out = tmp_path / "reviews"
    r = CliRunner().invoke(main, ["run", str(SAMPLE / "imdb_dev_sample.jsonl"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    t = pq.read_table(out / "part-00000-00000.parquet")
    windows = t.column("windows").to_pylist()
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows_windowed"] == sum(w > 1 for w in windows) >= 30 and m["rows_truncated"] == 0
    gold = t.column("gold_label").to_pylist()
    accuracy = sum(g == p for g, p in zip(gold, t.column("label").to_pylist())) / len(gold)
    assert accuracy >= 0.85, accuracy
    assert m["drift"]["part"] == "imdb_reviews"  # nearest: reviews
    # 40 rows are too few for a PSI over 10 bins (README): recorded, not a warning
    assert m["drift"]["too_few_rows"] and m["drift"]["rows"] == 40 and "warning:" not in r.stderr
