"""One worker of a multi-worker test run (started by tests/test_multi_worker.py, one process per worker).

argv: worker index, comma-separated ports, model_dir, steps, seconds to sleep per loop.
Prints one JSON line: the global step after each loop and this worker's final kernel.
"""

import json
import os
import sys
import time

index, ports, model_dir, steps, pause = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                      "task": {"type": "worker", "index": index}})
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

if os.environ.get("TPU_NB_TEST_BEHAVIOR") == "tf1":  # the suite's TF1 pass: workers start as TF1 programs do
    tf.compat.v1.disable_v2_behavior()

import tf_keras  # noqa: E402

import tpu_nb  # noqa: E402
from model_zoo import CLASSES, train_input_fn  # noqa: E402


def model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES, name="logits",
                                   kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


class Record(tf.compat.v1.train.SessionRunHook):
    def begin(self):
        self.gs = tf.compat.v1.train.get_global_step()
        self.kernel = [v for v in tf.compat.v1.global_variables() if v.name.startswith("logits/kernel")][0]
        self.steps = []

    def after_run(self, run_context, run_values):
        self.steps.append(int(run_context.session.run(self.gs)))
        print("step", self.steps[-1], flush=True)
        time.sleep(pause)

    def end(self, session):
        self.final_kernel = session.run(self.kernel).tolist()


config = tpu_nb.RunConfig(model_dir=model_dir, cluster=tpu_nb.MultiWorker(operation_timeout_secs=10),
                          save_checkpoints_steps=10, tpu_config=tpu_nb.TPUConfig(iterations_per_loop=5))
est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
record = Record()
est.train(train_input_fn, steps=steps, hooks=[record])
print(json.dumps({"worker": index, "steps": record.steps, "kernel": record.final_kernel}), flush=True)
