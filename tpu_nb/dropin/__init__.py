"""The original's estimator modules, backed by tpu_nb: programs written for them run unchanged.

Three ways in, from no change to one changed line:

* ``python -m tpu_nb run program.py [args]`` (or ``tpu-nb run``) runs a program as written;
* ``tpu_nb.install_estimator_modules()`` (this package's ``install``) does the same inside a process, e.g.
  in a notebook's first cell;
* ``from tpu_nb.dropin import v1 as tf_estimator`` replaces ``from tensorflow.compat.v1 import estimator as
  tf_estimator`` (``v2`` stands for ``tf.estimator``).

Every public name the original modules had resolves: to tpu_nb's implementation, to TensorFlow's own
class where the original re-exported one, or to a stand-in that raises ``EstimatorFeatureNotSupportedError``
when used (canned estimators, TPU embedding...). Importing this package imports nothing else (the
runner imports it before it sets up TensorFlow's environment).

A top layer beside the notebook toolkit: it may import every engine layer, and nothing imports it but
the root package's ``install_estimator_modules`` (docs/architecture.md).
"""

_LAZY = {
    "install": ("installing", "install"),
    "uninstall": ("installing", "uninstall"),
    "installed": ("installing", "installed"),
    "EstimatorFeatureNotSupportedError": ("unsupported", "EstimatorFeatureNotSupportedError"),
    "ORIGINAL_NAMES": ("original_names", "ORIGINAL_NAMES"),
}

__all__ = sorted(_LAZY) + ["v1", "v2"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    if name in ("v1", "v2"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
