"""Side-by-side throughput benchmark: scorer vs the tools users would pick instead.

    bench/setup.sh                       # once: .venv-bench with torch, transformers, onnxruntime
    .venv/bin/python bench/throughput.py [--repeats 3] [--datasets short,medium,long]
    .venv/bin/python bench/throughput.py --model-size base [--limit 100] [--datasets short,long]
    .venv/bin/python bench/throughput.py --task embedding [--limit 200] [--repeats 1]

Every contestant runs in its own process, one after another, on the same texts with the same
weights. --model-size minilm (default): the packaged MiniLM encoder with one fixed 2-class head
(seeded random) on BERT's pooled output, as a scorer model directory (contestant scorer), a Hugging
Face BertForSequenceClassification directory (scorer_hf scores it as it is; hf_pipeline) and an
ONNX export (onnx, onnx_optimized). --model-size base: a BERT-base shaped
BertForSequenceClassification (12 layers, hidden 768, intermediate 3072, seeded random weights,
MiniLM's tokenizer), as the Hugging Face directory and its ONNX export; scorer_hf is scorer on it.
Load and warm-up are reported apart from the steady-state pass.

Data: short = SST-2 dev (872 sentences); medium = AG News test (7,600); long = 400 documents of
consecutive AG News test texts joined with a space until each has at least 300 MiniLM tokens
(then cut at 500 tokens' worth of words). --limit N takes the first N texts of each.

FLOPs per sequence of L real tokens (h hidden, i intermediate, n layers; 2 FLOPs a multiply-add):
n * (L * (8 h^2 + 4 h i) + 4 L^2 h), with the model's own h, i, n; the achieved fraction of peak
divides the real-token FLOPs per second by the fp32 GEMM rate measured in the same run,
(4096 x h) @ (h x i) in TensorFlow. Each contestant's record in bench/results/ carries its own date,
GEMM rate and load average (compare contestants within a data set; runs of different days differ).

--task embedding: embeddings/s of the packaged all-MiniLM-L6-v2 (a copy of its sentence-transformers
directory under WORK, and that copy's encoder exported to ONNX) on SST-2 dev (short, 872) and
IMDB dev (imdb, 2,000 reviews), every contestant cutting at max_seq_length 256: scorer (`scorer
run`'s pipeline, --long-text truncate), SentenceTransformer.encode on PyTorch CPU (.venv-hfref) at
its default batch size and at its fastest, ONNX Runtime on the export (plain and optimized);
each contestant's minimum cosine with scorer's vectors; bench/results/throughput_embedding.json.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SCORER_BENCH_DATA", REPO.parent / "shared" / "datasets"))  # a worktree: set it
WORK = Path(os.environ.get("SCORER_BENCH_DIR", "/tmp/scorer-bench"))
TF_PY = REPO / ".venv" / "bin" / "python"
BENCH_PY = REPO / ".venv-bench" / "bin" / "python"
HFREF_PY = REPO / ".venv-hfref" / "bin" / "python"  # torch + sentence-transformers
TF_CONTESTANTS = ("scorer", "scorer_int8", "scorer_hf", "scorer_hf_int8", "tutorial",
                  "scorer_embed")  # the others run in .venv-bench (st_encode*: .venv-hfref)
EMBEDDING_CONTESTANTS = ("scorer_embed", "st_encode", "st_encode_best", "onnx_embed", "onnx_embed_optimized")


@dataclass(frozen=True)
class ModelSize:
    """A benchmark model: its shape (FLOPs formula, GEMM shape), its directory under WORK, the
    contestants that can run it, the one the others' argmax is compared with, its results file."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    contestants: tuple[str, ...]
    reference: str
    datasets: str
    results_file: str

    @property
    def model_dir(self) -> Path:
        return WORK / ("model" if self.name == "minilm" else f"model-{self.name}")


