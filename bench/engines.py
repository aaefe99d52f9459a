"""Local engine vs Ray: rows/s, and the driver's load per 100,000 rows.

    .venv/bin/python bench/engines.py [--rows 20000,100000] [--default-rows 2000] [--repeats 3] [--skip-cluster]

Data: SST-2 train sentences (short texts), repeated to the row counts asked, as four Parquet files
of equal size (row groups of 5,000 rows). Two models: a tiny randomly initialised 2-layer BERT
(tests/conftest.py's; the plumbing shows) and the packaged default MiniLM (compute shows).
Configurations, each `scorer run DATA -o OUT` in a process of its own, as a user runs it:

    local                   the local engine, --threads 2
    ray, 1 worker           --engine ray --workers 1 --threads 2 (Ray started inside the process)
    ray, 2 workers          --engine ray --workers 2 --threads 1
    ray, 2-node cluster     --engine ray --workers 2 --threads 1 --address: a head and a second
                            node started by `ray start` (tests/cluster.py, --num-cpus 1 each,
                            ended by pid)

Splits: 5,000 rows each with the tiny model (--rows-per-file 5000), four with the default model,
in every configuration (the local engine too). Per run: rows/s over the whole process (start to
exit) and the manifest's in-run rows/s; the driver process's own CPU seconds (getrusage
RUSAGE_SELF of the `scorer run` process: Ray's actors, raylet and GCS are other processes); and,
for Ray, the bytes of split results the driver received from its actors (the engine facts' result_bytes: metadata only, no rows; the driver also
reads the first chunk of the input, once, to check its columns). The driver's share per 100,000
rows is the difference between the two tiny-model row counts, scaled: for Ray it grows with the
number of splits (one result each), not with their rows, while the local engine's driver does
all the work.
With --repeats N every configuration runs N times, the configurations interleaved, and each
figure is the median run's; every run's 1-minute load average is recorded beside it. Compare
figures within one invocation. Results go to bench/results/engines.json (--results: another name).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# The shared data sets beside the checkout (as bench/throughput.py has them), or SCORER_DATASETS.
DATASETS = Path(os.environ.get("SCORER_DATASETS", REPO.parent / "shared" / "datasets"))
SST2 = DATASETS / "sst2" / "train.jsonl"
WORK = Path(os.environ.get("SCORER_BENCH_DIR", "/tmp/scorer-bench")) / "engines"

# Runs scorer's CLI in this process and, at exit, writes the process's own CPU seconds.
DRIVER = """
import atexit, json, resource, sys
out = sys.argv.pop(1)
def record():
    r = resource.getrusage(resource.RUSAGE_SELF)
    open(out, "w").write(json.dumps({"cpu_seconds": r.ru_utime + r.ru_stime, "max_rss_kb": r.ru_maxrss}))
