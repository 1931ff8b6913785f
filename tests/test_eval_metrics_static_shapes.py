"""eval_metrics on shards reach metric_fn with the static shapes the original's outfeed gave them.

tensorflow/tpu's UNet-3D reshapes its gathered eval tensors back to ``[eval_batch_size, x, y, z, -1]``
and calls ``tf.size(..., out_type=tf.float32)`` on the result, which only works when the shape is
static. With an input of whole batches (``drop_remainder=True``) every step's rows are all real, or
all padding once the input has ended; tpu_nb used to drop padded rows with a row mask there too,
which left the first dimension unknown. The padding steps must still not count.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb

ROWS = 24  # 6 global batches of 4


@pytest.fixture(autouse=True)
def _no_cluster_in_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)


def _data():
    x = np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3) / 10.0
    return x, x.sum(1, keepdims=True)


def _input_fn(params):
    return tf.data.Dataset.from_tensor_slices(_data()).batch(params["batch_size"], drop_remainder=True)


def _model_fn(features, labels, mode, params):
    predictions = tf_keras.layers.Dense(1)(features)
    loss = tf.reduce_mean(tf.square(predictions - labels))
    if mode == tpu_nb.ModeKeys.TRAIN:
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.001))
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                       train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))

    def metric_fn(labels, predictions):
        if not (labels.shape.is_fully_defined() and predictions.shape.is_fully_defined()):
            raise ValueError(f"metric_fn got unknown shapes {labels.shape}, {predictions.shape}")
        # As UNet-3D: an op whose output type needs the static size.
        count = tf.size(labels, out_type=tf.float32)
        return {"label_mean": tf.compat.v1.metrics.mean(labels),
                "rows": tf.compat.v1.metrics.mean(count),
                "error": tf.compat.v1.metrics.mean_absolute_error(labels, predictions)}

    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, predictions]))


@pytest.mark.parametrize("cores", [1, 2])
def test_whole_batches_reach_metric_fn_with_static_shapes_and_padding_steps_do_not_count(tmp_path, cores):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=cores),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4))
    est = tpu_nb.TPUEstimator(_model_fn, config=config, train_batch_size=4, eval_batch_size=4)
    est.train(_input_fn, max_steps=2)
    result = est.evaluate(_input_fn, steps=None)  # to the end of the input: one all-padding step follows
    _, labels = _data()
    assert result["label_mean"] == pytest.approx(labels.mean(), rel=1e-6)  # every row once, no padding
    assert result["rows"] == 4.0  # the global batch, as metric_fn saw it each step

    one = tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=4, eval_batch_size=4)
    expected = one.evaluate(_input_fn, steps=None)
    assert result["error"] == pytest.approx(expected["error"], rel=1e-5)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
