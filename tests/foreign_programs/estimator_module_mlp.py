"""A TPUEstimator program in the style of tensorflow/tpu's reference models, for the zero-change runner.

It imports the estimator *module* (``from tensorflow.compat.v1 import estimator as tf_estimator``) and
uses ``tf.estimator...`` after ``import tensorflow.compat.v1 as tf`` and a ``tensorflow_estimator``
module path, builds its model with ``tf.layers`` (Keras 2), and so runs on TensorFlow >= 2.16 only
through ``python -m tpu_nb run``. Prints one JSON line with what it measured.

    python -m tpu_nb run estimator_module_mlp.py --model_dir /tmp/m --use_tpu=False
    python -m tpu_nb run --simulate 8 estimator_module_mlp.py --model_dir /tmp/m8
"""

import json
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.compat.v1 import estimator as tf_estimator
from tensorflow_estimator.python.estimator.tpu import tpu_config

flags.DEFINE_string("model_dir", None, "Where checkpoints and the export go.")
flags.DEFINE_bool("use_tpu", True, "Run on the TPU (simulated shards under tpu_nb).")
flags.DEFINE_integer("train_steps", 6, "Training steps.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_integer("iterations", 2, "Steps per TPU loop.")
flags.DEFINE_string("behavior", "tf1", "tf1: disable_v2_behavior() first, as Cloud TPU programs did; tf2: not.")
FLAGS = flags.FLAGS

FEATURES, CLASSES, EXAMPLES = 20, 4, 512


def make_data():
    rng = np.random.RandomState(7)
    means = rng.normal(0, 1, (CLASSES, FEATURES)).astype(np.float32)
    y = rng.randint(0, CLASSES, EXAMPLES).astype(np.int32)
    x = (means[y] + rng.normal(0, 1, (EXAMPLES, FEATURES))).astype(np.float32)
    return x, y


class CountingHook(tf_estimator.SessionRunHook):
    """A hook from the estimator namespace, as programs subclass it."""

    ends = 0

    def end(self, session):
        CountingHook.ends += 1


def model_fn(features, labels, mode, params):
    # Seeded initializers: under TF2 behaviour Keras 2 does not derive them from tf_random_seed.
    hidden = tf.layers.Dense(16, activation=tf.nn.relu, name="hidden",
                             kernel_initializer=tf.glorot_uniform_initializer(seed=1))(features["x"])
    logits = tf.layers.Dense(CLASSES, name="logits", kernel_initializer=tf.glorot_uniform_initializer(seed=2))(hidden)
    if mode == tf_estimator.ModeKeys.PREDICT:
        return tf.estimator.tpu.TPUEstimatorSpec(
            mode, predictions={"classes": tf.argmax(logits, 1)},
            export_outputs={"classify": tf_estimator.export.PredictOutput({"logits": logits})})
    loss = tf.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)
    if mode == tf_estimator.ModeKeys.EVAL:
        def metric_fn(labels, logits):
            return {"accuracy": tf.metrics.accuracy(labels, tf.argmax(logits, 1))}
        return tf_estimator.tpu.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
    optimizer = tf.train.GradientDescentOptimizer(0.5)
    if params["use_tpu"]:
        optimizer = tf.tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss, global_step=tf.train.get_global_step())
    return tf_estimator.tpu.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def input_fn(params):
    x, y = make_data()
    ds = tf.data.Dataset.from_tensor_slices(({"x": x}, y))
    return ds.repeat().batch(params["batch_size"], drop_remainder=True)


def serving_input_fn():
    x = tf.placeholder(tf.float32, [None, FEATURES], name="x")
    return tf_estimator.export.ServingInputReceiver({"x": x}, {"x": x})


def main(argv):
    del argv
    config = tf_estimator.tpu.RunConfig(
        model_dir=FLAGS.model_dir, tf_random_seed=1,
        tpu_config=tpu_config.TPUConfig(
            iterations_per_loop=FLAGS.iterations,
            per_host_input_for_training=tf_estimator.tpu.InputPipelineConfig.PER_HOST_V2))
    estimator = tf_estimator.tpu.TPUEstimator(
        model_fn=model_fn, config=config, use_tpu=FLAGS.use_tpu, train_batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.batch_size, predict_batch_size=FLAGS.batch_size)
    estimator.train(input_fn, max_steps=FLAGS.train_steps, hooks=[CountingHook()])
    metrics = estimator.evaluate(input_fn, steps=4)
    predictions = list(estimator.predict(
        lambda params: tf.data.Dataset.from_tensor_slices({"x": make_data()[0][:40]}).batch(
            params["batch_size"])))
    export_dir = estimator.export_saved_model(os.path.join(FLAGS.model_dir, "export"), serving_input_fn)
    print(json.dumps({
        "loss": float(metrics["loss"]), "accuracy": float(metrics["accuracy"]),
        "global_step": int(metrics["global_step"]), "predictions": len(predictions),
        "export_dir": export_dir.decode() if isinstance(export_dir, bytes) else export_dir,
        "hook_ends": CountingHook.ends, "keras": type(tf.layers.Dense(1)).__module__.split(".")[0],
        "simulate": os.environ.get("TPU_NB_SIMULATE", ""),
    }), flush=True)


if __name__ == "__main__":
    if os.environ.get("TPU_NB_TEST_BEHAVIOR", "tf1") == "tf1":
        tf.disable_v2_behavior()
    app.run(main)
