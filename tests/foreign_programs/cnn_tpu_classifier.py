"""A CNN image classifier written the way Cloud TPU's TPUEstimator examples were (TF 1.x style).

It is a program of the original's users, not of tpu_nb's: TF1 behaviour, tf.compat.v1.layers,
TensorFlow's own CrossShardOptimizer when use_tpu, a decaying learning rate, BatchNorm update ops,
an ExponentialMovingAverage of the weights restored through scaffold_fn for evaluation, eval_metrics,
and a host_call writing tf.compat.v2 summaries. Only its import lines differ from the original's:

    # before:  from tensorflow.compat.v1.estimator import tpu as tpu_lib
    #          from tensorflow.compat.v1 import estimator as estimator_lib
    from tpu_nb import RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec, ModeKeys

The data are synthetic digits (a fixed template per class plus noise), so nothing is downloaded.
Prints one JSON line: the evaluation results and the number of predictions.
Run on N simulated shards with TPU_NB_SIMULATE=N and --use_tpu.
"""

import argparse
import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers, as on TF 1.x

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_v2_behavior()

from tpu_nb import ModeKeys, RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--model_dir", required=True)
parser.add_argument("--use_tpu", action="store_true")
parser.add_argument("--train_steps", type=int, default=200)
parser.add_argument("--iterations_per_loop", type=int, default=20)
parser.add_argument("--train_batch_size", type=int, default=128)
parser.add_argument("--eval_batch_size", type=int, default=128)
parser.add_argument("--learning_rate", type=float, default=0.05)
parser.add_argument("--batch_norm", action="store_true")
parser.add_argument("--dropout", type=float, default=0.0)
parser.add_argument("--moving_average_decay", type=float, default=0.9)
parser.add_argument("--predict", action="store_true")
FLAGS = parser.parse_args()

NUM_CLASSES = 10
IMAGE = 28


def make_digits(num, seed):
    templates = np.random.RandomState(1234).rand(NUM_CLASSES, IMAGE, IMAGE).astype(np.float32)
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, NUM_CLASSES, num).astype(np.int32)
    images = 0.5 * templates[labels] + rng.rand(num, IMAGE, IMAGE).astype(np.float32)
    return images[..., None], labels


def train_input_fn(params):
    batch_size = params["batch_size"]
    images, labels = make_digits(4096, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)
    return dataset.prefetch(2)


def eval_input_fn(params):
    images, labels = make_digits(1024, seed=2)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return dataset.batch(params["batch_size"], drop_remainder=True)


def predict_input_fn(params):
    images, _ = make_digits(1000, seed=3)
    return tf.data.Dataset.from_tensor_slices(images).batch(params["batch_size"])


def cnn(images, training):
    x = tf.compat.v1.layers.conv2d(images, 16, 5, padding="same", name="conv1",
                                   kernel_initializer=tf.compat.v1.glorot_uniform_initializer(seed=11))
    if FLAGS.batch_norm:
        x = tf.compat.v1.layers.batch_normalization(x, momentum=0.9, training=training, name="bn1")
    x = tf.nn.relu(x)
    x = tf.compat.v1.layers.max_pooling2d(x, 2, 2)
    x = tf.compat.v1.layers.conv2d(x, 32, 5, padding="same", activation=tf.nn.relu, name="conv2",
                                   kernel_initializer=tf.compat.v1.glorot_uniform_initializer(seed=12))
    x = tf.compat.v1.layers.max_pooling2d(x, 2, 2)
    x = tf.compat.v1.layers.flatten(x)
    x = tf.compat.v1.layers.dense(x, 128, activation=tf.nn.relu, name="fc1",
                                  kernel_initializer=tf.compat.v1.glorot_uniform_initializer(seed=13))
    if FLAGS.dropout:
        x = tf.compat.v1.layers.dropout(x, FLAGS.dropout, training=training)
    return tf.compat.v1.layers.dense(x, NUM_CLASSES, name="logits",
                                     kernel_initializer=tf.compat.v1.glorot_uniform_initializer(seed=14))


def model_fn(features, labels, mode, params):
    training = mode == ModeKeys.TRAIN
    logits = cnn(features, training)
    ema = tf.compat.v1.train.ExponentialMovingAverage(FLAGS.moving_average_decay)

    if mode == ModeKeys.PREDICT:
        predictions = {"classes": tf.argmax(logits, axis=1), "probabilities": tf.nn.softmax(logits)}
        return TPUEstimatorSpec(mode, predictions=predictions)

    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)

    if mode == ModeKeys.TRAIN:
        global_step = tf.compat.v1.train.get_global_step()
        learning_rate = tf.compat.v1.train.exponential_decay(FLAGS.learning_rate, global_step, 100, 0.9)
        optimizer = tf.compat.v1.train.MomentumOptimizer(learning_rate, 0.9)
        if FLAGS.use_tpu:
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(loss, global_step)
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(tf.compat.v1.trainable_variables())

        def host_call_fn(gs, loss, lr):
            gs = gs[0]
            with tf.compat.v2.summary.create_file_writer(FLAGS.model_dir, max_queue=100).as_default():
                with tf.compat.v2.summary.record_if(True):
                    tf.compat.v2.summary.scalar("loss", loss[0], step=gs)
                    tf.compat.v2.summary.scalar("learning_rate", lr[0], step=gs)
                    return tf.compat.v1.summary.all_v2_summary_ops()

        host_call = (host_call_fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1]),
                                    tf.reshape(learning_rate, [1])])
        return TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)

    def metric_fn(labels, logits):
        predictions = tf.argmax(logits, axis=1)
        in_top_5 = tf.cast(tf.compat.v1.nn.in_top_k(logits, labels, 5), tf.float32)
        return {"accuracy": tf.compat.v1.metrics.accuracy(labels, predictions),
                "top_5_accuracy": tf.compat.v1.metrics.mean(in_top_5)}

    def scaffold_fn():
        restore = ema.variables_to_restore()
        return tf.compat.v1.train.Scaffold(saver=tf.compat.v1.train.Saver(restore))

    return TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]), scaffold_fn=scaffold_fn)


def main():
    config = RunConfig(model_dir=FLAGS.model_dir, save_checkpoints_steps=FLAGS.iterations_per_loop * 5,
                       tf_random_seed=7, tpu_config=TPUConfig(iterations_per_loop=FLAGS.iterations_per_loop))
    estimator = TPUEstimator(model_fn=model_fn, config=config, use_tpu=FLAGS.use_tpu,
                             train_batch_size=FLAGS.train_batch_size, eval_batch_size=FLAGS.eval_batch_size,
                             predict_batch_size=FLAGS.eval_batch_size)
    estimator.train(train_input_fn, max_steps=FLAGS.train_steps)
    results = estimator.evaluate(eval_input_fn, steps=1024 // FLAGS.eval_batch_size)
    out = {k: float(v) for k, v in results.items()}
    if FLAGS.predict:
        out["predictions"] = sum(1 for _ in estimator.predict(predict_input_fn))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
