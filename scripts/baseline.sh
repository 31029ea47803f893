#!/usr/bin/env bash
# Regenerates reports/baseline.json: what CI's accuracy gates compare with (README, "Gating CI on
# accuracy"). Fresh default int8 exports of the reference model for onnxruntime and LiteRT, then
# `mexport validate --update-baseline` on all 18 alphamatting photos (per artifact identity and per
# photo; entries of other artifacts in the file are kept).
set -euo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/mexport
DATA=${DATA:-../shared/data/alphamatting}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$M onnx --int8 -o "$WORK/onnx-int8" -q
$M tflite --int8 -o "$WORK/tflite-int8" -q
$M validate "$WORK/onnx-int8" "$WORK/tflite-int8" --data "$DATA" --baseline reports/baseline.json --update-baseline -q
