"""`scorer` command line: thin click shells over the engines (scorer.pipeline, scorer.follow,
scorer.ray_engine) and scorer.modeldir. `scorer run`'s options are grouped in shared decorators
and take their defaults from scorer.options; an option given outside its mode is a usage error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import click
from click.core import ParameterSource

from scorer import api, backbone, classifier, commit, drift, embedder, follow, modeldir, pipeline, source
from scorer import report as run_report
from scorer.errors import DriftExceeded, InputError, Interrupted, OutputError, ScorerError
from scorer.hf import export as hf_export
from scorer import manifest as manifests
from scorer.manifest import Manifest
from scorer.metrics import write_metrics
from scorer.options import FollowOptions, RayOptions, RunOptions
from scorer.version import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def model_option(f):
    return click.option("--model", "-m", "model", metavar="DIR", default=None,
                        help="Model directory (default: the packaged sentiment model).")(f)


def fail(error: ScorerError):
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


class Messages:
    """Everything `scorer run` tells the user on stderr, written from this one place: text lines
    (`error: ...`, `warning: ...`, progress on a terminal, the summary sentence), or with
    --log-format json one JSON object per line, {"level": "error"|"warning"|"info", "message":
    the text line's words, ...fields}, the last one the run's summary (event "summary", with its
    exit_code). A progress line on a terminal (no newline, redrawn) is ended before anything
    else is written. Progress comes from the engine's threads: writes are serialised."""

    PROGRESS_EVERY_SECONDS = 10.0  # JSON progress objects, at most this often

    def __init__(self, json_lines: bool = False, stream=None):
        self.json_lines = json_lines
        self.stream = stream  # None: sys.stderr as it is when written (CliRunner swaps it)
        self._progress_open = False  # a progress line without its newline is on the terminal
        self._last_progress = 0.0  # monotonic time of the last JSON progress object
        self._lock = threading.RLock()

    @property
    def terminal(self) -> bool:
        """Text on a terminal: progress is shown, redrawn in place."""
        return not self.json_lines and (self.stream or sys.stderr).isatty()

    def error(self, message: str, exit_code: int | None = None) -> None:
        self._emit("error", message, {} if exit_code is None else {"exit_code": exit_code})

    def warning(self, message: str) -> None:
        self._emit("warning", message, {})

    def info(self, message: str, **fields) -> None:
        self._emit("info", message, fields)

    def summary(self, message: str, exit_code: int, **fields) -> None:
        """The run's last message: its summary sentence (text), or with every field (JSON)."""
        level = "error" if exit_code else "info"
        if self.json_lines:
            self._emit(level, message, {"event": "summary", "exit_code": exit_code, **fields})
        elif message:
            self._emit("info", message, {})

    def progress(self, rows: int, seconds: float) -> None:
        """Rows scored so far, seconds since the first batch went to the model."""
        rate = rows / seconds if seconds > 0 else 0.0
        with self._lock:
            if self.terminal:
                self._write(f"\r\x1b[Kscored {rows:,} rows ({rate:,.0f} rows/s)", newline=False)
                self._progress_open = True
            elif self.json_lines and time.monotonic() - self._last_progress >= self.PROGRESS_EVERY_SECONDS:
                self._last_progress = time.monotonic()
                self._emit("info", f"scored {rows:,} rows", {"event": "progress", "rows": rows,
                                                              "rows_per_second": round(rate, 1)})

    @contextlib.contextmanager
    def loading(self, model: str):
        """While a model loads: on a terminal a line whose seconds count up; in JSON an object
        before and one after."""
        started = time.monotonic()
        if self.json_lines:
            self._emit("info", f"loading model {model}", {"event": "loading", "model": model})
        done = threading.Event()
        ticker = None
        terminal = self._terminal_copy() if self.terminal else None
        if terminal is not None:
            def tick():
                while True:
                    with self._lock:
                        self._write(f"\r\x1b[Kloading model {model} ... {time.monotonic() - started:.0f} s",
                                    newline=False, stream=terminal)
                        self._progress_open = True
                    if done.wait(0.5):
                        return
            ticker = threading.Thread(target=tick, name="loading", daemon=True)
            ticker.start()
        try:
            yield
        finally:
            done.set()
            if ticker is not None:
                ticker.join()
            if terminal is not None and terminal is not (self.stream or sys.stderr):
                terminal.close()
            if self.json_lines:
                self._emit("info", f"model loaded in {time.monotonic() - started:.1f} s",
                           {"event": "loaded", "model": model,
                            "load_seconds": round(time.monotonic() - started, 3)})

    def end_progress(self) -> None:
        with self._lock:
            if self._progress_open:
                self._write("")
                self._progress_open = False

    def _emit(self, level: str, message: str, fields: dict) -> None:
        with self._lock:
            self.end_progress()
            if self.json_lines:
                self._write(json.dumps({"level": level, "message": message, **fields}))
            else:
                self._write(f"{level}: {message}" if level in ("error", "warning") else message)

    def _terminal_copy(self):
        """stderr's terminal through a file descriptor of its own: TensorFlow's start-up
        (runtime.start) points descriptor 2 at /dev/null while it imports, the longest part of a
        model load. The stream itself when it has no descriptor (tests)."""
        stream = self.stream or sys.stderr
        try:
            return os.fdopen(os.dup(stream.fileno()), "w")
        except (AttributeError, OSError, io.UnsupportedOperation):
            return stream

    def _write(self, text: str, newline: bool = True, stream=None) -> None:
        stream = stream or self.stream or sys.stderr
        stream.write(text + ("\n" if newline else ""))
        stream.flush()


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM (Airflow, Kubernetes, systemd) and SIGINT stop the run the way an error does: open
    part files are dropped, committed ones kept, exit 128 + signal; the same command resumes.
    Once the run's _SUCCESS is written there is nothing left to stop: the command ends as usual."""
    def handler(signum, frame):
        if not commit.completed.is_set():
            raise Interrupted(signum, signal.Signals(signum).name)

    commit.completed.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="scorer")
