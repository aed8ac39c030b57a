"""tests/keras3 under ``KERAS_BACKEND=tensorflow``, in a subprocess (this suite runs Keras 2)."""

from keras3_subprocess import KERAS3_TESTS, run_keras3


def test_keras3_tests_pass_under_tensorflow():
    run_keras3(KERAS3_TESTS, "tensorflow")
