"""Export names the original's users import: EXPORT_TAG_MAP, ExportSavedModelApiVersion; bytes export paths."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from model_zoo import CLASSES, FEATURES, make_data

V = tpu_nb.ExportSavedModelApiVersion


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES, name="logits")(features["x"])
    if mode == tpu_nb.ModeKeys.PREDICT:
        # What a V2 model_fn does: it decides itself how to run on TPU (here: a marker op in the TPU graph).
        if params["use_tpu"]:
            logits = tf.identity(logits, name="model_fn_saw_use_tpu")
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _train_input_fn(params):
    x, y = make_data()
    return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(params["batch_size"], drop_remainder=True)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("export_names_model"))
    _estimator(model_dir).train(_train_input_fn, steps=1)
    return model_dir


def _estimator(model_dir, **kwargs):
    return tpu_nb.TPUEstimator(_model_fn, config=tpu_nb.RunConfig(model_dir=model_dir), use_tpu=False,
                               train_batch_size=16, **kwargs)


def _receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


def _supervised_receiver_fn():
    return tpu_nb.build_raw_supervised_input_receiver_fn(
        {"x": tf.constant(np.zeros([4, FEATURES], np.float32))}, tf.constant(np.zeros([4], np.int32)))()


def _meta_graphs(export_dir):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fsdecode(export_dir), "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {tuple(sorted(mg.meta_info_def.tags)): mg for mg in saved.meta_graphs}


def _op_names(meta_graph):
    names = {node.name for node in meta_graph.graph_def.node}
    for function in meta_graph.graph_def.library.function:
        names.update(node.name for node in function.node_def)
    return names


@pytest.mark.parametrize("mode", [tpu_nb.ModeKeys.EVAL, tpu_nb.ModeKeys.TRAIN])
def test_export_tag_map_names_the_tags_of_each_mode(trained_dir, tmp_path, mode):
    assert list(tpu_nb.EXPORT_TAG_MAP[tpu_nb.ModeKeys.PREDICT]) == [tf.saved_model.SERVING]
    path = _estimator(trained_dir).export_saved_model(str(tmp_path), _supervised_receiver_fn, experimental_mode=mode)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.saved_model.loader.load(sess, tpu_nb.EXPORT_TAG_MAP[mode], os.fsdecode(path))


@pytest.mark.parametrize("version", [None, 1, 2, V.V1, V.V2])
def test_api_version_is_accepted_as_the_enum_or_an_int(trained_dir, version):
    est = _estimator(trained_dir, export_saved_model_api_version=version)
    assert est.export_saved_model_api_version == {None: V.V1, 1: V.V1, 2: V.V2}.get(version, version)


@pytest.mark.parametrize("version", [3, "2", True, 1.5])
def test_api_version_must_be_1_or_2(trained_dir, version):
    with pytest.raises(ValueError, match="export_saved_model_api_version should be 1 or 2"):
        _estimator(trained_dir, export_saved_model_api_version=version)


def test_v2_calls_model_fn_without_rewriting_it(trained_dir, tmp_path):
    graphs = {}
    for version in (V.V1, V.V2):
        path = _estimator(trained_dir, export_saved_model_api_version=version).export_saved_model(
            str(tmp_path / version.name), _receiver_fn)
        graphs[version] = _meta_graphs(path)
    v1_tpu, v2_tpu = graphs[V.V1][("serve", "tpu")], graphs[V.V2][("serve", "tpu")]
    assert any(n.op == "TPUReplicateMetadata" for n in v1_tpu.graph_def.node)
    assert not any(n.op == "TPUReplicateMetadata" for n in v2_tpu.graph_def.node)
    assert "model_fn_saw_use_tpu" in _op_names(v2_tpu)
    assert "model_fn_saw_use_tpu" not in _op_names(graphs[V.V2][("serve",)])


def test_bytes_export_dir_base_without_cpu_metagraph(trained_dir, tmp_path):
    base = os.fsencode(str(tmp_path / "export"))
    path = _estimator(trained_dir, export_to_cpu=False).export_saved_model(base, _receiver_fn)
    assert isinstance(path, bytes) and path.startswith(base)
    assert set(_meta_graphs(path)) == {("serve", "tpu")}
    assert tf.io.gfile.exists(os.path.join(os.fsdecode(path), "variables", "variables.index"))
