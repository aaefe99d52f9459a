"""Quality bars of the fine-tuning job, measured on ../shared/datasets (not a CI test).

    .venv/bin/python bench/quality.py                 # every run below (about 1.5 hours on a 2-core CPU)
    .venv/bin/python bench/quality.py trec-full       # one of them

Each run is `python -m jobs.finetune ... --out /tmp/scorer-quality/RUN` in its own process; the
table printed at the end (and written to bench/results/quality.json) has the held-out metrics and
the wall time. The sst2-lora run is the command that makes the shipped default model
(scorer/models/default is a copy of its output).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"
OUT = Path("/tmp/scorer-quality")


def names(dataset: str) -> str:
    labels = json.loads((DATA / dataset / "labels.json").read_text())
    return ",".join(labels[str(i)] for i in range(len(labels)))


RUNS = {
    # sst2: train phrases -> dev sentences (the GLUE dev set, never trained on)
    "sst2-lora": ["--train", DATA / "sst2/train.jsonl", "--test", DATA / "sst2/dev.jsonl",
                  "--label-names", names("sst2"), "--epochs", "3"],
    "sst2-full": ["--train", DATA / "sst2/train.jsonl", "--test", DATA / "sst2/dev.jsonl",
                  "--label-names", names("sst2"), "--full", "--epochs", "3", "--learning-rate", "5e-5"],
    # trec: 6 coarse question classes, train -> test
    "trec-full": ["--train", DATA / "trec/train.jsonl", "--test", DATA / "trec/test.jsonl",
                  "--label-names", names("trec"), "--full", "--epochs", "4"],
    # ag_news: only a test split here, so a seeded stratified split of it: 90% train, 10% validation
    "agnews-lora": ["--train", DATA / "ag_news/test.jsonl", "--label-names", names("ag_news"),
                    "--epochs", "2", "--seed", "0"],
}
BARS = {"sst2-lora": ("test", "accuracy", 0.88), "sst2-full": ("test", "accuracy", 0.90),
        "trec-full": ("test", "accuracy", 0.90), "agnews-lora": ("validation", "accuracy", None)}


def main(selected: list[str]) -> None:
    results_file = REPO / "bench" / "results" / "quality.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in selected or list(RUNS):
        model_name = name.split("-")[0].replace("sst2", "sentiment")
        cmd = [sys.executable, "-m", "jobs.finetune", *map(str, RUNS[name]), "--name", model_name,
               "--out", str(OUT / name)]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        start = time.time()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed with exit code {proc.returncode}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = {"metrics": summary["metrics"], "best_epoch": summary["best_epoch"],
                         "wall_seconds": round(time.time() - start, 1),
                         "command": "python -m jobs.finetune " + " ".join(
                             str(a).replace(str(REPO.parent), "..") for a in RUNS[name]),
                         "date": time.strftime("%Y-%m-%d")}
        results_file.parent.mkdir(exist_ok=True)
        results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'run':12} {'split':10} {'accuracy':>8} {'macro_f1':>8} {'bar':>6} {'wall':>8}")
    for name, r in results.items():
        split, metric, bar = BARS[name]
        m = r["metrics"][split]
        ok = "" if bar is None else ("ok" if m[metric] >= bar else "MISSED")
        print(f"{name:12} {split:10} {m['accuracy']:8.4f} {m['macro_f1']:8.4f} "
              f"{bar or '-':>6} {r['wall_seconds'] / 60:7.1f}m {ok}")


if __name__ == "__main__":
    main(sys.argv[1:])