SIZES = {
    "minilm": ModelSize("minilm", 384, 1536, 6,
                        ("scorer", "scorer_int8", "scorer_hf", "tutorial", "hf_pipeline", "onnx",
                         "onnx_optimized", "onnx_int8"),
                        reference="scorer", datasets="short,medium,long", results_file="throughput.json"),
    # no scorer model directory of its own: scorer scores the Hugging Face directory (scorer_hf)
    "base": ModelSize("base", 768, 3072, 12, ("scorer_hf", "scorer_hf_int8", "hf_pipeline", "onnx",
                                      "onnx_optimized", "onnx_int8"),
                      reference="scorer_hf", datasets="short,long", results_file="throughput_base.json"),
}


def sh(cmd, **kw):
    """Run a command under /usr/bin/time; returns (completed process, peak RSS in MB)."""
    rss_file = WORK / "rss.txt"
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *map(str, cmd)],
                          cwd=REPO, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return proc, int(rss_file.read_text().split()[-1]) / 1024


# ----------------------------------------------------------------------------- set-up

def build_data(limit: int | None) -> dict[str, Path]:
    """The data sets as Parquet files; with a limit, their first `limit` texts (NAME-LIMIT.parquet)."""
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
        paths[name] = out / (f"{name}-{limit}.parquet" if limit else f"{name}.parquet")
        pq.write_table(pa.table({"text": texts[:limit]}), paths[name])
    return paths


def build_models(size: ModelSize) -> Path:
    """minilm: scorer/ (our format), hf/ (BertForSequenceClassification); base: hf/ only (with
    the MiniLM checkpoint's tokenizer files); both: model.onnx, model_optimized.onnx."""
    model = size.model_dir
    if (model / "model_optimized.onnx").exists():
        if not (model / "model_int8.onnx").exists():
            sh([BENCH_PY, REPO / "bench" / "export_onnx.py", model, "--int8-only"])
        return model
    if size.name == "minilm":
        sh([TF_PY, REPO / "bench" / "bench_model.py", model])
    else:
        tokenizer_dir = build_models(SIZES["minilm"]) / "hf"
        sh([BENCH_PY, REPO / "bench" / "bench_model.py", "--base", model, tokenizer_dir])
    sh([BENCH_PY, REPO / "bench" / "export_onnx.py", model])
    return model


def gemm_peak(size: ModelSize) -> float:
    """fp32 GFLOP/s of one feed-forward-shaped matmul, (4096 x h) @ (h x i), best of 30."""
    h, i = size.hidden, size.intermediate
    # a and b are arguments, not captured constants: Grappler would fold a constant product away
    code = ("import scorer, time, tensorflow as tf\n"
            f"a=tf.random.normal((4096,{h})); b=tf.random.normal(({h},{i}))\n"
            "f=tf.function(lambda x, y: x @ y)\nf(a, b)\n"
            "best=min((lambda t: (f(a, b), time.perf_counter()-t)[1])(time.perf_counter()) "
            f"for _ in range(30))\nprint(2*4096*{h}*{i}/best/1e9)")
    proc, _ = sh([TF_PY, "-c", code])
    return float(proc.stdout.strip().splitlines()[-1])


def flops(lengths, size: ModelSize) -> float:
    h, i, n = size.hidden, size.intermediate, size.layers
    return sum(n * (L * (8 * h**2 + 4 * h * i) + 4 * L * L * h) for L in lengths)


# ----------------------------------------------------------------------------- runs

def cold_start(model: Path, precision: str = "auto") -> dict:
    """`scorer run` of 1,000 SST-2 train phrases, process start to exit, with an empty XLA cache
    and then with the cache the first run left (int8: OpenVINO converts the model in every run;
    the XLA cache does not apply)."""
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
            "--overwrite", "--precision", precision], env=dict(os.environ, SCORER_XLA_CACHE=str(cache)))
        walls.append(time.perf_counter() - t0)
    return {"date": time.strftime("%Y-%m-%d"), "empty_cache_seconds": walls[0],
            "warm_cache_seconds": walls[1]}


