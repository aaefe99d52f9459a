"""The promotion gate: a new version becomes champion only if it is measurably better."""

from __future__ import annotations

from pathlib import Path

from jobs.data import LabeledData
from jobs.metrics import evaluate
from scorer import Scorer, modeldir, registry


def decide(reg: Path, version: int, validation: LabeledData, names: list[str], cfg,
           min_improvement: float, floors: dict, new_metrics: dict, log=print) -> dict:
    """Compare the new version with the champion on the same validation rows; promote or not.
    cfg: the job's TrainConfig (its promotion metric)."""
    metric = cfg.metric
    # The champion is read, scored and replaced under the registry's promotion lock.
    with registry.promotion_lock(reg):
        before = registry.read_alias(reg, registry.CHAMPION)
        result = {"champion_before": before, "metric": metric, "new": new_metrics[metric]}
        failed = {k: v for k, v in floors.items() if new_metrics.get(k) is None or new_metrics[k] < v}
        if failed:
            promoted = False
            reason = "below the floor: " + ", ".join(
                f"{k} {new_metrics.get(k)} < {v}" for k, v in failed.items())
        elif before is None:
            promoted, reason = True, "first version: no champion yet"
        else:
            champion = modeldir.read(reg / str(before))
            if champion.spec.labels != names:
                promoted = False
                reason = (f"champion v{before} has labels {champion.spec.labels}, not {names}: "
                          "not comparable; promote by hand if intended")
            else:
                scorer = Scorer.load(champion.path)
                old = evaluate(lambda texts: scorer.probabilities(texts)[0], validation, names,
                               scorer.multi_label, scorer.spec.threshold)[metric]
                gain = new_metrics[metric] - old
                result.update(champion=old, improvement=round(gain, 6))
                promoted = gain > 0 and gain >= min_improvement
                reason = (f"{metric} {new_metrics[metric]:.4f} vs champion v{before} {old:.4f} "
                          f"({gain:+.4f}; needs > 0 and >= {min_improvement})")
        if promoted:
            registry.set_alias(reg, registry.CHAMPION, version, reason)
    log(("promoted" if promoted else "not promoted") + f" v{version}: {reason}")
    result.update(promoted=promoted, reason=reason,
                  champion_after=version if promoted else before)
    return result
