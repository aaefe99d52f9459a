"""`scorer run ... --engine ray`: the same run on Ray Data, a thin wrapper over the local stages.

    read  : a Ray Datasource whose read task is scorer.source.read_chunks (same formats, same
            per-row errors and row ids, same resume skip), one block per chunk
    score : map_batches with a class-based UDF, an actor pool of --workers actors, each loading
            the model once (Scorer.load) and running prepare -> infer -> columns on its blocks;
            num_gpus=1 per actor when the cluster has GPUs
    write : the driver streams the scored blocks, in order, into the same sink and commit
            protocol as the local engine (part files, checkpoints, _manifest.json, _SUCCESS)

Ray's own readers are not used for the input: read_json stops at the first malformed line and
none of them number rows, while scorer keeps every bad row with its reason and position. Ray's
write_parquet is not used either (its overwrite mode has raced and lost files); the driver's sink
gives the exactly-once commit the local engine has. Scoring, the expensive part, is what Ray
spreads over the cluster; on one machine it adds Ray's start-up and object transfer costs.
"""

from __future__ import annotations

import time

import pyarrow as pa
import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from scorer import overlap, runtime, source
from scorer.errors import InputError
from scorer.options import RunOptions
from scorer.runs import Run, RunResult, WriteStage, load_scorer
from scorer.tables import READ_ERROR, TEXTS, chunk_table, scored_table


class ChunkSource(Datasource):
    """A Ray Datasource over scorer.source.read_chunks: one read task, blocks in input order."""

    def __init__(self, inputs, opts: RunOptions, skip: int, outputs: list[str]):
        self.inputs, self.opts, self.skip, self.outputs = inputs, opts, skip, outputs

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        inputs, opts, skip, outputs = self.inputs, self.opts, self.skip, self.outputs

        def read():
            for chunk in source.read_chunks(inputs, opts.text_column, opts.chunk_rows, skip=skip,
                                            max_line_bytes=opts.max_line_bytes,
                                            id_column=opts.id_column, csv_types=opts.csv_types):
                yield chunk_table(chunk, opts, outputs)

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                             input_files=tuple(i.path for i in inputs))
        return [ReadTask(read, meta)]


class ScoreBlocks:
    """The map_batches UDF: the model is loaded once per actor."""

    def __init__(self, model, opts: RunOptions):
        self.opts = opts
        self.scorer = load_scorer(model, opts)

    def __call__(self, block: pa.Table) -> pa.Table:
        texts = block.column(TEXTS).to_pylist()
        prepared = self.scorer.prepare(texts, block.column(READ_ERROR).to_pylist())
        return scored_table(block, self.scorer, prepared, self.scorer.infer(prepared), self.opts)


def run(inputs: list[str], output, model=None, options: RunOptions | None = None,
        address: str | None = None, workers: int = 1, progress=None) -> RunResult:
    the_run = Run(options or RunOptions(), output)
    opts = the_run.opts
    if opts.flush_seconds or "-" in inputs:
        raise InputError("--engine ray reads files and object stores, not standard input")
    expanded = source.expand_inputs(inputs, opts.format)
    overlap.check_apart([i.path for i in expanded], output, opts.dead_letter)
    # The driver reads the model's spec: the sink needs its id, the column check its labels.
    model_dir = the_run.read_model(model)
    outdir = the_run.open([source.fingerprint(i) for i in expanded])
    if outdir.finished:  # answered before Ray and TensorFlow start
        return RunResult(the_run.out, outdir.finished, already_complete=True)
    skip = outdir.progress.rows
    with the_run.writing():
        the_run.check_first(_first_chunk(expanded, opts, skip))
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}})
        runtime.start(threads=1)  # the driver only writes: the actors score
        outdir.prepare()
        writes = the_run.write_stage()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        scored = _scored_blocks(ChunkSource(expanded, opts, skip, the_run.output_columns), str(model_dir.path), opts, workers, gpus)
        _write_blocks(scored, the_run, writes, progress)
    stats = source.SourceStats(files=[i.path for i in expanded], rows=writes.rows, rows_skipped=skip)
    engine = {"name": "ray", "workers": workers, "gpus_per_worker": 1 if gpus else 0,
              "ray_version": ray.__version__}
    return the_run.complete(expanded, stats, writes, engine=engine)


def _first_chunk(inputs: list[source.Input], opts: RunOptions, skip: int) -> source.Chunk | None:
    """Read on the driver for the column check, before the output is changed."""
    chunks = source.read_chunks(inputs, opts.text_column, opts.chunk_rows, skip=skip,
                                max_line_bytes=opts.max_line_bytes, id_column=opts.id_column,
                                csv_types=opts.csv_types)
    try:
        return next(chunks, None)
    finally:
        chunks.close()


def _scored_blocks(chunks: ChunkSource, model_path: str, opts: RunOptions, workers: int, gpus: int):
    """The Ray Dataset of scored_table() blocks, in input order."""
    # Reading is light and must not wait for a CPU the scoring actors hold.
    ds = ray.data.read_datasource(chunks, num_cpus=0)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # parts in input order, as the local engine
    return ds.map_batches(ScoreBlocks, fn_constructor_args=(model_path, opts),
                          # A batch is one block (= one chunk). Ray requires a batch size with
                          # GPUs: there a chunk's rows, and small blocks may be bundled.
                          batch_size=opts.chunk_rows if gpus else None,
                          batch_format="pyarrow", zero_copy_batch=True,
                          concurrency=workers, num_gpus=1 if gpus else 0)


def _write_blocks(scored, the_run: Run, writes: WriteStage, progress) -> None:
    """The driver writes the scored blocks as they come, then checkpoints."""
    for block in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        the_run.scoring_begins()  # the first scored block
        with the_run.timers.write.measure():
            writes.write(block)
        if progress:
            progress(writes.rows_now, the_run.scoring_seconds)
    writes.checkpoint()
