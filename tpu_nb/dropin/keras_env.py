"""Keras 2 for programs written for the original: ``TF_USE_LEGACY_KERAS=1`` before TensorFlow picks a Keras.

TensorFlow >= 2.16 resolves ``tf.keras``, ``tf.compat.v1.layers`` and ``tf.compat.v1.keras`` on their
first use, to Keras 2 (the ``tf_keras`` package) when ``TF_USE_LEGACY_KERAS`` is set then, else to Keras 3,
which has no ``tf.compat.v1.layers`` and does not work in the graphs model_fns build.
"""

import importlib.util
import os
import sys

ENV = "TF_USE_LEGACY_KERAS"
INSTALL_HINT = ("Programs written for the original use Keras 2 (tf.compat.v1.layers, tf.keras layers in "
                "model_fn): install it with `pip install tf-keras`; tpu_nb then sets TF_USE_LEGACY_KERAS=1 for them.")


def legacy_keras_requested() -> bool:
    return os.environ.get(ENV) in ("1", "true", "True")


def tf_keras_installed() -> bool:
    try:
        return importlib.util.find_spec("tf_keras") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def keras3_already_chosen() -> bool:
    """Whether TensorFlow already resolved one of its Keras entry points to Keras 3 in this process."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return False
    compat_v1 = getattr(getattr(tf, "compat", None), "v1", None)
    holders = [vars(tf)]
    wrapped = getattr(compat_v1, "_tfmw_wrapped_module", compat_v1)
    if wrapped is not None:
        holders.append(vars(wrapped))
    for holder in holders:
        for key in ("keras", "layers"):
            if _is_keras_3(holder.get(key)):
                return True
    return False


def _is_keras_3(entry) -> bool:
    # Before first use the entry is TensorFlow's lazy loader: read its state from the instance dict, as
    # attribute access would make it choose a Keras now. After first use it is the chosen module itself.
    state = vars(entry) if hasattr(entry, "__dict__") else {}
    if "_tfll_initialized" in state:
        return bool(state["_tfll_initialized"]) and state.get("_tfll_keras_version") == "keras_3"
    name = getattr(entry, "__name__", "") or ""
    keras = sys.modules.get("keras")
    return name.split(".")[0] == "keras" and str(getattr(keras, "__version__", "")).startswith("3")


def prefer_keras_2() -> str:
    """Sets ``TF_USE_LEGACY_KERAS=1`` when tf_keras is installed; returns a note for the user, or ''.

    The note says what to install when tf_keras is missing, or how to restart when TensorFlow in this
    process already chose Keras 3 (a notebook kernel that used ``tf.keras`` before)."""
    if not tf_keras_installed():
        return INSTALL_HINT
    if legacy_keras_requested():
        return ""
    if keras3_already_chosen():
        return ("TensorFlow in this process already uses Keras 3 for tf.keras, but programs written for the "
                "original need Keras 2 (tf.compat.v1.layers, tf.keras layers in model_fn). Restart the kernel "
                "and run `%env TF_USE_LEGACY_KERAS=1` in the first cell, before anything imports TensorFlow.")
    os.environ[ENV] = "1"
    return ""
