"""Validation as the original: our messages name the fix and keep the original's key phrase.

Code written against the original matches on those phrases (``assertRaisesRegex``, ``except ... if
'must be int' in str(e)``), so each test pins the phrase and that the fix is still named.
"""

import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import model_fn, predict_input_fn, train_input_fn
from tpu_nb.inputs.batching import plan_batches
from tpu_nb.contract.config import InputPipelineConfig, ModelParallelismError, NotARunConfigError


def _sharded(tmp_path, fn=model_fn, num_cores=2, **kwargs):
    tpu_config = tpu_nb.TPUConfig(iterations_per_loop=2, num_shards=kwargs.pop("num_shards", None))
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores), tpu_config=tpu_config)
    kwargs.setdefault("train_batch_size", 16)
    return tpu_nb.TPUEstimator(fn, config=config, **kwargs)


@pytest.mark.parametrize("arg", ["train_batch_size", "eval_batch_size", "predict_batch_size"])
def test_batch_size_must_be_int(arg):
    with pytest.raises(TypeError, match=f"{arg} must be int, got 1.5.*whole number"):
        tpu_nb.TPUEstimator(model_fn, use_tpu=False, **{arg: 1.5})


@pytest.mark.parametrize("arg", ["train_batch_size", "eval_batch_size", "predict_batch_size"])
def test_batch_size_must_be_positive(arg):
    with pytest.raises(ValueError, match=f"{arg} must be positive, got 0.*>= 1"):
        tpu_nb.TPUEstimator(model_fn, use_tpu=False, **{arg: 0})


def test_tpu_config_ints_use_the_same_phrases():
    with pytest.raises(TypeError, match="num_shards must be int"):
        tpu_nb.TPUConfig(num_shards=2.0)
    with pytest.raises(ValueError, match="num_shards must be positive"):
        tpu_nb.TPUConfig(num_shards=0)


def test_train_batch_size_required_with_use_tpu():
    with pytest.raises(ValueError, match="`train_batch_size` cannot be `None` when use_tpu=True.*train_batch_size="):
        tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(cluster=tpu_nb.SimulatedTPU(2)))
    # Unsharded programs may leave it out, as in the original.
    assert tpu_nb.TPUEstimator(model_fn, use_tpu=False).train_batch_size is None


def test_foreign_config_is_a_value_error_and_still_a_type_error():
    class ForeignRunConfig:
        pass

    for expected in (ValueError, TypeError, NotARunConfigError):
        with pytest.raises(expected, match=r"`config` must be provided with type `tpu_config.RunConfig`.*tpu_nb"):
            tpu_nb.TPUEstimator(model_fn, config=ForeignRunConfig(), use_tpu=False)


@pytest.mark.parametrize("tpu_config", [
    tpu_nb.TPUConfig(num_cores_per_replica=2),
    tpu_nb.TPUConfig(num_cores_per_replica=2, input_partition_dims=[[1, 2], None],
                     per_host_input_for_training=InputPipelineConfig.PER_HOST_V2),
])
def test_model_parallelism_is_refused_with_use_tpu(tpu_config):
    config = tpu_nb.RunConfig(cluster=tpu_nb.SimulatedTPU(8), tpu_config=tpu_config)
    with pytest.raises(ModelParallelismError, match="model parallelism.*does not support.*num_cores_per_replica=1"):
        tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)
    # Off TPU the setting means nothing, as in the original's CPU fallback.
    tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=False)


def test_one_core_per_replica_is_data_parallel_and_accepted():
    config = tpu_nb.RunConfig(cluster=tpu_nb.SimulatedTPU(2), tpu_config=tpu_nb.TPUConfig(num_cores_per_replica=1))
    tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16)


def test_input_partition_dims_checked_as_the_original():
    with pytest.raises(ValueError, match="one or two elements"):
        tpu_nb.TPUConfig(num_cores_per_replica=2, input_partition_dims=[],
                         per_host_input_for_training=InputPipelineConfig.PER_HOST_V2)
    with pytest.raises(ValueError, match="only supported in PER_HOST_V2 mode"):
        tpu_nb.TPUConfig(num_cores_per_replica=2, input_partition_dims=[[1, 2]])
    with pytest.raises(ValueError, match="requires setting num_cores_per_replica"):
        tpu_nb.TPUConfig(input_partition_dims=[[1, 2]], per_host_input_for_training=InputPipelineConfig.PER_HOST_V2)


@pytest.mark.parametrize("arg", ["steps", "max_steps"])
def test_must_specify_steps_above_zero(tmp_path, arg):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=16)
    with pytest.raises(ValueError, match=f"Must specify {arg} > 0, given: 0.*positive number of steps"):
        est.train(train_input_fn, **{arg: 0})