def run_other(name: str, data: Path, model: Path) -> dict:
    result = WORK / f"{name}.json"
    python = TF_PY if name in TF_CONTESTANTS else HFREF_PY if name.startswith("st_") else BENCH_PY
    _, rss = sh([python, REPO / "bench" / "contestants.py", name, data, model, result])
    r = json.loads(result.read_text())
    r["peak_rss_mb"] = rss
    return r


def prepare(size: ModelSize, limit: int | None = None) -> tuple[dict[str, Path], Path]:
    """The benchmark's data sets and model (built once, under WORK)."""
    if not BENCH_PY.exists():
        sys.exit("no .venv-bench: run bench/setup.sh first")
    sys.path.insert(0, str(REPO))
    WORK.mkdir(parents=True, exist_ok=True)
    return build_data(limit), build_models(size)


def measure(name: str, data: Path, model: Path, repeats: int, lengths: list[int], useful: float,
            peak: float) -> dict:
    """Medians over `repeats` runs of one contestant on one data set; argmax from the first."""
    load_average = os.getloadavg()[0]
    runs = []
    for repeat in range(repeats):
        r = run_other(name, data, model)
        runs.append(r)
        print(f"{data.stem:10} {name:15} run {repeat + 1}: {r['rows'] / r['steady_seconds']:7.1f} texts/s",
              file=sys.stderr, flush=True)
    steady = statistics.median(r["steady_seconds"] for r in runs)
    return {
        "texts_per_second": len(lengths) / steady,
        "real_tokens_per_second": sum(lengths) / steady,
        "padding_fraction": 1 - runs[0]["real_tokens"] / runs[0]["padded_tokens"],
        "gemm_peak_fraction": useful / steady / (peak * 1e9),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "load_seconds": statistics.median(r["load_seconds"] for r in runs),
        "warmup_seconds": statistics.median(r["warmup_seconds"] for r in runs),
        "texts": len(lengths), "repeats": repeats, "date": time.strftime("%Y-%m-%d"),
        "gemm_peak_gflops": peak, "load_average_1min": load_average,
        "argmax": runs[0]["argmax"],
    }