def main():
    """Score text with a BERT classifier: Parquet, JSON Lines, CSV or text in; Parquet out.

    Example:

        scorer run sample_data/sst2_dev_sample.parquet -o scored/
    """


def dataclass_option(options_class):
    """click options that set a field of options_class: the parameter is the field named by the
    first flag (--rows-per-file: rows_per_file) and its default the field's, written once there."""
    defaults = {f.name: f.default for f in fields(options_class)}

    def option(*flags: str, **attrs):
        name = flags[0].removeprefix("--").replace("-", "_")
        default = defaults[name]
        return click.option(*flags, name, default=default,
                            show_default=default not in (None, False, ""), **attrs)
    return option


run_option = dataclass_option(RunOptions)
follow_option = dataclass_option(FollowOptions)
ray_option = dataclass_option(RayOptions)


def stack(*decorators):
    """Several option decorators as one, in the order written (sqlite-utils' shared options)."""
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def comma_list(ctx, param, value: str | None) -> list[str] | None:
    return value.split(",") if value else None


def emit_list(ctx, param, value: str | None) -> str | None:
    """--emit, checked and in its canonical order ("embedding,label" -> "label,embedding")."""
    try:
        kinds = embedder.parse_emit(value)
    except ValueError:
        raise click.BadParameter("give label, embedding or label,embedding") from None
    return ",".join(kinds) if kinds else None


format_option = run_option("--format", type=click.Choice(source.FORMATS),
                           help="Input format; auto picks by extension (a directory is Parquet). "
                           "Stdin needs one.")
text_column_option = run_option("--text-column", help="Column or field to score.")

input_options = stack(
    format_option,
    text_column_option,
    run_option("--id-column", help="Column carried through as the row id (default: a row_id "
               "column of '<input>:<position>')."),
    run_option("--chunk-rows", type=click.IntRange(1),
               help="Rows read, tokenized and length-sorted together."),
    run_option("--max-line-bytes", type=click.IntRange(1),
               help="Longer JSON Lines / text lines are bad rows, never read whole."),
    run_option("--csv-types", type=click.Choice(source.CSV_TYPES), help="CSV: infer numbers and "
               "true/false per column (the text and --id-column, and numbers with leading zeros "
               "such as 007, stay text), or none: every column as text."),
)

