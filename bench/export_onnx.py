"""Export OUT_DIR/hf to OUT_DIR/model.onnx; with onnxruntime's transformer optimizer,
OUT_DIR/model_optimized.onnx; and that one with onnxruntime's dynamic int8 quantization (int8
weights, activations quantized per call), OUT_DIR/model_int8.onnx (run with .venv-bench/bin/python).

    export_onnx.py --embedding ST_DIR OUT_DIR   # a sentence-transformers directory's encoder
                                                # (last hidden state) -> OUT_DIR/model.onnx,
                                                # OUT_DIR/model_optimized.onnx"""

import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification


def main(out: Path) -> None:
    # eager attention: the SDPA path branches on traced shapes and would bake them into the graph
    model = AutoModelForSequenceClassification.from_pretrained(out / "hf", attn_implementation="eager").eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids")}
        | {"logits": {0: "batch"}}, opset_version=17, dynamo=False)
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(out / "model.onnx"), model_type="bert",
                                         num_heads=model.config.num_attention_heads,
                                         hidden_size=model.config.hidden_size)
    optimized.save_model_to_file(str(out / "model_optimized.onnx"))
    quantize_int8(out)


def quantize_int8(out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the optimizer's fused ops (Attention, SkipLayerNormalization) have no inferred output
    # types: they are float32
    quantize_dynamic(str(out / "model_optimized.onnx"), str(out / "model_int8.onnx"),
                     weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def export_encoder(st_dir: Path, out: Path) -> None:
    """The encoder of a sentence-transformers directory (its config.json and weights at the top),
    its last hidden state as output; pooling and normalisation are left to the caller."""
    from transformers import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(st_dir, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):  # BertModel.forward's positional order is not these three
        def __init__(self):
            super().__init__()
            self.encoder = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        LastHiddenState().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                      ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
        opset_version=17, dynamo=False)
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(out / "model.onnx"), model_type="bert",
                                         num_heads=model.config.num_attention_heads,
                                         hidden_size=model.config.hidden_size)
    optimized.save_model_to_file(str(out / "model_optimized.onnx"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--embedding"]:
        export_encoder(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[2:] == ["--int8-only"]:  # a model exported before the int8 contestant existed
        quantize_int8(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]))
