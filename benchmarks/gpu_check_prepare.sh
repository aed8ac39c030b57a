#!/usr/bin/env bash
# Put beside benchmarks/gpu_check.sh what it needs on a machine without a package index:
# the Keras 3 wheels for Python 3.12 (keras and the two dependencies such a JAX image lacks,
# namex and optree) in benchmarks/gpu_wheels, and Fashion-MNIST's four IDX files (Debian's
# dataset-fashion-mnist, or --data-dir) in benchmarks/gpu_data. Both folders are git-ignored:
# copy them along (the device tool: carry ["benchmarks/gpu_wheels", "benchmarks/gpu_data"]).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
keras_version="${KERAS_VERSION:-$("$python" -c 'import importlib.metadata as m; print(m.version("keras"))')}"
mkdir -p "$here/gpu_wheels" "$here/gpu_data"
rm -f "$here"/gpu_wheels/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
for package in "keras==$keras_version" namex optree; do
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$here/gpu_wheels" "$package"
done
source_dir="/usr/share/datasets/fashion-mnist"
if [[ "${1:-}" == "--data-dir" ]]; then source_dir="$2"; fi
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  found=$(ls "$source_dir/$stem"* 2>/dev/null | head -n 1 || true)
  if [[ -z "$found" ]]; then
    echo "gpu_check_prepare: no $stem in $source_dir (apt-get install dataset-fashion-mnist," \
         "or pass --data-dir FOLDER)" >&2
    exit 2
  fi
  cp "$found" "$here/gpu_data/"
done
ls -l "$here/gpu_wheels" "$here/gpu_data"
