"""Memory over a long run: stream N rows (SST-2 train, repeated) through `scorer run` and sample
the process's RSS once a second.

    .venv/bin/python bench/memory.py 100000 1000000

Prints, per N: peak RSS, RSS at 10/50/90% of the run, wall time and rows/s; writes
bench/results/memory.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/scorer-memory")


def make_input(n: int) -> Path:
    path = WORK / f"sst2_x_{n}.parquet"
    if path.exists():
        return path
    texts = [json.loads(l)["text"] for l in open(REPO.parent / "shared" / "datasets" / "sst2" / "train.jsonl")]
    writer = pq.ParquetWriter(path, pa.schema([("text", pa.string())]))
    done = 0
    while done < n:
        take = texts[: n - done]
        writer.write_table(pa.table({"text": take}))
        done += len(take)
    writer.close()
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(n: int) -> dict:
    data = make_input(n)
    cmd = [str(REPO / ".venv" / "bin" / "scorer"), "run", str(data), "-o", str(WORK / f"out_{n}"),
           "--overwrite", "--log-format", "json"]
    start = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        try:
            samples.append((time.time() - start, rss_mb(proc.pid)))
        except OSError:
            pass
        time.sleep(1)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(err[-2000:])
    wall = time.time() - start
    at = lambda f: samples[min(len(samples) - 1, int(len(samples) * f))][1]  # noqa: E731
    return {"rows": n, "wall_seconds": round(wall, 1), "rows_per_second": round(n / wall, 1),
            "peak_rss_mb": round(max(r for _, r in samples), 1),
            "rss_mb_at": {"10%": at(0.1), "50%": at(0.5), "90%": at(0.9)},
            "samples": samples[:: max(1, len(samples) // 200)]}


def main(sizes: list[int]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    results = {str(n): measure(n) for n in sizes}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "memory.json").write_text(json.dumps(results, indent=1) + "\n")
    for n, r in results.items():
        print(f"{int(n):>9,} rows: peak RSS {r['peak_rss_mb']:.0f} MB (10/50/90%: "
              f"{r['rss_mb_at']['10%']:.0f}/{r['rss_mb_at']['50%']:.0f}/{r['rss_mb_at']['90%']:.0f}), "
              f"{r['wall_seconds']:.0f} s, {r['rows_per_second']:.0f} rows/s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
