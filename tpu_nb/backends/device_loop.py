"""The on-device training loop every graph-mode backend shares: ``iterations`` steps per session run."""

from __future__ import annotations

import tensorflow as tf

from ..graph.control_edges import share_control_inputs
from ..graph.scopes import names_as_outside_loop


def train_while_loop(step_fn, iterations, infeed, global_step):
    """``(loop, step_after)``: a ``tf.while_loop`` of ``step_fn(i) -> (loss, deps, step)`` that stops early on NaN.

    ``loop`` is (steps run, last loss, first step whose loss was not finite or -1); ``step_after`` reads
    the global step after the loop. ``infeed``: a HostInfeed whose dequeues each step consumes, or None.
    """

    def body(i, last_loss, bad_step):
        with names_as_outside_loop():
            loss, deps, step = step_fn(i)
        share_control_inputs(tf.compat.v1.get_default_graph())
        if infeed is not None:
            deps = list(deps) + infeed.take_dequeues()
        with tf.control_dependencies(deps):
            finite = tf.math.is_finite(loss)
            new_bad = tf.where(tf.logical_or(finite, bad_step >= 0), bad_step, step)
            return i + 1, tf.identity(loss), new_bad

    def cond(i, last_loss, bad_step):
        return tf.logical_and(i < iterations, bad_step < 0)

    loop = tf.while_loop(
        cond, body, [tf.constant(0), tf.constant(0.0), tf.constant(-1, tf.int64)],
        parallel_iterations=1, name="train_loop",
    )
    with tf.control_dependencies(list(loop)):
        # Without the dependency the read may run before the loop and see a stale step.
        step_after = tf.identity(global_step.read_value(), name="global_step_after_loop")
    return loop, step_after
