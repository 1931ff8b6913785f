"""The ``tf.summary`` (v2) writers a model_fn or host_call opens in a graph-mode run.

In graph mode each ``tf.summary.create_file_writer`` registers an init op that the session must run
(like an input iterator's initializer), and its events reach disk only when flushed. Training and
evaluation both build their session from these two.
"""

import tensorflow as tf


def writer_init_ops():
    """The init ops of every v2 summary writer created in the default graph so far."""
    from tensorflow.python.ops import summary_ops_v2

    return tf.compat.v1.get_collection(summary_ops_v2._SUMMARY_WRITER_INIT_COLLECTION_NAME)  # noqa: SLF001


def flush_writers_op():
    """One op flushing every v2 summary writer in the default graph (None if there is none).

    Example::

        flush = flush_writers_op()
        if flush is not None:
            session.run(flush)
    """
    from tensorflow.python.ops import gen_summary_ops

    handles = [op.inputs[0] for op in writer_init_ops() if op.inputs]
    if not handles:
        return None
    return tf.group(*[gen_summary_ops.flush_summary_writer(h) for h in handles])
