"""check_tpu_compatibility: one training step compiled with XLA on the CPU, ops XLA cannot compile named."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import CLASSES, estimator, model_fn, train_input_fn
from tpu_nb.backends.xla_check import CompatibilityReport, check_tpu_compatibility


def _mlp_model_fn(forward_extra=None):
    """A tf_keras MLP; forward_extra(hidden) -> hidden may add ops to the forward pass."""

    def fn(features, labels, mode, params):
        hidden = tf_keras.layers.Dense(16, activation="relu", name="hidden")(features)
        if forward_extra is not None:
            hidden = forward_extra(hidden)
        logits = tf_keras.layers.Dense(CLASSES, name="logits")(hidden)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tpu_nb.CrossShardOptimizer(tf.compat.v1.train.AdamOptimizer(1e-3))
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    return fn


def _with_numpy_function(hidden):
    out = tf.numpy_function(lambda a: a * 2.0, [hidden], tf.float32, name="double_in_numpy")
    out.set_shape(hidden.shape)
    return out


def _with_py_function_and_string_op(hidden):
    out = tf.py_function(lambda a: a * 2.0, [hidden], tf.float32, name="double_in_python")
    out.set_shape(hidden.shape)
    text = tf.strings.as_string(out, name="to_text")
    return out + tf.cast(tf.strings.length(text, name="text_length"), tf.float32)


def test_clean_linear_model_is_ok(tmp_path):
    report = check_tpu_compatibility(estimator(tmp_path / "m"), train_input_fn)
    assert isinstance(report, CompatibilityReport)
    assert report.ok, report.message
    assert report.unsupported_ops == ()
    assert report.seconds > 0
    assert "compiled with XLA" in str(report)


def test_clean_mlp_is_ok_and_touches_no_checkpoint(tmp_path):
    model_dir = tmp_path / "m"
    report = check_tpu_compatibility(estimator(model_dir, fn=_mlp_model_fn()), train_input_fn)
    assert report.ok, report.message
    assert tf.train.latest_checkpoint(str(model_dir)) is None
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_numpy_function_is_reported_by_name_and_type(tmp_path):
    report = check_tpu_compatibility(estimator(tmp_path / "m", fn=_mlp_model_fn(_with_numpy_function)),
                                     train_input_fn)
    assert not report.ok
    assert ("double_in_numpy", "PyFunc") in report.unsupported_ops
    assert "double_in_numpy" in report.message and "PyFunc" in report.message
    assert "input_fn" in report.message and "host_call" in report.message
    assert "double_in_numpy" in str(report)


def test_every_unsupported_op_is_listed_not_just_the_first(tmp_path):
    fn = _mlp_model_fn(_with_py_function_and_string_op)
    report = check_tpu_compatibility(estimator(tmp_path / "m", fn=fn), train_input_fn)
    assert not report.ok
    names = dict(report.unsupported_ops)
    assert names.get("double_in_python") == "EagerPyFunc"
    assert names.get("to_text") == "AsString"
    assert names.get("text_length") == "StringLength"
    # The only other op blamed is the Python function's own gradient (also Python): nothing XLA
    # supports (the dense layers, their gradients, Adam) is.
    others = set(names) - {"double_in_python", "to_text", "text_length"}
    assert all(n.startswith("gradients/double_in_python_grad/") for n in others), report.unsupported_ops
    for name in ("double_in_python", "to_text", "text_length"):
        assert name in report.message


def test_tf_tpu_cross_shard_optimizer_compiles_as_on_one_shard(tmp_path):
    def fn(features, labels, mode, params):
        logits = tf_keras.layers.Dense(CLASSES)(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1))
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    # TensorFlow's own class is what TPU programs use; its cross_replica_sum runs as on one shard here.
    report = check_tpu_compatibility(estimator(tmp_path / "m", fn=fn), train_input_fn)
    assert report.ok, report.message
    assert report.unsupported_ops == ()


def test_other_compilation_failures_are_reported_with_their_cause(tmp_path):
    def unbounded_loop(hidden):
        # Differentiating a while_loop without maximum_iterations needs lists of unknown size.
        _, out = tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, h * 1.1), [0, hidden])
        return out

    report = check_tpu_compatibility(estimator(tmp_path / "m", fn=_mlp_model_fn(unbounded_loop)), train_input_fn)
    assert not report.ok
    assert report.unsupported_ops == ()
    assert "maximum_iterations" in report.message
    if tf.executing_eagerly():  # control flow v2 gets as far as XLA's compiler, which names the cause
        assert "fixed tensor list size" in report.message
    assert "File " not in report.message  # the construction traceback is left out


def test_input_fn_returning_features_only_and_a_dict(tmp_path):
    def input_fn(params):
        x = np.random.RandomState(0).randn(64, 8).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices({"x": x}).repeat().batch(params["batch_size"], drop_remainder=True)

    def fn(features, mode, params):
        assert params["batch_size"] == 16 and params["use_tpu"] is True
        loss = tf.reduce_mean(tf.square(tf_keras.layers.Dense(1)(features["x"])))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    report = check_tpu_compatibility(estimator(tmp_path / "m", fn=fn), input_fn)
    assert report.ok, report.message


def test_report_is_frozen():
    report = CompatibilityReport(True, (), 0.5, "fine")
    with pytest.raises(Exception):
        report.ok = False
    assert str(report) == "fine"
