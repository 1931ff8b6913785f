"""Optimizer updates on tpu_nb's strategies: a TPU core's gradients, applied as their mean over replicas.

On a TPU each core computes the gradients of its own loss and applies them to its own copy of the
variables; only ``cross_replica_sum`` (inside TensorFlow's ``CrossShardOptimizer``) makes the cores agree.
tpu_nb's shards share mirrored variables instead, and TensorFlow's optimizers *sum* the replicas' gradients
when they apply them. Estimator made that sum a mean by scaling the loss by 1/N inside the v1 optimizer's
``compute_gradients``. That scaling missed every gradient a model_fn computes itself: BERT's
``tf.gradients`` + ``CrossShardOptimizer.apply_gradients``, a GradientTape, a Keras optimizer. Their
updates came out N times a TPU's (with the CrossShardOptimizer, N squared times one device's). And where it
did apply, a model_fn clipping its gradients clipped 1/N of what a TPU core clips.

So the loss is never scaled here: model_fn sees the gradients a TPU core sees. Instead ``apply_gradients``,
called in a replica, scales each gradient by 1/N before the optimizer sums them: a mean. Where the replicas
agree (after ``cross_replica_sum``) the mean is the TPU's update. Where they do not (no
CrossShardOptimizer, each core would drift apart on a TPU), it is one device's update for the same global
batch.

Example::

    strategy = tf.compat.v1.distribute.MirroredStrategy(devices)
    apply_means_of_replica_gradients(strategy)
"""

from __future__ import annotations

import functools
import threading

import tensorflow as tf

_MARK = "_tpu_nb_applies_mean_of_replicas"
_installing = threading.Lock()
_installed = False
_inside = threading.local()  # an apply_gradients already scaled in this (replica) thread


def apply_means_of_replica_gradients(strategy):
    """Makes optimizers under ``strategy`` apply the mean of the replicas' gradients (see the module)."""
    setattr(strategy, _MARK, True)
    _install()
    return strategy


def _replicas_to_average():
    """N when called in a replica of a marked strategy with N > 1 replicas, else 1."""
    if not tf.distribute.has_strategy() or not getattr(tf.distribute.get_strategy(), _MARK, False):
        return 1
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: the caller reduces for itself
        return 1
    return context.num_replicas_in_sync


def _scaled(gradient, scale):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(scale, gradient.values.dtype), gradient.indices,
                                gradient.dense_shape)
    gradient = tf.convert_to_tensor(gradient)
    return gradient * tf.cast(scale, gradient.dtype)


def _averaging(apply_gradients, aggregates=lambda kwargs: True):
    @functools.wraps(apply_gradients)
    def wrapper(self, grads_and_vars, *args, **kwargs):
        n = _replicas_to_average()
        if n == 1 or getattr(_inside, "active", False) or not aggregates(kwargs):
            return apply_gradients(self, grads_and_vars, *args, **kwargs)
        scale = 1.0 / n
        grads_and_vars = [(_scaled(g, scale), v) for g, v in grads_and_vars]
        _inside.active = True  # an optimizer wrapping another applies through it: scale once
        try:
            return apply_gradients(self, grads_and_vars, *args, **kwargs)
        finally:
            _inside.active = False

    return wrapper


def _install():
    global _installed
    with _installing:
        if _installed:
            return
        _installed = True
        v1 = tf.compat.v1.train.Optimizer
        v1.apply_gradients = _averaging(v1.apply_gradients)
        try:  # tf_keras's optimizers (OptimizerV2) aggregate unless told not to
            from tf_keras.src.optimizers.legacy.optimizer_v2 import OptimizerV2
        except ImportError:  # pragma: no cover - tf_keras not installed, or moved
            return
        OptimizerV2.apply_gradients = _averaging(
            OptimizerV2.apply_gradients, lambda kwargs: kwargs.get("experimental_aggregate_gradients", True))
