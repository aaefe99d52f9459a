"""The int8 CPU path (scorer.quantized, `--precision int8`): weights quantized in the OpenVINO
graph, scores close to float32, the manifest's precision, and the refusal without the extra."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from scorer import Scorer, classifier, quantized
from scorer.cli import main
from scorer.errors import ConfigError
from tests.conftest import SAMPLE

TEXTS = ["a gorgeous , witty , seductive movie .", "dull and tedious", "fine",
         "the plot , such as it is , is a mess of a thousand tiny pieces", "x " * 70,
         "an intelligent , moving and deeply felt film about grief"] * 4
# int8 weights and activations move a probability by a few hundredths at most on these texts
# (measured: under 0.01 on the tiny model; the default model's maxima are in docs/README)
TOLERANCE = 0.03


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_quantize_weights_makes_matmul_and_einsum_weights_int8_and_keeps_their_product():
    import openvino
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([-1, -1, 48], openvino.Type.f32, name="x")
    w_matmul = rng.normal(size=(48, 40)).astype(np.float32)
    w_einsum = rng.normal(size=(48, 4, 10)).astype(np.float32)  # keras EinsumDense: query/key/value
    w_head = rng.normal(size=(48, 2)).astype(np.float32)  # narrow: stays float32
    outputs = [ops.matmul(x, ops.constant(w_matmul), False, False),
               ops.einsum([x, ops.constant(w_einsum)], "abc,cde->abde"),
               ops.matmul(x, ops.constant(w_head), False, False)]
    model = openvino.Model(outputs, [x])
    assert quantized.quantize_weights(model) == 2
    int8 = [n for n in model.get_ops() if n.get_type_name() == "Constant"
            and n.get_element_type() == openvino.Type.i8]
    assert sorted(tuple(n.get_output_shape(0)) for n in int8) == [(48, 40), (48, 40)]
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = rng.normal(size=(3, 5, 48)).astype(np.float32)
    got = compiled([data])
    expected = [data @ w_matmul, np.einsum("abc,cde->abde", data, w_einsum), data @ w_head]
    for i, want in enumerate(expected):
        assert got[i].shape == want.shape
        # int8 weights (and activations): within about 2% of the products' scale
        np.testing.assert_allclose(got[i], want, atol=0.02 * np.abs(want).max())
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-4)  # the head: exact


@pytest.mark.parametrize("packing", [True, False])
def test_int8_scores_the_tiny_model_close_to_float32(tiny_model, packing):
    full = Scorer.load(tiny_model, packing=packing)
    int8 = Scorer.load(tiny_model, precision="int8", packing=packing)
    assert isinstance(int8.predictor, quantized.Int8Predictor)
    assert int8.predictor.policy == classifier.DevicePolicy("/CPU:0", "float32", int8=True)
    p_full, _ = full.probabilities(TEXTS)
    p_int8, errors = int8.probabilities(TEXTS)
    assert errors == [None] * len(TEXTS)
    assert int8.predictor.quantized_matmuls >= 12  # 2 layers x (q, k, v, out, 2 feed-forward)
    assert p_int8.dtype == np.float32
    np.testing.assert_allclose(p_int8, p_full, atol=TOLERANCE)
    np.testing.assert_allclose(p_int8.sum(1), 1.0, atol=1e-5)
    assert not np.array_equal(p_int8, p_full)  # really another computation, not float32 again


def test_the_manifest_records_int8(tiny_model, tmp_path):
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", tmp_path / "q", "--model", tiny_model,
               "--precision", "int8")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "q" / "_manifest.json").read_text())
    assert m["precision"] == "int8" and m["device"] == "/CPU:0"
    assert m["options"]["precision"] == "int8" and m["rows_scored"] == 300


def test_without_openvino_int8_exits_2_naming_the_extra(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    r = invoke("run", SAMPLE / "sst2_dev_sample.parquet", "-o", tmp_path / "q", "--model", tiny_model,
               "--precision", "int8")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1] == \
        "error: --precision int8 needs OpenVINO: pip install 'scorer[openvino]'"
    assert not (tmp_path / "q" / "_manifest.json").exists()
    with pytest.raises(ConfigError, match=r"scorer\[openvino\]"):
        Scorer.load(tiny_model, precision="int8")
