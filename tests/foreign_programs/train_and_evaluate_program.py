"""train_and_evaluate as reference programs call it, written for TF <= 2.15 + tensorflow-estimator.

Runs unchanged on the original (``python train_and_evaluate_program.py``) and on tpu_nb
(``python -m tpu_nb run train_and_evaluate_program.py``); prints one JSON line: the evaluated steps
(from the evaluation event files), the exports each exporter kept, and the last evaluation's metrics.
"""

import glob
import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.compat.v1 import estimator as tf_estimator

FEATURES = 6


def make_data(seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(256, FEATURES)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)


def model_fn(features, labels, mode, params):
    w = tf.get_variable("w", [FEATURES, 2], initializer=tf.zeros_initializer())
    b = tf.get_variable("b", [2], initializer=tf.zeros_initializer())
    logits = tf.matmul(features["x"], w) + b
    if mode == tf_estimator.ModeKeys.PREDICT:
        return tf_estimator.tpu.TPUEstimatorSpec(mode, predictions={"logits": logits})
    loss = tf.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)
    if mode == tf_estimator.ModeKeys.EVAL:
        return tf_estimator.tpu.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(
            lambda labels, logits: {"accuracy": tf.metrics.accuracy(labels, tf.argmax(logits, 1))},
            [labels, logits]))
    train_op = tf.train.GradientDescentOptimizer(0.2).minimize(loss, tf.train.get_global_step(), var_list=[w, b])
    return tf_estimator.tpu.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def input_fn(seed):
    def fn(params):
        x, y = make_data(seed)
        ds = tf.data.Dataset.from_tensor_slices(({"x": x}, y))
        return ds.repeat().batch(params["batch_size"], drop_remainder=True)
    return fn


def serving_input_fn():
    x = tf.placeholder(tf.float32, [None, FEATURES], name="x")
    return tf_estimator.export.ServingInputReceiver({"x": x}, {"x": x})


def higher_accuracy(best_eval_result, current_eval_result):
    return current_eval_result["accuracy"] > best_eval_result["accuracy"]


def main(model_dir, max_steps):
    config = tf_estimator.tpu.RunConfig(model_dir=model_dir, save_checkpoints_steps=4, tf_random_seed=1,
                                        tpu_config=tf_estimator.tpu.TPUConfig(iterations_per_loop=2))
    estimator = tf_estimator.tpu.TPUEstimator(model_fn, config=config, use_tpu=False, train_batch_size=16,
                                              eval_batch_size=16)
    exporters = [tf_estimator.LatestExporter("latest", serving_input_fn, exports_to_keep=2),
                 tf_estimator.BestExporter("best", serving_input_fn, compare_fn=higher_accuracy),
                 tf_estimator.FinalExporter("final", serving_input_fn)]
    metrics, exports = tf_estimator.train_and_evaluate(
        estimator, tf_estimator.TrainSpec(input_fn(1), max_steps=max_steps),
        tf_estimator.EvalSpec(input_fn(2), steps=4, throttle_secs=0, exporters=exporters))
    steps = []
    for path in glob.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*")):
        steps += [e.step for e in tf.train.summary_iterator(path) if any(v.tag == "loss" for v in e.summary.value)]
    kept = {e.name: len(os.listdir(os.path.join(model_dir, "export", e.name))) for e in exporters}
    print(json.dumps({"evaluated_steps": sorted(steps), "kept": kept,
                      "metrics": {k: float(v) for k, v in metrics.items()},
                      "exported": [e is not None for e in exports]}), flush=True)


if __name__ == "__main__":
    tf.disable_v2_behavior()
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12)
