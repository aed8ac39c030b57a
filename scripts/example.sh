#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end Fashion-MNIST example:
# `bash scripts/example.sh [--quick] [--w-bits 3 --a-bits 3 ...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "${PYTHON:-python3}" examples/fashion_mnist.py "$@"
