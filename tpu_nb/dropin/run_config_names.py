"""``run_config.TaskType`` and ``get_default_session_config``: names of the original's run_config module."""

import tensorflow as tf


class TaskType:
    """The task types of a ``TF_CONFIG`` cluster, as strings (``TaskType.CHIEF == 'chief'``)."""

    MASTER = "master"
    PS = "ps"
    WORKER = "worker"
    CHIEF = "chief"
    EVALUATOR = "evaluator"


def get_default_session_config():
    """A ``ConfigProto`` that lets ops without a kernel on the requested device run elsewhere.

    Example::

        config = tpu_nb.RunConfig(session_config=get_default_session_config())
    """
    return tf.compat.v1.ConfigProto(allow_soft_placement=True)
