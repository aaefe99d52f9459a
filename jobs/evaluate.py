"""Measure a model's metrics on labelled data, through the scoring path.

    python -m jobs.evaluate --data ../shared/datasets/sst2/dev.jsonl
"""

from __future__ import annotations

import json
import time

import click

from jobs import data as data_mod
from jobs.errors import fail
from jobs.metrics import evaluate
from scorer import Scorer
from scorer.errors import ScorerError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", default=None, help="Model directory or registry reference "
              "(default: the packaged model).")
@click.option("--data", "paths", multiple=True, required=True, help="Labelled data to score.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
def main(model, paths, text_column, label_column):
    """Print a model's metrics on labelled data as one JSON line (integer labels are label ids).

    Example:

        python -m jobs.evaluate --data ../shared/datasets/sst2/dev.jsonl --model models/sentiment@champion
    """
    try:
        scorer = Scorer.load(model)
        names = scorer.spec.labels
        raw = data_mod.read_raw(list(paths), text_column, label_column)
        report: dict = {}
        data = data_mod.prepare(raw, names, scorer.multi_label, "evaluation", report)
        start = time.time()
        metrics = evaluate(lambda texts: scorer.probabilities(texts)[0], data, names,
                           scorer.multi_label, scorer.spec.threshold)
    except ScorerError as e:
        fail(e)
    metrics.update(model=scorer.model_dir.id.to_json(), data=list(paths), data_report=report["evaluation"],
                   seconds=round(time.time() - start, 1))
    click.echo(json.dumps(metrics))


if __name__ == "__main__":
    main()
