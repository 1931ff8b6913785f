"""model_fn checks as the original's: a model_fn without params; training_chief_hooks on shards."""

import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import estimator, model_fn, train_input_fn


def _sharded(tmp_path, fn):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(4, 1),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    return tpu_nb.TPUEstimator(fn, config=config, train_batch_size=16)


# ------------------------------------------------------------------ model_fn without params


def _no_params(features, labels, mode):
    raise AssertionError("must not be called")


@pytest.mark.parametrize("sharded", [False, True])
def test_model_fn_without_params_is_refused_when_called(tmp_path, sharded):
    # As the original: constructing works (no params given); every call names the missing argument.
    est = _sharded(tmp_path, _no_params) if sharded else estimator(tmp_path, fn=_no_params)
    with pytest.raises(ValueError, match=r"model_fn \(.*\) does not include params argument, TPUEstimator passes"):
        est.train(train_input_fn, steps=1)


def test_model_fn_without_params_is_refused_when_params_are_given(tmp_path):
    with pytest.raises(ValueError, match=r"does not include params argument, but params \(\{'lr': 1\}\) is passed"):
        estimator(tmp_path, fn=_no_params, params={"lr": 1})


# ------------------------------------------------------------------ training_chief_hooks


class _CountingHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self):
        self.runs = 0

    def after_run(self, run_context, run_values):
        self.runs += 1


def _with_chief_hook(hook):
    def fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        return tpu_nb.EstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op, training_chief_hooks=[hook])

    return fn


def test_training_chief_hooks_refused_on_shards(tmp_path):
    est = _sharded(tmp_path, _with_chief_hook(_CountingHook()))
    with pytest.raises(ValueError, match="training_chief_hooks returned by EstimatorSpec is not supported in "
                                         "TPUEstimator.*training_hooks"):
        est.train(train_input_fn, steps=2)


def test_training_chief_hooks_run_on_one_device(tmp_path):
    # The original checked them only in its TPU training step: off TPU an EstimatorSpec's chief hooks ran.
    hook = _CountingHook()
    estimator(tmp_path, iterations_per_loop=2, fn=_with_chief_hook(hook)).train(train_input_fn, steps=4)
    assert hook.runs == 2
