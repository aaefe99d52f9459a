"""`scorer report OUT`: a finished run as one PNG, because people would rather look than read.

Drawn from OUT/_manifest.json alone: each label's probability histogram against the model's
reference (with its PSI), predicted-label shares, text lengths in tokens, error reasons and stage
times. matplotlib is imported here only, never on the scoring path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer import drift, manifest, storage
from scorer.errors import ConfigError, InputError, OutputError

_RUN, _REFERENCE = "#1f77b4", "#bbbbbb"


def draw(out: str, png: str) -> None:
    m = read_manifest(out)
    plt = _pyplot()
    profile = drift.Profile.from_json(m.profile, f"{out}/{manifest.MANIFEST}")
    reference = drift.Profile.from_json(m.reference_profile) if m.reference_profile else None
    psi = m.drift.psi if m.drift else {}
    panels = len(profile.labels) + 4
    columns = 3
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    axes = list(axes.ravel())
    fig.suptitle(f"{out}: {m.rows_in:,} rows, {m.rows_scored:,} scored, model "
                 f"{m.model.name if m.model else None} (finished {m.finished})\n"
                 + reference_caption(m.drift))
    centres = (np.arange(drift.PROBABILITY_BINS) + 0.5) / drift.PROBABILITY_BINS
    for j, label in enumerate(profile.labels):
        feature = f"probability:{label}"
        _bars(axes.pop(0), centres, profile.probability_hist[j],
              reference.probability_hist[j] if reference else None, width=1 / drift.PROBABILITY_BINS,
              title=f"P({label})" + (f"  PSI {psi[feature]:.3f}" if feature in psi else ""),
              xlabel="probability")
    _bars(axes.pop(0), np.arange(len(profile.labels)), profile.predicted,
          reference.predicted if reference else None, width=0.8, title="predicted labels",
          ticks=profile.labels)
    length_names = ["0 (not scored)"] + [f">={e}" for e in drift.LENGTH_EDGES]
    length_psi = f"  PSI {psi[drift.TEXT_LENGTH]:.3f}" if drift.TEXT_LENGTH in psi else ""
    _bars(axes.pop(0), np.arange(len(length_names)), profile.length_hist,
          reference.length_hist if reference else None, width=0.8,
          title="text length, tokens" + length_psi, ticks=length_names)
    _barh(axes.pop(0), m.error_reasons, "error reasons (rows)", "no row errors")
    timing = {k.removesuffix("_seconds"): v for k, v in m.timing.items() if k != "total_seconds"}
    _barh(axes.pop(0), timing, f"stage seconds (total {m.timing['total_seconds']:.1f})", "")
    for unused in axes:
        unused.axis("off")
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=90)
    except OSError as e:
        raise OutputError(f"{png}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)


def read_manifest(out: str) -> manifest.Manifest:
    """The finished run's manifest, with the profile this scorer writes."""
    if storage.is_remote(out):
        raise InputError(f"{out}: scorer report reads local output directories; copy it here first")
    m = manifest.read(out)
    if not m.profile:
        raise InputError(f"{Path(out) / manifest.MANIFEST}: has no profile of its rows (written by an "
                         "older scorer); score it again to draw it")
    return m


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("scorer report needs matplotlib: pip install 'matplotlib~=3.11.2'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum() if counts.sum() else counts


def reference_caption(run_drift: drift.Drift | None) -> str:
    """What the grey bars are: the reference the run's drift was measured against."""
    if run_drift is None or not run_drift.reference:
        return "no reference (see `scorer profile`)"
    if len(run_drift.candidates) <= 1:
        return f"grey: the model's reference ({run_drift.reference})"
    nearest = f"part {run_drift.part}" if run_drift.part else "the whole"
    return f"grey: the nearest of the reference's {len(run_drift.candidates)} candidates, {nearest}"


def _bars(ax, x, run, reference, width, title, xlabel=None, ticks=None) -> None:
    """Run (and reference) shares per bin, side by side."""
    if reference is None:
        ax.bar(x, _shares(run), width=width, color=_RUN, label="this run")
    else:
        half = width / 2
        ax.bar(x - half / 2, _shares(run), width=half, color=_RUN, label="this run")
        ax.bar(x + half / 2, _shares(reference), width=half, color=_REFERENCE, label="reference")
    ax.set_title(title)
    ax.set_ylabel("share of rows")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ticks is not None:
        many = len(ticks) > 4
        ax.set_xticks(x, ticks, rotation=45 if many else 0, ha="right" if many else "center")
    ax.legend(fontsize=8)


def _barh(ax, values: dict, title: str, empty: str) -> None:
    ax.set_title(title)
    if not values:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    names = list(values)
    ax.barh(np.arange(len(names)), [values[n] for n in names], color=_RUN)
    ax.set_yticks(np.arange(len(names)), names)
    ax.invert_yaxis()
