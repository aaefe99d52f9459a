"""Stream mode under a paced producer: commit latency and memory over time.

    .venv/bin/python bench/stream.py [--rate 100] [--seconds 600] [--flush-seconds 5]

A producer writes SST-2 train phrases (cycled) as JSON Lines to `scorer run - --format jsonl`
at a steady rate, each with the time it was sent. A watcher reads every part file as soon as it
is committed: a row's latency is the time its part was first seen minus the time it was sent
(the watcher polls every 50 ms). The scorer's RSS is sampled every 5 s from /proc. Results go to
bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets" / "sst2" / "train.jsonl"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100, help="rows a second")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--flush-seconds", type=float, default=5)
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in open(DATA, encoding="utf-8")]
    out = Path(tempfile.mkdtemp(prefix="scorer-stream-")) / "out"
    proc = subprocess.Popen([sys.executable, "-m", "scorer.cli", "run", "-", "--format", "jsonl",
                             "-o", str(out), "--flush-seconds", str(args.flush_seconds)],
                            stdin=subprocess.PIPE, cwd=REPO)
    while not (out / "_scorer_run" / "lock").exists():
        if proc.poll() is not None:
            sys.exit("scorer run exited early")
        time.sleep(0.05)

    latencies: list[float] = []
    rss: list[tuple[float, float]] = []
    seen: set[str] = set()
    done = threading.Event()
    start = time.time()

    def watch():
        last_rss = 0.0
        while not done.is_set():
            for part in sorted(out.glob("part-*.parquet")):
                if part.name not in seen:
                    seen.add(part.name)
                    now = time.time()
                    latencies.extend(now - t for t in pq.read_table(part, columns=["sent"]).column(0).to_pylist())
            if time.time() - last_rss >= 5:
                last_rss = time.time()
                rss.append((round(last_rss - start, 1), round(rss_mb(proc.pid), 1)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent = 0
    while (elapsed := time.time() - start) < args.seconds:
        due = int(elapsed * args.rate) + 1
        lines = [json.dumps({"text": texts[i % len(texts)], "sent": time.time()}) for i in range(sent, due)]
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()
        sent = due
        time.sleep(0.01)
    time.sleep(args.flush_seconds + 2)  # the last rows' commit
    done.set()
    watcher.join()
    proc.stdin.close()
    code = proc.wait()
    latencies.sort()
    q = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3)  # noqa: E731
    steady = [m for t, m in rss if t >= 60]
    result = {
        "date": time.strftime("%Y-%m-%d"), "rate_rows_per_second": args.rate, "seconds": args.seconds,
        "flush_seconds": args.flush_seconds, "rows_sent": sent, "rows_seen_before_eof": len(latencies),
        "exit_code": code, "parts": len(seen),
        "latency_seconds": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": latencies[-1] if latencies else None},
        "rss_mb": {"after_60s_min": min(steady, default=None), "after_60s_max": max(steady, default=None),
                   "median": statistics.median(m for _, m in rss) if rss else None},
        "rss_samples": rss,
        "command": f"python bench/stream.py --rate {args.rate:g} --seconds {args.seconds:g} "
                   f"--flush-seconds {args.flush_seconds:g}",
    }
    results = REPO / "bench" / "results" / "stream.json"
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))


if __name__ == "__main__":
    main()
