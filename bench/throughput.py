"""Side-by-side throughput benchmark: scorer vs the tools users would pick instead.

    bench/setup.sh                       # once: .venv-bench with torch, transformers, onnxruntime
    .venv/bin/python bench/throughput.py [--repeats 3] [--datasets short,medium,long]

Every contestant runs in its own process, one after another, on the same texts with the same
weights: the packaged MiniLM encoder with one fixed 2-class head (seeded random) on BERT's pooled
output, as a scorer model directory, a Hugging Face BertForSequenceClassification directory and
an ONNX export. Load and warm-up are reported apart from the steady-state pass.

Data: short = SST-2 dev (872 sentences); medium = AG News test (7,600); long = 400 documents of
consecutive AG News test texts joined with a space until each has at least 300 MiniLM tokens
(then cut at 500 tokens' worth of words).

FLOPs per sequence of L real tokens (h hidden, i intermediate, n layers; 2 FLOPs a multiply-add):
n * (L * (8 h^2 + 4 h i) + 4 L^2 h); the achieved fraction of peak divides the real-token FLOPs
per second by the fp32 GEMM rate measured in the same run, (4096x384) @ (384x1536) in TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"
WORK = Path(os.environ.get("SCORER_BENCH_DIR", "/tmp/scorer-bench"))
TF_PY = REPO / ".venv" / "bin" / "python"
BENCH_PY = REPO / ".venv-bench" / "bin" / "python"
HIDDEN, INTER, LAYERS = 384, 1536, 6
CONTESTANTS = ["scorer", "tutorial", "hf_pipeline", "onnx", "onnx_optimized"]


def sh(cmd, **kw):
    """Run a command under /usr/bin/time; returns (completed process, peak RSS in MB)."""
    rss_file = WORK / "rss.txt"
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *map(str, cmd)],
                          cwd=REPO, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return proc, int(rss_file.read_text().split()[-1]) / 1024


# ----------------------------------------------------------------------------- set-up

def build_data() -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    out = WORK / "data"
    out.mkdir(parents=True, exist_ok=True)
    read = lambda p: [json.loads(l)["text"] for l in open(p, encoding="utf-8")]  # noqa: E731
    sets = {"short": read(DATA / "sst2" / "dev.jsonl"), "medium": read(DATA / "ag_news" / "test.jsonl")}
    from scorer import backbone as backbones

    tok = Tokenizer.from_file(str(backbones.packaged_path("all-minilm-l6-v2") / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    docs, current = [], []
    for text in sets["medium"]:
        current.append(text)
        if len(tok.encode(" ".join(current)).ids) >= 300:
            words = " ".join(current).split()
            while len(tok.encode(" ".join(words)).ids) > 500:
                words = words[: int(len(words) * 0.95)]
            docs.append(" ".join(words))
            current = []
            if len(docs) == 400:
                break
    sets["long"] = docs
    paths = {}
    for name, texts in sets.items():
        paths[name] = out / f"{name}.parquet"
        pq.write_table(pa.table({"text": texts}), paths[name])
    return paths


def build_models() -> Path:
    """scorer/ (our format), hf/ (BertForSequenceClassification), model.onnx, model_optimized.onnx."""
    model = WORK / "model"
    if (model / "model_optimized.onnx").exists():
        return model
    sh([TF_PY, REPO / "bench" / "bench_model.py", model])
    sh([BENCH_PY, REPO / "bench" / "export_onnx.py", model])
    return model


def gemm_peak() -> float:
    # a and b are arguments, not captured constants: Grappler would fold a constant product away
    code = ("import scorer, time, tensorflow as tf\n"
            "a=tf.random.normal((4096,384)); b=tf.random.normal((384,1536))\n"
            "f=tf.function(lambda x, y: x @ y)\nf(a, b)\n"
            "best=min((lambda t: (f(a, b), time.perf_counter()-t)[1])(time.perf_counter()) "
            "for _ in range(30))\nprint(2*4096*384*1536/best/1e9)")
    proc, _ = sh([TF_PY, "-c", code])
    return float(proc.stdout.strip().splitlines()[-1])


def flops(lengths) -> float:
    return sum(LAYERS * (L * (8 * HIDDEN**2 + 4 * HIDDEN * INTER) + 4 * L * L * HIDDEN) for L in lengths)


# ----------------------------------------------------------------------------- runs

def cold_start(model: Path) -> dict:
    """`scorer run` of 1,000 SST-2 train phrases, process start to exit, with an empty XLA cache
    and then with the cache the first run left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = WORK / "data" / "cold_1000.parquet"
    texts = [json.loads(l)["text"] for _, l in zip(range(1000), open(DATA / "sst2" / "train.jsonl"))]
    pq.write_table(pa.table({"text": texts}), data)
    cache = WORK / "xla-cache-cold"
    shutil.rmtree(cache, ignore_errors=True)
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        sh([TF_PY, "-m", "scorer.cli", "run", data, "-o", WORK / "cold-out", "--model", model / "scorer",
            "--overwrite"], env=dict(os.environ, SCORER_XLA_CACHE=str(cache)))
        walls.append(time.perf_counter() - t0)
    return {"empty_cache_seconds": walls[0], "warm_cache_seconds": walls[1]}


