"""Keeping TensorFlow's own chatter out of the user's output.

MonitoredSession and the v1 APIs log "Graph was finalized", "Saving
checkpoints..." and deprecation notices for every call: the walls of log
lines notebook users of TPUEstimator complained about. tpu_nb reports what
matters through its ``tpu_nb`` logger and event stream, so TensorFlow's
INFO lines and deprecation notices are muted while the engine runs.
Set ``TPU_NB_TF_LOGS=1`` to see them again.
"""

from __future__ import annotations

import contextlib
import logging
import os

import tensorflow as tf
from tensorflow.python.util import deprecation


@contextlib.contextmanager
def quiet_tf_logs():
    if os.environ.get("TPU_NB_TF_LOGS", "") not in ("", "0"):
        yield
        return
    logger = tf.get_logger()
    previous = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        with deprecation.silence():
            yield
    finally:
        logger.setLevel(previous)
