#!/usr/bin/env bash
# README command 2: set up what is missing, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, one per core of the machine the suite is planned for (measured there: 14.5-16.7 min; three
# workers took 19.5, the contention costing more than the idle time they fill). tests/conftest.py
# groups the tests that share expensive exports onto one worker and starts the longest groups first.
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder "$@"