def run_other(name: str, data: Path, model: Path) -> dict:
    result = WORK / f"{name}.json"
    python = TF_PY if name in ("scorer", "tutorial") else BENCH_PY
    _, rss = sh([python, REPO / "bench" / "contestants.py", name, data, model, result])
    r = json.loads(result.read_text())
    r["peak_rss_mb"] = rss
    return r


def prepare() -> tuple[dict[str, Path], Path]:
    """The benchmark's data sets and model (built once, under WORK)."""
    if not BENCH_PY.exists():
        sys.exit("no .venv-bench: run bench/setup.sh first")
    sys.path.insert(0, str(REPO))
    WORK.mkdir(parents=True, exist_ok=True)
    return build_data(), build_models()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", default="short,medium,long")
    parser.add_argument("--contestants", default=",".join(CONTESTANTS))
    args = parser.parse_args()
    paths, model = prepare()
    peak = gemm_peak()
    print(f"fp32 GEMM peak (4096x384 @ 384x1536, TensorFlow): {peak:.1f} GFLOP/s", file=sys.stderr)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "hf" / "tokenizer.json"))
    tok.no_padding()
    results = {}
    for dataset in args.datasets.split(","):
        import pyarrow.parquet as pq

        texts = pq.read_table(paths[dataset]).column("text").to_pylist()
        tok.enable_truncation(512 if dataset == "long" else 128)
        lengths = [len(e.ids) for e in tok.encode_batch_fast(texts)]
        useful = flops(lengths)
        for name in args.contestants.split(","):
            runs = []
            for repeat in range(args.repeats):
                r = run_other(name, paths[dataset], model)
                runs.append(r)
                print(f"{dataset:6} {name:15} run {repeat + 1}: {r['rows'] / r['steady_seconds']:7.1f} texts/s",
                      file=sys.stderr, flush=True)
            steady = statistics.median(r["steady_seconds"] for r in runs)
            results.setdefault(dataset, {})[name] = {
                "texts_per_second": len(texts) / steady,
                "real_tokens_per_second": sum(lengths) / steady,
                "padding_fraction": 1 - runs[0]["real_tokens"] / runs[0]["padded_tokens"],
                "gemm_peak_fraction": useful / steady / (peak * 1e9),
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "load_seconds": statistics.median(r["load_seconds"] for r in runs),
                "warmup_seconds": statistics.median(r["warmup_seconds"] for r in runs),
                "argmax": runs[0]["argmax"],
            }
        base = results[dataset]["scorer"]["argmax"] if "scorer" in results[dataset] else None
        for name, r in results[dataset].items():
            r["agreement_with_scorer"] = (sum(a == b for a, b in zip(r["argmax"], base)) / len(base)
                                          if base else None)
    cold = cold_start(model)
    print(f"cold start, 1,000 rows: {cold}", file=sys.stderr)
    # Data sets run now replace their earlier results; the others are kept, each with its own
    # date and GEMM rate (compare contestants within a data set, not across runs).
    results_file = REPO / "bench" / "results" / "throughput.json"
    report = json.loads(results_file.read_text()) if results_file.exists() else {}
    report.update({"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores",
                   "gemm_peak_gflops": peak, "repeats": args.repeats, "cold_start_1000_rows": cold})
    for dataset, rs in results.items():
        report.setdefault("results", {})[dataset] = {
            n: {k: v for k, v in r.items() if k != "argmax"} for n, r in rs.items()}
        report.setdefault("runs", {})[dataset] = {"date": time.strftime("%Y-%m-%d"),
                                                  "gemm_peak_gflops": peak, "repeats": args.repeats}
    results_file.parent.mkdir(exist_ok=True)
    results_file.write_text(json.dumps(report, indent=2) + "\n")
    print("| data | contestant | texts/s | real tokens/s | padding | % of GEMM peak | peak RSS MB "
          "| load s | warm-up s | agreement |\n|---|---|---|---|---|---|---|---|---|---|")
    for dataset, rs in report["results"].items():
        for name, r in rs.items():
            print(f"| {dataset} | {name} | {r['texts_per_second']:.1f} | {r['real_tokens_per_second']:.0f} "
                  f"| {r['padding_fraction']:.0%} | {r['gemm_peak_fraction']:.0%} | {r['peak_rss_mb']:.0f} "
                  f"| {r['load_seconds']:.1f} | {r['warmup_seconds']:.1f} | "
                  f"{r['agreement_with_scorer']:.2%} |")


if __name__ == "__main__":
    main()
