"""What `--precision int8` costs in accuracy: the default model at float32 and at int8, in one
process, on SST-2 dev (accuracy), IMDB dev (accuracy, long reviews scored as windows, the
default) and AG News test (argmax agreement: the default model is a sentiment model, so there is
no gold label to compare with; agreement says how often int8 changes its answer).

    .venv/bin/python bench/int8_accuracy.py [--imdb-rows 2000] [--ag-news-rows 7600]

Writes bench/results/int8_accuracy.json. The timings in it include each pass's first-call
compile (XLA) or conversion (OpenVINO): bench/throughput.py measures speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"


def read(path: Path, rows: int | None) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        out = [json.loads(line) for line in f]
    return out[:rows] if rows else out


def compare(full, int8, rows: list[dict], gold: bool) -> dict:
    texts = [r["text"] for r in rows]
    t0 = time.perf_counter()
    p_full, _ = full.probabilities(texts)
    full_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_int8, _ = int8.probabilities(texts)
    int8_seconds = time.perf_counter() - t0
    result = {"rows": len(texts),
              "argmax_agreement": float((p_full.argmax(1) == p_int8.argmax(1)).mean()),
              "max_probability_difference": float(np.abs(p_full - p_int8).max()),
              "float32_seconds": round(full_seconds, 1), "int8_seconds": round(int8_seconds, 1)}
    if gold:
        labels = np.array([r["label"] for r in rows])
        result["float32_accuracy"] = float((p_full.argmax(1) == labels).mean())
        result["int8_accuracy"] = float((p_int8.argmax(1) == labels).mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imdb-rows", type=int, help="the first N IMDB dev reviews (default: all 2,000)")
    parser.add_argument("--ag-news-rows", type=int, help="the first N AG News test texts (default: all)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from scorer import Scorer

    full, int8 = Scorer.load(), Scorer.load(precision="int8")
    sets = {"sst2_dev": (read(DATA / "sst2" / "dev.jsonl", None), True),
            "imdb_dev": (read(DATA / "imdb_reviews" / "dev.jsonl", args.imdb_rows), True),
            "ag_news_test": (read(DATA / "ag_news" / "test.jsonl", args.ag_news_rows), False)}
    report = {"date": time.strftime("%Y-%m-%d"), "model": "default",
              "load_average_1min": os.getloadavg()[0], "results": {}}
    for name, (rows, gold) in sets.items():
        report["results"][name] = compare(full, int8, rows, gold)
        print(name, report["results"][name], file=sys.stderr, flush=True)
    out = REPO / "bench" / "results" / "int8_accuracy.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
