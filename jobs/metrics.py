"""Evaluation metrics from probabilities, in NumPy (no scikit-learn in the install), and the
evaluation of a model on labelled data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from scorer import api
from scorer.modelspec import Temperatures


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """[true, predicted] counts."""
    m = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC AUC (Mann-Whitney U, ties counted half); None with one class present."""
    pos, neg = score[y_true == 1], score[y_true == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """accuracy, macro-F1, per-class precision/recall/F1/support, ROC AUC (binary), ECE,
    confusion matrix, for single-label probabilities [n, labels]."""
    y_pred = probs.argmax(1)
    m = confusion(y_true, y_pred, len(labels))
    tp = np.diag(m).astype(float)
    predicted, actual = m.sum(0), m.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    present = actual > 0
    out = {
        "rows": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(actual[i])}
                      for i, name in enumerate(labels)},
        "ece": expected_calibration_error(y_true, probs),
        "confusion_matrix": m.tolist(),
    }
    if len(labels) == 2:
        out["roc_auc"] = roc_auc(y_true, probs[:, 1])
    return out


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str],
                       threshold: float = 0.5) -> dict:
    """Subset accuracy, micro/macro F1 and per-label precision/recall for 0/1 targets [n, labels]."""
    y = y_true.astype(bool)
    pred = probs >= threshold
    tp = (pred & y).sum(0).astype(float)
    fp = (pred & ~y).sum(0)
    fn = (~pred & y).sum(0)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    return {
        "rows": int(len(y)),
        "subset_accuracy": float((pred == y).all(1).mean()),
        "accuracy": float((pred == y).mean()),  # per label decision
        "micro_f1": float(micro),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(y[:, i].sum())}
                      for i, name in enumerate(labels)},
    }


# ----------------------------------------------------------------------------- calibration

def with_temperature(probs: np.ndarray, temperature: float | np.ndarray, multi_label: bool) -> np.ndarray:
    """The probabilities the same logits give divided by `temperature` (what scoring does)."""
    return api.probabilities_of(api.logits_of(probs, multi_label) / temperature, multi_label)


def negative_log_likelihood(y_true: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if multi_label:
        return float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log1p(-p)))
    return float(-np.mean(np.log(p[np.arange(len(y_true)), y_true])))


def fit_temperature(y_true: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    """Temperature scaling (Guo et al. 2017): the T in [0.05, 20] that minimises the negative
    log-likelihood of the labels under logits / T; golden-section search over log T (the
    likelihood is unimodal in it). Argmax, and so accuracy, is unchanged by any T."""
    def loss(log_t):
        return negative_log_likelihood(y_true, with_temperature(probs, np.exp(log_t), multi_label),
                                       multi_label)

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(60):
        if loss(a) < loss(b):
            hi, b = b, a
            a = hi - ratio * (hi - lo)
        else:
            lo, a = a, b
            b = lo + ratio * (hi - lo)
    return float(round(np.exp((lo + hi) / 2), 4))


# ----------------------------------------------------------------------------- evaluation

def evaluate(probabilities: Callable[[list[str]], np.ndarray], data, names: list[str],
             multi_label: bool, threshold: float = 0.5) -> dict:
    """Metrics of a probabilities(texts) -> [n, labels] function on labelled data
    (jobs.data.LabeledData)."""
    return metrics_of(probabilities(data.texts), data, names, multi_label, threshold)


def metrics_of(probs: np.ndarray, data, names: list[str], multi_label: bool,
               threshold: float = 0.5) -> dict:
    """Metrics of probabilities [n, labels] already computed for labelled data."""
    if multi_label:
        return multilabel_metrics(data.targets, probs, names, threshold)
    return classification_metrics(data.targets, probs, names)


def summary_metrics(metrics: dict) -> dict:
    """The scalar metrics, without the per-class table and the confusion matrix."""
    return {k: v for k, v in metrics.items() if k not in ("per_class", "confusion_matrix")}


# Fewer windowed validation texts than this: they share the one-window texts' temperature
MIN_WINDOWED_ROWS = 100


@dataclass
class CalibrationFit:
    """What a temperature did to the rows it was fitted on."""

    rows: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float


@dataclass
class Calibration:
    """The temperatures fitted on the validation set's whole texts (the spec's
    training.calibration): one for texts of one window, one for texts scored as several (None:
    too few of them, they share `temperature`)."""

    temperature: float
    windowed_temperature: float | None
    all: CalibrationFit  # every calibration row, each with its own temperature
    one_window: CalibrationFit | None  # None: no such rows
    windowed: CalibrationFit | None

    @property
    def temperatures(self) -> Temperatures:
        return Temperatures(self.temperature, self.windowed_temperature)


def calibration_error(y_true: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    """ECE; multi-label: the mean over labels, each a binary calibration."""
    if multi_label:
        return float(np.mean([expected_calibration_error(
            y_true[:, j], np.stack([1 - probs[:, j], probs[:, j]], 1)) for j in range(probs.shape[1])]))
    return expected_calibration_error(y_true, probs)


def with_row_temperatures(probs: np.ndarray, temperatures: np.ndarray, multi_label: bool) -> np.ndarray:
    """with_temperature, each row [n] with its own temperature [n]."""
    return with_temperature(probs, temperatures[:, None], multi_label)


def calibration_fit(y_true: np.ndarray, before: np.ndarray, after: np.ndarray,
                    multi_label: bool) -> CalibrationFit:
    return CalibrationFit(
        rows=int(len(y_true)),
        ece_before=round(calibration_error(y_true, before, multi_label), 4),
        ece_after=round(calibration_error(y_true, after, multi_label), 4),
        nll_before=round(negative_log_likelihood(y_true, before, multi_label), 4),
        nll_after=round(negative_log_likelihood(y_true, after, multi_label), 4))


def calibrate(y_true: np.ndarray, probs: np.ndarray, windows: np.ndarray,
              multi_label: bool) -> Calibration:
    """Fit the temperatures to labelled probabilities [n, labels] (T = 1) of texts scored as
    windows [n] windows each: one on the one-window texts, one on the others when there are
    MIN_WINDOWED_ROWS of them (else one on all), and measure ECE and NLL before and after."""
    several = windows > 1
    if several.sum() >= MIN_WINDOWED_ROWS and (~several).sum() >= MIN_WINDOWED_ROWS:
        temperature = fit_temperature(y_true[~several], probs[~several], multi_label)
        windowed_temperature = fit_temperature(y_true[several], probs[several], multi_label)
    else:
        temperature, windowed_temperature = fit_temperature(y_true, probs, multi_label), None
    after = with_row_temperatures(probs, Temperatures(temperature, windowed_temperature).per_text(windows),
                                  multi_label)

    def fit(rows):
        return calibration_fit(y_true[rows], probs[rows], after[rows], multi_label) if rows.any() else None

    return Calibration(temperature, windowed_temperature, fit(np.ones(len(windows), bool)),
                       fit(~several), fit(several))
