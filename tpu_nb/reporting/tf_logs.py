"""Keeping TensorFlow's own chatter out of the user's output.

MonitoredSession and the v1 APIs log "Graph was finalized", "Saving
checkpoints..." and deprecation notices for every call: the walls of log
lines notebook users of TPUEstimator complained about. tpu_nb reports what
matters through its ``tpu_nb`` logger and event stream, so TensorFlow's
INFO lines and deprecation notices are muted while the engine runs, and in a
Jupyter kernel its C++ lines go to a log file instead of the cell
(:mod:`tpu_nb.reporting.native_output`). Set ``TPU_NB_TF_LOGS=1`` to see them again.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import tensorflow as tf
from tensorflow.python.util import deprecation

from . import native_output


_lock = threading.Lock()
_depth = 0
_saved = None


@contextlib.contextmanager
def quiet_tf_logs():
    """Mutes TensorFlow's INFO lines and deprecation notices while the block runs, and in a Jupyter
    kernel keeps its C++ lines out of the cell.

    Example::

        with quiet_tf_logs():
            session.run(...)
    """
    with native_output.kept_out_of_cells(), _python_logs_muted():
        yield


@contextlib.contextmanager
def _python_logs_muted():
    """Mutes TensorFlow's INFO lines and deprecation notices while the block runs.

    One count for the whole process: a background training run and an evaluation watcher overlap in
    a notebook, and a per-call save/restore would let the first to finish restore the level under the
    other (its INFO lines then leak into cells) or leave the level muted after both.
    """
    global _depth, _saved
    if native_output.tf_logs_shown():
        yield
        return
    with _lock:
        if _depth == 0:
            logger = tf.get_logger()
            _saved = (logger.level, deprecation._PRINT_DEPRECATION_WARNINGS)  # noqa: SLF001
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
            deprecation._PRINT_DEPRECATION_WARNINGS = False  # noqa: SLF001 - what deprecation.silence() sets
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                level, printing = _saved
                tf.get_logger().setLevel(level)
                deprecation._PRINT_DEPRECATION_WARNINGS = printing  # noqa: SLF001