output_options = stack(
    click.option("--output", "-o", required=True, metavar="DIR|URI",
                 help="Output directory (or s3://, gs://, hdfs:// URI) for part-SSSSS-NNNNN.parquet, "
                 "_manifest.json and _SUCCESS."),
    run_option("--keep-columns", callback=comma_list,
               help="Comma-separated input columns to keep (default: all)."),
    run_option("--drop-text", is_flag=True, help="Leave the text column out of the output."),
    run_option("--output-prefix", help="Prefix for output columns, e.g. pred_ ."),
    run_option("--partition-by", metavar="COLUMN", help="Write hive-style subdirectories, e.g. "
               "--partition-by label gives label=positive/."),
    run_option("--rows-per-file", "--flush-rows", type=click.IntRange(1),
               help="Commit part files (a checkpoint) every N input rows."),
    run_option("--flush-seconds", type=click.FloatRange(0.5), help="Streams on stdin: commit "
               "scored rows within about this many seconds of their arrival."),
    run_option("--overwrite", is_flag=True, help="Replace the contents of a non-empty output "
               "directory (by default an unfinished run of the same command there is resumed)."),
    run_option("--dead-letter", metavar="DIR", help="Write rows that cannot be scored (with "
               "file, position and reason) here instead of into the output with an error."),
    run_option("--max-errors", metavar="N|F", help="Fail (exit 6) when bad rows exceed N rows, "
               "or a fraction F (0.01 or 1%) of all rows."),
    run_option("--fail-on-empty", is_flag=True,
               help="Treat input with no rows as an error (exit 6)."),
)

model_options = stack(
    model_option,
    run_option("--max-length", type=click.IntRange(2), help="Truncate to this many tokens "
               "(default and upper bound: the model's max length)."),
    run_option("--long-text", type=click.Choice(list(api.LONG_TEXT)), help="A text over the max "
               "length: cut there, or score it as overlapping windows (a quarter of the max "
               "length overlaps) whose logits are averaged; the `windows` column says how many."),
    run_option("--max-windows", type=click.IntRange(1), help="With --long-text window: windows "
               "per text, at most (the rest is cut and counted as truncated)."),
    run_option("--batch-tokens", type=click.IntRange(64), help="Padded tokens per model call."),
    run_option("--precision", type=click.Choice(list(classifier.PRECISIONS)),
               help="auto: mixed_float16 on a GPU, float32 on CPU. int8: int8 matmuls on the "
               "CPU through OpenVINO (pip install 'scorer[openvino]')."),
    run_option("--threads", type=click.IntRange(1), help="Threads for TensorFlow and the "
               "tokenizer (default: the cores this process may use, container CPU quota included)."),
    run_option("--prompt", metavar="NAME", help="Embedding models: put the model's prompt NAME "
               "(config_sentence_transformers.json, e.g. query) before each text."),
    run_option("--embedding-dtype", type=click.Choice(list(embedder.EMBEDDING_DTYPES)),
               help="The embedding column's values (float16 halves the files)."),
    run_option("--emit", metavar="KINDS", callback=emit_list, help="What the output holds: label, "
               "embedding (what the classifier head reads, one vector a row) or label,embedding "
               "(both from one forward pass). Default: label for a classifier, embedding for an "
               "embedding model."),
)

drift_options = stack(
    run_option("--reference", metavar="FILE", help="The reference to measure drift against "
               "(default: the model's own, or the sidecar `scorer profile` wrote)."),
    run_option("--max-drift", type=click.FloatRange(0, min_open=True), metavar="PSI",
               help="Exit 9 (after committing the output) when a drift PSI against the model's "
               "reference passes this, e.g. 0.25."),
    run_option("--metrics-file", metavar="PATH", help="Write the run's counters here in the "
               "Prometheus text format, atomically (node_exporter's textfile collector); --follow "
               "rewrites it after each entry."),
)

follow_options = stack(
    click.option("--follow", "follow_dir", metavar="DIR", help="Score every file that lands in "
                 "DIR, once each, and keep watching (SIGTERM stops); instead of INPUTS."),
    follow_option("--once", is_flag=True,
                  help="With --follow: score what is there now, then exit (cron)."),
    follow_option("--require-marker", is_flag=True, help="With --follow: take only directories "
                  "holding a _SUCCESS file."),
    follow_option("--poll-seconds", type=click.FloatRange(0.1),
                  help="With --follow: how often to look for new files."),
    follow_option("--settle-seconds", type=click.FloatRange(0), help="With --follow: take a file "
                  "only once its size and mtime have not changed for this long (producers "
                  "writing in place: scp, curl, cp)."),
    follow_option("--drift-window", type=click.IntRange(1), metavar="K", help="With --follow: judge "
                  "drift over the latest K entries together (default: as many of the latest as "
                  f"make {drift.MIN_ROWS} rows; 1: each entry alone)."),
)

