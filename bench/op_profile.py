"""Op-level profile: where the MiniLM forward spends its time under XLA (scorer's backend) and
under ONNX Runtime, on the same batches; and what XLA:CPU's own options change.

    bench/setup.sh                                   # once: .venv-bench (torch, onnxruntime)
    .venv/bin/python bench/op_profile.py [--passes 5] [--rows 1000] [--flags default,xnn-dot,...]

Data and model are bench/throughput.py's (built here if missing): the first --rows texts of
short (SST-2 dev) and medium (AG News test); MiniLM with a fixed 2-class head. Each contestant
runs in its own process. ONNX Runtime (the bench venv, model.onnx: the faster ORT variant in
the benchmark) and XLA under each flag set (XLA_FLAGS, persistent cache off so that every program
is compiled with them) get the identical batches: scorer's encoder without packing (one text a
row, sorted by length, padded to its bucket lengths, a 4,096-token budget), so those rows compare
kernels, not batching. The last XLA row, "packed", is scorer as it runs by default.

Per contestant: the median wall time of --passes passes, then one profiled pass broken down by
op category (XLA: per-thunk trace events of the TensorFlow profiler, each HLO instruction
categorised from the compiled module dump; ONNX Runtime: its node profiler). XLA runs thunks on
both threads at once, so a category's share of the profiled time is attributed to the wall time.
FLOPs (2 per multiply-add, 6 layers, h=384, i=1536): dense = T (8h^2 + 4hi) per layer over the T
executed (padded) tokens; attention = 4 L^2 h per row of L; useful = the same over real tokens,
one text a row. The fp32 GEMM rate is measured in the same run, as bench/throughput.py does.
Results: bench/results/op_profile.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
# bench/throughput.py: the same locations, model shape, data, model and GEMM measurement
from throughput import BENCH_PY, HIDDEN, INTER, LAYERS, REPO, TF_PY, WORK, gemm_peak, prepare

CATEGORIES = ["dense matmul", "attention matmul", "softmax + mask", "layer norm", "gelu",
              "transpose/copy", "other elementwise"]


def _named_category(name: str, op: str) -> str:
    """The category of a non-matmul op from its framework name (Keras layer path or ONNX node)."""
    name = name.lower()
    if "layer_norm" in name or "layernorm" in name:
        return "layer norm"
    if "gelu" in name or "act_fn" in name:
        return "gelu"
    if "softmax" in name or re.search(r"attention/self/(add|div|mul|where|softmax)", name):
        return "softmax + mask"
    if re.search(r"transpose|reshape|copy|concat", op.lower()) or "transpose" in name:
        return "transpose/copy"
    return "other elementwise"

# XLA:CPU options that may change how the forward's ops are emitted (from the flags this
# TensorFlow's XLA knows: oneDNN and XNNPACK fusions, fast math).
FLAG_SETS = {
    "default": "",
    "xnn-dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "xnn-all": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "onednn-dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "onednn-all": "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
    "ynn-dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "fast-math": "--xla_cpu_enable_fast_math=true",
}


def flops(shapes) -> dict:
    """FLOPs executed on batches of these [rows, length] shapes (padding and, for packed rows,
    attention across slots included); with rows=1 per text, the useful FLOPs."""
    dense = attention = 0.0
    for rows, length in shapes:
        dense += LAYERS * rows * length * (8 * HIDDEN**2 + 4 * HIDDEN * INTER)
        attention += LAYERS * rows * 4 * length * length * HIDDEN
    return {"dense": dense, "attention": attention}


# ----------------------------------------------------------------------------- XLA (product venv)

def hlo_categories(dump_dir: str) -> dict[str, str]:
    """HLO instruction name -> category, from the after-optimizations module dumps."""
    computations: dict[str, list[str]] = {}
    instructions: dict[str, tuple[str, str]] = {}  # name -> (line, computation it calls)
    for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt")):
        current = None
        for line in open(path):
            head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
            if head and line.rstrip().endswith("{"):
                current = head.group(1)
                computations.setdefault(current, [])
                continue
            m = re.match(r"\s+(?:ROOT )?%?([\w.\-]+) = ", line)
            if m and current is not None:
                computations[current].append(line)
                called = re.search(r"calls=%?([\w.\-]+)", line)
                instructions.setdefault(m.group(1), (line, called.group(1) if called else ""))

    def category(line: str, called: str) -> str:
        body = line + "".join(computations.get(called, []))
        if re.search(r"\bdot\(", body) or re.search(r"custom_call_target=\"[^\"]*matmul", body):
            return "attention matmul" if "lhs_batch_dims" in body else "dense matmul"
        op = re.search(r'op_name="([^"]+)"', line)
        return _named_category(op.group(1) if op else "", line.split("=", 1)[1].split("(", 1)[0])

    return {name: category(line, called) for name, (line, called) in instructions.items()}


def xla_child(model_dir: str, data: str, rows: int, passes: int, out: str, packing: bool) -> None:
    sys.path.insert(0, str(REPO))
    import pyarrow.parquet as pq

    from scorer import Scorer

    texts = pq.read_table(data).column("text").to_pylist()[:rows]
    s = Scorer.load(model_dir, packing=packing)
    chunk = s.encoder.encode(texts)
    t0 = time.perf_counter()
    for batch in chunk.batches:  # compiles each shape
        s.predictor(batch)
    compile_seconds = time.perf_counter() - t0
    walls = []
    probs = None
    for _ in range(passes):
        t0 = time.perf_counter()
        probs = [s.predictor(b) for b in chunk.batches]
        walls.append(time.perf_counter() - t0)
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="scorer-profile-")
    tf.profiler.experimental.start(logdir)
    for b in chunk.batches:
        s.predictor(b)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[-1], "rb").read())
    names = hlo_categories(os.environ["SCORER_PROFILE_DUMP"])
    by_category: dict[str, float] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name in names:
                    by_category[names[name]] += event.duration_ps / 1e12
    np.savez(out + ".npz", *[b.token_ids for b in chunk.batches])
    in_input_order = np.empty((len(texts), probs[0].shape[-1]), np.float32)
    for batch, p in zip(chunk.batches, probs):
        in_input_order[batch.rows] = p
    Path(out).write_text(json.dumps({
        "compile_seconds": compile_seconds, "pass_seconds": walls,
        "real_lengths": chunk.lengths.tolist(),
        "categories_seconds": by_category, "shapes": [list(b.token_ids.shape) for b in chunk.batches],
        "probabilities": in_input_order.tolist()}))


# ----------------------------------------------------------------------------- ONNX Runtime (bench venv)

def ort_category(node: str, op: str) -> str:
    if op in ("MatMul", "Gemm", "FusedMatMul"):
        return "attention matmul" if re.search(r"attention/self/MatMul(_1)?$", node) else "dense matmul"
    return _named_category(node, op)


def ort_child(model: str, batches_file: str, passes: int, out: str) -> None:
    import onnxruntime as ort

    batches = list(np.load(batches_file).values())
    feeds = [{"input_ids": ids.astype(np.int64), "attention_mask": (ids != 0).astype(np.int64),
              "token_type_ids": np.zeros(ids.shape, np.int64)} for ids in batches]

    def session(profile: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.enable_profiling = profile
        options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="scorer-ort-"), "ort")
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    timed = session(False)
    for f in feeds:  # warm-up
        timed.run(None, f)
    walls = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for f in feeds:
            timed.run(None, f)
        walls.append(time.perf_counter() - t0)
    profiled = session(True)
    for _ in range(2):  # a warm-up pass, then the pass that is counted
        for f in feeds:
            profiled.run(None, f)
    trace = json.loads(Path(profiled.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e["name"] == "model_run")
    counted_from = runs[len(feeds)]
    by_category: dict[str, float] = collections.Counter()
    for event in trace:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= counted_from):
            node = event["name"][: -len("_kernel_time")]
            by_category[ort_category(node, event["args"].get("op_name", ""))] += event["dur"] / 1e6
    Path(out).write_text(json.dumps({"pass_seconds": walls, "categories_seconds": by_category}))


# ----------------------------------------------------------------------------- the comparison

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--datasets", default="short,medium")
    parser.add_argument("--rows", type=int, default=1000, help="first rows of each data set")
    parser.add_argument("--flags", default=",".join(FLAG_SETS))
    args = parser.parse_args()
    flag_sets = args.flags.split(",")
    _, model = prepare()
    peak = gemm_peak()
    print(f"fp32 GEMM rate (4096x384 @ 384x1536, TensorFlow): {peak:.1f} GFLOP/s", file=sys.stderr)
    report = {"date": time.strftime("%Y-%m-%d"), "passes": args.passes, "rows": args.rows,
              "gemm_peak_gflops": peak, "results": {}}
    for dataset in args.datasets.split(","):
        data = WORK / "data" / f"{dataset}.parquet"
        results = {}
        # the flag sets on unpacked batches (the same batches as ONNX Runtime), then scorer's
        # default: packed batches, default flags
        for name in [*flag_sets, "packed"]:
            dump = tempfile.mkdtemp(prefix="scorer-hlo-")
            out = str(WORK / f"profile-xla-{name}.json")
            env = dict(os.environ, SCORER_XLA_CACHE="", SCORER_PROFILE_DUMP=dump,
                       XLA_FLAGS=f"{FLAG_SETS.get(name, '')} --xla_dump_to={dump}".strip())
            subprocess.run([TF_PY, __file__, "xla", str(model / "scorer"), str(data), str(args.rows),
                            str(args.passes), out, str(name == "packed")],
                           check=True, env=env)
            results[f"xla {name}"] = json.loads(Path(out).read_text())
            print(f"{dataset} xla {name}: {statistics.median(results[f'xla {name}']['pass_seconds']):.3f} s/pass",
                  file=sys.stderr, flush=True)
        out = str(WORK / "profile-ort.json")
        subprocess.run([BENCH_PY, __file__, "ort", str(model / "model.onnx"),
                        str(WORK / f"profile-xla-{flag_sets[0]}.json.npz"), str(args.passes), out],
                       check=True)
        results["onnxruntime"] = json.loads(Path(out).read_text())
        first = results[f"xla {flag_sets[0]}"]
        reference = np.array(first["probabilities"])
        useful = flops([(1, n) for n in first["real_lengths"]])
        results["onnxruntime"]["shapes"] = first["shapes"]
        summary = {"rows": len(first["real_lengths"]), "real_tokens": int(sum(first["real_lengths"])),
                   "useful_flops": useful, "contestants": {}}
        for name, r in results.items():
            work = flops(r["shapes"])
            wall = statistics.median(r["pass_seconds"])
            cats = r["categories_seconds"]
            profiled = sum(cats.values())
            # XLA runs independent thunks on both threads at once, so its profile sums thread
            # time; each category's share of the profile is attributed to the pass's wall time.
            share = {c: cats.get(c, 0.0) / profiled for c in CATEGORIES}
            entry = {"pass_seconds": wall, "pass_seconds_all": r["pass_seconds"],
                     "profiled_seconds": profiled, "profile_share": share,
                     "attributed_seconds": {c: share[c] * wall for c in CATEGORIES},
                     "batches": len(r["shapes"]), "padded_tokens": sum(a * b for a, b in r["shapes"]),
                     "executed_flops": work,
                     "dense_gflops": work["dense"] / (share["dense matmul"] * wall) / 1e9,
                     "attention_gflops": work["attention"] / (share["attention matmul"] * wall) / 1e9,
                     "useful_gflops": (useful["dense"] + useful["attention"]) / wall / 1e9}
            entry["useful_fraction_of_gemm_peak"] = entry["useful_gflops"] / peak
            if "probabilities" in r:  # in log space: the bench head saturates probabilities
                logp = np.log(np.maximum(np.array(r["probabilities"]), 1e-30))
                entry["max_abs_diff_vs_first"] = float(np.abs(logp - np.log(np.maximum(reference, 1e-30))).max())
                entry["compile_seconds"] = r["compile_seconds"]
            summary["contestants"][name] = entry
        report["results"][dataset] = summary
        print(f"\n{dataset}: {summary['rows']} texts, {summary['real_tokens']:,} real tokens; useful work "
              f"dense {useful['dense'] / 1e9:.1f} GFLOP, attention {useful['attention'] / 1e9:.1f} GFLOP")
        print("seconds per pass (median), attributed to op categories by their share of the profile")
        print("| contestant | padded tokens | s/pass | " + " | ".join(CATEGORIES) + " | dense matmul "
              "GFLOP/s | attention matmul GFLOP/s | useful GFLOP/s (% of GEMM rate) "
              "| max abs diff (log prob) |")
        print("|---" * (len(CATEGORIES) + 7) + "|")
        for name, e in summary["contestants"].items():
            cats = " | ".join(f"{e['attributed_seconds'][c]:.3f}" for c in CATEGORIES)
            diff = f"{e['max_abs_diff_vs_first']:.1e}" if "max_abs_diff_vs_first" in e else "-"
            print(f"| {name} | {e['padded_tokens']:,} | {e['pass_seconds']:.3f} | {cats} "
                  f"| {e['dense_gflops']:.0f} | {e['attention_gflops']:.0f} | {e['useful_gflops']:.0f} "
                  f"({e['useful_fraction_of_gemm_peak']:.0%}) | {diff} |")
    results_file = REPO / "bench" / "results" / "op_profile.json"
    results_file.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "xla":
        xla_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                  sys.argv[7] == "True")
    elif len(sys.argv) > 1 and sys.argv[1] == "ort":
        ort_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
