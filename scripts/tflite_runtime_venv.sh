#!/usr/bin/env bash
# Idempotent: .venv-tflite-runtime, a second environment with the LiteRT interpreter app teams pin
# (tflite-runtime 2.14, which needs numpy < 2 and so cannot share .venv). Used by
# `--tflite-python .venv-tflite-runtime/bin/python`, tests/test_tflite_runtime.py and
# benchmarks/tflite_report.py, each of which runs this when the environment is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv-tflite-runtime
if ! "$VENV/bin/python" -c "import tflite_runtime, numpy" >/dev/null 2>&1; then
  "$PY" -m venv "$VENV"
  # 2.14.0: the last tflite-runtime release pip finds (its successor is ai-edge-litert).
  "$VENV/bin/pip" install -q "tflite-runtime==2.14.0" "numpy<2"
fi
