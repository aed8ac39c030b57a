"""Entry point of the Bazel py_test targets: run one test file through pytest."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main([*sys.argv[1:], "-q", "-p", "no:cacheprovider"]))
