#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "${PYTHON:-python3}" -m pytest tests "$@"
