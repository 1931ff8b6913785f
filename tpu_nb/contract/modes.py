"""Mode names passed to ``model_fn`` (the same strings the original used)."""


class ModeKeys:
    """Standard names for the three phases a ``model_fn`` is called in.

    Example::

        if mode == ModeKeys.TRAIN:
            ...
    """

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"

    ALL = (TRAIN, EVAL, PREDICT)
