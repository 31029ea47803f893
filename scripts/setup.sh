#!/usr/bin/env bash
# Idempotent setup on a fresh machine (Python 3.11 + pip): virtual environment, dependencies, weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# (pytest below 9.2: see pyproject.toml's dev extra)
if ! .venv/bin/python -c "import mexport, pytest, xdist, matplotlib, torch, litert_torch, coremltools, onnxruntime, executorch.runtime
assert pytest.version_tuple < (9, 2)" >/dev/null 2>&1; then
  # torch first and pinned: with 2.13.0 present, nothing pulls the multi-GB CUDA build.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
fi
.venv/bin/mexport models pull
# The old LiteRT interpreter app teams pin (tflite-runtime 2.14, numpy < 2) in an environment of its own.
bash scripts/tflite_runtime_venv.sh
# Debian's packages: Chromium checks the HTML report in a headless browser, as a person would look
# at it; mate-backgrounds' photographs are backgrounds for `mexport train-refiner`'s composites.
missing=()
if ! command -v chromium >/dev/null 2>&1 && [ "${MEXPORT_NO_CHROMIUM:-0}" != 1 ]; then missing+=(chromium); fi
if [ ! -d /usr/share/backgrounds/mate/nature ]; then missing+=(mate-backgrounds); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: install Debian's ${missing[*]} (the HTML screenshot test and train-refiner need them)" >&2
  fi
fi