ray_options = stack(
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="ray: score on a Ray cluster, each split read, scored and written by a Ray actor "
                      "(pip install 'scorer[ray]')."),
    ray_option("--address", help="With --engine ray: the cluster to join (default: auto / a local one)."),
    ray_option("--workers", type=click.IntRange(1), help="With --engine ray: scoring actors (each "
               "loads the model once; one GPU each if any)."),
)


@dataclass(frozen=True)
class ModeRule:
    """Options that mean something in one mode only: given outside it (even at their default),
    a usage error rather than silently ignored."""
    params: tuple[str, ...]
    applies: Callable[[dict], bool]  # the command's parameters -> whether these options apply
    why: str  # follows the flag in the error


def names(options_class) -> tuple[str, ...]:
    return tuple(f.name for f in fields(options_class))


MODE_RULES = (
    ModeRule(names(FollowOptions), lambda p: bool(p["follow_dir"]), "needs --follow DIR"),
    ModeRule(names(RayOptions), lambda p: p["engine"] == "ray", "needs --engine ray"),
    ModeRule(("max_windows",), lambda p: p["long_text"] == "window", "needs --long-text window"),
    ModeRule(("engine",), lambda p: not p["follow_dir"] or p["engine"] == "local",
             "ray does not follow directories"),
    ModeRule(("fail_on_empty",), lambda p: not p["follow_dir"],
             "does not apply to --follow (an entry with no rows is recorded as scored)"),
    ModeRule(("flush_seconds",), lambda p: p["engine"] != "ray",
             "is for streams on stdin, which --engine ray does not read"),
)


def refuse_options_outside_their_mode(ctx: click.Context) -> None:
    params = ctx.params
    if bool(params["inputs"]) == bool(params["follow_dir"]):
        raise click.UsageError("give INPUTS or --follow DIR (not both)")
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    for rule in MODE_RULES:
        for name in rule.params:
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT and not rule.applies(params):
                raise click.UsageError(f"{flags[name]} {rule.why}")


def take(options_class, given: dict):
    """The options_class fields among the command's parameters, removed from them."""
    return options_class(**{name: given.pop(name) for name in names(options_class) if name in given})


@dataclass
class RunCommand:
    """What `scorer run` was asked, split by who uses it."""
    inputs: list[str]
    output: str
    model: str | None
    options: RunOptions
    follow_dir: str | None
    follow: FollowOptions
    engine: str
    ray: RayOptions
    log_format: str


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1)
@input_options
@output_options
@model_options
@drift_options
@follow_options
@ray_options
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: every message on stderr (errors, warnings, progress, the summary) as one "
              "JSON object per line, the last one the summary with the exit code.")
def run(inputs, output, model, follow_dir, engine, log_format, **options):
    """Score INPUTS (files, directories, globs, or - for stdin) into Parquet part files.

    Examples:

        scorer run input.parquet -o scored/

        scorer run reviews.jsonl 'events/*.parquet' -o scored/ --text-column body --model models/sentiment

        cat lines.txt | scorer run - --format text -o scored/

        producer | scorer run - --format jsonl -o scored/ --flush-rows 10000 --flush-seconds 30

        scorer run --follow landing/ -o scored/ --once

        scorer run s3://bucket/events/ -o s3://bucket/scored/ --engine ray --workers 4

    A killed run is resumed by running the same command again; see the README's "Failure
    behaviour" for exit codes, dead letters and locking.
    """
    refuse_options_outside_their_mode(click.get_current_context())
    cmd = RunCommand(list(inputs), output, model, take(RunOptions, options), follow_dir,
                     take(FollowOptions, options), engine, take(RayOptions, options), log_format)
    messages = Messages(json_lines=log_format == "json")
    metrics_file = cmd.options.metrics_file
    try:
        with stop_on_signals():
            check_utf8_names(cmd.inputs, follow_dir, output, cmd.options.dead_letter)
            if metrics_file:
                check_metrics_path(metrics_file)
            result = score(cmd, messages)
            finish(result, cmd, messages)  # a stop now ends nothing
    except ScorerError as e:
        failed_run(e, metrics_file, output, messages)
    except OSError as e:
        # Inputs and models turn their OSErrors into errors of their own where they are read;
        # one that gets here failed writing the output's state (_manifest.json, _SUCCESS).
        failed_run(OutputError(f"{output}: cannot write {e.filename or 'the output'} ({e.strerror or e}); "
                               "committed part files are kept: run the same command again to finish"),
                   metrics_file, output, messages)


