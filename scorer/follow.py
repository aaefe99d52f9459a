"""Follow a landing directory: score every file that lands there exactly once, into one output.

    follow("landing/", "scored/")              # `scorer run --follow landing/ -o scored/`
    follow("landing/", "scored/", once=True)   # what is there now, then exit (cron)

Each top-level entry of the landing directory is a unit: a file (format by extension or
--format), or a directory read as a Parquet dataset. Names starting with '.' or '_' and temp
suffixes (.tmp, .inprogress, .partial, .crc) are never taken, since producers write under such
names and rename when done; with require_marker, only directories holding a _SUCCESS file are
taken. Units are scored in name order, through the same stages and commit protocol as a batch
run: a checkpoint inside a unit every --rows-per-file rows, and one at its end that also records
the unit as done (scorer.commit Progress.units_done). A restart continues where the last
checkpoint left off. The output never "finishes": `_manifest.json` is rewritten after every unit
with the cumulative counts and parts, and there is no _SUCCESS.
"""

from __future__ import annotations

import time
from pathlib import Path

from scorer import commit, source
from scorer.api import Scorer, ScoreStats
from scorer.errors import InputError
from scorer.pipeline import (RunOptions, RunResult, _manifest, _Sinks, _stream, check_columns,
                             open_output, output_location, parse_max_errors)

_TEMP_SUFFIXES = (".tmp", ".inprogress", ".partial", ".crc", ".part")


def pending_units(landing: Path, done: set[str], require_marker: bool = False) -> list[Path]:
    """Landing entries ready to score and not yet done, in name order."""
    ready = []
    for entry in sorted(landing.iterdir()):
        name = entry.name
        if name in done or name.startswith((".", "_")) or name.endswith(_TEMP_SUFFIXES):
            continue
        if require_marker and not (entry.is_dir() and (entry / commit.SUCCESS).exists()):
            continue
        ready.append(entry)
    return ready


def follow(landing: str | Path, output: str | Path, model=None, options: RunOptions | None = None,
           once: bool = False, require_marker: bool = False, poll_seconds: float = 2.0,
           progress=None, scorer_: Scorer | None = None, **kwargs) -> RunResult:
    opts = options or RunOptions(**kwargs)
    error_limit = parse_max_errors(opts.max_errors)
    landing = Path(landing)
    out = output_location(output)
    if not landing.is_dir():
        raise InputError(f"{landing}: --follow needs a directory")
    started = time.time()
    t0 = time.perf_counter()
    model_scorer = scorer_ or Scorer.load(model, max_length=opts.max_length,
                                          batch_tokens=opts.batch_tokens, precision=opts.precision,
                                          threads=opts.threads)
    load_seconds = time.perf_counter() - t0
    model_scorer.stats = ScoreStats()
    compiled_before = model_scorer.predictor.compile_seconds
    outdir = open_output(out, [{"path": str(landing), "follow": True}], model_scorer, opts)
    timer = {"read": 0.0, "write": 0.0}
    sinks = None
    scored_units: list[str] = []

    def write_manifest() -> dict:
        """Cumulative over every unit ever scored into this output; rewritten after each."""
        c = sinks.counters
        manifest = _manifest(model_scorer, [{"path": str(landing), "follow": True}], opts,
                             c["rows_out"] + c["rows_dead_lettered"], sinks, timer, load_seconds,
                             compiled_before, started)
        manifest.update(units_done=sinks.units_done, units_scored_now=scored_units, warnings=[])
        outdir.write_manifest(manifest)
        return manifest
    try:
        outdir.prepare()
        sinks = _Sinks(outdir, opts, model_scorer, error_limit)
        while True:
            for unit in pending_units(landing, set(sinks.units_done), require_marker):
                inputs = source.expand_inputs([str(unit)], opts.format)
                skip = sinks.rows if sinks.unit == unit.name else 0
                sinks.unit, sinks.rows, sinks.start_rows = unit.name, skip, skip

                def start(first, sinks=sinks):
                    check_columns(first, model_scorer, opts)
                    return sinks

                _stream(inputs, skip, model_scorer, opts, source.SourceStats(), timer, start,
                        progress, started)
                sinks.units_done.append(unit.name)
                sinks.unit, sinks.rows = None, 0
                sinks.checkpoint()  # the unit is done: recorded with its last parts
                scored_units.append(unit.name)
                manifest = write_manifest()
            if once:
                break
            time.sleep(poll_seconds)  # SIGTERM lands here between units, or in _stream
        manifest = write_manifest()
    finally:
        outdir.abandon()  # releases the lock; the state stays: it is what the next run continues
    return RunResult(out, manifest)
