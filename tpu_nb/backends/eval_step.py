"""The evaluation step counter that Estimator evaluation kept, for hooks that read it.

The original Estimator created a local int64 variable ``eval_step`` in the
``tf.compat.v1.GraphKeys.EVAL_STEP`` collection and advanced it with every
evaluation step (TPU evaluation: by the steps of each loop). Evaluation hooks
read it, or create it in ``begin()`` with TensorFlow's own get-or-create, which
finds ours through the collection.
"""

from __future__ import annotations

import tensorflow as tf


def get_or_create_eval_step():
    """The graph's eval step variable: the one in ``GraphKeys.EVAL_STEP``, created (at 0) if there is none.

    Example::

        step = get_or_create_eval_step()   # in an evaluation graph, before the session starts
    """
    found = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.EVAL_STEP)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"The graph has {len(found)} variables in tf.compat.v1.GraphKeys.EVAL_STEP; an evaluation "
                         "needs exactly one: add only one eval step variable to that collection.")
    # Named and collected as TensorFlow's own get-or-create does. Call it at the graph's top level (not inside
    # a loop or a distribution strategy's scope): it is one plain host variable.
    return tf.compat.v1.get_variable(
        "eval_step", shape=[], dtype=tf.int64, initializer=tf.compat.v1.zeros_initializer(), trainable=False,
        collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES, tf.compat.v1.GraphKeys.EVAL_STEP])


def advance_eval_step(steps=1):
    """An op adding ``steps`` (an int or an integer tensor) to the eval step; run it with the steps it counts."""
    eval_step = get_or_create_eval_step()
    return tf.compat.v1.assign_add(eval_step, tf.cast(steps, tf.int64), use_locking=True)
