"""tpu_nb.Estimator: the plain tf.estimator.Estimator that programs choose when not on a TPU.

The common pattern is ``TPUEstimator(...) if FLAGS.use_tpu else tf.estimator.Estimator(...)`` over one
model_fn that returns a TPUEstimatorSpec or an EstimatorSpec; the plain side must train, evaluate,
predict, export and warm-start from what the TPU side wrote.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from model_zoo import make_data

FEATURES = 20


def _model_fn_for(use_tpu, extra_value=0.0):
    def model_fn(features, labels, mode, params):
        tf.compat.v1.get_variable("extra", initializer=extra_value)
        logits = tf_keras.layers.Dense(5, name="logits")(features)
        if mode == tpu_nb.ModeKeys.PREDICT:
            predictions = {"class_ids": tf.argmax(logits, 1)}
            spec_cls = tpu_nb.TPUEstimatorSpec if use_tpu else tpu_nb.EstimatorSpec
            return spec_cls(mode, predictions=predictions,
                            export_outputs={"classify": tpu_nb.PredictOutput(predictions)})
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
        if use_tpu:
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
            return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                           train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))
        metrics = {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}
        return tpu_nb.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics,
                                    train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))

    return model_fn


def _input_fn(params):
    # A plain Estimator passes no batch size: the input_fn picks its own, as tf.estimator programs do.
    assert "batch_size" not in params or params["batch_size"] == 16
    x, y = make_data(128)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params.get("batch_size", 16), drop_remainder=True)


def _receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.TensorServingInputReceiver(x, {"x": x})


def test_plain_estimator_trains_evaluates_predicts_and_exports(tmp_path):
    est = tpu_nb.Estimator(_model_fn_for(use_tpu=False), model_dir=str(tmp_path / "plain"), params={})
    est.train(_input_fn, steps=20)
    results = est.evaluate(lambda params: _input_fn(params).take(4))
    assert results["global_step"] == 20 and results["accuracy"] > 0.5
    x, _ = make_data(10, seed=3)
    predictions = list(est.predict(lambda params: tf.data.Dataset.from_tensor_slices(x).batch(4)))
    assert len(predictions) == 10 and set(predictions[0]) == {"class_ids"}
    path = est.export_saved_model(str(tmp_path / "export"), _receiver_fn)
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fsdecode(path), "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    assert [sorted(mg.meta_info_def.tags) for mg in saved.meta_graphs] == [["serve"]]


def test_plain_estimator_warm_starts_from_a_sharded_tpu_estimator(tmp_path):
    tpu = tpu_nb.TPUEstimator(_model_fn_for(use_tpu=True, extra_value=42.0), train_batch_size=16,
                              config=tpu_nb.RunConfig(model_dir=str(tmp_path / "tpu"),
                                                      cluster=tpu_nb.SimulatedTPU(num_cores=2)))
    tpu.train(_input_fn, steps=5)
    plain = tpu_nb.Estimator(_model_fn_for(use_tpu=False, extra_value=36.0), model_dir=str(tmp_path / "plain"),
                             warm_start_from=tpu.model_dir)
    plain.train(_input_fn, steps=3)
    assert plain.get_variable_value("extra") == 42.0  # from the TPU run's checkpoint, not the initializer
    np.testing.assert_raises(AssertionError, np.testing.assert_allclose,
                             plain.get_variable_value("logits/kernel"), tpu.get_variable_value("logits/kernel"))
    assert plain.get_variable_value("global_step") == 3  # warm start takes weights, not the step


def test_plain_estimator_takes_only_its_own_arguments():
    with pytest.raises(TypeError):
        tpu_nb.Estimator(_model_fn_for(use_tpu=False), use_tpu=True)


def test_plain_estimator_takes_an_input_fn_without_arguments_and_tpu_estimator_names_params(tmp_path):
    # tf.estimator.Estimator called input_fn() when it took no arguments; many plain programs write it so.
    def input_fn():
        x, y = make_data(64)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)

    est = tpu_nb.Estimator(_model_fn_for(use_tpu=False), model_dir=str(tmp_path / "plain"))
    est.train(input_fn, steps=2)
    assert est.evaluate(lambda mode: input_fn().take(2))["global_step"] == 2
    with pytest.raises(ValueError, match="must take an argument named 'params'"):
        tpu_nb.TPUEstimator(_model_fn_for(use_tpu=False), model_dir=str(tmp_path / "tpu"), use_tpu=False,
                            train_batch_size=16).train(input_fn, steps=1)


def test_a_model_fn_without_params_runs_as_tf_estimator_ran_it(tmp_path):
    def model_fn(features, labels, mode):  # the three-argument form tf.estimator.Estimator accepted
        logits = tf_keras.layers.Dense(5, name="logits")(features)
        if mode == tpu_nb.ModeKeys.PREDICT:
            return tpu_nb.EstimatorSpec(mode, predictions={"class_ids": tf.argmax(logits, 1)})
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, tf.compat.v1.train.get_global_step())
        return tpu_nb.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                    eval_metric_ops={"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))})

    def input_fn():
        x, y = make_data(128)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16, drop_remainder=True)

    est = tpu_nb.Estimator(model_fn, model_dir=str(tmp_path))
    est.train(input_fn, steps=20)
    assert est.evaluate(lambda: input_fn().take(4))["global_step"] == 20
    first = next(est.predict(lambda: input_fn().map(lambda x, y: x).take(1)))
    assert first["class_ids"].shape == ()
    # As the original: params given to a model_fn that cannot take them is a mistake, named.
    with pytest.raises(ValueError, match="does not include params"):
        tpu_nb.Estimator(model_fn, model_dir=str(tmp_path / "other"), params={"lr": 0.1})
    # TPUEstimator passes the batch size in params, so it still needs them.
    with pytest.raises(ValueError, match="params\\['batch_size'\\]"):
        tpu_nb.TPUEstimator(model_fn, model_dir=str(tmp_path / "tpu"), use_tpu=False,
                            train_batch_size=16).train(lambda params: input_fn(), steps=1)
