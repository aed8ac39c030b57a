#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): Keras 3 on JAX with XLA, float vs W3A2/W3A3/W3A8 step
# times at batch 256 and a short W3A3 fine-tune. For a machine with JAX (CUDA) but no Keras,
# no TensorFlow and no package index:
#
#   here:   bash benchmarks/gpu_check_prepare.sh      # wheels -> benchmarks/gpu_wheels,
#                                                     # Fashion-MNIST -> benchmarks/gpu_data
#   there:  bash benchmarks/gpu_check.sh [gpu_check.py options]
#
# Keras is installed from benchmarks/gpu_wheels (into a folder under /tmp, the system's
# packages untouched) only when `import keras` fails. The data is read from benchmarks/gpu_data
# unless --data-dir is given.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
wheels="${QNETS_WHEELS:-$here/gpu_wheels}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
if ! "$python" -c "import keras" 2>/dev/null; then
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: keras is not installed and $wheels holds no wheels; run" \
         "'bash benchmarks/gpu_check_prepare.sh' on a machine with pip first" >&2
    exit 2
  fi
  site="${TMPDIR:-/tmp}/qnets_gpu_check_site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: installed $(cd "$wheels" && ls *.whl | tr '\n' ' ')into $site"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
args=("$@")
if [[ " $* " != *" --data-dir "* && -d "$here/gpu_data" ]]; then
  args+=(--data-dir "$here/gpu_data")
fi
exec "$python" "$here/gpu_check.py" "${args[@]}"
