"""Quality bars of the fine-tuning job, measured on ../shared/datasets (not a CI test).

    .venv/bin/python bench/quality.py                 # every run below (about 1.5 hours on a 2-core CPU)
    .venv/bin/python bench/quality.py trec-full       # one of them
    .venv/bin/python bench/quality.py sst2-full --seeds 0 1 2   # one run at several seeds

Each run is `python -m jobs.finetune ... --out /tmp/scorer-quality/RUN` in its own process; the
table printed at the end (and written to bench/results/quality.json) has the held-out metrics and
the wall time. The `default` run is the command that makes the shipped default model
(scorer/models/default is a copy of its output).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"
OUT = Path("/tmp/scorer-quality")


def names(dataset: str) -> str:
    labels = json.loads((DATA / dataset / "labels.json").read_text())
    return ",".join(labels[str(i)] for i in range(len(labels)))


RUNS = {
    # sst2: train phrases -> dev sentences (the GLUE dev set, never trained on); sst2-full holds
    # out 2% of the phrases (1,347) for early stopping instead of 10%, to train on 66,002 of 67,349
    "sst2-lora": ["--train", DATA / "sst2/train.jsonl", "--test", DATA / "sst2/dev.jsonl",
                  "--label-names", names("sst2"), "--epochs", "3"],
    "sst2-full": ["--train", DATA / "sst2/train.jsonl", "--test", DATA / "sst2/dev.jsonl",
                  "--label-names", names("sst2"), "--full", "--epochs", "3", "--learning-rate", "5e-5",
                  "--validation-fraction", "0.02"],
    # trec: 6 coarse question classes, train -> test
    "trec-full": ["--train", DATA / "trec/train.jsonl", "--test", DATA / "trec/test.jsonl",
                  "--label-names", names("trec"), "--full", "--epochs", "4"],
    # ag_news: only a test split here, so a seeded stratified split of it: 90% train, 10% validation
    "agnews-lora": ["--train", DATA / "ag_news/test.jsonl", "--label-names", names("ag_news"),
                    "--epochs", "2", "--seed", "0"],
}
# The shipped default (scorer/models/default is a copy of its output): SST-2's phrases and
# IMDB's reviews, a review trained on as one of its 128-token windows a epoch (jobs.finetune
# --long-text window, the default); bench/long_text.py measures it on imdb_reviews/dev.
RUNS["default"] = ["--train", DATA / "sst2/train.jsonl", "--train", DATA / "imdb_reviews/train.jsonl",
                   "--test", DATA / "sst2/dev.jsonl", "--label-names", names("sst2"), "--epochs", "3"]
# sst2-full with an exponential moving average of the weights (decay 0.999: ~1,000 steps)
RUNS["sst2-full-ema"] = RUNS["sst2-full"] + ["--ema-decay", "0.999"]
# sst2-lora with a head that a transformers class has (mean pooling has none): the [CLS] token,
# or BERT's pooler (dense + tanh on [CLS]), the one `scorer export` can write as
# BertForSequenceClassification
RUNS["sst2-lora-cls"] = RUNS["sst2-lora"] + ["--pooling", "cls"]
RUNS["sst2-lora-pooled"] = RUNS["sst2-lora"] + ["--pooling", "pooled"]
# the three poolings side by side at one epoch (a third of the cost)
for pooling in ("mean", "cls", "pooled"):
    RUNS[f"sst2-lora-1ep-{pooling}"] = RUNS["sst2-lora"][:-1] + ["1", "--pooling", pooling]  # --epochs 1
BARS = {"default": ("test", "accuracy", 0.89), "sst2-lora": ("test", "accuracy", 0.88), "sst2-lora-cls": ("test", "accuracy", 0.88),
        "sst2-lora-pooled": ("test", "accuracy", 0.88),
        **{f"sst2-lora-1ep-{p}": ("test", "accuracy", None) for p in ("mean", "cls", "pooled")},
        "sst2-full": ("test", "accuracy", 0.90),
        "sst2-full-ema": ("test", "accuracy", 0.90),
        "trec-full": ("test", "accuracy", 0.90), "agnews-lora": ("validation", "accuracy", None)}


def run_once(name: str, seed: int | None) -> dict:
    """One jobs.finetune process at `seed` (None: the run's own); summary, wall time, command."""
    # data paths relative to the repository (the job runs there): the spec's reference parts are
    # named by them, and the recorded command is the one a fresh clone runs
    args = [str(a).replace(str(REPO.parent), "..") for a in RUNS[name]]
    own_seed = 0  # jobs.finetune's default
    if "--seed" in args:  # recorded apart from the command, so runs at other seeds compare
        at = args.index("--seed")
        own_seed = int(args[at + 1])
        del args[at:at + 2]
    seed = own_seed if seed is None else seed
    model_name = name.split("-")[0].replace("sst2", "sentiment").replace("default", "sentiment")
    cmd = [sys.executable, "-m", "jobs.finetune", *args, "--seed", str(seed), "--name", model_name,
           "--out", str(OUT / name)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed with exit code {proc.returncode}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    history = json.loads((OUT / name / "scorer_model.json").read_text())["training"]["history"]
    return {"seed": seed, "metrics": summary["metrics"], "best_epoch": summary["best_epoch"],
            "history": history,
            "wall_seconds": round(time.time() - start, 1), "date": time.strftime("%Y-%m-%d"),
            "command": "python -m jobs.finetune " + " ".join(args)}


def record(results: dict, name: str, run: dict) -> None:
    """Keep the runs of the same command at other seeds; the entry's metrics are their mean."""
    runs = [r for r in results.get(name, {}).get("runs", [])
            if r["command"] == run["command"] and r["seed"] != run["seed"]] + [run]
    runs.sort(key=lambda r: r["seed"])
    mean = {split: {k: float(np.mean([r["metrics"][split][k] for r in runs]))
                    for k in ("accuracy", "macro_f1")} for split in run["metrics"]}
    results[name] = {"command": run["command"], "seeds": [r["seed"] for r in runs],
                     "metrics": mean, "runs": runs}


def main(argv: list[str]) -> None:
    seeds = None
    if "--seeds" in argv:
        seeds = [int(s) for s in argv[argv.index("--seeds") + 1:]]
        argv = argv[:argv.index("--seeds")]
    results_file = REPO / "bench" / "results" / "quality.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in argv or list(RUNS):
        for seed in seeds or [None]:
            record(results, name, run_once(name, seed))
            results_file.parent.mkdir(exist_ok=True)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    print(f"{'run':14} {'split':10} {'seeds':>6} {'accuracy':>8} {'range':>15} {'macro_f1':>8} "
          f"{'bar':>6} {'wall':>8}")
    for name, r in results.items():
        split, metric, bar = BARS[name]
        accs = [run["metrics"][split]["accuracy"] for run in r["runs"]]
        m = r["metrics"][split]
        wall = np.mean([run["wall_seconds"] for run in r["runs"]]) / 60
        ok = "" if bar is None else ("ok" if m[metric] >= bar else "MISSED")
        print(f"{name:14} {split:10} {len(accs):6d} {m['accuracy']:8.4f} "
              f"{min(accs):7.4f}-{max(accs):.4f} {m['macro_f1']:8.4f} {bar or '-':>6} "
              f"{wall:7.1f}m {ok}")


if __name__ == "__main__":
    main(sys.argv[1:])
