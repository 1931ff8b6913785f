"""One task of a distributed train_and_evaluate job (started by tests/test_train_and_evaluate_job.py).

argv: task ("worker:0", "worker:1" or "evaluator"), comma-separated worker ports, model_dir, max_steps.
Every task runs this same program with its own TF_CONFIG, as distributed Estimator jobs do. The chief
(worker 0) waits after each checkpoint until the evaluator has evaluated it, so that the test sees
evaluations of checkpoints written while training still goes on, whatever the machine's speed.
Prints one JSON line: the metrics and exports train_and_evaluate returned, and the evaluated steps.
"""

import glob
import json
import os
import sys
import time

task, ports, model_dir, max_steps = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
kind, _, index = task.partition(":")
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                      "task": {"type": kind, "index": int(index or 0)}})
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

if os.environ.get("TPU_NB_TEST_BEHAVIOR") == "tf1":
    tf.compat.v1.disable_v2_behavior()

import tf_keras  # noqa: E402

import tpu_nb  # noqa: E402
from model_zoo import CLASSES, FEATURES, eval_input_fn, train_input_fn  # noqa: E402

CHECKPOINT_EVERY = 5


def model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES, name="logits",
                                   kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(features)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(
            lambda labels, logits: {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))},
            [labels, logits]))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def serving_input_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.TensorServingInputReceiver(x, {"x": x})


def evaluated_steps():
    steps = []
    for path in glob.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*")):
        try:
            steps += [e.step for e in tf.compat.v1.train.summary_iterator(path)
                      if any(v.tag == "loss" for v in e.summary.value)]
        except tf.errors.DataLossError:  # a record the evaluator is writing right now
            pass
    return sorted(set(steps))


class WaitForTheEvaluator(tf.compat.v1.train.CheckpointSaverListener):
    """The chief's test harness: go on training only once the evaluator has evaluated this checkpoint."""

    def after_save(self, session, global_step_value):
        if 0 < global_step_value < max_steps:
            deadline = time.monotonic() + 240
            while global_step_value not in evaluated_steps():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the evaluator did not evaluate step {global_step_value} in 240 s")
                time.sleep(0.2)


config = tpu_nb.RunConfig(model_dir=model_dir, save_checkpoints_steps=CHECKPOINT_EVERY,
                          cluster=tpu_nb.MultiWorker(operation_timeout_secs=300),
                          tpu_config=tpu_nb.TPUConfig(iterations_per_loop=CHECKPOINT_EVERY))
est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16, eval_batch_size=16)
listeners = [WaitForTheEvaluator()] if task == "worker:0" else []
metrics, exports = tpu_nb.train_and_evaluate(
    est, tpu_nb.TrainSpec(train_input_fn, max_steps=max_steps, saving_listeners=listeners),
    tpu_nb.EvalSpec(eval_input_fn, steps=2, start_delay_secs=0, throttle_secs=0,
                    exporters=tpu_nb.LatestExporter("latest", serving_input_fn, exports_to_keep=2)))
print(json.dumps({"task": task, "evaluated_steps": evaluated_steps(),
                  "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                  "exports": [os.path.basename(os.fsdecode(e)) if e else None for e in exports]}), flush=True)
