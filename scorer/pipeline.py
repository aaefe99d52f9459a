"""The local engine: a run's splits one at a time, in plan order, in this process (scorer.runs).

    run(["in.parquet"], "scored/")     # what `scorer run in.parquet -o scored/` does

Each split goes through scorer.splits.execute_split: reading, tokenizing and writing each on a
thread of their own (scorer.stages), the model on the calling thread. Every `rows_per_file`
input rows (streams: also every --flush-seconds) the split's closed part files are committed
(Run.commit): a killed run, started again, goes on from its last commit. scorer.follow runs
each landing entry it takes as a split the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager

from scorer import overlap, source, splits
from scorer.api import Scorer
from scorer.options import RunOptions
from scorer.runs import Run, RunResult

# (rows through the model so far, within a chunk too; seconds since the first batch)
Progress = Callable[[int, float], None]
Loading = Callable[[str], ContextManager]  # loading(model name): held while the model loads


def run(inputs: list[str], output: str | Path, model=None, options: RunOptions | None = None,
        progress: Progress | None = None, scorer_: Scorer | None = None,
        loading: Loading | None = None, **kwargs) -> RunResult:
    """Score every input row into Parquet part files under `output`.

    Options are RunOptions fields, given as an object or as keyword arguments. Everything that
    can refuse the run is checked before the model loads (and TensorFlow is imported): inputs
    exist and lie apart from the output, the model's spec and checksums, the output (lock,
    contents, an identical run already finished there), the first chunk's columns; then the
    model loads, and the output is made ready to write. (Standard input: the model loads
    before the output is locked, so that a stream's first rows wait for nothing.)
    An unfinished run of the same inputs, model and options in `output` is resumed; a finished
    one is left as it is (RunResult.already_complete, with its manifest).
    """
    the_run = Run(options or RunOptions(**kwargs), output)
    expanded = source.expand_inputs(inputs, the_run.opts.format)
    overlap.check_apart([i.path for i in expanded], output, the_run.opts.dead_letter)
    if scorer_ is not None:
        the_run.load_scorer(None, scorer_)
    elif any(i.path == "-" for i in expanded):
        # A stream's first rows must not wait for the model: it loads before the output is
        # locked (the lock then says the stream is being read).
        with loading_model(loading, str(model or "default")):
            the_run.load_scorer(model)
    else:
        the_run.read_model(model)
    return the_run.execute(expanded, LocalEngine(progress, loading))


class LocalEngine:
    """Splits one at a time in this process, each committed every --rows-per-file rows inside
    (streams: --flush-seconds) and at its end."""

    def __init__(self, progress: Progress | None = None, loading: Loading | None = None):
        self.progress, self.loading = progress, loading

    def execute(self, the_run: Run, pending: list[splits.Split]) -> None:
        if the_run.scorer is None and pending:
            # The first chunk is read before the model loads and the output directory is
            # changed, so a wrong column or a column clash fails fast without emptying an
            # --overwrite target.
            the_run.check_first(splits.first_chunk(pending[0], the_run.opts))
            with loading_model(self.loading, the_run.model_dir.id.name):
                the_run.load_scorer(the_run.model_dir)
        done = 0  # rows written by this process in the splits before

        def told(rows: int) -> None:
            the_run.scoring_begins()
            self.progress(done + rows, the_run.scoring_seconds)

        for split in pending:
            result = splits.execute_split(
                split, the_run.scorer, the_run.opts, the_run.out,
                committed=the_run.committed(split.id),
                bad_rows_allowed=the_run.bad_rows_allowed(split.id),
                embedding_basis=the_run.reference.basis if the_run.reference else None,
                before_write=the_run.start, checkpoint=the_run.commit,
                progress=told if self.progress else None)
            the_run.commit(result)
            done += result.rows_read


def loading_model(loading: Loading | None, name: str) -> ContextManager:
    """What to hold while a model loads: the caller's loading(name), or nothing."""
    return loading(name) if loading else contextlib.nullcontext()
