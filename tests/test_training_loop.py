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


def test_input_fn_returning_tensors_runs_one_step_per_loop(tmp_path):
    x, y = make_data(16)

    def tensor_input_fn(params):
        return tf.constant(x), tf.constant(y)

    hook = _LoopSizes()
    estimator(tmp_path, iterations_per_loop=4).train(tensor_input_fn, steps=3, hooks=[hook])
    assert hook.steps == [1, 2, 3]
