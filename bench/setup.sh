#!/usr/bin/env bash
# The benchmark's own environment (torch CPU, transformers, onnxruntime), apart from scorer's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv-bench/bin/python ] || "$PYTHON" -m venv .venv-bench
.venv-bench/bin/python -m pip install --quiet --upgrade pip
.venv-bench/bin/python -m pip install --quiet torch==2.13.0 "transformers~=5.24.0" \
    "onnxruntime==1.31.1" "onnx==1.23.2" "onnxscript==0.7.2" "pyarrow==26.0.1" \
    "safetensors~=0.8.0" "tokenizers~=0.23.3"
