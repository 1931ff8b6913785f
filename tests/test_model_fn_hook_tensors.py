"""Training hooks built in model_fn that fetch model_fn's own tensors, on one device.

The original ran ``use_tpu=False`` (and the plain Estimator) one step per ``Session.run``, so a hook a
model_fn returned in ``EstimatorSpec(training_hooks=...)`` could fetch that step's tensors, e.g.
tensorflow/tpu's UNet-3D: ``LoggingTensorHook({'loss': loss}, every_n_iter=10)``. tpu_nb runs the steps
inside a device loop and the hooks between loops; such a hook must still get its tensor, with the
value of the loop's last step, instead of failing on a tensor the session cannot fetch.
"""

import numpy as np
import tensorflow as tf
import tf_keras

import tpu_nb


class _Fetches(tf.compat.v1.train.SessionRunHook):
    """Fetches a model_fn tensor (given as the object) at every hook call and records its values."""

    def __init__(self, tensor):
        self.tensor = tensor
        self.values = []

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs({"value": self.tensor})

    def after_run(self, run_context, run_values):
        self.values.append(float(run_values.results["value"]))


def _input_fn(params):
    # Example i carries the value i, so the tensor a hook sees names the step it came from.
    rows = np.arange(24, dtype=np.float32).reshape(24, 1)
    return tf.data.Dataset.from_tensor_slices((rows, rows)).batch(params["batch_size"], drop_remainder=True)


def _train(tmp_path, estimator_class, hooks_seen, **kwargs):
    def model_fn(features, labels, mode, params):
        loss = tf.reduce_mean(tf.square(tf_keras.layers.Dense(1)(features) - labels))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(
            loss, tf.compat.v1.train.get_global_step())
        with tf.control_dependencies([train_op]):
            loss = tf.identity(loss)  # UNet-3D's idiom: the loss after the update ops
        seen = tf.reduce_sum(features)  # the example of this step
        recorder = _Fetches(seen)
        hooks_seen.append(recorder)
        hooks = [tf.compat.v1.train.LoggingTensorHook({"loss": loss}, every_n_iter=1), recorder,
                 tf.compat.v1.train.NanTensorHook(loss)]
        return tpu_nb.EstimatorSpec(mode=mode, loss=loss, train_op=train_op, training_hooks=hooks)

    est = estimator_class(model_fn=model_fn, model_dir=str(tmp_path), **kwargs)
    est.train(_input_fn, max_steps=6)
    return est


def test_tpu_estimator_use_tpu_false_hooks_get_the_last_step_of_each_loop(tmp_path):
    hooks_seen = []
    config = tpu_nb.RunConfig(tpu_config=tpu_nb.TPUConfig(iterations_per_loop=3))
    _train(tmp_path, tpu_nb.TPUEstimator, hooks_seen, use_tpu=False, train_batch_size=1, config=config)
    # Two loops of 3 steps: rows 0-2, then 3-5; the hook runs after each with the loop's last step.
    assert hooks_seen[-1].values == [2.0, 5.0]
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-6")


def test_plain_estimator_hooks_fetch_model_fn_tensors(tmp_path):
    hooks_seen = []

    def input_fn():
        rows = np.arange(24, dtype=np.float32).reshape(24, 1)
        return tf.data.Dataset.from_tensor_slices((rows, rows)).batch(2, drop_remainder=True)

    def model_fn(features, labels, mode, params):
        loss = tf.reduce_mean(tf.square(tf_keras.layers.Dense(1)(features) - labels))
        train_op = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss, tf.compat.v1.train.get_global_step())
        recorder = _Fetches(tf.reduce_max(features))
        hooks_seen.append(recorder)
        return tpu_nb.EstimatorSpec(mode=mode, loss=loss, train_op=train_op, training_hooks=[recorder])

    tpu_nb.Estimator(model_fn=model_fn, model_dir=str(tmp_path)).train(input_fn, max_steps=4)
    values = hooks_seen[-1].values
    # Whatever the loop size, each value is the largest row of the last batch the hook's loop ran:
    # batches are (0, 1), (2, 3), ..., so it is odd, and the last one is step 4's batch (6, 7).
    assert values and all(v % 2 == 1 for v in values) and values[-1] == 7.0
