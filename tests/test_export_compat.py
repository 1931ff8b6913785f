"""export_saved_model as the original: serving_default, the estimator.export receiver helpers,
experimental_mode=EVAL/TRAIN, and the export path logged as text."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from model_zoo import CLASSES, FEATURES, make_data, train_input_fn

_SERVE = ("serve",)
_SERVE_TPU = ("serve", "tpu")


def _model_fn(features, labels, mode, params):
    """A linear classifier taking a Tensor or {'x': Tensor}; export outputs chosen by params['outputs']."""
    x = features["x"] if isinstance(features, dict) else features
    logits = tf_keras.layers.Dense(CLASSES, name="logits")(x)
    if mode == tpu_nb.ModeKeys.PREDICT:
        outputs = {
            "one": {"classify": tpu_nb.PredictOutput({"logits": logits})},
            "default": {"serving_default": tpu_nb.PredictOutput({"logits": logits})},
            "two": {"a": tpu_nb.PredictOutput({"logits": logits}), "b": tpu_nb.PredictOutput({"x": x})},
            "none": None,
        }[params.get("outputs", "one")]
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits}, export_outputs=outputs)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        def metric_fn(labels, logits):
            return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}

        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
    global_step = tf.compat.v1.train.get_global_step()
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("export_model"))
    _estimator(model_dir).train(train_input_fn, steps=2)
    return model_dir


def _estimator(model_dir, **params):
    return tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=model_dir), params=params,
                               use_tpu=False, train_batch_size=16, eval_batch_size=16)


def _raw_receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


def _meta_graphs(export_dir):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fsdecode(export_dir), "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {tuple(sorted(mg.meta_info_def.tags)): mg for mg in saved.meta_graphs}


def _run_signature(export_dir, tags, key, feeds):
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, list(tags), os.fsdecode(export_dir))
        signature = meta_graph.signature_def[key]
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return sess.run(fetches, {signature.inputs[name].name: value for name, value in feeds.items()})


def _x(n=16):
    return make_data(100, seed=1)[0][:n]


# --------------------------------------------------------------------------- serving_default


def test_single_export_output_is_also_the_default_signature(trained_dir, tmp_path):
    path = _estimator(trained_dir, outputs="one").export_saved_model(str(tmp_path), _raw_receiver_fn)
    graphs = _meta_graphs(path)
    for tags in (_SERVE, _SERVE_TPU):
        assert set(graphs[tags].signature_def) == {"classify", "serving_default"}, tags
    by_name = _run_signature(path, _SERVE, "classify", {"x": _x()})
    by_default = _run_signature(path, _SERVE, "serving_default", {"x": _x()})
    # atol: logits can be near zero, where float32 rounding alone fails an rtol-only compare.
    np.testing.assert_allclose(by_default["logits"], by_name["logits"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("outputs", ["default", "none"])
def test_default_signature_is_not_duplicated(trained_dir, tmp_path, outputs):
    path = _estimator(trained_dir, outputs=outputs).export_saved_model(str(tmp_path), _raw_receiver_fn)
    assert set(_meta_graphs(path)[_SERVE].signature_def) == {"serving_default"}


def test_several_outputs_need_a_default(trained_dir, tmp_path):
    with pytest.raises(ValueError, match="none of them are specified as the default.*DEFAULT_SERVING_SIGNATURE_DEF_KEY"):
        _estimator(trained_dir, outputs="two").export_saved_model(str(tmp_path), _raw_receiver_fn)


# --------------------------------------------------------------------------- receiver helpers


def _example(row):
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, row))))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_parsing_receiver_fn_serves_tf_examples(trained_dir, tmp_path):
    spec = {"x": tf.io.FixedLenFeature([FEATURES], tf.float32)}
    fn = tpu_nb.build_parsing_serving_input_receiver_fn(spec)
    path = _estimator(trained_dir).export_saved_model(str(tmp_path), fn)
    signature = _meta_graphs(path)[_SERVE].signature_def["serving_default"]
    assert list(signature.inputs) == ["examples"]
    assert signature.inputs["examples"].name == "input_example_tensor:0"
    assert signature.inputs["examples"].dtype == tf.string.as_datatype_enum
    served = _run_signature(path, _SERVE, "serving_default", {"examples": [_example(r) for r in _x(5)]})
    assert served["logits"].shape == (5, CLASSES)
    raw = _estimator(trained_dir).export_saved_model(str(tmp_path / "raw"), _raw_receiver_fn)
    # The same logits as feeding the raw features.
    np.testing.assert_allclose(served["logits"], _run_signature(raw, _SERVE, "classify", {"x": _x(5)})["logits"],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("example", ["tensor", "spec"])
@pytest.mark.parametrize("batch", [None, 4])
def test_raw_receiver_fn_builds_placeholders_like_the_examples(trained_dir, tmp_path, example, batch):
    sample = tf.zeros([1, FEATURES]) if example == "tensor" else tf.TensorSpec([None, FEATURES], tf.float32)
    fn = tpu_nb.build_raw_serving_input_receiver_fn({"x": sample}, default_batch_size=batch)
    path = _estimator(trained_dir).export_saved_model(str(tmp_path), fn)
    signature = _meta_graphs(path)[_SERVE].signature_def["serving_default"]
    assert list(signature.inputs) == ["x"]
    dims = [d.size for d in signature.inputs["x"].tensor_shape.dim]
    assert dims == [batch or -1, FEATURES]
    out = _run_signature(path, _SERVE, "serving_default", {"x": _x(4)})
    assert out["logits"].shape == (4, CLASSES)


def test_receiver_helpers_reject_what_they_cannot_use():
    with pytest.raises(TypeError, match="feature_spec must be a non-empty dict"):
        tpu_nb.build_parsing_serving_input_receiver_fn([])
    with pytest.raises(TypeError, match="features must be a non-empty dict"):
        tpu_nb.build_raw_serving_input_receiver_fn(tf.zeros([1, 2]))
    with pytest.raises(ValueError, match=r"distinct keys.*\['y'\]"):
        tpu_nb.build_raw_supervised_input_receiver_fn({"y": tf.zeros([1, 2])}, {"y": tf.zeros([1])})
    with pytest.raises(ValueError, match=r"distinct keys.*\['input'\]"):
        tpu_nb.build_raw_supervised_input_receiver_fn(tf.zeros([1, 2]), {"input": tf.zeros([1])})


# --------------------------------------------------------------------------- experimental_mode


def _supervised_fn():
    return tpu_nb.build_raw_supervised_input_receiver_fn(tf.zeros([1, FEATURES]), tf.zeros([1], tf.int32))


def test_eval_mode_export_computes_loss_and_metrics(trained_dir, tmp_path):
    est = _estimator(trained_dir)
    path = est.export_saved_model(str(tmp_path), _supervised_fn(), experimental_mode=tpu_nb.ModeKeys.EVAL)
    graphs = _meta_graphs(path)
    assert list(graphs) == [("eval",)]
    signature = graphs[("eval",)].signature_def["eval"]
    assert set(signature.inputs) == {"input", "label"}
    assert {"loss", "metrics/accuracy/value", "metrics/accuracy/update_op"} <= set(signature.outputs)
    x, y = make_data(100, seed=1)

    def eval_input_fn(params):
        return tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(16)

    expected = est.evaluate(eval_input_fn)
    out = _run_signature(path, ("eval",), "eval", {"input": x[:16], "label": y[:16]})
    np.testing.assert_allclose(out["loss"], expected["loss"], rtol=1e-5, atol=1e-6)  # a trained loss can be tiny


def test_train_mode_export_carries_the_train_op(trained_dir, tmp_path):
    path = _estimator(trained_dir).export_saved_model(str(tmp_path), _supervised_fn(),
                                                       experimental_mode=tpu_nb.ModeKeys.TRAIN)
    graphs = _meta_graphs(path)
    assert list(graphs) == [("train",)]
    assert "loss" in graphs[("train",)].signature_def["train"].outputs
    assert "saved_model_train_op" in graphs[("train",)].collection_def


def test_eval_mode_needs_labels(trained_dir, tmp_path):
    with pytest.raises(TypeError, match="SupervisedInputReceiver.*build_raw_supervised_input_receiver_fn"):
        _estimator(trained_dir).export_saved_model(str(tmp_path), _raw_receiver_fn,
                                                   experimental_mode=tpu_nb.ModeKeys.EVAL)


def test_unknown_mode_is_refused(trained_dir, tmp_path):
    with pytest.raises(ValueError, match="experimental_mode must be ModeKeys.PREDICT"):
        _estimator(trained_dir).export_saved_model(str(tmp_path), _raw_receiver_fn, experimental_mode="fit")


# --------------------------------------------------------------------------- logging


def test_export_path_is_logged_as_text(trained_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tpu_nb"):
        path = _estimator(trained_dir).export_saved_model(str(tmp_path), _raw_receiver_fn)
    assert isinstance(path, bytes)  # the original's return type
    lines = [r.getMessage() for r in caplog.records if "Exported SavedModel" in r.getMessage()]
    assert lines and os.fsdecode(path) in lines[0] and "b'" not in lines[0]
