"""``tf.estimator`` (the TensorFlow 2 names) as tpu_nb implements it.

    # before:  import tensorflow as tf; tf.estimator.Estimator(...)
    from tpu_nb.dropin import v2 as estimator

    est = estimator.Estimator(model_fn, model_dir=...)
"""

import sys

from .modules import V2, stand_in_modules
from .aliases import alias_tree

sys.modules[__name__] = alias_tree(stand_in_modules(), V2, __name__)
