"""Run a command with Keras 3 (``KERAS_BACKEND`` set, ``TF_USE_LEGACY_KERAS`` unset) in a
subprocess from the repository root: the main suite runs Keras 2, and the backend is fixed
per process. Used by tests/test_keras3_backends.py and tests/test_keras3_under_tensorflow.py.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 1200
KERAS3_TESTS = [sys.executable, "-m", "pytest", "tests/keras3", "--confcutdir", "tests/keras3",
                "-q", "-p", "no:cacheprovider"]


def run_keras3(command, backend, extra_env=None):
    """Run ``command`` under Keras 3 on ``backend``; assert it succeeds; return its output tail."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.update(extra_env or {})
    env.pop("TF_USE_LEGACY_KERAS", None)     # Keras 3, whatever the parent process chose
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"rc {result.returncode}; output tail:\n{output}"
    return output
