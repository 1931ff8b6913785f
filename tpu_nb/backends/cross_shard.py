"""``CrossShardOptimizer`` that works on every backend.

The original only worked inside a TPU computation: on CPU its
``CrossReplicaSum`` op has no kernel and training failed. Here the wrapper
averages gradients over however many replicas the current context has:
none (one device: a pass-through), a ``tf.distribute`` replica context
(all-reduce), or a TPU computation (TensorFlow's own cross-replica sum).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.tpu.ops import tpu_ops as _tpu_ops

from ..graph.tf_tpu_ops import in_tpu_computation

_REDUCTIONS = ("mean", "sum")


class CrossShardOptimizer(tf.compat.v1.train.Optimizer):
    """Wraps a v1 optimizer so gradients are averaged (or summed) across shards.

    Example::

        opt = CrossShardOptimizer(tf.compat.v1.train.AdamOptimizer(1e-3))
        train_op = opt.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    """

    def __init__(self, opt, reduction="mean", name="CrossShardOptimizer", group_assignment=None):
        if reduction in (tf.compat.v1.losses.Reduction.MEAN, "mean"):
            reduction = "mean"
        elif reduction in (tf.compat.v1.losses.Reduction.SUM, "sum"):
            reduction = "sum"
        else:
            raise ValueError(f"CrossShardOptimizer reduction must be 'mean' or 'sum', got {reduction!r}.")
        if not isinstance(opt, tf.compat.v1.train.Optimizer):
            raise TypeError(
                f"CrossShardOptimizer wraps a tf.compat.v1.train.Optimizer, got {type(opt).__name__}. "
                "Keras optimizers do not work in graph-mode model_fns; use tf.compat.v1.train.AdamOptimizer etc."
            )
        super().__init__(use_locking=False, name=name)
        self._opt = opt
        self._reduction = reduction
        self._group_assignment = group_assignment

    def _num_replicas(self):
        ctx = tf.distribute.get_replica_context()
        if ctx is None or not tf.distribute.has_strategy():
            return 1, None
        return ctx.num_replicas_in_sync, ctx

    def _tf_tpu_optimizer(self):
        # TensorFlow's class, inside a TPU computation; it spells the reductions as losses.Reduction values.
        reduction = (tf.compat.v1.losses.Reduction.MEAN if self._reduction == "mean"
                     else tf.compat.v1.losses.Reduction.SUM)
        return tf.compat.v1.tpu.CrossShardOptimizer(self._opt, reduction=reduction,
                                                    group_assignment=self._group_assignment)

    def compute_gradients(self, loss, var_list=None, **kwargs):
        if in_tpu_computation():
            return self._tf_tpu_optimizer().compute_gradients(loss, var_list=var_list, **kwargs)
        n, _ = self._num_replicas()
        if n > 1 and self._reduction == "mean":
            loss = loss * (1.0 / n)  # as TensorFlow's class: apply_gradients sums, so the sum is a mean
        return self._opt.compute_gradients(loss, var_list=var_list, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        if in_tpu_computation():
            tpu_opt = self._tf_tpu_optimizer()
            return tpu_opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)
        n, _ = self._num_replicas()
        if n > 1:
            # Every replica then holds the sum, as every TPU core does after TensorFlow's class; the
            # strategy's optimizer applies the replicas' mean of it, which is that sum.
            grads_and_vars = [(None if g is None else _tpu_ops.cross_replica_sum(g), v) for g, v in grads_and_vars]
        return self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)

    def get_slot(self, *args, **kwargs):
        return self._opt.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._opt.get_slot_names(*args, **kwargs)

    def variables(self):
        return self._opt.variables()
