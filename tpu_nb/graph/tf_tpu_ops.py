"""TensorFlow's own TPU ops and classes in user code, off TPU.

Real TPUEstimator programs call ``tf.compat.v1.tpu.cross_replica_sum`` and wrap
their optimizer in TensorFlow's ``tf.compat.v1.tpu.CrossShardOptimizer``. Both
assume a TPU computation: the op has no CPU kernel, and the optimizer reads the
shard count from TensorFlow's TPU shard context (without one it warns and
assumes 1 shard, so a MEAN reduction silently becomes a SUM).

While tpu_nb calls ``model_fn`` off TPU it therefore

* sets the shard context to the replica count (in each replica's own thread:
  TensorFlow keeps it thread-local), so TF's optimizer scales the loss as on a
  TPU of that size and does not warn;
* routes ``cross_replica_sum`` to an all-reduce over the simulated shards (or
  the identity on one device), with the TPU op's gradient: the all-reduced
  incoming gradient.

Inside a real TPU computation (the ``serve,tpu`` export) TensorFlow's op is used.

Why TF's optimizer then gives the one-device update on N shards: the strategy
scales each replica's loss by 1/N and sums replica updates. After
``cross_replica_sum`` every replica holds the same gradient, so summing N equal
updates of a 1/N-scaled loss gives exactly the TPU update, for both reductions.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf
from tensorflow.python.eager import record as _record
from tensorflow.python.tpu import tpu_function
from tensorflow.python.tpu.ops import tpu_ops as _tpu_ops

_install_lock = threading.Lock()
_original_cross_replica_sum = None


def in_tpu_computation() -> bool:
    """True inside a real TPU computation (``tpu.rewrite`` / ``tpu.replicate``)."""
    try:
        from tensorflow.python.tpu import tpu_replication

        graph = tf.compat.v1.get_default_graph()
        # A while_loop/cond body (control flow v2) is a function graph inside the TPU computation's graph.
        while graph is not None:
            ctx = graph._get_control_flow_context()  # noqa: SLF001
            while ctx is not None:
                if isinstance(ctx, tpu_replication.TPUReplicateContext):
                    return True
                ctx = ctx.outer_context
            graph = getattr(graph, "outer_graph", None)
    except (ImportError, AttributeError):  # pragma: no cover - TF internals moved
        return False
    return False


def _replicas_in_sync() -> int:
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    return tf.distribute.get_replica_context().num_replicas_in_sync


def _sum_over_replicas(tensors):
    """Sums same-shaped tensors over the replicas; every replica gets the sum (no custom gradient)."""

    def merge(strategy, *per_replica):
        return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM, [(v, v) for v in per_replica])

    return list(tf.distribute.get_replica_context().merge_call(merge, args=tuple(tensors)))


def _cross_replica_sum(x, group_assignment=None, name=None):
    if in_tpu_computation():
        return _original_cross_replica_sum(x, group_assignment=group_assignment, name=name)
    if group_assignment is not None:
        raise NotImplementedError(
            "cross_replica_sum with group_assignment (sums over groups of shards) is not supported off TPU. "
            "Sum over all shards (group_assignment=None), or run on a real TPU."
        )
    x = tf.convert_to_tensor(x)  # IndexedSlices gradients become dense, as on a TPU
    if _replicas_in_sync() == 1:
        return tf.identity(x, name=name)
    total = tf.stop_gradient(_sum_over_replicas([x])[0])
    # The sum with the TPU op's gradient: an IdentityN passing ``total`` on, whose registered gradient
    # all-reduces the incoming gradient into ``x``. tf.custom_gradient would do the same, but for each call
    # it lists every global variable and walks the graph for the ones used: on 8 shards, with a call per
    # gradient per replica, that was seconds of a ResNet's build.
    graph = tf.compat.v1.get_default_graph()
    with graph.gradient_override_map({"IdentityN": _GRADIENT}):
        passed = tf.raw_ops.IdentityN(input=[x, total], name=name or "CrossReplicaSum")
    # A GradientTape looks gradients up by op type, not by the override: give it the same one.
    _record.record_operation("CrossReplicaSum", passed, [x, total],
                             lambda *grads: _gradient_of_the_sum(None, *grads))
    return passed[1]


_GRADIENT = "TpuNbCrossReplicaSum"


def _gradient_of_the_sum(op, *grads):
    # grads[1] flows into the sum the replica used; every replica gets the sum of all replicas' gradients.
    dy = grads[1]
    if dy is None:
        return [None, None]
    return [_sum_over_replicas([tf.convert_to_tensor(dy)])[0], None]


try:
    tf.RegisterGradient(_GRADIENT)(_gradient_of_the_sum)
except KeyError:  # registered by an earlier import of this module (a reload)
    pass


def _install():
    """Points both spellings of ``cross_replica_sum`` at ours (once; ours defers to TF's on a TPU)."""
    global _original_cross_replica_sum
    with _install_lock:
        if _original_cross_replica_sum is not None:
            return
        _original_cross_replica_sum = _tpu_ops.cross_replica_sum
        _tpu_ops.cross_replica_sum = _cross_replica_sum
        tf.compat.v1.tpu.cross_replica_sum = _cross_replica_sum


@contextlib.contextmanager
def tpu_ops_off_tpu(num_shards: int):
    """Context for one call of ``model_fn`` off TPU, in the thread that makes it.

    Example::

        with tpu_ops_off_tpu(num_shards=8):
            spec = model_fn(features, labels, mode, params)
    """
    _install()
    context = tpu_function.get_tpu_context()
    if context.number_of_shards is not None:  # a real TPU computation (or a caller) already set it
        yield
        return
    with tpu_function.tpu_shard_context(num_shards):
        yield
