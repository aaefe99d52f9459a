"""Encode speed of scorer's BatchEncoder.tokenize with the packaged MiniLM tokenizer loaded two ways:

    .venv/bin/python bench/encode_speed.py [--repeats 9]

tokenizers: tokenizer.json through `tokenizers` directly (scorer.encode.load_tokenizer, what scorer
did before it read Hugging Face checkpoints); auto: the same checkpoint's tokenizer through
transformers' AutoTokenizer (scorer.hf.checkpoint.load_tokenizer: its Rust backend, set to
truncate and not pad by scorer.encode.limit_tokenizer). Both encode with max length 128, in one
process, alternating, on SST-2 dev and AG News test (each whole data set in one call, as one
chunk); texts/s is the median over the repeats. Both must give the same token ids (checked).
Results: bench/results/encode_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets"
DATASETS = {"sst2_dev": DATA / "sst2" / "dev.jsonl", "ag_news_test": DATA / "ag_news" / "test.jsonl"}
MAX_LENGTH = 128


def encoders(threads: int) -> dict:
    """name -> BatchEncoder, with the tokenizer thread pool scorer's runtime would set."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # before the tokenizer's pool starts
    from scorer import backbone, encode
    from scorer.hf import checkpoint

    path = backbone.packaged_path("all-minilm-l6-v2")
    auto, pad_id, _ = checkpoint.load_tokenizer(path)
    return {
        "tokenizers": encode.BatchEncoder(encode.load_tokenizer(path / "tokenizer.json", MAX_LENGTH),
                                          MAX_LENGTH),
        "auto": encode.BatchEncoder(encode.limit_tokenizer(auto, MAX_LENGTH), MAX_LENGTH, pad_id=pad_id),
    }


def timed(encoder, texts: list[str]) -> tuple[float, list[list[int]]]:
    t0 = time.perf_counter()
    ids, _, _ = encoder.tokenize(texts)
    return time.perf_counter() - t0, ids


def measure(encs: dict, texts: list[str], repeats: int) -> dict:
    """texts/s per encoder, median over repeats, the encoders alternating (warm-up first)."""
    reference = {name: timed(enc, texts)[1] for name, enc in encs.items()}
    first = next(iter(reference.values()))
    if any(ids != first for ids in reference.values()):
        sys.exit("the two tokenizers give different token ids")
    seconds = {name: [] for name in encs}
    for _ in range(repeats):
        for name, enc in encs.items():
            seconds[name].append(timed(enc, texts)[0])
    return {name: {"texts_per_second": len(texts) / statistics.median(s),
                   "seconds": s} for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from scorer import runtime

    threads = runtime.available_cpus()
    encs = encoders(threads)
    load_average = os.getloadavg()[0]
    results = {}
    for dataset, path in DATASETS.items():
        texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
        results[dataset] = {"texts": len(texts), **measure(encs, texts, args.repeats)}
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": threads, "max_length": MAX_LENGTH,
              "repeats": args.repeats, "load_average_1min": [load_average, os.getloadavg()[0]],
              "results": results}
    out = REPO / "bench" / "results" / "encode_speed.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| data | texts | tokenizers (before) texts/s | AutoTokenizer backend (after) texts/s | after / before |"
          f"\n|---|---|---|---|---|")
    for dataset, r in results.items():
        before, after = r["tokenizers"]["texts_per_second"], r["auto"]["texts_per_second"]
        print(f"| {dataset} | {r['texts']} | {before:,.0f} | {after:,.0f} | {after / before:.3f} |")
    print(f"load average (1 min) at start / end: {load_average:.2f} / {os.getloadavg()[0]:.2f}; "
          f"threads {threads}; medians of {args.repeats}", file=sys.stderr)


if __name__ == "__main__":
    main()
