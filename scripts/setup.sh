#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Python packages and the Fashion-MNIST data.
# Used by scripts/example.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian package dataset-fashion-mnist"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist'"
    echo "        or pass --data-dir with the four IDX files to the example." >&2
  fi
fi

if ! "$PYTHON" -c "import tf_qnets, tf_keras, tensorflow_model_optimization, ai_edge_litert, pytest, xdist, hypothesis, matplotlib, tensorflow_datasets, qkeras" >/dev/null 2>&1; then
  echo "[setup] installing Python packages (TensorFlow 2.21, tf-keras, tfmot 0.8.1, ai-edge-litert)"
  "$PYTHON" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,examples]"
  # tensorflow-datasets (ImageNet example, its mock data in the tests) and the light packages it
  # imports; --no-deps keeps the pinned TensorFlow and numpy untouched.
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps tensorflow-datasets==4.9.10 \
    etils==1.15.0 toml==0.10.2 promise==2.3 tensorflow-metadata==1.21.0 immutabledict==4.3.1
  # QKeras, the accuracy benchmark's peer (benchmarks/accuracy.py), pinned in constraints.txt.
  # --no-deps: besides TensorFlow, tfmot and numpy, `import qkeras` loads only networkx (added
  # here), six (tfmot's) and pyparsing (matplotlib's); its other declared dependencies
  # (keras-tuner, scikit-learn, scipy, tqdm, pyparser) serve AutoQKeras and its codebook module,
  # which the benchmark does not import.
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt qkeras networkx
fi
# The Keras 3 path's JAX backend (tests/keras3 run under KERAS_BACKEND=tensorflow and =jax;
# keras==3.15.1 comes with TensorFlow 2.21 and is pinned in constraints.txt).
if ! "$PYTHON" -c "import jax, jaxlib, keras; assert jax.__version__ == '0.10.2' and keras.__version__.startswith('3.')" >/dev/null 2>&1; then
  echo "[setup] installing jax[cpu]==0.10.2 (Keras 3 JAX backend)"
  "$PYTHON" -m pip install -q --disable-pip-version-check -c constraints.txt "jax[cpu]==0.10.2"
fi
