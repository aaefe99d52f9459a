"""The int8 CPU path (`--precision int8`): the model's own forward functions, converted to an
OpenVINO graph in memory, their large matmul weights quantized to int8.

    Keras model -> tf.function (no XLA) -> openvino.convert_model -> int8 weights -> CPU plugin

Each matmul / einsum whose second operand is a float32 weight matrix of at least MIN_COLUMNS
output columns (every projection of the encoder; the classifier head stays float32) is stored as
int8 with one symmetric scale per output column; OpenVINO's CPU plugin then quantizes the
activations too (dynamic quantization, per group of DYNAMIC_GROUP values) and multiplies in int8.
Everything else runs in float32 (INFERENCE_PRECISION_HINT f32: on a CPU with AMX OpenVINO would
otherwise pick bfloat16 by itself). Nothing is read from disk here: the weights are the ones
scorer loaded and checked, and no model file of another format is written or loaded.

OpenVINO is an optional extra: `pip install 'scorer[openvino]'`.
"""

from __future__ import annotations

import time

import numpy as np

from scorer import runtime
from scorer.classifier import PROBABILITIES, DevicePolicy, Predictor
from scorer.errors import ConfigError

MIN_COLUMNS = 16  # narrower weight matrices (a classifier head) stay float32
DYNAMIC_GROUP = 32  # activation values that share one int8 scale (OpenVINO's CPU default)


def quantize_weights(model, min_columns: int = MIN_COLUMNS) -> int:
    """Replace, in an OpenVINO model, the float32 constant weights of its MatMul and Einsum nodes
    by int8 ones times a float32 scale per output column; returns how many were replaced. An
    einsum of the keras EinsumDense kind (the contracted letters last in the input, first in the
    weight: "abc,cde->abde", "abcd,cde->abe") becomes reshape -> matmul -> reshape first, the form
    the CPU plugin runs as an int8 fully connected layer; other einsums are left as they are."""
    openvino = runtime.require_openvino()
    import openvino.opset13 as ops

    replaced = 0
    for node in model.get_ops():
        kind = node.get_type_name()
        if kind not in ("MatMul", "Einsum") or node.get_input_size() != 2:
            continue
        weight_node = node.input_value(1).get_node()
        if weight_node.get_type_name() != "Constant" or weight_node.get_element_type() != openvino.Type.f32:
            continue
        weight = weight_node.get_data().astype(np.float32)
        if kind == "MatMul":
            if weight.ndim != 2 or node.get_attributes()["transpose_a"]:
                continue
            transposed = node.get_attributes()["transpose_b"]
            columns_axis = 0 if transposed else 1
            if weight.shape[columns_axis] < min_columns:
                continue
            node.input(1).replace_source_output(_dequantized(ops, openvino, weight, 1 - columns_axis))
        else:
            rewritten = _einsum_as_matmul(ops, openvino, node, weight, min_columns)
            if rewritten is None:
                continue
            for target in node.output(0).get_target_inputs():
                target.replace_source_output(rewritten)
        replaced += 1
    model.validate_nodes_and_infer_types()
    return replaced


def _dequantized(ops, openvino, weight: np.ndarray, reduce_axis: int):
    """int8 weight -> convert -> multiply by its per-column scale: the compressed-weight pattern
    OpenVINO's CPU plugin fuses into an int8 fully connected layer."""
    scale = np.abs(weight).max(axis=reduce_axis, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    return ops.multiply(ops.convert(ops.constant(q), openvino.Type.f32),
                        ops.constant(scale.astype(np.float32))).output(0)


def _einsum_as_matmul(ops, openvino, node, weight: np.ndarray, min_columns: int):
    equation = node.get_attributes()["equation"].replace(" ", "")
    inputs, out = equation.split("->")
    x_letters, w_letters = inputs.split(",")
    contracted = "".join(ch for ch in w_letters if ch not in out)
    n = len(contracted)
    if (not n or "." in equation or w_letters[:n] != contracted or not x_letters.endswith(contracted)
            or out != x_letters[:-n] + w_letters[n:] or len(w_letters) != weight.ndim):
        return None
    k, columns = int(np.prod(weight.shape[:n])), int(np.prod(weight.shape[n:]))
    if columns < min_columns:
        return None
    x = node.input_value(0)
    lead = ops.gather(ops.shape_of(x), ops.constant(np.arange(len(x_letters) - n, dtype=np.int64)),
                      ops.constant(np.int64(0)))  # the input's free dimensions, kept
    flat = ops.reshape(x, ops.concat([lead, ops.constant(np.array([k], np.int64))], 0), False)
    product = ops.matmul(flat, _dequantized(ops, openvino, weight.reshape(k, columns), 0), False, False)
    shape = ops.concat([lead, ops.constant(np.array(weight.shape[n:], np.int64))], 0)
    return ops.reshape(product, shape, False).output(0)


class Int8Predictor(Predictor):
    """A Predictor whose two forward functions (plain and packed batches) run as int8 OpenVINO
    graphs on the CPU; each is converted on its first batch (conversion_seconds: that time)."""

    def __init__(self, model, problem_type: str, policy: DevicePolicy, pooling: str = "mean",
                 temperature: float = 1.0):
        runtime.require_openvino()
        super().__init__(model, problem_type, policy, jit_compile=False, pooling=pooling,
                         temperature=temperature)
        self.conversion_seconds = 0.0
        self.quantized_matmuls = 0
        self._compiled: dict[str, object] = {}

    def _graph(self, which: str):
        """The compiled int8 graph of the plain ("plain") or packed ("packed") forward function."""
        if which not in self._compiled:
            import openvino

            start = time.perf_counter()
            fn = self._fn if which == "plain" else self._packed_fn
            graph = openvino.convert_model(fn.get_concrete_function())
            self.quantized_matmuls = quantize_weights(graph)
            config = {"INFERENCE_PRECISION_HINT": "f32",
                      "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(DYNAMIC_GROUP),
                      "INFERENCE_NUM_THREADS": str(runtime.threads_in_use or runtime.available_cpus())}
            self._compiled[which] = openvino.Core().compile_model(graph, "CPU", config)
            self.conversion_seconds += time.perf_counter() - start
        return self._compiled[which]

    def _output_functions(self, which: str) -> tuple:
        if which != PROBABILITIES:
            raise ConfigError("--precision int8 gives probabilities only: embeddings (--emit "
                              "embedding, embed()) need float32 or mixed precision")
        return super()._output_functions(which)

    def run_plain(self, token_ids, padding_mask) -> np.ndarray:
        return self._graph("plain")([token_ids, padding_mask])[0]

    def run_packed(self, token_ids, slot_ids, position_ids, slot_onehot) -> np.ndarray:
        return self._graph("packed")([token_ids, slot_ids, position_ids, slot_onehot])[0]
