"""Peak memory of `scorer run` (default model, or an embedding model), RSS sampled once a second, on three shapes:

    .venv/bin/python bench/memory.py --rows 100000 1000000       # SST-2 train repeated, many row groups
    .venv/bin/python bench/memory.py --shape one-row-group long-lines
    .venv/bin/python bench/memory.py --task embedding --rows 100000 1000000   # packaged all-MiniLM-L6-v2

- rows N: N SST-2 train phrases in one Parquet file (a long run: is memory flat?);
- one-row-group: 4,000 texts of ~100 KB (SST-2 words) in a single 400 MB row group (is a row
  group read a batch at a time, not decoded whole?);
- long-lines: 48 JSON Lines of ~15 MiB each (is a chunk bounded by bytes, not only rows?).

--task classifier (default) runs the default classifier (its reference is in its spec); --task
embedding runs the packaged sentence-transformers directory all-MiniLM-L6-v2 (`--model
all-minilm-l6-v2`, the name `scorer info` lists), which writes one 384-float vector a row, with a
reference made once by `scorer profile` of SST-2 dev (so both count drift histograms as they go).

Prints peak RSS, RSS at 10/50/90% of the run, wall time and rows/s per run; adds them to
bench/results/memory.json (keyed by rows or shape name, "embedding:" before it for the embedding
task; other keys are kept). SCORER_BENCH_DATA: the datasets directory (default ../shared/datasets,
which a worktree does not have beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/scorer-memory")
DATA = Path(os.environ.get("SCORER_BENCH_DATA", REPO.parent / "shared" / "datasets"))  # a worktree: set it
SST2_TRAIN = DATA / "sst2" / "train.jsonl"
RESULTS = REPO / "bench" / "results" / "memory.json"
EMBEDDING_MODEL = "all-minilm-l6-v2"  # the packaged sentence-transformers directory, by its name


def sst2_texts() -> list[str]:
    return [json.loads(line)["text"] for line in open(SST2_TRAIN)]


def rows_input(n: int) -> Path:
    path = WORK / f"sst2_x_{n}.parquet"
    if path.exists():
        return path
    texts = sst2_texts()
    writer = pq.ParquetWriter(path, pa.schema([("text", pa.string())]))
    done = 0
    while done < n:
        take = texts[: n - done]
        writer.write_table(pa.table({"text": take}))
        done += len(take)
    writer.close()
    return path


def long_text(words: list[str], rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        word = rng.choice(words)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def one_row_group_input(rows: int = 4_000, chars: int = 100_000) -> Path:
    path = WORK / f"one_row_group_{rows}x{chars}.parquet"
    if not path.exists():
        rng = random.Random(0)
        words = " ".join(sst2_texts()).split()
        pool = [long_text(words, rng, chars) for _ in range(200)]  # each row: its number + one of these
        texts = [f"{i}: {pool[rng.randrange(len(pool))]}" for i in range(rows)]
        pq.write_table(pa.table({"text": texts}), path, row_group_size=rows)
    return path


def long_lines_input(lines: int = 48, chars: int = 15 << 20) -> Path:
    path = WORK / f"long_lines_{lines}x{chars}.jsonl"
    if not path.exists():
        rng = random.Random(0)
        words = " ".join(sst2_texts()).split()
        with open(path, "w") as f:
            for i in range(lines):
                block = long_text(words, rng, 1 << 20)
                f.write(json.dumps({"id": i, "text": " ".join([block] * (chars >> 20))}) + "\n")
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def embedding_reference() -> Path:
    """A drift reference of the embedding model (SST-2 dev), so that the embedding runs count
    their vectors' drift histograms per chunk as a run with a reference does."""
    path = WORK / "all-minilm-l6-v2.scorer_reference.json"
    if not path.exists():
        subprocess.run([str(REPO / ".venv" / "bin" / "scorer"), "profile", EMBEDDING_MODEL,
                        str(DATA / "sst2" / "dev.jsonl"), "-o", str(path)], check=True)
    return path


def task_args(task: str) -> list[str]:
    """What `scorer run` is given for each task, beside the input and output."""
    if task == "embedding":
        return ["--model", EMBEDDING_MODEL, "--reference", str(embedding_reference())]
    return []


def measure(name: str, data: Path, rows: int, task: str) -> dict:
    cmd = [str(REPO / ".venv" / "bin" / "scorer"), "run", str(data), "-o",
           str(WORK / f"out_{name.replace(':', '-')}"), "--overwrite", "--log-format", "json", *task_args(task)]
    load_before = os.getloadavg()[0]
    start = time.time()
    # stderr into a file, not a pipe read at the end: a long run's JSON progress lines (one per
    # 10 s) would fill a pipe's 64 KiB and block the run
    log = WORK / f"out_{name.replace(':', '-')}.stderr.jsonl"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stderr=err)
        samples = []
        while proc.poll() is None:
            try:
                samples.append((time.time() - start, rss_mb(proc.pid)))
            except OSError:
                pass
            time.sleep(1)
    if proc.returncode != 0:
        sys.exit(log.read_text()[-2000:])
    wall = time.time() - start
    at = lambda f: samples[min(len(samples) - 1, int(len(samples) * f))][1]  # noqa: E731
    return {"task": task, "command": " ".join(cmd[1:]), "load_average": [load_before, os.getloadavg()[0]],
            "input": data.name, "input_mb": round(data.stat().st_size / 1e6, 1), "rows": rows,
            "wall_seconds": round(wall, 1), "rows_per_second": round(rows / wall, 1),
            "peak_rss_mb": round(max(r for _, r in samples), 1),
            "rss_mb_at": {"10%": at(0.1), "50%": at(0.5), "90%": at(0.9)},
            "samples": samples[:: max(1, len(samples) // 200)]}


SHAPES = {"one-row-group": (one_row_group_input, 4_000), "long-lines": (long_lines_input, 48)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[], help="SST-2 runs of these sizes")
    parser.add_argument("--shape", nargs="*", default=[], choices=sorted(SHAPES))
    parser.add_argument("--task", choices=["classifier", "embedding"], default="classifier",
                        help="classifier: the default model; embedding: the packaged all-MiniLM-L6-v2")
    args = parser.parse_args()
    if not args.rows and not args.shape:
        parser.error("give --rows N... and/or --shape NAME...")
    WORK.mkdir(parents=True, exist_ok=True)
    key = "" if args.task == "classifier" else f"{args.task}:"  # the classifier's keys as they were
    runs = {f"{key}{n}": (rows_input(n), n) for n in args.rows}
    runs.update({key + shape: (SHAPES[shape][0](), SHAPES[shape][1]) for shape in args.shape})
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name, (data, rows) in runs.items():
        r = results[name] = measure(name, data, rows, args.task)
        print(f"{name:>24}: {r['input_mb']:,.0f} MB, {rows:,} rows: peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(10/50/90%: {r['rss_mb_at']['10%']:.0f}/{r['rss_mb_at']['50%']:.0f}/"
              f"{r['rss_mb_at']['90%']:.0f}), {r['wall_seconds']:.0f} s, {r['rows_per_second']:.0f} rows/s "
              f"(load average {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f})",
              flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
