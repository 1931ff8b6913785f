"""Walking a graph-mode TensorFlow graph upstream."""

import tensorflow as tf


def upstream_ops(*roots) -> set:
    """The ops ``roots`` (tensors or ops) are, and every op they depend on through inputs or control inputs.

    Example::

        if write_op not in upstream_ops(*host_call_values):
            write_op._add_control_input(gate)
    """
    seen = set()
    stack = [r.op if isinstance(r, tf.Tensor) else r for r in roots]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen
