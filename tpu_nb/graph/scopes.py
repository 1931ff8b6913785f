"""Names inside the device loop: the same variable names as a model built outside any loop."""

from __future__ import annotations

import contextlib

import tensorflow as tf


@contextlib.contextmanager
def names_as_outside_loop():
    """Builds the loop body under the root name scope.

    With control flow v1 (``tf.compat.v1.disable_v2_behavior()``) a Keras-style layer created in a
    ``tf.while_loop`` body names its variables under the loop's scope (``train_loop/dense/kernel``),
    so checkpoints would not match the one-device, evaluation, prediction and export graphs, nor the
    original TPUEstimator's. Op names stay unique; only the prefix goes.
    """
    with tf.compat.v1.get_default_graph().name_scope(None):
        yield
