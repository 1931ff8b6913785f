"""``numpy_input_fn``: the input function over numpy arrays that ``tf.compat.v1.estimator.inputs`` had.

TensorFlow 2.16 removed it with ``tf.estimator``. This one reads the arrays
through ``tf.data`` instead of queue runners, and returns what the original
returned: a function ``() -> (features, target)`` (or features alone) of
tensors, built in the graph where it is called.
"""

from __future__ import annotations

import collections
import numbers

import numpy as np
import tensorflow as tf

_TARGET_KEY = "__target_key__"  # where the target travels next to the features (renamed if taken)
_ARRAY_KEY = "__direct_np_input__"  # a single array x travels as a one-entry dict


def numpy_input_fn(x, y=None, batch_size=128, num_epochs=1, shuffle=None, queue_capacity=1000, num_threads=1):
    """An input function feeding ``x`` (an array, or a dict of arrays) and ``y`` in batches of ``batch_size``.

    The returned function takes no arguments and returns ``features`` (``x``'s type: a tensor or a dict of
    tensors with ``x``'s keys) and, when ``y`` is given, ``target`` (a tensor, or a dict if ``y`` is one).

    * ``num_epochs=None`` repeats forever and every batch has exactly ``batch_size`` rows (a static batch
      dimension); ``num_epochs=N`` reads the data N times, the last batch may be short, then the input ends
      (``OutOfRangeError``, which ends evaluation and prediction).
    * ``shuffle`` must be given as a bool. ``True`` shuffles rows within a window of ``queue_capacity`` rows
      (use a window at least the data size for a full shuffle); batches run across epoch boundaries.
    * ``num_threads`` is accepted for compatibility; tf.data reads in order.

    TPUEstimator calls ``input_fn(params)``, so wrap it::

        def train_input_fn(params):
            return numpy_input_fn({'x': x_train}, y_train, batch_size=params['batch_size'],
                                  num_epochs=None, shuffle=True)()
    """
    if not isinstance(shuffle, bool):
        raise ValueError("shuffle must be provided and explicitly set as boolean (it is recommended to set it as "
                         f"True for training); got {shuffle!r}. Pass shuffle=True for training, False for "
                         "evaluation and prediction.")
    _check_count("batch_size", batch_size)
    if num_epochs is not None:
        _check_count("num_epochs", num_epochs)
    _check_count("queue_capacity", queue_capacity)

    def input_fn():
        # Validated when called, as the original: the arrays may be filled in after numpy_input_fn(...).
        columns = _feature_columns(x)
        feature_keys = list(columns)
        target_keys = _add_target_columns(columns, y)
        _check_lengths(columns, feature_keys, target_keys, y)
        dataset = tf.data.Dataset.from_tensor_slices(dict(columns)).repeat(num_epochs)
        if shuffle:
            dataset = dataset.shuffle(queue_capacity)
        # Forever: full batches (static shape), as the original's dequeue_many; else the last may be short.
        dataset = dataset.batch(batch_size, drop_remainder=num_epochs is None)
        batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        features = batch[_ARRAY_KEY] if isinstance(x, np.ndarray) else {k: batch[k] for k in feature_keys}
        if target_keys is None:
            return features
        if isinstance(target_keys, str):
            return features, batch[target_keys]
        return features, {k: batch[k] for k in target_keys}

    return input_fn


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"numpy_input_fn: {name} must be a positive int, got {value!r}.")


def _feature_columns(x):
    """``x`` as an ordered dict of arrays (sorted keys, as the original), a single array under one key."""
    if isinstance(x, dict):
        if not x:
            raise ValueError("x cannot be an empty dict: pass at least one feature array.")
        return collections.OrderedDict(sorted(x.items(), key=lambda item: item[0]))
    if isinstance(x, np.ndarray):
        if x.size == 0:
            raise ValueError("x cannot be an empty array: pass the feature rows.")
        return collections.OrderedDict({_ARRAY_KEY: x})
    raise TypeError(f"x must be a dict or array; got {type(x).__name__}. Pass a numpy array or a dict of them.")


def _add_target_columns(columns, y):
    """Adds ``y`` to ``columns``; returns its key (one array), its keys (a dict) or None (no y)."""
    if y is None:
        return None
    if isinstance(y, dict):
        if not y:
            raise ValueError("y cannot be empty dict, use None instead.")
        target = collections.OrderedDict(sorted(y.items(), key=lambda item: item[0]))
        duplicate = set(columns).intersection(target)
        if duplicate:
            raise ValueError(f"{len(duplicate)} duplicate keys are found in both x and y: {sorted(duplicate)}. "
                             "Rename the features or the targets.")
        columns.update(target)
        return list(target)
    key = _TARGET_KEY
    while key in columns:
        key += "_n"
    columns[key] = y
    return key


def _check_lengths(columns, feature_keys, target_keys, y):
    if len({len(v) for v in columns.values()}) == 1:
        return
    x_shapes = {k: np.shape(columns[k]) for k in feature_keys}
    if target_keys is None:
        y_shapes = None
    elif isinstance(target_keys, str):
        y_shapes = np.shape(y)
    else:
        y_shapes = {k: np.shape(columns[k]) for k in target_keys}
    raise ValueError("Length of tensors in x and y is mismatched. All elements in x and y must have the same "
                     f"length.\nShapes in x: {x_shapes}\nShapes in y: {y_shapes}\n")
