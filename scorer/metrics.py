"""--metrics-file: a run's counters in the Prometheus text exposition format, for node_exporter's
textfile collector (cron jobs) or any scraper of files.

    write_metrics("/var/lib/node_exporter/scorer.prom", manifest, output="scored/", exit_code=0)

The file is written whole under a temporary name beside it and renamed over it, as the textfile
collector asks, so a scrape never reads half a file. Every sample carries the output's name as
the label `output`, so several jobs can share a collector directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scorer import fileio
from scorer.drift import MIN_ROWS, WHOLE, Drift
from scorer.manifest import Manifest

PREFIX = "scorer_"


@dataclass
class Metric:
    name: str
    help: str
    samples: list[tuple[dict, float]] = field(default_factory=list)  # (labels, value)


def run_metrics(manifest: Manifest | None, output: str, exit_code: int) -> list[Metric]:
    """The metrics of a run: its manifest's counters (none for a run that failed before it had
    one), its success and exit code, and when it finished."""
    out = {"output": output}

    def one(name, help_text, value, **labels):
        return Metric(PREFIX + name, help_text, [({**out, **labels}, float(value))])

    metrics = [
        one("success", "1 if the run committed its output (_SUCCESS, or --follow's entries), else 0",
            1 if manifest is not None and exit_code in SUCCESS_EXIT_CODES else 0),
        one("exit_code", "The process exit code (README: exit codes)", exit_code),
        one("finish_time_seconds", "When the run ended, Unix time", time.time()),
    ]
    if manifest is None:
        return metrics
    metrics += [
        one("rows_in", "Input rows read", manifest.rows_in),
        one("rows_scored", "Rows scored", manifest.rows_scored),
        one("rows_with_error", "Rows that could not be scored", manifest.rows_with_error),
        one("rows_dead_lettered", "Bad rows written to --dead-letter", manifest.rows_dead_lettered),
        one("rows_per_second", "Input rows per second of scoring, from the first batch (the model "
            "load apart)", manifest.rows_per_second or 0),
        one("padding_fraction", "Share of the model's tokens that were padding",
            manifest.padding_fraction),
    ]
    stages = Metric(PREFIX + "stage_seconds", "Seconds spent per stage")
    for key, seconds in manifest.timing.items():
        stages.samples.append(({**out, "stage": key.removesuffix("_seconds")}, float(seconds)))
    metrics.append(stages)
    drift = manifest.drift
    if drift is not None and drift.psi:
        psi = Metric(PREFIX + "drift_psi", "Population stability index against the model's reference")
        for feature, value in drift.psi.items():
            psi.samples.append(({**out, "feature": feature}, float(value)))
        metrics += [psi, one("drift_max_psi", "The largest drift PSI", drift.max_psi),
                    one("drift_rows", "Rows the drift PSIs were measured on", drift.rows or 0),
                    one("drift_too_few_rows", f"1 if the drift PSIs were measured on fewer than "
                        f"{MIN_ROWS} rows: recorded, not judged (no warning, no --max-drift)",
                        1 if drift.too_few_rows else 0)]
        metrics += _candidate_metrics(drift, out)
    return metrics


def _candidate_metrics(drift: Drift, out: dict) -> list[Metric]:
    """From a manifest's drift: the largest PSI against each reference candidate (WHOLE, else a
    training source's part), and which one, the nearest, the PSIs above were measured against."""
    largest = Metric(PREFIX + "drift_candidate_max_psi",
                     f"The largest drift PSI against each reference candidate ({WHOLE}: the whole reference)")
    chosen = Metric(PREFIX + "drift_candidate_chosen",
                    "1 for the reference candidate the drift PSIs are measured against (the nearest), else 0")
    nearest = drift.part or WHOLE
    for candidate, value in drift.candidates.items():
        largest.samples.append(({**out, "candidate": candidate}, float(value)))
        chosen.samples.append(({**out, "candidate": candidate}, 1.0 if candidate == nearest else 0.0))
    return [largest, chosen] if largest.samples else []


# Exit codes of a run whose output is committed: success, --follow with failed entries, drift.
SUCCESS_EXIT_CODES = (0, 7, 9)


def exposition(metrics: list[Metric]) -> str:
    """The Prometheus text format (version 0.0.4): HELP, TYPE gauge, samples."""
    lines = []
    for m in metrics:
        lines += [f"# HELP {m.name} {_escape_help(m.help)}", f"# TYPE {m.name} gauge"]
        for labels, value in m.samples:
            shown = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
            lines.append(f"{m.name}{{{shown}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_metrics(path: str | Path, manifest: Manifest | None, output: str, exit_code: int) -> None:
    """Write the run's metrics to path atomically (a temporary file in the same directory, then
    rename)."""
    fileio.write_atomic(Path(path), exposition(run_metrics(manifest, output, exit_code)))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    return repr(float(value)) if value != int(value) else str(int(value))
