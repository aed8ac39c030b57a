"""tests/keras3 under ``KERAS_BACKEND=tensorflow``, in a subprocess (this suite runs Keras 2).

The Keras 3 path is one ``keras.ops`` code path; what differs between backends is how it is
run: gradients (``ops.custom_gradient``), conditionals, variable updates inside a compiled
``fit`` (temperatures, int8 ranges, batch statistics), ``tf.data`` input, saving and loading.
Under TensorFlow this runs the test files that exercise those (all of them run under JAX,
tests/test_keras3_backends.py). Left out here, because nothing in them runs differently per
backend: the names, docstrings and conventions, the TensorBoard event
writer (plain Python), the GAP planner, the speed benchmark's argument checks and the
keras.applications graphs (their layers' compute is covered by the quantize_model tests).
The summary table runs here for its one comparison with the tf_keras summary, which needs
TensorFlow.
Leaving them out took this subprocess from 400 s to 236 s (each with another job beside it).
"""

from keras3_subprocess import KERAS3_TESTS, run_keras3

BACKEND_SPECIFIC = ["test_k3_batch_norm.py", "test_k3_calibration.py", "test_k3_int8.py",
                    "test_k3_layers.py", "test_k3_quantize_model.py", "test_k3_saving.py",
                    "test_k3_schedule.py", "test_k3_staircase.py",
                    # its comparison with the tf_keras summary runs under TensorFlow only
                    "test_k3_summary.py"]


def test_keras3_tests_pass_under_tensorflow():
    files = [f"tests/keras3/{name}" for name in BACKEND_SPECIFIC]
    folder = KERAS3_TESTS.index("tests/keras3")
    run_keras3(KERAS3_TESTS[:folder] + files + KERAS3_TESTS[folder + 1:], "tensorflow")
