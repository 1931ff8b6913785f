"""Stand-ins for names the original estimator modules had and tpu_nb does not implement.

A program may import such a name without using it (``from ... import DNNClassifier`` next to the
TPUEstimator it really uses), so the name must resolve; it fails only when used, with an error that
names the feature and what to do instead, rather than an ``AttributeError`` at import time.
"""


class EstimatorFeatureNotSupportedError(NotImplementedError):
    """A name of the original estimator modules was used that tpu_nb refuses (canned estimators, TPU embedding...).

    The message names the original's full name and what to use instead::

        try:
            tf.estimator.DNNClassifier(hidden_units=[10], feature_columns=cols)
        except tpu_nb.dropin.EstimatorFeatureNotSupportedError as e:
            print(e)  # names tf.estimator.DNNClassifier and the model_fn to write instead
    """


def _refuse(cls, *_args, **_kwargs):
    raise EstimatorFeatureNotSupportedError(cls._tpu_nb_message)


class _RefusingMeta(type):
    # Reading any attribute that a plain class does not have (EmbeddingConfigSpec.some_field) refuses as
    # using the class does; isinstance()/issubclass() checks keep working and answer False.
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        _refuse(cls)

    def __call__(cls, *args, **kwargs):
        _refuse(cls)


def refusing_stand_in(full_name: str, feature: str, instead: str) -> type:
    """A class named like the original's ``full_name`` whose use raises ``EstimatorFeatureNotSupportedError``.

    ``feature`` says what the name belonged to, ``instead`` what a user does instead::

        Head = refusing_stand_in("tf.estimator.Head", "canned heads", "compute the loss in model_fn")
        Head()  # EstimatorFeatureNotSupportedError: tf.estimator.Head (canned heads) is not supported ...
    """
    message = (f"{full_name} ({feature}) is not supported by tpu_nb, which implements Estimator and "
               f"TPUEstimator with your own model_fn. Instead: {instead}")
    short = full_name.rsplit(".", 1)[-1]
    return _RefusingMeta(short, (), {"_tpu_nb_message": message, "__doc__": message,
                                     "__module__": full_name.rsplit(".", 1)[0]})
