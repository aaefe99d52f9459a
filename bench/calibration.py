"""Calibration of the default model on held-out data: ECE at other temperatures, and the
temperature that data alone would fit (jobs.metrics.fit_temperature).

    .venv/bin/python bench/calibration.py [--imdb-rows 600]

The shipped temperature is undone first, so T = 1 is the model's raw logits. SST-2 dev sentences
are one window each; IMDB dev reviews are scored as windows (the default --long-text window).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(REPO))

from jobs import metrics  # noqa: E402
from scorer import Scorer  # noqa: E402

TEMPERATURES = (1.0, 1.5, 2.0, 2.5)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--imdb-rows", type=int, default=600)
    args = p.parse_args(argv)
    model = Scorer.load()
    shipped = model.spec.temperature or 1.0
    for name, path, rows in [("SST-2 dev", DATA / "sst2/dev.jsonl", None),
                             ("IMDB dev (windows)", DATA / "imdb_reviews/dev.jsonl", args.imdb_rows)]:
        data = [json.loads(line) for line in open(path, encoding="utf-8")][:rows]
        probs, _ = model.probabilities([r["text"] for r in data])
        labels = np.array([r["label"] for r in data])
        raw = metrics.with_temperature(probs, 1.0 / shipped, False)  # T = 1: the raw logits
        ece = {t: metrics.expected_calibration_error(labels, metrics.with_temperature(raw, t, False))
               for t in sorted({*TEMPERATURES, shipped})}
        fitted = metrics.fit_temperature(labels, raw, False)
        print(f"{name}: {len(data)} rows, ECE " + ", ".join(f"T={t:g} {e:.4f}" for t, e in ece.items())
              + f"; fitted on this data alone: T={fitted:.4f}, ECE "
              f"{metrics.expected_calibration_error(labels, metrics.with_temperature(raw, fitted, False)):.4f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
