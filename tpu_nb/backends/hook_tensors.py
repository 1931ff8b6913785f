"""model_fn's training hooks that hold model_fn's tensors, run between device loops.

The original ran ``use_tpu=False`` (and the plain Estimator) one step per ``Session.run``, so a hook a
model_fn returned in ``EstimatorSpec(training_hooks=...)`` could fetch that step's tensors:
``LoggingTensorHook({'loss': loss})``, ``NanTensorHook(loss)``, a hook of one's own holding a tensor.
Here the step is built inside the device loop, whose tensors no session can fetch (control flow v1
marks them unfetchable; v2 builds them in the loop's function graph). Each such tensor a hook holds is
copied, every step, into a local variable of its own, and the hook is pointed at a read of that
variable: between loops it sees the loop's last step, as hooks see a TPU's loop.
"""

from __future__ import annotations

import tensorflow as tf

_SKIPPED_DTYPES = (tf.resource, tf.variant)


def _in_loop(tensor, graph):
    """Whether ``tensor`` was built in the loop body being built now (the current default ``graph``)."""
    if tensor.graph is not graph:
        return False
    if getattr(graph, "building_function", False):  # control flow v2: the body is a function graph
        return True
    return not graph.is_fetchable(tensor.op)  # control flow v1: the while context marks its ops


def _replace(value, swap, depth):
    """``value`` with every tensor ``swap`` maps replaced, through dicts, lists and tuples; or None if unchanged."""
    if isinstance(value, tf.Tensor):
        new = swap(value)
        return None if new is value else new
    if depth == 0:
        return None
    if isinstance(value, dict):
        changed = {k: _replace(v, swap, depth - 1) for k, v in value.items()}
        if all(v is None for v in changed.values()):
            return None
        return type(value)((k, v if changed[k] is None else changed[k]) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        changed = [_replace(v, swap, depth - 1) for v in value]
        if all(v is None for v in changed):
            return None
        return type(value)(v if c is None else c for v, c in zip(value, changed))
    return None


def carry_hook_tensors(hooks):
    """Points ``hooks`` (built in this loop body) at copies of their in-loop tensors; returns the copy ops.

    Call it in the loop body after model_fn, and make the step depend on the returned ops. Only the
    hooks' own attributes (and dicts, lists, tuples in them) are looked at; names given as strings, and
    ops, are left as they are.
    """
    graph = tf.compat.v1.get_default_graph()
    reads = {}
    assigns = []

    def swap(tensor):
        if tensor.dtype in _SKIPPED_DTYPES or not _in_loop(tensor, graph):
            return tensor
        key = tensor.ref()
        if key not in reads:
            shape = tensor.shape
            with tf.init_scope():  # outside the loop (and its function graph), without its control inputs
                initial = tf.zeros(shape if shape.is_fully_defined() else [0] * (shape.rank or 1), tensor.dtype)
                variable = tf.compat.v1.Variable(
                    initial, trainable=False, use_resource=True, validate_shape=shape.is_fully_defined(),
                    collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES],
                    name=f"hook_tensor_{len(reads)}")
                reads[key] = variable.read_value()
            assigns.append(variable.assign(tensor, read_value=False))
        return reads[key]

    for hook in hooks:
        attributes = getattr(hook, "__dict__", None)
        if not attributes:
            continue
        for name, value in list(attributes.items()):
            new = _replace(value, swap, depth=3)
            if new is not None:
                setattr(hook, name, new)
    return assigns
