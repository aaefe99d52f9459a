"""Where a training run is, and its checkpoint: a killed run resumes from it."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scorer import classifier


@dataclass
class TrainState:
    """The loop's position and record; saved as state.json in every checkpoint."""

    epoch: int = 1  # the epoch being trained (1-based)
    step: int = 0  # steps of it done
    history: list[dict] = field(default_factory=list)  # per finished epoch, as the spec records it
    step_losses: list[list] = field(default_factory=list)  # [global step, mean loss since the last]
    best: float | None = None  # the best validation metric so far
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs in a row without improvement
    seconds: float = 0.0  # training time so far, over restarts


class Checkpoint:
    """Trainable weights, optimizer state and loop position, under the run's work directory."""

    def __init__(self, work_dir: Path):
        self.dir = work_dir / "checkpoint"

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    @staticmethod
    def numbered(optimizer, averages) -> list:
        """(file, variables) stored by position: optimizer state, and weight averages if any."""
        return [("optimizer", optimizer.variables)] + ([("averages", averages)] if averages else [])

    def save(self, model, optimizer, averages, state: TrainState, best_weights: dict | None) -> None:
        from safetensors.numpy import save_file

        tmp = self.dir.with_name("checkpoint.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        classifier.save_weights(model, tmp / "weights.safetensors", scope="trainable")
        for file, variables in self.numbered(optimizer, averages):
            save_file({f"{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)},
                      str(tmp / f"{file}.safetensors"))
        if best_weights is not None:
            save_file(best_weights, str(tmp / "best.safetensors"))
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        old = self.dir.with_name("checkpoint.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)  # the checkpoint switches in one rename
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, averages) -> tuple[TrainState, dict | None]:
        from safetensors.numpy import load_file

        classifier.load_weights(model, self.dir / "weights.safetensors")
        for file, variables in self.numbered(optimizer, averages):
            saved = load_file(str(self.dir / f"{file}.safetensors"))
            for i, v in enumerate(variables):
                v.assign(saved[f"{i}"])
        best = self.dir / "best.safetensors"
        state = TrainState(**json.loads((self.dir / "state.json").read_text()))
        return state, load_file(str(best)) if best.is_file() else None
