"""Rebuild sample_data/ from ../shared/datasets: SST-2 dev (872 sentences) and the first 40 IMDB
dev reviews (long documents, for --long-text).

    python sample_data/make_samples.py ../shared/datasets/sst2/dev.jsonl ../shared/datasets/imdb_reviews/dev.jsonl
"""

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NAMES = {0: "negative", 1: "positive"}


IMDB_ROWS = 40


def imdb_sample(dev_path: str, here: Path) -> None:
    with open(dev_path, encoding="utf-8") as src, \
            open(here / "imdb_dev_sample.jsonl", "w", encoding="utf-8") as f:
        for i, line in zip(range(IMDB_ROWS), src):
            r = json.loads(line)
            f.write(json.dumps({"id": f"imdb-dev-{i}", "text": r["text"],
                                "gold_label": NAMES[r["label"]]}) + "\n")


def main(dev_path: str, imdb_dev_path: str) -> None:
    here = Path(__file__).parent
    rows = [json.loads(line) for line in open(dev_path, encoding="utf-8")]
    # Rows 0-299 -> Parquet, 300-599 -> JSON Lines, 600-871 -> plain text (one sentence a line).
    # The gold label is kept as `gold_label` (not `label`, which is an output column).
    parquet = rows[:300]
    pq.write_table(pa.table({
        "id": [f"sst2-dev-{i}" for i in range(len(parquet))],
        "text": [r["text"] for r in parquet],
        "gold_label": [NAMES[r["label"]] for r in parquet],
    }), here / "sst2_dev_sample.parquet")
    with open(here / "sst2_dev_sample.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(rows[300:600], start=300):
            f.write(json.dumps({"id": f"sst2-dev-{i}", "text": r["text"],
                                "gold_label": NAMES[r["label"]]}) + "\n")
    with open(here / "sst2_dev_sample.txt", "w", encoding="utf-8") as f:
        for r in rows[600:]:
            f.write(r["text"] + "\n")
    imdb_sample(imdb_dev_path, here)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
