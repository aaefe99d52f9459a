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

from scorer import source
from scorer.api import Scorer, ScoreStats
from scorer.errors import InputError
from scorer.options import RunOptions, parse_max_errors
from scorer.pipeline import (RunResult, _final_checks, _manifest, _Sinks, add_drift,
                             check_columns, chunk_table, load_reference, load_scorer,
                             open_output, output_location, scored_table)


class ChunkSource(Datasource):
    """A Ray Datasource over scorer.source.read_chunks: one read task, blocks in input order."""

    def __init__(self, inputs, opts: RunOptions, skip: int):
        self.inputs, self.opts, self.skip = inputs, opts, skip

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        inputs, opts, skip = self.inputs, self.opts, self.skip

        def read():
            for chunk in source.read_chunks(inputs, opts.text_column, opts.chunk_rows, skip=skip,
                                            max_line_bytes=opts.max_line_bytes):
                yield chunk_table(chunk, opts)

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                             input_files=tuple(i.path for i in inputs))
        return [ReadTask(read, meta)]


class ScoreBlocks:
    """The map_batches UDF: the model is loaded once per actor."""

    def __init__(self, model, opts: RunOptions):
        self.opts = opts
        self.scorer = load_scorer(model, opts)

    def __call__(self, block: pa.Table) -> pa.Table:
        texts = block.column("__texts").to_pylist()
        prepared = self.scorer.prepare(texts, block.column("__read_error").to_pylist())
        return scored_table(block, self.scorer, prepared, self.scorer.infer(prepared), self.opts)


def run(inputs: list[str], output, model=None, options: RunOptions | None = None,
        address: str | None = None, workers: int = 1, progress=None) -> RunResult:
    opts = options or RunOptions()
    if opts.flush_seconds or "-" in inputs:
        raise InputError("--engine ray reads files and object stores, not standard input")
    error_limit = parse_max_errors(opts.max_errors)
    started = time.time()
    out = output_location(output)
    expanded = source.expand_inputs(inputs, opts.format)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}})
    # The driver loads the model too: the sink needs its id, and the column check its labels.
    t0 = time.perf_counter()
    driver_scorer = load_scorer(model, opts, precision="float32", threads=1)
    load_seconds = time.perf_counter() - t0
    model_dir = driver_scorer.model_dir
    reference, reference_warnings = load_reference(driver_scorer, opts)
    outdir = open_output(out, [source.fingerprint(i) for i in expanded], driver_scorer, opts)
    if outdir.finished:
        return RunResult(out, outdir.finished, already_complete=True)
    skip = outdir.progress.rows
    timer = {"read": 0.0, "write": 0.0}
    try:
        chunks = source.read_chunks(expanded, opts.text_column, opts.chunk_rows, skip=skip,
                                    max_line_bytes=opts.max_line_bytes)
        first = next(chunks, None)
        chunks.close()
        check_columns(first, driver_scorer, opts)
        outdir.prepare()
        sinks = _Sinks(outdir, opts, driver_scorer, error_limit)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        # Reading is light and must not wait for a CPU the scoring actors hold.
        ds = ray.data.read_datasource(ChunkSource(expanded, opts, skip), num_cpus=0)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # parts in input order, as the local engine
        scored = ds.map_batches(ScoreBlocks, fn_constructor_args=(str(model_dir.path), opts),
                                # A batch is one block (= one chunk). Ray requires a batch size
                                # with GPUs: there a chunk's rows, and small blocks may be bundled.
                                batch_size=opts.chunk_rows if gpus else None,
                                batch_format="pyarrow", zero_copy_batch=True,
                                concurrency=workers, num_gpus=1 if gpus else 0)
        rows_in = skip
        for block in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            t = time.perf_counter()
            sinks.write(block)
            timer["write"] += time.perf_counter() - t
            rows_in += block.num_rows
            if progress:
                progress(rows_in - sinks.start_rows, time.time() - started)
        sinks.checkpoint()
        stats = source.SourceStats(files=[i.path for i in expanded], rows=rows_in, rows_skipped=skip)
        warnings = _final_checks(stats, sinks.counters, opts, error_limit)
    except BaseException:
        outdir.abandon()
        raise
    driver_scorer.stats = ScoreStats()  # scoring ran in the actors
    manifest = _manifest(driver_scorer, [{"path": i.path, "format": i.format} for i in expanded],
                         opts, rows_in, sinks, timer, load_seconds, driver_scorer.predictor.compile_seconds,
                         started)
    manifest.update(engine={"name": "ray", "workers": workers, "gpus_per_worker": 1 if gpus else 0,
                            "ray_version": ray.__version__}, resumed=outdir.resumed, warnings=warnings,
                    rows_resumed_from_checkpoint=skip,
                    rows_per_second=round((rows_in - skip) / max(time.time() - started, 1e-9), 1))
    add_drift(manifest, reference, reference_warnings, sinks.profile)
    outdir.finish(manifest)
    return RunResult(out, manifest)