def score(cmd: RunCommand, messages: Messages):
    """Run the engine the command asks for."""
    if cmd.engine == "ray":
        try:
            from scorer import ray_engine  # deferred: imports Ray, an optional extra (1.4 s)
        except ImportError:
            raise click.UsageError("--engine ray needs Ray: pip install 'scorer[ray]'") from None
        return ray_engine.run(cmd.inputs, cmd.output, cmd.model, cmd.options, **asdict(cmd.ray),
                              progress=messages.progress)
    if cmd.follow_dir:
        return follow.follow(cmd.follow_dir, cmd.output, cmd.model, cmd.options, **asdict(cmd.follow),
                             notify=messages.error, progress=messages.progress, loading=messages.loading)
    return pipeline.run(cmd.inputs, cmd.output, cmd.model, cmd.options, progress=messages.progress,
                        loading=messages.loading)


def finish(result, cmd: RunCommand, messages: Messages) -> None:
    """The exit code of a run that ended (7: --follow entries failed, 9: --max-drift), written
    to --metrics-file first, then the run's warnings and summary."""
    m = Manifest.from_json(result.manifest)
    exceeded = drift_exceeded(m, cmd.options.max_drift)
    exit_code = (follow.EXIT_ENTRIES_FAILED if cmd.follow_dir and m.units_failed_now
                 else exceeded.exit_code if exceeded else 0)
    if cmd.options.metrics_file:
        write_metrics(cmd.options.metrics_file, m, cmd.output, exit_code)
    report(result, m, cmd, messages, exit_code, exceeded)
    if exit_code:
        sys.exit(exit_code)


def failed_run(error: ScorerError, metrics_file: str | None, output: str, messages: Messages):
    """A run that ended in an error: --metrics-file says so (success 0, the exit code), then the
    error line (and in JSON the summary, with the exit code)."""
    if metrics_file:
        try:
            write_metrics(metrics_file, None, output, error.exit_code)
        except OSError as e:
            messages.error(f"{metrics_file}: cannot write the metrics file ({e.strerror or e})")
    messages.error(str(error), error.exit_code)
    messages.summary("", error.exit_code, output=str(output), error=str(error))
    sys.exit(error.exit_code)


def drift_exceeded(manifest: Manifest, max_drift: float | None) -> DriftExceeded | None:
    """--max-drift: the error to end with when a PSI of the run's drift passes it (never for a
    drift measured on too few rows to judge)."""
    measured = manifest.drift
    worst = measured.exceeds(max_drift) if measured and max_drift else None
    if worst is None:
        return None
    return DriftExceeded(f"drift PSI {worst[1]:.3f} ({worst[0]}) passes --max-drift {max_drift}; "
                         "the output is committed (the scores are right, the data moved)")


def check_metrics_path(path: str) -> None:
    """--metrics-file is written beside itself and renamed: its directory must be writable."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise OutputError(f"--metrics-file {path}: {directory} is not a writable directory")


def check_utf8_names(inputs, follow_dir: str | None, output: str, dead_letter: str | None) -> None:
    """Paths are written into row ids, manifests and Parquet metadata as UTF-8: a name that is
    not (Python hands it over with surrogate escapes) is refused before anything is read."""
    for path, error in ([(p, InputError) for p in (*inputs, follow_dir) if p] +
                        [(p, OutputError) for p in (output, dead_letter) if p]):
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(os.fsencode(path))[2:-1]
            raise error(f"{shown}: the name is not valid UTF-8; rename it") from None


def report(result, m: Manifest, cmd: RunCommand, messages: Messages, exit_code: int,
           exceeded: DriftExceeded | None) -> None:
    """The run's warnings, then its summary: one sentence (the --max-drift error after it), or
    in JSON the error, then the summary object with every field."""
    if result.already_complete:
        line = (f"already complete: {m.rows_out:,} rows, finished at {m.finished}: nothing rescored "
                f"in {result.output}/ (--overwrite scores again)")
    else:
        for warning in m.warnings:
            messages.warning(warning)
        line = follow_line(m, cmd.follow_dir, result.output) if cmd.follow_dir else summary_line(m, result.output)
    if exceeded and messages.json_lines:
        messages.error(str(exceeded), exit_code)
    messages.summary(line, exit_code, **summary_fields(m, result, exit_code))
    if exceeded and not messages.json_lines:
        messages.error(str(exceeded), exit_code)


def summary_fields(m: Manifest, result, exit_code: int) -> dict:
    """The JSON summary's fields (besides level, message, event and exit_code)."""
    drift_summary = ({"max_psi": m.drift.max_psi, "too_few_rows": m.drift.too_few_rows, "rows": m.drift.rows}
                     if m.drift is not None else None)
    fields = {"output": str(result.output), "already_complete": result.already_complete,
              "rows_in": m.rows_in, "rows_out": m.rows_out, "rows_scored": m.rows_scored,
              "rows_with_error": m.rows_with_error, "rows_dead_lettered": m.rows_dead_lettered,
              "dead_letter": m.dead_letter.path if m.dead_letter else None,
              "parts": len(m.parts), "rows_per_second": m.rows_per_second,
              "scoring_seconds": m.scoring_seconds, "load_seconds": m.timing.get("load_seconds"),
              "seconds": m.timing.get("total_seconds"), "padding_fraction": m.padding_fraction,
              "drift": drift_summary, "warnings": len(m.warnings), "finished": m.finished}
    if m.followed:
        fields.update(files_scored_now=m.units_scored_now, files_failed_now=m.units_failed_now,
                      files_done=len(m.units_done))
    return fields


