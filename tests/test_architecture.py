"""The package's layers and their import rules (docs/architecture.md), checked on the source.

Every module's imports (module level and inside functions) are read from its syntax tree;
a layer may import only the frameworks and the tf_qnets subpackages listed for it.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tf_qnets"
FRAMEWORKS = {"tensorflow", "tf_keras", "keras", "jax", "jaxlib", "torch",
              "tensorflow_model_optimization", "ai_edge_litert", "tflite_runtime", "qkeras"}

# layer -> (frameworks it may import, tf_qnets subpackages/modules it may import)
RULES = {
    "core": (set(), {"core"}),
    "tf": ({"tensorflow"}, {"core", "tf"}),
    "keras2": ({"tensorflow", "tf_keras", "tensorflow_model_optimization"}, {"core", "tf", "keras2"}),
    "keras3": ({"keras"}, {"core", "keras3"}),
    "export": ({"tensorflow"}, {"core", "tf", "keras2", "keras3", "export", "runtime"}),
    "tools": ({"tensorflow"}, {"core", "keras2", "keras3", "export", "runtime", "datasets", "cli",
                               "frontend", "callbacks"}),
    "top": (set(), set()),
}


def _layer(path):
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "top" if relative.name == "__init__.py" else "tools"


def _imports(path):
    """``[(line, dotted module name)]`` of every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "tf_qnets":   # from tf_qnets import cli
                found.extend((node.lineno, f"tf_qnets.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_layer_may(path):
    layer = _layer(path)
    frameworks, packages = RULES[layer]
    wrong = []
    for line, name in _imports(path):
        root = name.split(".")[0]
        if root in FRAMEWORKS and root not in frameworks:
            wrong.append(f"line {line}: {name} (framework not allowed in {layer}/)")
        if root == "tf_qnets" and name != "tf_qnets":
            target = name.split(".")[1]
            if target not in packages:
                wrong.append(f"line {line}: {name} ({layer}/ may import {sorted(packages)})")
        if root == "tf_qnets" and name == "tf_qnets" and layer != "tools":
            wrong.append(f"line {line}: import tf_qnets (use the defining module)")
    assert not wrong, f"{path.relative_to(PACKAGE)}:\n" + "\n".join(wrong)


def test_only_the_adapter_imports_tfmot_or_reads_its_private_state():
    private = ("_weight_vars", "_output_quantizers", "_output_quantizer_vars", "_weight_name")
    adapter = PACKAGE / "keras2" / "tfmot.py"
    offenders = []
    for path in MODULES:
        if path == adapter:
            continue
        text = path.read_text()
        if any(name.startswith("tensorflow_model_optimization") for _, name in _imports(path)):
            offenders.append(f"{path.relative_to(PACKAGE)} imports tfmot")
        offenders.extend(f"{path.relative_to(PACKAGE)} reads {name}" for name in private
                         if f".{name}" in text or f'"{name}"' in text)
    assert not offenders, offenders


def test_the_rules_catch_a_framework_import_in_the_core(tmp_path, monkeypatch):
    """The checker itself: a core module importing TensorFlow is reported."""
    fake = PACKAGE / "core" / "levels.py"
    monkeypatch.setattr(pathlib.Path, "read_text",
                        lambda self, *a, **k: "import tensorflow as tf\nfrom tf_qnets.keras2 import api\n")
    with pytest.raises(AssertionError, match=r"tensorflow \(framework not allowed in core/\)"):
        test_each_module_imports_only_what_its_layer_may(fake)


def _run(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_subprocesses_of_the_suite_import_the_tf_qnets_under_test(tmp_path):
    """tests/conftest.py puts this checkout first on PYTHONPATH: a worker script run by path
    (the distribution tests' workers) tests this code even where an editable install points
    at another checkout."""
    script = tmp_path / "worker.py"
    script.write_text("import tf_qnets\nprint(tf_qnets.__file__)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(PACKAGE / "__init__.py")


def test_import_tf_qnets_loads_no_framework_and_sets_no_environment():
    code = (
        "import os, sys\n"
        "os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import tf_qnets, tf_qnets.core.plan, tf_qnets.core.init_math, tf_qnets.core.lowering\n"
        "tf_qnets.weight_levels(3); tf_qnets.LevelSet\n"
        "loaded = sorted(m for m in %r if m in sys.modules)\n"
        "print(loaded, os.environ.get('TF_USE_LEGACY_KERAS'))\n" % sorted(FRAMEWORKS))
    assert _run(code) == "[] None"


def test_the_keras2_path_leaves_the_users_keras_as_it_was():
    """After quantizing a tf_keras model, ``tf.keras`` is still Keras 3 and the environment
    variable that would switch it is unset."""
    code = (
        "import os\n"
        "os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import numpy as np, tf_keras, tf_qnets\n"
        "m = tf_keras.Sequential([tf_keras.layers.Dense(4, activation='relu', input_shape=(3,)),\n"
        "    tf_keras.layers.Dense(4, activation='relu'), tf_keras.layers.Dense(2)])\n"
        "q = tf_qnets.quantize_model(m, 3, 3, calibration_data=np.ones((8, 3), 'float32'), verbose=0)\n"
        "import tensorflow as tf\n"
        "print(tf.keras.__version__[0], os.environ.get('TF_USE_LEGACY_KERAS'))\n")
    assert _run(code) == "3 None"
