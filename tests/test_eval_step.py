"""evaluate() keeps TensorFlow's eval step counter as Estimator evaluation did, for hooks that read it."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.training import evaluation as tf_evaluation

import tpu_nb
from model_zoo import estimator, make_data, model_fn, train_input_fn


class _EvalStepReader(tf.compat.v1.train.SessionRunHook):
    """Reads the eval step after every session run; ``create_in_begin`` gets it the way hooks in the wild do."""

    def __init__(self, create_in_begin=False):
        self.create_in_begin = create_in_begin
        self.values = []
        self.variable = None

    def begin(self):
        if self.create_in_begin:
            self.variable = tf_evaluation._get_or_create_eval_step()  # noqa: SLF001 - what user hooks call
        else:
            (self.variable,) = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.EVAL_STEP)

    def after_run(self, run_context, run_values):
        self.values.append(int(run_context.session.run(self.variable)))


def _eval_input_fn(n):
    def input_fn(params):
        x, y = make_data(n, seed=1)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])

    return input_fn


def _sharded(tmp_path, ipl):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(2, 1),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl))
    return tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16, eval_batch_size=16)


@pytest.mark.parametrize("create_in_begin", [False, True])
def test_one_device_advances_once_per_step(tmp_path, create_in_begin):
    est = estimator(tmp_path)
    est.train(train_input_fn, steps=1)
    hook = _EvalStepReader(create_in_begin)
    est.evaluate(_eval_input_fn(100), steps=3, hooks=[hook])
    assert hook.values == [1, 2, 3]
    var = hook.variable
    assert var.dtype.base_dtype == tf.int64 and var.op.name == "eval_step"
    assert any(v is var for v in var.graph.get_collection(tf.compat.v1.GraphKeys.LOCAL_VARIABLES))


@pytest.mark.parametrize("create_in_begin", [False, True])
def test_shards_run_the_given_steps_in_one_loop(tmp_path, create_in_begin):
    # As the original: evaluate(steps=N) is one device loop of N steps whatever iterations_per_loop is,
    # so hooks see a single run that advanced the eval step by N.
    est = _sharded(tmp_path, ipl=4)
    est.train(train_input_fn, steps=1)
    hook = _EvalStepReader(create_in_begin)
    est.evaluate(_eval_input_fn(160), steps=6, hooks=[hook])
    assert hook.values == [6]


def test_shards_do_not_count_the_end_of_input(tmp_path):
    # 100 rows in batches of 16: 7 steps with real rows, then the all-padding step that signals the end.
    est = _sharded(tmp_path, ipl=4)
    est.train(train_input_fn, steps=1)
    hook = _EvalStepReader()
    est.evaluate(_eval_input_fn(100), steps=None, hooks=[hook])
    assert hook.values == [4, 7]


def test_each_evaluate_starts_at_zero(tmp_path):
    est = estimator(tmp_path)
    est.train(train_input_fn, steps=1)
    for _ in range(2):
        hook = _EvalStepReader()
        est.evaluate(_eval_input_fn(32), steps=None, hooks=[hook])
        assert np.array(hook.values).tolist() == [1, 2]