def follow_line(m: Manifest, follow_dir: str, output) -> str:
    """--follow's summary: the files scored now, and those that failed."""
    failed = (f"; {len(m.units_failed_now)} failed: {', '.join(m.units_failed_now)} "
              f"(reasons in _manifest.json)" if m.units_failed_now else "")
    return (f"scored {len(m.units_scored_now)} new files from {follow_dir}/ into {output}/ "
            f"({len(m.units_done)} files, {m.rows_out:,} rows in all){failed}")


def summary_line(m: Manifest, output) -> str:
    """A batch run's summary, one sentence: how many rows were scored (of how many) and where,
    where the bad ones went, then the scoring time and rate (from the first batch), the model
    load apart."""
    scored = (f"scored {m.rows_scored:,} of {m.rows_in:,} rows" if m.rows_with_error
              else f"scored {m.rows_scored:,} rows")
    where = f" into {str(output).rstrip('/')}/"
    if m.rows_dead_lettered:
        where += f", {bad_rows(m.rows_dead_lettered)} into {m.dead_letter.path.rstrip('/')}/"
    details = [f"{m.rows_per_second or 0:,.0f} rows/s", f"model load {m.timing['load_seconds']:.1f} s",
               f"{len(m.parts)} part file" + ("" if len(m.parts) == 1 else "s")]
    if m.rows_with_error > m.rows_dead_lettered:
        details.insert(0, f"{bad_rows(m.rows_with_error - m.rows_dead_lettered)} kept there "
                          "with their error")
    if m.resumed:
        details.append(f"resumed after {m.rows_resumed_from_checkpoint:,} committed rows")
    return f"{scored}{where} in {m.scoring_seconds or 0:.1f} s ({', '.join(details)})"


def bad_rows(n: int) -> str:
    return f"{n:,} bad row" + ("" if n == 1 else "s")


