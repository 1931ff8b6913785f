"""The stand-in module objects, laid out as the original's modules were.

Each stand-in is named as the original module (``tensorflow.compat.v1.estimator.tpu``,
``tensorflow_estimator.python.estimator.tpu.tpu_estimator``...), lists the original's public names
(``original_names``), and resolves each on first use (``names.resolve``). Building them imports nothing;
``install`` puts them where the original lived, the ``v1``/``v2`` modules of this package expose them
without touching TensorFlow.
"""

import importlib.machinery
import types

from . import names as _names
from .original_names import ORIGINAL_NAMES

V1 = "tensorflow.compat.v1.estimator"
V2 = "tensorflow.estimator"
PACKAGE = "tensorflow_estimator"
# TensorFlow <= 2.15 had a shim package re-exporting tensorflow_estimator's modules; programs import
# ``from tensorflow.python.estimator import estimator`` for its private helpers.
TF_SHIM = "tensorflow.python.estimator"


class StandInModule(types.ModuleType):
    """A module whose public names are the original module's, each resolved on first access."""

    def __init__(self, name, public_names):
        super().__init__(name, f"tpu_nb's stand-in for the original {name} (TensorFlow <= 2.15).")
        self.__path__ = []  # a package: its stand-in submodules import as ``from name import sub``
        self.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        self._tpu_nb_names = frozenset(public_names)
        self.__all__ = sorted(public_names)

    def __getattr__(self, attr):
        private = _names.PRIVATE_FUNCTIONS.get(self.__name__, {})
        if attr in self._tpu_nb_names or attr in private:
            value = private[attr]() if attr in private else _names.resolve(self.__name__, attr)
            setattr(self, attr, value)  # resolved once: the same object every time, as a real module
            return value
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (tpu_nb's stand-in lists the "
                             "public names the original had; this was not one of them).")

    def __dir__(self):
        return sorted(set(super().__dir__()) | self._tpu_nb_names)


def _build():
    modules = {}

    def module(path):
        if path not in modules:
            modules[path] = StandInModule(path, ORIGINAL_NAMES.get(path, ()))
            parent, _, child = path.rpartition(".")
            if parent and (parent.startswith(PACKAGE) or parent.startswith(V1) or parent.startswith(V2 + ".")
                           or parent == V2):
                setattr(module(parent), child, modules[path])
        return modules[path]

    for path in ORIGINAL_NAMES:
        module(path)
    # tensorflow_estimator.estimator was the v1 API, as tensorflow_estimator 2.15 had it.
    module(PACKAGE).estimator = modules[V1]
    shim = modules[TF_SHIM] = StandInModule(TF_SHIM, ())
    shim.estimator = modules[PACKAGE + ".python.estimator.estimator"]
    for path, knobs in _names.PRIVATE_KNOBS.items():
        for name, value in knobs.items():
            setattr(modules[path], name, value)
    return modules


_MODULES = None


def stand_in_modules() -> dict:
    """Every stand-in module by the original's dotted name (built once per process)."""
    global _MODULES
    if _MODULES is None:
        _MODULES = _build()
    return _MODULES
