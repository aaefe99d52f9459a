"""A one-page PNG of a training run: loss and validation curves, and the confusion matrix.
matplotlib (the `report` extra) is imported here only, when the PNG is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.checkpoint import TrainState
from scorer.errors import ConfigError


def write_png(path: Path, state: TrainState, metrics: dict, names: list[str], title: str) -> None:
    """Raises ConfigError when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("matplotlib is not installed: pip install 'scorer[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val, ax_cm) = plt.subplots(1, 3, figsize=(16, 4.8))
    fig.suptitle(title)
    steps = state.step_losses  # [global step, mean loss over the steps since the last point]
    if steps:
        ax_loss.plot([s for s, _ in steps], [l for _, l in steps])
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    history = state.history
    for key in ("accuracy", "macro_f1", "subset_accuracy"):
        values = [h["validation"].get(key) for h in history]
        if any(v is not None for v in values):
            ax_val.plot([h["epoch"] for h in history], values, marker="o", label=key)
    ax_val.set_title("validation")
    ax_val.set_xlabel("epoch")
    ax_val.legend()
    cm = metrics["validation"].get("confusion_matrix")
    if cm is not None:
        cm = np.array(cm)
        ax_cm.imshow(cm, cmap="Blues")
        ax_cm.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax_cm.set_yticks(range(len(names)), names)
        ax_cm.set_xlabel("predicted")
        ax_cm.set_ylabel("true")
        for (i, j), v in np.ndenumerate(cm):
            ax_cm.text(j, i, str(v), ha="center", va="center",
                       color="white" if v > cm.max() / 2 else "black")
        ax_cm.set_title(f"confusion (validation, accuracy {metrics['validation']['accuracy']:.3f})")
    else:
        ax_cm.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
