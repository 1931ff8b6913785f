"""Small models and inputs shared by the engine tests (kept tiny so tests stay fast)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tf_keras

import tpu_nb

FEATURES = 8
CLASSES = 3


def make_data(n=256, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, CLASSES, n).astype(np.int32)
    x = rng.randn(n, FEATURES).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y


def train_input_fn(params):
    x, y = make_data()
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def eval_input_fn(params):
    x, y = make_data(100, seed=1)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])


def predict_input_fn(params):
    x, _ = make_data(100, seed=1)
    return tf.data.Dataset.from_tensor_slices(x).batch(params["batch_size"])


def model_fn(features, labels, mode, params):
    """A linear classifier; params may carry 'nan_at_step' to poison the loss from that step on."""
    logits = tf_keras.layers.Dense(CLASSES, name="logits")(features)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"class_ids": tf.argmax(logits, 1), "logits": logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    global_step = tf.compat.v1.train.get_global_step()
    if params.get("nan_at_step") is not None:
        # The step being computed is global_step + 1.
        poisoned = tf.greater_equal(global_step + 1, params["nan_at_step"])
        loss = tf.where(poisoned, tf.constant(float("nan")), loss)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def estimator(model_dir, iterations_per_loop=4, params=None, fn=model_fn, **config_kwargs):
    config = tpu_nb.RunConfig(model_dir=str(model_dir),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=iterations_per_loop),
                              **config_kwargs)
    return tpu_nb.TPUEstimator(fn, config=config, params=params, use_tpu=False,
                               train_batch_size=16, eval_batch_size=16, predict_batch_size=16)


def checkpoint_step(model_dir):
    path = tf.train.latest_checkpoint(str(model_dir))
    return None if path is None else int(tf.train.load_variable(path, "global_step"))
