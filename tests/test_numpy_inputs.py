"""tpu_nb.numpy_input_fn: the original tf.compat.v1.estimator.inputs.numpy_input_fn, in graph mode."""

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import FEATURES, make_data, model_fn


def _batches(input_fn, limit=20):
    """Every batch input_fn() yields (up to ``limit``), read in a graph session as the estimator would."""
    with tf.Graph().as_default():
        out = input_fn()
        got = []
        with tf.compat.v1.Session() as sess:
            try:
                while len(got) < limit:
                    got.append(sess.run(out))
            except tf.errors.OutOfRangeError:
                pass
        return out, got


def test_dict_x_and_array_y_in_order():
    x = {"b": np.arange(10, dtype=np.float32), "a": np.arange(10, 20, dtype=np.int64)}
    y = np.arange(100, 110)
    out, got = _batches(tpu_nb.numpy_input_fn(x, y, batch_size=4, shuffle=False, num_epochs=1))
    features, target = out
    assert sorted(features) == ["a", "b"] and features["a"].dtype == tf.int64
    # num_epochs set: the last batch may be short, so the batch dimension is unknown (the original's dequeue_up_to).
    assert tf.compat.dimension_value(target.shape[0]) is None
    assert [len(t) for _, t in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([t for _, t in got]), y)
    np.testing.assert_array_equal(np.concatenate([f["a"] for f, _ in got]), x["a"])


def test_array_x_without_y_and_epochs():
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    out, got = _batches(tpu_nb.numpy_input_fn(x, batch_size=4, shuffle=False, num_epochs=2))
    assert isinstance(out, tf.Tensor)  # features as x's type, and no target
    # Batches run across the epoch boundary, as the original's queue did.
    assert [b[:, 0].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]


def test_forever_gives_full_static_batches():
    x = {"x": np.arange(10, dtype=np.float32)}
    out, got = _batches(tpu_nb.numpy_input_fn(x, {"t": np.arange(10)}, batch_size=4, shuffle=False,
                                              num_epochs=None), limit=5)
    features, target = out
    assert tf.compat.dimension_value(features["x"].shape[0]) == 4 and sorted(target) == ["t"]
    assert len(got) == 5 and all(len(t["t"]) == 4 for _, t in got)
    assert np.concatenate([t["t"] for _, t in got]).tolist() == [i % 10 for i in range(20)]


def test_shuffle_keeps_every_row_once_per_epoch():
    x = {"x": np.arange(50, dtype=np.float32)}
    _, got = _batches(tpu_nb.numpy_input_fn(x, np.arange(50), batch_size=8, shuffle=True, num_epochs=1))
    order = np.concatenate([t for _, t in got])
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(shuffle=None), ValueError, "shuffle must be provided and explicitly set as boolean"),
    (dict(shuffle=True, batch_size=0), ValueError, "batch_size must be a positive int"),
])
def test_arguments_checked_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        tpu_nb.numpy_input_fn({"x": np.zeros(3)}, **kwargs)


@pytest.mark.parametrize("x,y,error,match", [
    ({}, None, ValueError, "x cannot be an empty dict"),
    ([1, 2], None, TypeError, "x must be a dict or array; got list"),
    ({"x": np.zeros(3)}, {}, ValueError, "y cannot be empty dict"),
    ({"x": np.zeros(3)}, {"x": np.zeros(3)}, ValueError, "duplicate keys are found in both x and y"),
    ({"x": np.zeros(3)}, np.zeros(4), ValueError, "Length of tensors in x and y is mismatched"),
])
def test_data_checked_when_called(x, y, error, match):
    input_fn = tpu_nb.numpy_input_fn(x, y, shuffle=False)
    with tf.Graph().as_default(), pytest.raises(error, match=match):
        input_fn()


def _estimator_input_fn(x, y):
    def input_fn(params):  # the usual TPUEstimator wrapping: params['batch_size'] per call
        return tpu_nb.numpy_input_fn(x, y, batch_size=params["batch_size"], shuffle=False, num_epochs=None)()

    return input_fn


@pytest.mark.parametrize("sharded", [False, True])
def test_trains_and_evaluates_a_tpu_estimator(tmp_path, sharded):
    x, y = make_data(64)
    cluster = tpu_nb.SimulatedTPU(2, 1) if sharded else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=sharded, train_batch_size=16, eval_batch_size=16)
    est.train(_estimator_input_fn(x, y), steps=4)
    results = est.evaluate(_estimator_input_fn(x, y), steps=2)
    assert int(results["global_step"]) == 4 and np.isfinite(results["loss"])
    assert x.shape[1] == FEATURES
