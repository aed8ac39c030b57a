#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# Two workers (pytest-xdist), one test file each at a time, in collection order (the longest
# files first: tests/conftest.py); the suite takes about 20 min on 2 cores (README).
exec "${PYTHON:-python3}" -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder "$@"
