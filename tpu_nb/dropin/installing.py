"""Putting the stand-in modules where the original lived, and taking them away again.

``install()`` makes ``tf.estimator``, ``tf.compat.v1.estimator``, ``tf.compat.v2.estimator`` and
``tensorflow_estimator`` (with its public submodules) resolve to tpu_nb, both as ``sys.modules`` entries
(``import tensorflow_estimator.python.estimator.tpu.tpu_estimator``) and as attributes of TensorFlow's
module objects (``tf.compat.v1.estimator.tpu.TPUEstimator``). Nothing of this happens unless asked for.
"""

import logging
import sys

from . import keras_env
from .modules import PACKAGE, TF_SHIM, V1, V2, stand_in_modules

_log = logging.getLogger("tpu_nb")
_MISSING = object()
_saved = None  # what install() replaced: ({sys.modules key: previous}, [(object, attribute, previous)])


def _module_entries() -> dict:
    entries = {}
    for path, module in stand_in_modules().items():
        entries[path] = module
        if path == V2 or path.startswith(V2 + "."):
            entries["tensorflow.compat.v2.estimator" + path[len(V2):]] = module
    entries[TF_SHIM + ".estimator"] = entries[PACKAGE + ".python.estimator.estimator"]
    return entries


def installed() -> bool:
    """Whether ``install()`` is in effect in this process."""
    return _saved is not None


def install(quiet: bool = False) -> str:
    """Makes the original estimator module paths resolve to tpu_nb, for the rest of this process.

    In a notebook, one cell after which cells written for the original run unchanged::

        import tpu_nb
        tpu_nb.install_estimator_modules()
        import tensorflow.compat.v1 as tf
        est = tf.estimator.tpu.TPUEstimator(model_fn, config=tf.estimator.tpu.RunConfig(...), ...)

    Also sets ``TF_USE_LEGACY_KERAS=1`` when tf_keras is installed and TensorFlow has not chosen Keras 3
    yet. Returns a note about Keras when there is something to do (also logged unless ``quiet``), else ''.
    Calling it again changes nothing; ``uninstall()`` restores what was there.
    """
    global _saved
    note = keras_env.prefer_keras_2()
    if note and not quiet:
        _log.warning(note)
    if _saved is not None:
        return note
    import importlib

    import tensorflow as tf

    entries = _module_entries()
    previous_modules = {key: sys.modules.get(key, _MISSING) for key in entries}
    modules = stand_in_modules()
    targets = [(tf, modules[V2])]
    for version, stand_in in (("v1", modules[V1]), ("v2", modules[V2])):
        # Importing ``tensorflow.compat.v1`` the first time can make a new module object and put it on
        # tf.compat: import it now, so that the attribute lands on the object programs will get.
        imported = importlib.import_module(f"tensorflow.compat.{version}")
        for owner in {id(o): o for o in (imported, getattr(tf.compat, version))}.values():
            targets.append((owner, stand_in))
    previous_attributes = [(owner, vars(_unwrapped(owner)).get("estimator", _MISSING)) for owner, _ in targets]
    sys.modules.update(entries)
    for owner, module in targets:
        setattr(owner, "estimator", module)
    _saved = (previous_modules, previous_attributes)
    return note


def _unwrapped(module):
    # tf.compat.v1 is a TFModuleWrapper around the real module, which holds the attributes.
    return getattr(module, "_tfmw_wrapped_module", module)


def uninstall() -> None:
    """Undoes ``install()``: the original paths resolve as before it (usually: not at all)."""
    global _saved
    if _saved is None:
        return
    previous_modules, previous_attributes = _saved
    for key, module in previous_modules.items():
        if module is _MISSING:
            sys.modules.pop(key, None)
        else:
            sys.modules[key] = module
    for owner, value in previous_attributes:
        if value is _MISSING:
            try:
                delattr(owner, "estimator")  # TFModuleWrapper's delattr also clears its caches
            except (AttributeError, KeyError):
                pass
        else:
            setattr(owner, "estimator", value)
    _saved = None
