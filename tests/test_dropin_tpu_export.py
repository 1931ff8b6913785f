"""tpu_estimator.export_estimator_savedmodel: a TPU serving export of a model an Estimator trained."""

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from tpu_nb.dropin.modules import stand_in_modules

FEATURES = 3


def _model_fn(features, labels, mode, params):
    w = tf.compat.v1.get_variable("w", [FEATURES, 1], initializer=tf.compat.v1.ones_initializer())
    out = tf.matmul(features["x"], w)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"y": out})
    loss = tf.reduce_mean(tf.square(out - labels))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step(), var_list=[w])
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _input_fn(params):  # tpu_nb.Estimator, like TPUEstimator, calls input_fn(params)
    x = np.ones([8, FEATURES], np.float32)
    return tf.data.Dataset.from_tensor_slices(({"x": x}, np.ones([8, 1], np.float32))).repeat().batch(4)


def _receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


def test_an_estimators_model_is_exported_with_the_tpu_metagraph(tmp_path):
    estimator = tpu_nb.Estimator(_model_fn, model_dir=str(tmp_path / "model"))
    estimator.train(_input_fn, steps=2)
    tpu_estimator = stand_in_modules()["tensorflow_estimator.python.estimator.tpu.tpu_estimator"]
    export_dir = tpu_estimator.export_estimator_savedmodel(estimator, str(tmp_path / "export"), _receiver_fn)
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir.decode(), "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    assert sorted(sorted(m.meta_info_def.tags) for m in saved.meta_graphs) == [["serve"], ["serve", "tpu"]]
