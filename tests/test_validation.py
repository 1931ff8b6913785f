"""Every error a user can cause names what was wrong and how to fix it, before any work."""

import functools

import keras
import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import checkpoint_step, estimator, model_fn, train_input_fn


def make(**kwargs):
    kwargs.setdefault("use_tpu", False)
    return tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=kwargs.pop("model_dir", None)), **kwargs)


def test_config_must_be_ours():
    class Foreign:
        pass

    with pytest.raises(TypeError, match="must be provided with type `tpu_config.RunConfig`.*tpu_nb.RunConfig"):
        tpu_nb.TPUEstimator(model_fn, config=Foreign(), use_tpu=False)


@pytest.mark.parametrize("key", ["batch_size", "context"])
def test_reserved_params(key):
    with pytest.raises(ValueError, match=f"reserved key '{key}'"):
        make(params={key: 1})


@pytest.mark.parametrize("value,error", [(1.5, TypeError), ("8", TypeError), (True, TypeError), (0, ValueError), (-8, ValueError)])
def test_bad_batch_sizes(value, error):
    with pytest.raises(error, match="train_batch_size"):
        make(train_batch_size=value)


def test_batch_size_none_is_accepted_unsharded(tmp_path):
    seen = {}

    def input_fn(params):
        seen["input"] = "batch_size" in params
        return train_input_fn({"batch_size": 4})

    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=False)
    est.train(input_fn, steps=2)
    assert seen == {"input": False}


def test_input_fn_without_params(tmp_path):
    est = estimator(tmp_path)
    with pytest.raises(ValueError, match="must take an argument named 'params'"):
        est.train(lambda: None, steps=1)
    assert checkpoint_step(tmp_path) is None


def test_model_fn_argument_names():
    def bad(features, labels, mode, hparams):
        pass

    with pytest.raises(ValueError, match=r"has following not expected args: \['hparams'\]"):
        tpu_nb.TPUEstimator(bad, use_tpu=False)
    with pytest.raises(ValueError, match="argument named 'features'"):
        tpu_nb.TPUEstimator(lambda x, labels: None, use_tpu=False)


def test_model_fn_partial_with_extra_args_is_fine(tmp_path):
    def fn(features, labels, mode, params, extra):
        return model_fn(features, labels, mode, params)

    est = estimator(tmp_path, fn=functools.partial(fn, extra=1))
    est.train(train_input_fn, steps=2)
    assert checkpoint_step(tmp_path) == 2


