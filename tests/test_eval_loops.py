"""evaluate(steps=N) on shards: one device loop of N steps, as the original, with the host keeping up.

The host runs each step's eval_metrics (and host_call) while the loop still runs, so a long loop gives
the same numbers as one device, and a failure on either side ends the evaluation instead of hanging.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import make_data, train_input_fn

STEPS = 40
BATCH = 8


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(5, name="logits", kernel_initializer=tf_keras.initializers.GlorotUniform(3))(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.TRAIN:
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1))
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                       train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))

    def metric_fn(labels, logits):
        predictions = tf.argmax(logits, 1)
        if params.get("fail_on_host"):
            check = tf.debugging.assert_less(predictions, tf.constant(-1, tf.int64), message="host failure")
            with tf.control_dependencies([check]):
                predictions = tf.identity(predictions)
        return {"accuracy": tf.compat.v1.metrics.accuracy(labels, predictions),
                "examples": tf.compat.v1.metrics.true_positives(tf.ones_like(labels, tf.bool),
                                                                tf.ones_like(labels, tf.bool))}

    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))


def _eval_input_fn(params):
    x, y = make_data(STEPS * BATCH, seed=4)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"], drop_remainder=True)


class _RunCounter(tf.compat.v1.train.SessionRunHook):
    runs = 0

    def before_run(self, run_context):
        self.runs += 1


def _estimator(model_dir, shards, params=None):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(model_dir), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=3))
    return tpu_nb.TPUEstimator(_model_fn, config=config, use_tpu=bool(shards), params=params or {},
                               train_batch_size=BATCH, eval_batch_size=BATCH)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("trained")
    _estimator(model_dir, 2).train(train_input_fn, steps=6)
    return model_dir


def test_steps_are_one_loop_and_match_one_device(trained):
    counter = _RunCounter()
    sharded = _estimator(trained, 2).evaluate(_eval_input_fn, steps=STEPS, hooks=[counter])
    assert counter.runs == 1  # iterations_per_loop=3 does not split it, as on the original
    single = _estimator(trained, 0).evaluate(_eval_input_fn, steps=STEPS)
    assert sharded["accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)
    assert sharded["loss"] == pytest.approx(single["loss"], rel=1e-4, abs=1e-6)
    assert sharded["examples"] == STEPS * BATCH  # every step's metric update ran once


def test_input_shorter_than_steps_ends_the_loop(trained):
    counter = _RunCounter()
    result = _estimator(trained, 2).evaluate(_eval_input_fn, steps=STEPS + 25, hooks=[counter])
    single = _estimator(trained, 0).evaluate(_eval_input_fn, steps=None)
    assert counter.runs == 1
    assert result["accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)


def test_a_host_side_failure_ends_the_evaluation(trained):
    est = _estimator(trained, 2, params={"fail_on_host": True})
    with pytest.raises(tf.errors.InvalidArgumentError, match="host failure"):
        est.evaluate(_eval_input_fn, steps=STEPS)


def test_the_host_runs_entries_while_the_loop_runs():
    # Step i of this loop waits for the host to have run step i-1's entry: it can only finish if the
    # host drains concurrently (a drain after the loop would deadlock; the timeout turns that into an error).
    from tpu_nb.backends.host_calls import ConcurrentDrain, HostCallQueue

    graph = tf.Graph()
    with graph.as_default():
        total = tf.compat.v1.get_variable("total", initializer=0.0, use_resource=True)
        with tf.init_scope():
            acks = tf.queue.FIFOQueue(1000, [tf.int32], shapes=[[]])

        def host_fn(value):
            with tf.control_dependencies([total.assign_add(value)]):
                return acks.enqueue(tf.constant(1))

        built = {}

        def body(i):
            built["queue"] = HostCallQueue(host_fn, [tf.cast(i, tf.float32)])
            waited = tf.cond(i > 0, lambda: acks.dequeue(), lambda: tf.constant(0))
            with tf.control_dependencies([waited]):
                enqueue = built["queue"].enqueue(tf.cast(i, tf.int64))
            with tf.control_dependencies([enqueue]):
                return i + 1

        loop = tf.while_loop(lambda i: i < 50, body, [tf.constant(0)], parallel_iterations=1)
        queue = built["queue"]
        queue.build_host_side()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            drain = ConcurrentDrain(queue, session)
            try:
                session.run(loop, options=tf.compat.v1.RunOptions(timeout_in_ms=60_000))
            except BaseException:
                drain.abort()
                raise
            assert drain.finish() == 50
            assert session.run(total) == pytest.approx(sum(range(50)))
            assert session.run(queue.size) == 0
