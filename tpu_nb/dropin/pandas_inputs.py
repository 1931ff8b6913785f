"""``pandas_input_fn``: ``numpy_input_fn`` over a DataFrame's columns."""

from ..inputs.numpy_inputs import numpy_input_fn


def pandas_input_fn(x, y=None, batch_size=128, num_epochs=1, shuffle=None, queue_capacity=1000, num_threads=1,
                    target_column="target"):
    """An input function feeding the columns of DataFrame ``x`` as features and ``y`` (a Series or DataFrame).

    The features dict is keyed by column name; ``y`` becomes the labels. Batching, epochs and ``shuffle``
    work as in ``tpu_nb.numpy_input_fn``::

        input_fn = pandas_input_fn(df[['a', 'b']], df['label'], batch_size=32, num_epochs=1, shuffle=False)
        features, labels = input_fn()
    """
    import pandas as pd

    if not isinstance(x, pd.DataFrame):
        raise TypeError(f"pandas_input_fn needs x to be a pandas DataFrame, got {type(x).__name__}; for numpy "
                        "arrays use numpy_input_fn.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"pandas_input_fn: x has {len(x)} rows and y has {len(y)}: give one label row per "
                         "example.")
    if y is not None and target_column in x.columns:
        raise ValueError(f"pandas_input_fn: target_column {target_column!r} is already a column of x; pass "
                         "another target_column name.")
    features = {str(name): x[name].to_numpy() for name in x.columns}
    if isinstance(y, pd.DataFrame):
        labels = {str(name): y[name].to_numpy() for name in y.columns}
    else:
        labels = None if y is None else y.to_numpy()
    return numpy_input_fn(features, labels, batch_size=batch_size, num_epochs=num_epochs, shuffle=shuffle,
                          queue_capacity=queue_capacity, num_threads=num_threads)