atexit.register(record)
from scorer.cli import main
main(prog_name="scorer")
"""


def write_data(rows: int) -> Path:
    """`rows` short texts (SST-2 train, repeated) as four Parquet files."""
    data = WORK / f"data-{rows}"
    if data.exists():
        return data
    texts = [json.loads(line)["text"] for line in SST2.read_text().splitlines()]
    texts = (texts * (rows // len(texts) + 1))[:rows]
    tmp = Path(tempfile.mkdtemp(dir=WORK))
    for i in range(4):
        part = texts[i * rows // 4:(i + 1) * rows // 4]
        pq.write_table(pa.table({"text": part}), tmp / f"part-{i}.parquet", row_group_size=5000)
    tmp.rename(data)
    return data


def tiny_model() -> Path:
    path = WORK / "tiny-model"
    if not path.exists():
        from tests.conftest import make_tiny_model

        make_tiny_model(Path(tempfile.mkdtemp(dir=WORK)) / "tiny").rename(path)
    return path


def run(name: str, data: Path, model: Path | None, extra: list[str], env: dict) -> dict:
    out = Path(tempfile.mkdtemp(dir=WORK)) / "out"
    load = os.getloadavg()[0]  # the 1-minute figure as the run starts
    usage = out.parent / "usage.json"
    model_args = ["--model", str(model)] if model else []
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(usage), "run", str(data), "-o", str(out),
                           *model_args, *extra], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = json.loads((out / "_manifest.json").read_text())
    driver = json.loads(usage.read_text())
    engine = m.get("engine") or {}
    return {"rows": m["rows_out"], "wall_seconds": round(wall, 1),
            "rows_per_second_whole_process": round(m["rows_out"] / wall, 1),
            "rows_per_second_in_run": m["rows_per_second"],
            "driver_cpu_seconds": round(driver["cpu_seconds"], 2),
            "driver_max_rss_mb": round(driver["max_rss_kb"] / 1024),
            "driver_result_bytes": engine.get("result_bytes"),
            "split_attempts": engine.get("split_attempts"),
            "timing": m["timing"], "real_tokens": m["real_tokens"], "load_average": load}


def median_run(runs: list[dict]) -> dict:
    """The run of median whole-process rows/s (each run's own figures kept together), with every
    run's rows/s beside it."""
    ordered = sorted(runs, key=lambda r: r["rows_per_second_whole_process"])
    return {**ordered[len(ordered) // 2],
            "rows_per_second_each_run": [r["rows_per_second_whole_process"] for r in runs],
            "load_average_each_run": [r["load_average"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="20000,100000", help="tiny model: two row counts")
    parser.add_argument("--default-rows", type=int, default=2000, help="default model: rows")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every configuration, interleaved; the median is reported")
    parser.add_argument("--models", default="tiny,default", help="which of tiny,default to run")
    parser.add_argument("--results", default="engines.json", help="file name under bench/results/")
    parser.add_argument("--skip-cluster", action="store_true", help="no 2-node cluster runs")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    small, large = (int(n) for n in args.rows.split(","))
    # Two cores' worth of threads in each: the local engine's 2, one actor of 2, two actors of 1.
    configs = {"local": ["--threads", "2"],
               "ray, 1 worker": ["--engine", "ray", "--workers", "1", "--threads", "2"],
               "ray, 2 workers": ["--engine", "ray", "--workers", "2", "--threads", "1"]}
    cluster = None
    if not args.skip_cluster:
        from tests.cluster import LocalCluster

        cluster = LocalCluster.start(nodes=2)
        configs["ray, 2-node cluster"] = ["--engine", "ray", "--workers", "2", "--threads", "1",
                                          "--address", cluster.address]
    # (model, configuration, rows) -> every repeat's run; repeats interleave the configurations,
    # so that a change in the machine's load falls on all of them alike.
    runs: dict[tuple[str, str, int], list[dict]] = {}
    load = os.getloadavg()
    try:
        for repeat in range(args.repeats):
            for name, extra in configs.items():
                env = cluster.env if cluster and "--address" in extra else {}
                # Splits of 5,000 rows (one row group each): 4 and 20 of them at the default row counts.
                for rows in (small, large) if "tiny" in args.models else ():
                    r = run(name, write_data(rows), tiny_model(), [*extra, "--rows-per-file", "5000"], env)
                    runs.setdefault(("tiny", name, rows), []).append(r)
                    print(f"[{repeat + 1}/{args.repeats}] tiny    {name:22} {rows:>7,} rows "
                          f"{r['rows_per_second_whole_process']:8,.0f} rows/s (in run "
                          f"{r['rows_per_second_in_run']:,.0f})  driver CPU {r['driver_cpu_seconds']:.1f} s, "
                          f"received {r['driver_result_bytes']} bytes, load {r['load_average']:.1f}", flush=True)
                if "default" not in args.models:
                    continue
                r = run(name, write_data(args.default_rows), None,  # four splits, one a file
                        [*extra, "--rows-per-file", str(args.default_rows // 4)], env)
                runs.setdefault(("default", name, args.default_rows), []).append(r)
                print(f"[{repeat + 1}/{args.repeats}] default {name:22} {args.default_rows:>7,} rows "
                      f"{r['rows_per_second_whole_process']:8,.1f} rows/s (in run "
                      f"{r['rows_per_second_in_run']:,.1f})  driver CPU {r['driver_cpu_seconds']:.1f} s, "
                      f"load {r['load_average']:.1f}", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    results: dict = {"tiny": {}, "default": {}}
    per_100k = 100_000 / (large - small)
    for name in configs:
        if "default" in args.models:
            results["default"][name] = median_run(runs[("default", name, args.default_rows)])
        if "tiny" not in args.models:
            continue
        a, b = median_run(runs[("tiny", name, small)]), median_run(runs[("tiny", name, large)])
        results["tiny"][name] = {
            "runs": {str(small): a, str(large): b},
            "driver_cpu_seconds_per_100k_rows": round((b["driver_cpu_seconds"] - a["driver_cpu_seconds"])
                                                      * per_100k, 2),
            "driver_result_bytes_per_100k_rows": (
                round((b["driver_result_bytes"] - a["driver_result_bytes"]) * per_100k)
                if a["driver_result_bytes"] is not None else None)}
    print("\nmedians of", args.repeats, "run(s):")
    for name in configs:
        if name in results["tiny"]:
            t = results["tiny"][name]
            a, b = t["runs"][str(small)], t["runs"][str(large)]
            print(f"{name:22} tiny {a['rows_per_second_whole_process']:8,.0f} / "
                  f"{b['rows_per_second_whole_process']:8,.0f} rows/s ({small:,} / {large:,} rows), "
                  f"driver CPU per 100k rows {t['driver_cpu_seconds_per_100k_rows']:.2f} s")
        if name in results["default"]:
            d = results["default"][name]
            print(f"{name:22} default {d['rows_per_second_whole_process']:,.1f} rows/s "
                  f"(in run {d['rows_per_second_in_run']:,.1f}, {args.default_rows:,} rows)")
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_at_start": load,
              "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count(), "rows": [small, large],
              "default_rows": args.default_rows, "repeats": args.repeats,
              "command": "python bench/engines.py " + " ".join(sys.argv[1:]), "results": results,
              "note": "each figure the median of --repeats interleaved runs; every run's 1-minute load "
                      "average is recorded beside it (load_average_each_run)"}
    (REPO / "bench" / "results" / args.results).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