def test_must_specify_eval_steps_above_zero(tmp_path):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=16, eval_batch_size=16)
    with pytest.raises(ValueError, match="Must specify steps > 0, given: -1"):
        est.evaluate(train_input_fn, steps=-1)


def test_reserved_params_keys():
    with pytest.raises(ValueError, match=r"\['batch_size', 'context'\] are reserved keys.*Remove it"):
        tpu_nb.TPUEstimator(model_fn, use_tpu=False, params={"batch_size": 8})


def test_batch_must_be_divisible_by_shards():
    with pytest.raises(ValueError, match="must be divisible by the number of shards.*multiple of 8"):
        plan_batches(100, num_replicas=8, input_mode=InputPipelineConfig.PER_HOST_V1)


def test_num_shards_is_not_set_correctly(tmp_path):
    est = _sharded(tmp_path, num_shards=4)
    with pytest.raises(ValueError, match="num_shards is not set correctly.*drop num_shards"):
        est.train(train_input_fn, steps=1)


def test_model_fn_with_unexpected_args():
    def bad_model_fn(features, labels, mode, hparams):
        return None

    with pytest.raises(ValueError, match=r"has following not expected args: \['hparams'\].*functools.partial"):
        tpu_nb.TPUEstimator(bad_model_fn, use_tpu=False)


def _run(est, verb):
    if verb == "evaluate":
        return est.evaluate(train_input_fn, steps=1)
    return list(est.predict(predict_input_fn))


@pytest.mark.parametrize("verb,kind", [("evaluate", "eval"), ("predict", "predict")])
def test_sharded_eval_and_predict_batch_size_cannot_be_none(tmp_path, verb, kind):
    est = _sharded(tmp_path)
    est.train(train_input_fn, steps=1)
    with pytest.raises(ValueError, match=f"{kind}_batch_size in TPUEstimator constructor cannot be `None`.*"
                                         f"{kind}_batch_size=N"):
        _run(est, verb)


def _estimator_spec_model_fn(features, labels, mode, params):
    spec = model_fn(features, labels, mode, params)
    if mode == tpu_nb.ModeKeys.TRAIN:
        return spec
    return tpu_nb.EstimatorSpec(mode, predictions=spec.predictions, loss=spec.loss)


@pytest.mark.parametrize("verb,phase", [("evaluate", "evaluation"), ("predict", "prediction")])
def test_sharded_eval_needs_a_tpu_estimator_spec(tmp_path, verb, phase):
    est = _sharded(tmp_path, fn=_estimator_spec_model_fn, eval_batch_size=16, predict_batch_size=16)
    est.train(train_input_fn, steps=1)
    with pytest.raises(RuntimeError, match=f"used by TPU {phase} must have type`TPUEstimatorSpec`.*Return a "
                                           "TPUEstimatorSpec"):
        _run(est, verb)


def _batchless_predictions_model_fn(features, labels, mode, params):
    if mode != tpu_nb.ModeKeys.PREDICT:
        return model_fn(features, labels, mode, params)
    total = tf.reshape(tf.reduce_sum(features), [1])  # one value per shard, not per example
    return tpu_nb.TPUEstimatorSpec(mode, predictions={"total": total})


def test_sharded_predictions_should_be_static_per_example(tmp_path):
    est = _sharded(tmp_path, fn=_batchless_predictions_model_fn, predict_batch_size=16)
    est.train(train_input_fn, steps=1)
    with pytest.raises(ValueError, match="prediction 'total'.*should be static and equal to the per-shard batch "
                                         "size 8"):
        list(est.predict(predict_input_fn))


def test_a_missing_checkpoint_lists_the_checkpoints_that_exist(tmp_path):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False,
                              train_batch_size=16, eval_batch_size=16)
    missing = str(tmp_path / "model.ckpt-5")
    with pytest.raises(ValueError, match="is not a checkpoint.*holds no checkpoint yet: call train"):
        est.evaluate(train_input_fn, steps=1, checkpoint_path=missing)
    est.train(train_input_fn, steps=3)
    with pytest.raises(ValueError) as raised:
        est.evaluate(train_input_fn, steps=1, checkpoint_path=missing)
    message = str(raised.value)
    assert "is not a checkpoint" in message
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert repr(latest) in message  # a prefix that exists, ready to copy
    listed = [quoted for quoted in message.split("'")[1::2] if "model.ckpt-" in quoted and quoted != missing]
    assert listed and all(tf.io.gfile.exists(prefix + ".index") for prefix in listed)
