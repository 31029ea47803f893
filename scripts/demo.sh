#!/usr/bin/env bash
# README command 1: set everything up, then run the main job on the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mexport cutout skimage:astronaut -o out/astronaut_cutout.png
