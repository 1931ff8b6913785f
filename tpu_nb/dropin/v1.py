"""``tensorflow.compat.v1.estimator`` as tpu_nb implements it: the one changed line of a program is its import.

    # before:  from tensorflow.compat.v1 import estimator as tf_estimator
    from tpu_nb.dropin import v1 as tf_estimator

    est = tf_estimator.tpu.TPUEstimator(model_fn, config=tf_estimator.tpu.RunConfig(...), ...)
"""

import sys

from .modules import V1, stand_in_modules
from .aliases import alias_tree

# This file's module is replaced by the stand-in itself, so ``from tpu_nb.dropin.v1 import tpu`` and
# ``tpu_nb.dropin.v1.tpu.TPUEstimator`` see exactly what ``tf.compat.v1.estimator`` shows after install().
sys.modules[__name__] = alias_tree(stand_in_modules(), V1, __name__)
