"""The device loop: time-budget loops, the event stream, tensors-only input_fns."""

import numpy as np
import tensorflow as tf

import tpu_nb
from model_zoo import checkpoint_step, estimator, make_data, model_fn, train_input_fn


class _LoopSizes(tf.compat.v1.train.SessionRunHook):
    def begin(self):
        self._gs = tf.compat.v1.train.get_global_step()
        self.steps = []

    def after_run(self, run_context, run_values):
        self.steps.append(int(run_context.session.run(self._gs)))


def test_time_budget_loops_grow_to_fill_the_budget(tmp_path):
    hook = _LoopSizes()
    estimator(tmp_path, iterations_per_loop="1s").train(train_input_fn, steps=3000, hooks=[hook])
    sizes = np.diff([0] + hook.steps)
    assert sizes[0] == 1  # the first loop only measures (and compiles)
    assert sizes.max() > 50  # then loops grow towards a second's worth of steps
    assert all(b <= a * 10 for a, b in zip(sizes, sizes[1:]))  # by at most 10x per loop
    assert hook.steps[-1] == 3000


def test_event_stream_reports_the_run(tmp_path):
    seen = []
    with tpu_nb.events.subscribed(seen.append):
        estimator(tmp_path, iterations_per_loop=5).train(train_input_fn, steps=12)
        result = estimator(tmp_path).evaluate(
            lambda params: tf.data.Dataset.from_tensor_slices(make_data(32)).batch(params["batch_size"]))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "RunStarted"
    started = seen[0]
    assert (started.backend, started.num_shards, started.start_step, started.target_step) == ("CPU", 1, 0, 12)
    loops = [e for e in seen if isinstance(e, tpu_nb.events.LoopFinished)]
    assert [e.global_step for e in loops] == [5, 10, 12]
    assert all(np.isfinite(e.loss) for e in loops)
    assert [e.global_step for e in seen if isinstance(e, tpu_nb.events.CheckpointSaved)] == [0, 12]
    assert "RunFinished" in kinds
    evals = [e for e in seen if isinstance(e, tpu_nb.events.EvalFinished)]
    assert evals[0].results["loss"] == result["loss"]


def test_failing_subscriber_does_not_break_training(tmp_path):
    def broken(event):
        raise RuntimeError("dashboard bug")

    with tpu_nb.events.subscribed(broken):
        estimator(tmp_path).train(train_input_fn, steps=4)
    assert checkpoint_step(tmp_path) == 4


def test_host_call_values_are_published_per_step(tmp_path):
    def fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        step = tf.compat.v1.train.get_global_step()
        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op,
                                       host_call=(lambda gs, loss: [], [step, spec.loss]))

    values = []
    with tpu_nb.events.subscribed(lambda e: isinstance(e, tpu_nb.events.HostCallBatch) and values.extend(e.records())):
        estimator(tmp_path, iterations_per_loop=4, fn=fn).train(train_input_fn, steps=10)
    assert [v.global_step for v in values] == list(range(1, 11))
    # A global-step read inside model_fn has no fixed order against the step's own update.
    assert all(int(v.values["gs"]) in (v.global_step - 1, v.global_step) for v in values)
    assert all(np.isfinite(v.values["loss"]) for v in values)


def test_input_fn_returning_iterator_tensors_keeps_iterations_per_loop_and_reads_every_batch(tmp_path):
    # The old-style input_fn: tensors from an iterator's get_next(). Each step must see the next batch
    # (not the loop's first one again), with iterations_per_loop steps per session run.
    def tensor_input_fn(params):
        batches = tf.data.Dataset.range(1, 1000).map(lambda i: tf.fill([params["batch_size"], 1], tf.cast(i, tf.float32)))
        return {"x": tf.compat.v1.data.make_one_shot_iterator(batches).get_next()}

    seen = []

    def fn(features, labels, mode, params):
        w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.zeros_initializer())
        step = tf.compat.v1.train.get_global_step()
        loss = tf.reduce_mean(features["x"]) + 0.0 * w
        train_op = tf.group(step.assign_add(1), w.assign(tf.reduce_mean(features["x"])))
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op,
                                       host_call=(lambda x: [tf.compat.v1.py_func(lambda v: seen.append(float(v[0])) or 0,
                                                                               [x], tf.int64)],
                                                  [tf.reshape(tf.reduce_mean(features["x"]), [1])]))

    hook = _LoopSizes()
    est = estimator(tmp_path, iterations_per_loop=4, fn=fn)
    est.train(tensor_input_fn, steps=10, hooks=[hook])
    assert hook.steps == [4, 8, 10]
    assert seen == [float(i) for i in range(1, 11)]
    assert est.get_variable_value("w") == 10.0


def test_input_fn_returning_tensors_that_end_stops_training_at_the_last_batch(tmp_path):
    x, y = make_data(48)

    def tensor_input_fn(params):
        batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"], drop_remainder=True)
        return tf.compat.v1.data.make_one_shot_iterator(batches).get_next()

    est = estimator(tmp_path, iterations_per_loop=2)
    est.train(tensor_input_fn, steps=100)
    assert checkpoint_step(tmp_path) == 3  # 48 examples, batch 16


def test_model_fn_ignoring_its_tensor_features_does_not_hang(tmp_path):
    x, y = make_data(16)

    def tensor_input_fn(params):
        return tf.constant(x), tf.constant(y)

    def fn(features, labels, mode, params):
        w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.ones_initializer())
        loss = tf.square(w)
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    estimator(tmp_path, iterations_per_loop=4, fn=fn).train(tensor_input_fn, steps=10)
    assert checkpoint_step(tmp_path) == 10