def test_labels_returned_but_not_taken(tmp_path):
    def no_labels(features, mode, params):
        raise AssertionError("must not be called")

    est = estimator(tmp_path, fn=no_labels)
    with pytest.raises(ValueError, match="does not take labels, but input_fn returns labels"):
        est.train(train_input_fn, steps=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="train", loss=1.0), "missing `train_op`"),
        (dict(mode="train", train_op=1), "missing `loss`"),
        (dict(mode="eval"), "missing `loss`"),
        (dict(mode="infer"), "missing `predictions`"),
        (dict(mode="fit", loss=1.0), "mode must be one of"),
    ],
)
def test_spec_fields_missing_per_mode(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tpu_nb.TPUEstimatorSpec(**kwargs)


def _metric_fn(labels, logits):
    return {}


@pytest.mark.parametrize("field", ["eval_metrics", "host_call"])
@pytest.mark.parametrize(
    "value,error,match",
    [
        ((_metric_fn,), ValueError, "tuple of 2 elements"),
        ((_metric_fn, [1], 3), ValueError, "tuple of 2 elements"),
        (("not callable", [1, 2]), TypeError, "must be callable"),
        ((_metric_fn, [1, 2, 3]), ValueError, "3 tensors passed do not match the 2 argument"),
        ((_metric_fn, {"labels": 1, "preds": 2}), ValueError, r"no argument\(s\) named \['preds'\]"),
        ((_metric_fn, 5), TypeError, "list or a dict"),
    ],
)
def test_malformed_fn_tensor_tuples(field, value, error, match):
    with pytest.raises(error, match=match):
        tpu_nb.TPUEstimatorSpec(mode="eval", loss=1.0, **{field: value})


def test_varargs_fn_takes_any_count():
    tpu_nb.TPUEstimatorSpec(mode="eval", loss=1.0, host_call=(lambda *t: [], [1, 2, 3]))


def test_hooks_must_be_session_run_hooks(tmp_path):
    with pytest.raises(TypeError, match="SessionRunHook"):
        tpu_nb.TPUEstimatorSpec(mode="eval", loss=1.0, evaluation_hooks=[object()])
    with pytest.raises(TypeError, match="SessionRunHook"):
        estimator(tmp_path).train(train_input_fn, steps=1, hooks=[lambda: None])


@pytest.mark.parametrize("value", [0, -1, 1.5, "0", "5 s", "30", "s", "1.5h", True])
def test_bad_iterations_per_loop(value):
    if value == "30":
        assert tpu_nb.TPUConfig(iterations_per_loop=value).parsed_iterations_per_loop.value == 30
        return
    with pytest.raises(ValueError, match="iterations_per_loop"):
        tpu_nb.TPUConfig(iterations_per_loop=value)


@pytest.mark.parametrize("arg", ["steps", "max_steps"])
def test_float_steps(tmp_path, arg):
    with pytest.raises(TypeError, match=f"{arg} must be int"):
        estimator(tmp_path).train(train_input_fn, **{arg: 10.0})
    assert checkpoint_step(tmp_path) is None


def test_steps_and_max_steps_together(tmp_path):
    with pytest.raises(ValueError, match="both steps and max_steps"):
        estimator(tmp_path).train(train_input_fn, steps=1, max_steps=10)


def test_both_export_flags_false():
    with pytest.raises(ValueError, match="export_to_cpu and export_to_tpu are both False"):
        make(export_to_cpu=False, export_to_tpu=False)


def test_use_tpu_without_tpu_names_the_fix(tmp_path):
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), train_batch_size=8)
    with pytest.raises(RuntimeError, match="use_tpu=False"):
        est.train(train_input_fn, steps=1)


def test_keras3_layers_refused_with_pointer_to_tf_keras(tmp_path):
    def keras3_model_fn(features, labels, mode, params):
        logits = keras.layers.Dense(3)(features)
        loss = tf.reduce_mean(logits)
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=tf.no_op())

    est = estimator(tmp_path, fn=keras3_model_fn)
    with pytest.raises(tpu_nb.Keras3InModelFnError, match="tf_keras"):
        est.train(train_input_fn, steps=1)


def test_train_op_without_global_step(tmp_path):
    def no_step_model_fn(features, labels, mode, params):
        import tf_keras

        logits = tf_keras.layers.Dense(3)(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                       train_op=tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss))

    with pytest.raises(RuntimeError, match="did not increment the global step"):
        estimator(tmp_path, fn=no_step_model_fn).train(train_input_fn, steps=4)


def test_non_scalar_loss(tmp_path):
    def fn(features, labels, mode, params):
        import tf_keras

        logits = tf_keras.layers.Dense(3)(features)
        return tpu_nb.TPUEstimatorSpec(mode, loss=logits, train_op=tf.no_op())

    with pytest.raises(ValueError, match="loss returned by model_fn must be a scalar"):
        estimator(tmp_path, fn=fn).train(train_input_fn, steps=1)


def test_runconfig_checkpoint_options():
    with pytest.raises(ValueError, match="cannot both be set"):
        tpu_nb.RunConfig(save_checkpoints_steps=10, save_checkpoints_secs=10)
    assert tpu_nb.RunConfig().save_checkpoints_secs == 600
    assert tpu_nb.RunConfig(save_checkpoints_steps=5).save_checkpoints_secs is None
    assert tpu_nb.RunConfig().replace(save_checkpoints_steps=5).save_checkpoints_steps == 5


def test_predict_keys_unknown(tmp_path):
    from model_zoo import predict_input_fn

    est = estimator(tmp_path)
    est.train(train_input_fn, steps=1)
    with pytest.raises(ValueError, match=r"available keys: \['class_ids', 'logits'\]"):
        list(est.predict(predict_input_fn, predict_keys=["probabilities"]))


def test_export_before_training(tmp_path):
    est = estimator(tmp_path)
    with pytest.raises(ValueError, match="call train\\(\\) first"):
        est.export_saved_model(str(tmp_path / "export"), lambda: None)