def print_table(results: dict, reference: str) -> None:
    print(f"| data | contestant | texts | texts/s | real tokens/s | padding | % of GEMM rate | peak RSS MB "
          f"| load s | warm-up s | argmax agreement with {reference} |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset, rs in results.items():
        for name, r in rs.items():
            agreement = r.get("agreement_with_scorer")
            print(f"| {dataset} | {name} | {r['texts']} | {r['texts_per_second']:.1f} "
                  f"| {r['real_tokens_per_second']:.0f} | {r['padding_fraction']:.0%} "
                  f"| {r['gemm_peak_fraction']:.0%} | {r['peak_rss_mb']:.0f} | {r['load_seconds']:.1f} "
                  f"| {r['warmup_seconds']:.1f} | {'-' if agreement is None else f'{agreement:.2%}'} |")


# ----------------------------------------------------------------------------- embeddings

def embedding_setup(limit: int | None) -> tuple[dict[str, Path], Path]:
    """SST-2 dev and IMDB dev as Parquet; the packaged all-MiniLM-L6-v2 copied under WORK (so its
    ONNX export sits beside it, never in site-packages) and exported (bench venv)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not BENCH_PY.exists():
        sys.exit("no .venv-bench: run bench/setup.sh first")
    sys.path.insert(0, str(REPO))
    from scorer import backbone as backbones

    out = WORK / "data"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, source in (("short", DATA / "sst2" / "dev.jsonl"), ("imdb", DATA / "imdb_reviews" / "dev.jsonl")):
        texts = [json.loads(line)["text"] for line in open(source, encoding="utf-8")]
        paths[name] = out / (f"{name}-{limit}.parquet" if limit else f"{name}.parquet")
        pq.write_table(pa.table({"text": texts[:limit]}), paths[name])
        paths[name].with_suffix(".json").write_text(json.dumps(texts[:limit]))  # for .venv-hfref
    model = WORK / "all-minilm-l6-v2"
    if not model.exists():
        shutil.copytree(backbones.packaged_path("all-minilm-l6-v2"), model)
    if not (WORK / "all-minilm-l6-v2.onnx" / "model_optimized.onnx").exists():
        sh([BENCH_PY, REPO / "bench" / "export_onnx.py", "--embedding", model, WORK / "all-minilm-l6-v2.onnx"])
    return paths, model


def embedding_task(args) -> None:
    """Embeddings/s of each contestant on each data set (medians of --repeats), cosine with scorer."""
    import numpy as np

    contestants = args.contestants.split(",") if args.contestants else list(EMBEDDING_CONTESTANTS)
    unknown = set(contestants) - set(EMBEDDING_CONTESTANTS)
    if unknown:
        sys.exit(f"not an embedding contestant: {', '.join(sorted(unknown))}")
    paths, model = embedding_setup(args.limit)
    results = {}
    for dataset in (args.datasets or "short,imdb").split(","):
        rs, vectors = {}, {}
        # Repeats interleave the contestants, so that a change in the machine's load falls on all alike.
        every_run: dict[str, list[dict]] = {name: [] for name in contestants}
        load_averages: dict[str, list[float]] = {name: [] for name in contestants}
        for _ in range(args.repeats):
            for name in contestants:
                load_averages[name].append(round(os.getloadavg()[0], 1))
                every_run[name].append(run_other(name, paths[dataset], model))
                vectors[name] = np.load(str(WORK / f"{name}.json") + ".npy")
        for name in contestants:
            runs, load_average = every_run[name], statistics.median(load_averages[name])
            steady = statistics.median(r["steady_seconds"] for r in runs)
            rs[name] = {"embeddings_per_second": runs[0]["rows"] / steady, "texts": runs[0]["rows"],
                        "real_tokens_per_second": runs[0]["real_tokens"] / steady,
                        "padding_fraction": 1 - runs[0]["real_tokens"] / runs[0]["padded_tokens"],
                        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                        "load_seconds": statistics.median(r["load_seconds"] for r in runs),
                        "warmup_seconds": statistics.median(r["warmup_seconds"] for r in runs),
                        "batch_size": runs[0]["batch_size"], "batch_size_seconds": runs[0]["batch_size_seconds"],
                        "repeats": args.repeats, "date": time.strftime("%Y-%m-%d"),
                        "load_average_1min": load_average,
                        "embeddings_per_second_each_run": [r["rows"] / r["steady_seconds"] for r in runs],
                        "load_average_1min_each_run": load_averages[name]}
            print(f"{dataset:6} {name:22} {rs[name]['embeddings_per_second']:7.1f} embeddings/s "
                  f"(load average {load_average:.1f})", file=sys.stderr, flush=True)
        base = vectors.get("scorer_embed")
        for name, r in rs.items():
            v = vectors[name].astype(np.float64)
            r["min_cosine_with_scorer"] = (None if base is None else float(
                ((v * base).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(base, axis=1)).min()))
        results[dataset] = rs
    results_file = REPO / "bench" / "results" / (args.results or "throughput_embedding.json")
    report = json.loads(results_file.read_text()) if results_file.exists() else {}
    report.update(machine=f"{os.cpu_count()} cores", model="all-MiniLM-L6-v2 (packaged)", max_seq_length=256)
    for dataset, rs in results.items():
        report.setdefault("results", {}).setdefault(dataset, {}).update(rs)
    results_file.write_text(json.dumps(report, indent=2) + "\n")
    print("| data | contestant | texts | embeddings/s | real tokens/s | padding | batch | peak RSS MB | load s "
          "| warm-up s | min cosine with scorer |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset, rs in results.items():
        for name, r in rs.items():
            cos = r["min_cosine_with_scorer"]
            print(f"| {dataset} | {name} | {r['texts']} | {r['embeddings_per_second']:.1f} "
                  f"| {r['real_tokens_per_second']:.0f} | {r['padding_fraction']:.0%} | {r['batch_size'] or '-'} "
                  f"| {r['peak_rss_mb']:.0f} | {r['load_seconds']:.1f} | {r['warmup_seconds']:.1f} "
                  f"| {'-' if cos is None else f'{cos:.6f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["classify", "embedding"], default="classify")
    parser.add_argument("--model-size", choices=sorted(SIZES), default="minilm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", help="comma-separated (default: short,medium,long; base: short,long)")
    parser.add_argument("--contestants", help="comma-separated (default: all that run the model size)")
    parser.add_argument("--limit", type=int, help="the first N texts of each data set")
    parser.add_argument("--results", help="file name in bench/results/ (default: throughput.json; "
                        "base: throughput_base.json)")
    args = parser.parse_args()
    if args.task == "embedding":
        return embedding_task(args)
    size = SIZES[args.model_size]
    contestants = args.contestants.split(",") if args.contestants else list(size.contestants)
    unknown = set(contestants) - set(size.contestants)
    if unknown:
        sys.exit(f"not a contestant for --model-size {size.name}: {', '.join(sorted(unknown))}")
    paths, model = prepare(size, args.limit)
    peak = gemm_peak(size)
    print(f"fp32 GEMM peak (4096x{size.hidden} @ {size.hidden}x{size.intermediate}, TensorFlow): "
          f"{peak:.1f} GFLOP/s", file=sys.stderr)
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "hf" / "tokenizer.json"))
    tok.no_padding()
    results = {}
    for dataset in (args.datasets or size.datasets).split(","):
        texts = pq.read_table(paths[dataset]).column("text").to_pylist()
        tok.enable_truncation(512 if dataset == "long" else 128)
        lengths = [len(e.ids) for e in tok.encode_batch_fast(texts)]
        useful = flops(lengths, size)
        results[dataset] = {name: measure(name, paths[dataset], model, args.repeats, lengths, useful, peak)
                            for name in contestants}
        base = results[dataset].get(size.reference, {}).get("argmax")
        for r in results[dataset].values():
            argmax = r.pop("argmax")
            # for the base model the reference is scorer_hf (scorer on the Hugging Face directory)
            r["agreement_with_scorer"] = (sum(a == b for a, b in zip(argmax, base)) / len(base)
                                          if base else None)
    # Each contestant's record replaces its earlier one; the others are kept, each with its own
    # date, GEMM rate and load average.
    results_file = REPO / "bench" / "results" / (args.results or size.results_file)
    report = json.loads(results_file.read_text()) if results_file.exists() else {}
    report.update(machine=f"{os.cpu_count()} cores", model_size=size.name,
                  model_shape={"hidden": size.hidden, "intermediate": size.intermediate, "layers": size.layers},
                  agreement_reference=size.reference)
    if size.name == "minilm" and "scorer" in contestants:
        report["cold_start_1000_rows"] = cold_start(model)
        print(f"cold start, 1,000 rows: {report['cold_start_1000_rows']}", file=sys.stderr)
    if size.name == "minilm" and "scorer_int8" in contestants:
        report["cold_start_1000_rows_int8"] = cold_start(model, "int8")
        print(f"cold start, 1,000 rows, int8: {report['cold_start_1000_rows_int8']}", file=sys.stderr)
    for dataset, rs in results.items():
        report.setdefault("results", {}).setdefault(dataset, {}).update(rs)
    results_file.parent.mkdir(exist_ok=True)
    results_file.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results, size.reference)


if __name__ == "__main__":
    main()
