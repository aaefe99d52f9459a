"""Local engine vs Ray Data on this machine: the same `scorer run`, whole process timed.

    .venv/bin/python bench/engines.py [DATA.parquet]   # default: AG News test (7,600 texts)

Each configuration runs `scorer run DATA -o OUT --overwrite` in its own process, twice (the first
run fills the XLA cache), and the second run's wall time (process start to exit) and the
manifest's rows/s are reported. Ray runs start a local cluster inside the process. Results go to
bench/results/engines.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/tmp/scorer-bench/data/medium.parquet")  # written by bench/throughput.py
CONFIGS = {
    "local (2 threads)": [],
    "ray, 1 actor x 2 threads": ["--engine", "ray", "--workers", "1", "--threads", "2"],
    "ray, 2 actors x 1 thread": ["--engine", "ray", "--workers", "2", "--threads", "1"],
}


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    if not data.exists():
        sys.exit(f"{data}: not found (bench/throughput.py writes it)")
    results = {}
    for name, extra in CONFIGS.items():
        out = Path(tempfile.mkdtemp(prefix="scorer-engines-")) / "out"
        for attempt in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "scorer.cli", "run", str(data), "-o", str(out),
                                   "--overwrite", *extra], cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        m = json.loads((out / "_manifest.json").read_text())
        results[name] = {"wall_seconds": round(wall, 1), "rows": m["rows_out"],
                         "rows_per_second_in_run": m["rows_per_second"],
                         "texts_per_second_whole_process": round(m["rows_out"] / wall, 1)}
        print(f"{name:28} wall {wall:6.1f} s  {m['rows_out'] / wall:7.1f} texts/s (whole process)", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "data": str(data), "results": results,
              "command": "python bench/engines.py"}
    (REPO / "bench" / "results" / "engines.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