@main.command(context_settings=CONTEXT)
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole model spec as JSON.")
def info(model, as_json):
    """Show what a model is: labels, base encoder, max length, metrics, checksums.

    Example:

        scorer info --model models/sentiment
    """
    try:
        md = modeldir.read(model)
    except ScorerError as e:
        fail(e)
    if as_json:
        details = json.loads(md.spec.to_json()) if md.kind == "classifier" else {"kind": md.kind}
        click.echo(json.dumps({"path": str(md.path), "id": md.id.to_json(), **details}, indent=2))
        return
    if md.kind == "embedding":
        click.echo("\n".join(embedding_info(md)))
        return
    spec = md.spec
    base = spec.base.get("id") or spec.base.get("path") or spec.base.get("architecture")
    ckpt = md.checkpoint
    lines = [
        f"model:        {spec.name}" + (f" (version {spec.version})" if ckpt is None else ""),
        f"path:         {md.path}",
    ]
    if ckpt is not None:
        lines += [f"format:       Hugging Face checkpoint, {ckpt.architecture} ({ckpt.model_type})",
                  f"head:         first token -> dense + {spec.head_activation} -> classifier"]
    lines += [
        f"labels:       {', '.join(f'{i}={n}' for i, n in enumerate(spec.labels))}",
        f"problem type: {spec.problem_type}" + (f" (threshold {spec.threshold})"
                                                if spec.problem_type == "multi_label" else ""),
    ]
    if ckpt is None:
        lines += [
            f"base encoder: {spec.base['kind']} {base}",
            "adapter:      " + (f"LoRA rank {spec.lora_rank} on {', '.join(spec.lora_targets or ['query', 'value'])}"
                                 if spec.lora_rank else "none (all weights in the directory)"),
            f"pooling:      {spec.pooling}" + (f", then dense + {spec.head_activation}"
                                                if spec.head_activation else ""),
        ]
    lines += [
        f"max length:   {spec.max_length} tokens",
        f"temperature:  {spec.temperature:g}" + (" (calibrated on the validation set)"
                                                  if spec.temperature != 1 else ""),
        *([f"windowed:     temperature {spec.windowed_temperature:g} for a text of several windows"]
          if spec.windowed_temperature is not None else []),
        f"checksum:     {md.id.checksum} "
        + ("(of the files below)" if ckpt is not None else f"({modeldir.SPEC_FILE})"),
    ]
    lines += [f"  {name}: {digest}" for name, digest in spec.checksums.items()]
    for split, values in spec.metrics.items():
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        lines.append(f"metrics {split}: {shown}")
    if md.path == modeldir.DEFAULT_MODEL_DIR:
        lines.append("packaged:     default (this classifier); "
                     + ", ".join(f"{name} (embedding: --model {name})" for name in backbone.PACKAGED))
    click.echo("\n".join(lines))


def embedding_info(md) -> list[str]:
    """`scorer info` of a sentence-transformers directory."""
    ckpt, head = md.checkpoint, md.head
    dense = ", ".join(f"dense {d.weight.shape[1]}->{d.weight.shape[0]} + {d.activation}" for d in head.dense)
    return [
        f"model:        {md.name}",
        f"path:         {md.path}",
        "kind:         embedding (sentence-transformers)",
        f"encoder:      {ckpt.architecture} ({ckpt.model_type})",
        f"dimension:    {md.dimension}",
        f"pooling:      {head.pooling}" + (f", then {dense}" if dense else ""),
        f"normalize:    {'yes (unit vectors)' if head.normalize else 'no'}",
        f"max length:   {md.max_length} tokens" + (" (lowercased first)" if md.lowercase else ""),
        "prompts:      " + (", ".join(f"{k}={v!r}" for k, v in md.prompts.items()) or "none")
        + (f" (default {md.default_prompt})" if md.default_prompt else ""),
        f"checksum:     {md.id.checksum} (of the files below)",
        *[f"  {name}: {digest}" for name, digest in md.checksums.items()],
    ]


@main.command(context_settings=CONTEXT)
@click.argument("model")
@click.argument("data", nargs=-1, required=True)
@click.option("--output", "-o", metavar="FILE", help="Where to write the reference (default: "
              f"MODEL/{drift.SIDECAR_NAME}; beside a Hugging Face checkpoint directory DIR, "
              f"DIR{drift.CHECKPOINT_SIDECAR_SUFFIX}).")
