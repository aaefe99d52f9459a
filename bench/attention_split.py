"""Attention outside XLA, a micro-benchmark (issues 23 and 24).

bench/op_profile.py found XLA:CPU's per-head attention matmuls 3-4x slower per FLOP than ONNX
Runtime's. TensorFlow without XLA runs batched matmuls through oneDNN. This script times, in ONE
process on identical batches of the packaged all-MiniLM-L6-v2 (scorer's embedding predictor),
variants of the forward, each batch through every variant in turn (a change in the machine's
load falls on all alike):

  xla     scorer as it is: the whole forward one tf.function(jit_compile=True)
  split   a plain tf.function whose dense parts are XLA-compiled inner tf.functions (embeddings +
          layer 0's QKV projection; for each layer, output projection + residual + layer norm +
          FFN + layer norm + the next layer's QKV projection; the last with pooling and head),
          and the attention core (scores, mask, softmax, context on [batch, heads, L, L]) left
          to TensorFlow's own kernels (oneDNN batched matmul)
  split_sm  as split, but mask + softmax one XLA-compiled function between the two matmuls
  nojit   the whole forward as a plain tf.function (no XLA)
  openvino  the whole forward (nojit's tf.functions) converted to an OpenVINO graph in memory and
          run by its CPU plugin in float32: no weight quantization (as scorer.quantized, minus
          the int8 step), INFERENCE_PRECISION_HINT f32; a measurement for the backend decision
          of issues 23 and 24 (OpenVINO is already scorer's optional int8 extra)

Data: the first --short texts of SST-2 dev as scorer packs them, the first --long IMDB dev
reviews cut at 256 tokens (--long-text truncate) as scorer batches them, and their 256-token
batches alone (--sets).
Prints per data set each variant's median seconds a pass and embeddings/s, the ratio to xla,
and each variant's max abs difference from xla's vectors.

    SCORER_BENCH_DATA=/work/shared/datasets .venv/bin/python bench/attention_split.py --passes 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("SCORER_BENCH_DATA", "/work/shared/datasets"))


def read_texts(path: Path, limit: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(limit), f)]


def batch_vectors(b, plain, packed) -> np.ndarray:
    """Vectors [len(b.rows), dim] of a batch's texts, as EmbeddingPredictor's, from a variant's
    plain(token_ids, padding_mask) or packed(token_ids, slot_ids, position_ids, slot_onehot)."""
    if b.slot_ids is None:
        return plain(b.token_ids, b.padding_mask)[: len(b.rows)]
    v = packed(b.token_ids, b.slot_ids, b.position_ids, b.slot_onehot)
    return v.reshape(-1, v.shape[-1])[b.slots]  # [batch, slots, dim] -> [texts, dim]


class SplitForward:
    """The embedding predictor's forward with the attention core outside XLA."""

    def __init__(self, predictor, softmax_in_xla: bool = False):
        import tensorflow as tf

        self.p = predictor
        self.bb = predictor.backbone
        self.layers = list(self.bb.transformer_layers)
        n = len(self.layers)
        self._first = tf.function(self._embed_qkv, jit_compile=True, autograph=False)
        self._first_packed = tf.function(self._embed_qkv_packed, jit_compile=True, autograph=False)
        # one compiled function per layer boundary (each layer's own weights are constants in it)
        self._middle = [tf.function(lambda x, ctx, i=i: self._post_qkv(i, x, ctx),
                                    jit_compile=True, autograph=False) for i in range(n - 1)]
        self._last = tf.function(self._post_pool, jit_compile=True, autograph=False)
        self._last_packed = tf.function(self._post_pool_packed, jit_compile=True, autograph=False)
        # softmax_in_xla: only the two matmuls outside XLA; mask + softmax one compiled function
        self._softmax = (tf.function(lambda s, b: tf.nn.softmax(s + b, axis=-1), jit_compile=True,
                                     autograph=False) if softmax_in_xla else None)
        ids = tf.TensorSpec([None, None], tf.int32)
        self.fn = tf.function(self._forward, autograph=False, input_signature=[ids, ids])
        self.packed_fn = tf.function(
            self._forward_packed, autograph=False,
            input_signature=[ids, ids, ids, tf.TensorSpec([None, None, None], tf.float32)])

    def __call__(self, b) -> np.ndarray:
        return batch_vectors(b, lambda *a: self.fn(*a).numpy(), lambda *a: self.packed_fn(*a).numpy())

    # ---- XLA parts
    def _qkv(self, layer, x):
        """[batch, L, hidden] -> q (scaled), k, v each [batch, heads, L, head_dim]."""
        import tensorflow as tf

        a = layer._self_attention_layer
        q = a._query_dense(x) * a._inverse_sqrt_key_dim  # [batch, L, heads, head_dim]
        k = a._key_dense(x)
        v = a._value_dense(x)
        return tuple(tf.transpose(t, [0, 2, 1, 3]) for t in (q, k, v))

    def _post(self, layer, x, ctx):
        """Residual stream x [batch, L, hidden], context [batch, heads, L, head_dim] -> the layer's output."""
        import tensorflow as tf

        a = layer._self_attention_layer
        y = a._output_dense(tf.transpose(ctx, [0, 2, 1, 3]))  # [batch, L, hidden]
        x = layer._self_attention_layer_norm(y + x)
        y = layer._feedforward_output_dense(layer._feedforward_intermediate_dense(x))
        return layer._feedforward_layer_norm(y + x)

    def _bias(self, allowed):
        """bool [batch, L, L] -> additive mask [batch, 1, L, L]: 0 where allowed, very negative elsewhere."""
        import tensorflow as tf

        return tf.where(allowed, 0.0, -1e9)[:, None, :, :]

    def _embed_qkv(self, token_ids, padding_mask):
        import tensorflow as tf

        bb = self.bb
        x = bb.token_embedding(token_ids)
        x = x + bb.position_embedding(x)
        x = x + bb.segment_embedding(tf.zeros_like(token_ids))
        x = bb.embeddings_layer_norm(x)
        keep = tf.cast(padding_mask, tf.bool)
        allowed = tf.logical_and(keep[:, :, None], keep[:, None, :])
        return (x, self._bias(allowed)) + self._qkv(self.layers[0], x)

    def _embed_qkv_packed(self, token_ids, slot_ids, position_ids):
        import tensorflow as tf

        bb = self.bb
        x = bb.token_embedding(token_ids)
        x = x + bb.position_embedding(x, positions=position_ids)
        x = x + bb.segment_embedding(tf.zeros_like(token_ids))
        x = bb.embeddings_layer_norm(x)
        same_slot = tf.equal(slot_ids[:, :, None], slot_ids[:, None, :])
        return (x, self._bias(same_slot)) + self._qkv(self.layers[0], x)

    def _post_qkv(self, i, x, ctx):
        x = self._post(self.layers[i], x, ctx)
        return (x,) + self._qkv(self.layers[i + 1], x)

    def _post_pool(self, x, ctx, padding_mask):
        from scorer.embedding import apply_head, pool

        x = self._post(self.layers[-1], x, ctx)
        return apply_head(self.p.head, pool(x, padding_mask, self.p.head.pooling))

    def _post_pool_packed(self, x, ctx, slot_onehot, position_ids):
        from scorer.embedding import apply_head, pool_slots

        x = self._post(self.layers[-1], x, ctx)
        return apply_head(self.p.head, pool_slots(x, slot_onehot, position_ids, self.p.head.pooling))

    # ---- outside XLA
    def _attend(self, q, k, v, bias):
        import tensorflow as tf

        scores = tf.linalg.matmul(q, k, transpose_b=True)  # [batch, heads, L, L]
        probs = (tf.nn.softmax(scores + bias, axis=-1) if self._softmax is None
                 else self._softmax(scores, bias))
        return tf.linalg.matmul(probs, v)  # [batch, heads, L, head_dim]

    def _layers(self, x, bias, q, k, v):
        for middle in self._middle:
            x, q, k, v = middle(x, self._attend(q, k, v, bias))
        return x, self._attend(q, k, v, bias)

    def _forward(self, token_ids, padding_mask):
        x, bias, q, k, v = self._first(token_ids, padding_mask)
        x, ctx = self._layers(x, bias, q, k, v)
        return self._last(x, ctx, padding_mask)

    def _forward_packed(self, token_ids, slot_ids, position_ids, slot_onehot):
        x, bias, q, k, v = self._first_packed(token_ids, slot_ids, position_ids)
        x, ctx = self._layers(x, bias, q, k, v)
        return self._last_packed(x, ctx, slot_onehot, position_ids)


