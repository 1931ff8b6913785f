"""install_estimator_modules(): the original's module paths resolve to tpu_nb in this process, and only then.

What a notebook does in one cell (``tpu_nb.install_estimator_modules()``) before cells written for the
original. Every test undoes the install (``uninstall``), so nothing is left for other tests.
"""

import importlib
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import tpu_nb
from tpu_nb.dropin import installing, keras_env

ORIGINAL_PATHS = ("tensorflow_estimator", "tensorflow_estimator.python.estimator.tpu.tpu_estimator",
                  "tensorflow.python.estimator", "tensorflow.python.estimator.estimator",
                  "tensorflow.compat.v1.estimator", "tensorflow.compat.v1.estimator.tpu",
                  "tensorflow.estimator", "tensorflow.compat.v2.estimator.export")


@pytest.fixture
def installed(monkeypatch):
    # install() sets TF_USE_LEGACY_KERAS; it must not outlive the test (a later test's subprocess running the
    # original, which has no tf_keras, would inherit it). monkeypatch.delenv of an unset variable records
    # nothing to undo, so it is put back by hand.
    saved = os.environ.pop("TF_USE_LEGACY_KERAS", None)
    # Whether an earlier test in this process used tf.keras (Keras 3) must not change what is tested here.
    monkeypatch.setattr(keras_env, "keras3_already_chosen", lambda: False)
    assert not installing.installed(), "another test left the estimator modules installed"
    try:
        yield tpu_nb.install_estimator_modules(quiet=True)
    finally:
        installing.uninstall()
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        if saved is not None:
            os.environ["TF_USE_LEGACY_KERAS"] = saved


def _absent():
    assert not hasattr(tf, "estimator") and not hasattr(tf.compat.v1, "estimator")
    assert not hasattr(tf.compat.v2, "estimator")
    for path in ORIGINAL_PATHS:
        assert path not in sys.modules, path
    with pytest.raises(ImportError):
        importlib.import_module("tensorflow_estimator")


def test_nothing_is_installed_unless_asked():
    _absent()


def test_original_imports_resolve_after_install_and_not_after_uninstall(installed, tmp_path):
    installed_dir = tmp_path
    import tensorflow.compat.v1 as tf1
    from tensorflow.compat.v1 import estimator as tf_estimator
    from tensorflow_estimator.python.estimator.tpu import tpu_config, tpu_estimator
    import tensorflow_estimator.python.estimator.export.export_output as export_output

    assert tf1.estimator.tpu.TPUEstimator is tf_estimator.tpu.TPUEstimator is tpu_nb.TPUEstimator
    assert tf.estimator.Estimator is tf.compat.v2.estimator.Estimator is tpu_nb.Estimator
    assert tpu_estimator.TPUEstimatorSpec is tpu_nb.TPUEstimatorSpec and tpu_config.TPUConfig is tpu_nb.TPUConfig
    assert export_output.PredictOutput is tpu_nb.PredictOutput
    assert importlib.import_module("tensorflow.compat.v1.estimator.tpu") is tf_estimator.tpu
    # TF <= 2.15's shim package, whose private helper tensorflow/tpu's EfficientNet calls.
    from tensorflow.python.estimator import estimator as shim

    assert shim.Estimator is tpu_nb.Estimator
    assert shim._load_global_step_from_checkpoint_dir(str(installed_dir)) == 0
    assert tpu_nb.install_estimator_modules(quiet=True) == installed  # a second call changes nothing
    installing.uninstall()
    _absent()


def test_install_prefers_keras_2_when_tf_keras_is_installed(installed):
    import os

    assert installed == ""
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


def test_missing_tf_keras_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(keras_env, "tf_keras_installed", lambda: False)
    note = keras_env.prefer_keras_2()
    assert "pip install tf-keras" in note and "tf.compat.v1.layers" in note


def test_keras_3_already_chosen_says_how_to_restart(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setattr(keras_env, "keras3_already_chosen", lambda: True)
    note = keras_env.prefer_keras_2()
    assert "Keras 3" in note and "Restart the kernel" in note and "%env TF_USE_LEGACY_KERAS=1" in note
    assert "TF_USE_LEGACY_KERAS" not in __import__("os").environ  # too late to help: not set


def _fresh_python(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_process_that_already_used_keras_3_is_told_to_restart_and_one_that_did_not_gets_keras_2():
    # A notebook kernel whose earlier cell used tf.keras (Keras 3), then the one added cell.
    note = _fresh_python("import tensorflow as tf; tf.keras.layers; import tpu_nb; "
                         "print(repr(tpu_nb.install_estimator_modules(quiet=True)))")
    assert "already uses Keras 3" in note and "%env TF_USE_LEGACY_KERAS=1" in note
    # The added cell first: tf.compat.v1.layers used afterwards is Keras 2.
    layers = _fresh_python("import tensorflow.compat.v1 as tf; import tpu_nb; "
                           "assert tpu_nb.install_estimator_modules(quiet=True) == ''; "
                           "print(type(tf.layers.Dense(1)).__module__)")
    assert layers.startswith("tf_keras.")