@click.option("--rows", type=click.IntRange(1), default=5000, show_default=True,
              help="Rows sampled from DATA (uniformly, seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="The sample's seed.")
@click.option("--emit", type=click.Choice(embedder.EMIT), help="What the reference is of, as the "
              "runs measured against it emit: label (a classifier's default) or embedding (an "
              "embedding model's; for a classifier, the vectors its head reads, for runs with --emit "
              f"embedding: written to MODEL/{drift.EMBEDDING_SIDECAR_NAME}, beside the label reference).")
@text_column_option
@format_option
def profile(model, data, output, rows, seed, emit, text_column, format):
    """Score a sample of DATA (what MODEL was validated on) and write the model's reference: the
    statistics runs measure drift against (predicted-label shares, probability histograms,
    low-confidence share, text lengths; for an embedding model, or a classifier's vectors with
    --emit embedding, their norms and spread along their first principal directions).

    Example:

        scorer profile models/sentiment validation.parquet
        scorer profile models/sentiment validation.parquet --emit embedding
    """
    try:
        model_scorer = api.Scorer.load(model, emit=emit)
        inputs = source.expand_inputs(list(data), format)
        rows_read = source.SourceStats()
        picked = drift.sample(((t, e) for chunk in source.read_chunks(inputs, text_column, stats=rows_read)
                               for t, e in zip(chunk.texts, chunk.read_errors)), rows, seed)
        texts, errors = [t for t, _ in picked], [e for _, e in picked]
        vectors = embedder.LABEL not in model_scorer.emit
        if vectors:  # binned by their own basis
            counts, basis = drift.profile_embeddings(model_scorer, texts, errors)
        else:
            counts, basis = drift.profile_texts(model_scorer, texts, errors), None
        target = Path(output) if output else drift.sidecar_path(model_scorer.model_dir, vectors)
        drift.write_sidecar(target, model_scorer.model_dir.id, counts,
                            {"paths": [i.path for i in inputs], "rows_read": rows_read.rows,
                             "rows_profiled": len(picked), "seed": seed, "text_column": text_column},
                            basis)
    except ScorerError as e:
        fail(e)
    except OSError as e:
        fail(OutputError(f"{output or 'the reference'}: cannot write ({e.strerror or e})"))
    click.echo(f"profiled {len(picked):,} of {rows_read.rows:,} rows into {target}: "
               + json.dumps(counts.summary()), err=True)


@main.command(name="report", context_settings=CONTEXT)
@click.argument("out")
@click.option("--output", "-o", "png", metavar="PNG", help="Where to draw (default: OUT/_report.png, "
              "a name dataset readers skip).")
def report_command(out, png):
    """Draw a finished output directory's run as one PNG: score histograms against the model's
    reference, label shares, text lengths, error reasons, stage times.

    Example:

        scorer report scored/ -o report.png
    """
    target = png or os.path.join(out, "_report.png")
    try:
        run_report.draw(out, target)
    except ScorerError as e:
        fail(e)
    click.echo(f"drew {out} into {target}", err=True)


@main.command(name="drift", context_settings=CONTEXT)
@click.argument("outputs", nargs=-1, required=True)
@click.option("--model", "-m", "model", metavar="DIR", default=None, help="The model that scored "
              "the outputs (default: the directory their manifests record).")
@click.option("--reference", metavar="FILE", help="The reference to measure drift against "
              "(default: the model's own, or the sidecar `scorer profile` wrote).")
@click.option("--max-drift", type=click.FloatRange(0, min_open=True), metavar="PSI",
              help="Exit 9 when a drift PSI of the outputs together passes this, e.g. 0.25.")
@click.option("--json", "as_json", is_flag=True, help="Print the drift as JSON on stdout.")
def drift_command(outputs, model, reference, max_drift, as_json):
    """Judge drift over several finished outputs together (repeated small runs, e.g. hourly cron
    batches too small to judge alone): their profiles summed, against the reference of the model
    that scored them (default: the model recorded in their manifests).

    Example:

        scorer drift scored/2026-12-06T*/ --max-drift 0.25
    """
    try:
        measured = manifests.drift_over(list(outputs), model, reference)
    except ScorerError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"outputs": list(outputs), **measured.to_json()}))
    for warning in measured.warnings():
        click.echo(f"warning: {warning}", err=True)
    worst = max(measured.psi.items(), key=lambda kv: kv[1], default=None)
    shown = f"largest PSI {worst[1]:.3f} ({worst[0]})" if worst else measured.note
    if measured.too_few_rows:
        shown += f"; too few rows to judge (fewer than {drift.MIN_ROWS}): recorded, not judged"
    against = f"part {measured.part}" if measured.part else "the whole reference"
    click.echo(f"drift of {len(outputs)} outputs together ({measured.rows:,} rows) against {against}: "
               f"{shown}", err=True)
    exceeded = measured.exceeds(max_drift) if max_drift else None
    if exceeded:
        fail(DriftExceeded(f"drift PSI {exceeded[1]:.3f} ({exceeded[0]}) passes --max-drift {max_drift}"))


@main.command(context_settings=CONTEXT)
@click.argument("model")
@click.argument("out", type=click.Path())
def export(model, out):
    """Write MODEL as a Hugging Face checkpoint in OUT (new or empty) that transformers loads
    with AutoModelForSequenceClassification: LoRA merged, head mapped, id2label, problem_type,
    tokenizer files, safetensors.

    Example:

        scorer export models/sentiment@champion exported/sentiment-hf/
    """
    try:
        config = hf_export.export(modeldir.read(model), out)
    except ScorerError as e:
        fail(e)
    click.echo(f"exported {config['architectures'][0]} ({len(config['id2label'])} labels) to {out}",
               err=True)


if __name__ == "__main__":
    main()
