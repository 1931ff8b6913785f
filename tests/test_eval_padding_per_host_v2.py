"""Evaluation on shards to the end of an input of whole batches, where the last step is only partly real.

In PER_HOST_V2 every shard takes its own element of the host's dataset, so when the elements run out
mid-step some shards get real rows and the rest padding. Those padding rows must never reach
metric_fn as data: the metrics are those of one device over the same rows.
"""

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb

ROWS = 22  # 11 elements of 2 rows: on 2 shards the 6th step is half real, on 8 the 2nd is 3/8 real
PER_SHARD = 2


@pytest.fixture(autouse=True)
def _no_cluster_in_env(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)


def _data():
    x = np.linspace(0.5, 3.0, ROWS * 2, dtype=np.float32).reshape(ROWS, 2)
    return x, (x[:, :1] * 2.0 + 1.0)


def _input_fn(params):
    return tf.data.Dataset.from_tensor_slices(_data()).batch(params["batch_size"], drop_remainder=True)


def _model_fn(features, labels, mode, params):
    w = tf.compat.v1.get_variable("w", [2, 1], initializer=tf.compat.v1.constant_initializer(0.25))
    predictions = tf.matmul(features, w)
    loss = tf.reduce_mean(tf.square(predictions - labels))

    def metric_fn(labels, predictions):
        return {"label_mean": tf.compat.v1.metrics.mean(labels),
                "label_min": tf.compat.v1.metrics.mean(tf.reduce_min(labels)),
                "error": tf.compat.v1.metrics.mean_absolute_error(labels, predictions)}

    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, predictions]))


@pytest.mark.parametrize("cores", [2, 8])
def test_padding_shards_of_a_partly_real_last_step_are_not_metric_data(tmp_path, cores):
    config = tpu_nb.RunConfig(
        model_dir=str(tmp_path / "shards"), cluster=tpu_nb.SimulatedTPU(num_cores=cores),
        tpu_config=tpu_nb.TPUConfig(per_host_input_for_training=tpu_nb.InputPipelineConfig.PER_HOST_V2))
    sharded = tpu_nb.TPUEstimator(_model_fn, config=config, train_batch_size=PER_SHARD * cores,
                                  eval_batch_size=PER_SHARD * cores)
    one = tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path / "one")),
                              use_tpu=False, eval_batch_size=PER_SHARD)
    # No training: both evaluate the same initial weights (no checkpoint needed for an explicit path).
    ckpt = _checkpoint(tmp_path)
    got = sharded.evaluate(_input_fn, checkpoint_path=ckpt)
    want = one.evaluate(_input_fn, checkpoint_path=ckpt)

    _, labels = _data()
    assert got["label_mean"] == pytest.approx(labels.mean(), rel=1e-5)  # each real row once, no zeros
    assert got["label_min"] > 1.0  # a padding row's label (0) never reached metric_fn
    assert got["error"] == pytest.approx(want["error"], rel=1e-5)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def _checkpoint(tmp_path):
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("w", [2, 1], initializer=tf.compat.v1.constant_initializer(0.25))
        tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(sess, str(tmp_path / "init" / "model.ckpt"), global_step=0)


def test_given_steps_that_run_past_the_end_mid_step_are_an_error_not_padding_counted(tmp_path):
    config = tpu_nb.RunConfig(
        model_dir=str(tmp_path / "shards"), cluster=tpu_nb.SimulatedTPU(num_cores=8),
        tpu_config=tpu_nb.TPUConfig(per_host_input_for_training=tpu_nb.InputPipelineConfig.PER_HOST_V2))
    sharded = tpu_nb.TPUEstimator(_model_fn, config=config, train_batch_size=16, eval_batch_size=16)
    ckpt = _checkpoint(tmp_path)
    # steps=1: whole, as the original evaluated a given number of steps (static shapes reach metric_fn).
    _, labels = _data()
    assert sharded.evaluate(_input_fn, steps=1, checkpoint_path=ckpt)["label_mean"] == pytest.approx(
        labels[:16].mean(), rel=1e-5)
    # steps=2: the 11 elements end in step 2 with 3 of 8 shards real.
    with pytest.raises(tf.errors.InvalidArgumentError, match="ended in the middle of a step"):
        sharded.evaluate(_input_fn, steps=2, checkpoint_path=ckpt)
