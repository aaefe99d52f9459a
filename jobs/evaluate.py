"""Measure a model directory's accuracy on labelled data, through the scoring path.

    python -m jobs.evaluate --data ../shared/datasets/sst2/dev.jsonl --label-names negative,positive
"""

from __future__ import annotations

import json
import sys
import time

import click

from jobs.finetune import load_split
from scorer import Scorer
from scorer.errors import ScorerError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", default=None, help="Model directory (default: the packaged model).")
@click.option("--data", "paths", multiple=True, required=True, help="Labelled data to score.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--label-names", help="Comma-separated names for integer labels 0, 1, ... "
              "(default: the model's labels).")
def main(model, paths, text_column, label_column, label_names):
    """Print accuracy and macro-F1 of a model on labelled data as one JSON line.

    Example:

        python -m jobs.evaluate --data ../shared/datasets/sst2/dev.jsonl
    """
    from jobs.finetune import evaluate

    try:
        scorer = Scorer.load(model)
        names = label_names.split(",") if label_names else scorer.spec.labels
        data = load_split(list(paths), text_column, label_column, names,
                          scorer.multi_label)
        start = time.time()
        metrics = evaluate(lambda texts: scorer.probabilities(texts)[0], data, scorer.multi_label,
                           scorer.spec.threshold)
    except ScorerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    metrics.update(model=scorer.model_dir.id, data=list(paths), seconds=round(time.time() - start, 1))
    click.echo(json.dumps(metrics))


if __name__ == "__main__":
    main()