class OpenVINOForward:
    """The embedding predictor's forward as float32 OpenVINO graphs (plain and packed), each
    converted from the plain tf.function on first use."""

    def __init__(self, nojit_predictor, threads: int):
        import openvino

        self.p = nojit_predictor
        self.core = openvino.Core()
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
        self.graphs: dict[str, object] = {}

    def _graph(self, which: str):
        if which not in self.graphs:
            import openvino

            fn = self.p._fn if which == "plain" else self.p._packed_fn
            model = openvino.convert_model(fn.get_concrete_function())
            self.graphs[which] = self.core.compile_model(model, "CPU", self.config)
        return self.graphs[which]

    def __call__(self, b) -> np.ndarray:
        return batch_vectors(b, lambda *a: self._graph("plain")(list(a))[0],
                             lambda *a: self._graph("packed")(list(a))[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=7)
    ap.add_argument("--short", type=int, default=400, help="SST-2 dev texts (packed rows)")
    ap.add_argument("--long", type=int, default=200, help="IMDB dev reviews (cut at 256 tokens)")
    ap.add_argument("--variants", default="xla,split,split_sm,nojit")
    ap.add_argument("--sets", default="short,imdb,imdb_256")
    args = ap.parse_args()

    import tensorflow as tf

    from scorer import Scorer
    from scorer.embedding import EmbeddingPredictor

    scorer = Scorer.load("all-minilm-l6-v2", long_text="truncate")
    predictor = scorer.predictor  # an EmbeddingPredictor
    split = SplitForward(predictor)
    split_sm = SplitForward(predictor, softmax_in_xla=True)
    nojit = EmbeddingPredictor(predictor.backbone, predictor.head, predictor.policy, jit_compile=False)
    variants = {"xla": predictor, "split": split, "split_sm": split_sm, "nojit": nojit}
    if "openvino" in args.variants.split(","):
        from scorer import runtime

        variants["openvino"] = OpenVINOForward(nojit, runtime.threads_in_use)
    variants = {k: variants[k] for k in args.variants.split(",")}
    imdb = read_texts(DATA / "imdb_reviews" / "dev.jsonl", args.long)
    data = {"short": (read_texts(DATA / "sst2" / "dev.jsonl", args.short), lambda b: True),
            "imdb": (imdb, lambda b: True),  # every batch, as scorer cuts them (packed and buckets)
            "imdb_256": (imdb, lambda b: b.token_ids.shape[1] == 256)}  # the 256-token rows only
    print(f"tf {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads()}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    for name in args.sets.split(","):
        texts, keep = data[name]
        chunk = scorer.encoder.encode(texts)
        batches = [b for b in chunk.batches if keep(b)]
        shapes = sorted({tuple(b.token_ids.shape) for b in batches})
        n = sum(len(b.rows) for b in batches)
        times = {k: [] for k in variants}
        outs = {k: [run(b) for b in batches] for k, run in variants.items()}  # compiles
        for _ in range(args.passes):
            spent = dict.fromkeys(variants, 0.0)
            for b in batches:  # each batch through every variant in turn: a load change hits all alike
                for k, run in variants.items():
                    t0 = time.perf_counter()
                    run(b)
                    spent[k] += time.perf_counter() - t0
            for k in variants:
                times[k].append(spent[k])
        print(f"\n{name}: {n} texts, {sum(b.padding_mask.sum() for b in batches)} real / "
              f"{sum(b.token_ids.size for b in batches)} padded tokens, batch shapes {shapes}, "
              f"load average {os.getloadavg()[0]:.2f}")
        first = next(iter(variants))
        base = statistics.median(times[first])
        for k in variants:
            med = statistics.median(times[k])
            diff = max(float(np.abs(o - x).max()) for o, x in zip(outs[k], outs[first]))
            print(f"  {k:8s} median {med:.3f} s/pass ({n / med:7.1f} embeddings/s), "
                  f"{base / med:.2f}x of {first}, max abs diff vs {first} {diff:.2e}, "
                  f"passes {' '.join(f'{t:.3f}' for t in times[k])}")


if __name__ == "__main__":
    main()
