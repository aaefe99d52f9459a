"""Calibration of the default model on held-out data: ECE with the shipped temperatures, with
none, and with the temperature that data alone would fit (jobs.metrics.fit_temperature).

    .venv/bin/python bench/calibration.py [--imdb-rows 2000]

The model has a temperature for texts of one window and one for texts scored as several (the
spec's windowed_temperature); both are undone first, so T = 1 is the model's raw logits. SST-2
dev sentences are one window each; IMDB dev reviews are scored as windows (the default
--long-text window), and the ones that fit one window get the one-window temperature.
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
from scorer import Scorer, api  # noqa: E402


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--imdb-rows", type=int, default=2000)
    args = p.parse_args(argv)
    model = Scorer.load()
    spec = model.spec
    print(f"shipped: temperature {spec.temperature:g}, windowed_temperature {spec.windowed_temperature}")
    results = {}
    for name, path, rows in [("SST-2 dev", DATA / "sst2/dev.jsonl", None),
                             ("IMDB dev (windows)", DATA / "imdb_reviews/dev.jsonl", args.imdb_rows)]:
        data = [json.loads(line) for line in open(path, encoding="utf-8")][:rows]
        prepared = model.prepare([r["text"] for r in data])
        probs = model.infer(prepared)
        windows = api.windows_per_text(prepared.encoded)
        labels = np.array([r["label"] for r in data])
        shipped = spec.temperatures.per_text(windows)
        raw = metrics.with_row_temperatures(probs, 1.0 / shipped, False)  # T = 1: the raw logits
        fitted = metrics.fit_temperature(labels, raw, False)
        ece = {"shipped": metrics.expected_calibration_error(labels, probs),
               "T=1": metrics.expected_calibration_error(labels, raw),
               f"fitted on this data alone (T={fitted:g})": metrics.expected_calibration_error(
                   labels, metrics.with_temperature(raw, fitted, False))}
        results[name] = {"rows": len(data), "windowed_rows": int((windows > 1).sum()),
                         "accuracy": float((probs.argmax(1) == labels).mean()), "ece": ece}
        print(f"{name}: {len(data)} rows ({int((windows > 1).sum())} windowed), accuracy "
              f"{results[name]['accuracy']:.4f}, ECE " + ", ".join(f"{k} {v:.4f}" for k, v in ece.items()),
              flush=True)
    (REPO / "bench/results/calibration.json").write_text(json.dumps(
        {"temperature": spec.temperature, "windowed_temperature": spec.windowed_temperature,
         **results}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
