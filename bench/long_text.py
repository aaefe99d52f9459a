"""Long texts: truncated at the max length vs scored as windows, on labelled long documents.

    .venv/bin/python bench/long_text.py [--rows 2000] [--model default] [--overlaps 0,32,64]

Scores ../shared/datasets/imdb_reviews/dev.jsonl (2,000 movie reviews, median ~219 tokens) in one
process with each handling, timing the scoring (prepare + infer, after a warm-up pass that
compiles every batch shape), and reports accuracy, macro-F1, texts/s, real tokens/s, and how
many rows were cut or windowed. Results go to bench/results/long_text.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets" / "imdb_reviews"
sys.path.insert(0, str(REPO))

from jobs import metrics  # noqa: E402
from scorer import Scorer  # noqa: E402


def measure(scorer_: Scorer, texts: list[str], labels: np.ndarray, names: list[str],
            repeats: int) -> dict:
    scorer_.probabilities(texts)  # warm-up: compiles every shape this data needs
    seconds, tokens = [], 0
    for _ in range(repeats):
        before = scorer_.stats.real_tokens
        start = time.perf_counter()
        prepared = scorer_.prepare(texts)
        probs = scorer_.infer(prepared)
        seconds.append(time.perf_counter() - start)
        tokens = scorer_.stats.real_tokens - before
    m = metrics.classification_metrics(labels, probs, names)
    wall = statistics.median(seconds)
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            "ece": round(m["ece"], 4), "texts_per_second": round(len(texts) / wall, 1),
            "real_tokens_per_second": round(tokens / wall),
            "rows_truncated": int(prepared.truncated().sum()),
            "rows_windowed": int((prepared.windows() > 1).sum()),
            "windows": int(prepared.windows().sum()), "seconds": round(wall, 2)}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--model", default=None)
    p.add_argument("--overlaps", default="0,32,64")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in open(DATA / "dev.jsonl", encoding="utf-8")][: args.rows]
    names = [json.loads((DATA / "labels.json").read_text())[str(i)] for i in range(2)]
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    results = {}
    handlings = [("truncate", None)] + [("window", int(o)) for o in args.overlaps.split(",")]
    for long_text, overlap in handlings:
        s = Scorer.load(args.model, long_text=long_text, overlap=overlap)
        key = long_text if overlap is None else f"window, overlap {overlap}"
        results[key] = measure(s, texts, labels, names, args.repeats)
        print(key, results[key], flush=True)
    print(f"\n| handling | accuracy | macro-F1 | ECE | texts/s | real tokens/s | rows cut | rows windowed |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} | "
              f"{r['texts_per_second']} | {r['real_tokens_per_second']} | {r['rows_truncated']} | "
              f"{r['rows_windowed']} |")
    out = REPO / "bench" / "results" / "long_text.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": len(texts),
                               "model": args.model or "default", "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
