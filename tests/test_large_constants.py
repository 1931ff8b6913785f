"""numpy arrays in from_tensor_slices: fed when the input starts, not embedded in the graph or its files."""

import os

import numpy as np
import pytest
import tensorflow as tf

from model_zoo import CLASSES, FEATURES, estimator, model_fn
from tpu_nb.inputs import const_lifting

ROWS = 1 << 16  # 65536 x 8 float32 = 2 MiB, over const_lifting.MIN_BYTES


def _data(seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, CLASSES, ROWS).astype(np.int32)
    x = rng.randn(ROWS, FEATURES).astype(np.float32)
    x[np.arange(ROWS), y] += 3.0
    return x, y


X, Y = _data()


def _train_input_fn(params):
    return tf.data.Dataset.from_tensor_slices((X, Y)).repeat().batch(params["batch_size"], drop_remainder=True)


def _eval_input_fn(params):
    return tf.data.Dataset.from_tensor_slices((X[:200], Y[:200])).batch(params["batch_size"])


def _predict_input_fn(params):
    return tf.data.Dataset.from_tensor_slices(X[-100:]).batch(params["batch_size"])


def _files(model_dir):
    return {os.path.relpath(os.path.join(root, f), model_dir): os.path.getsize(os.path.join(root, f))
            for root, _, files in os.walk(model_dir) for f in files}


def test_model_dir_stays_near_the_models_size(tmp_path):
    est = estimator(tmp_path)
    est.train(_train_input_fn, max_steps=12)
    est.evaluate(_train_input_fn, steps=2)
    files = _files(tmp_path)
    # The 2 MiB array must reach none of graph.pbtxt, a .meta or an events file (embedded, it reached all
    # six: ~16 MB); what is left is the small graph itself.
    assert max(files.values()) < X.nbytes / 2, files
    assert sum(files.values()) < 2.5 * X.nbytes, files
    assert files["graph.pbtxt"] > 0


def test_model_dir_stays_small_on_shards_too_and_every_host_is_fed(tmp_path):
    import tpu_nb

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=4, num_hosts=2),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=32, eval_batch_size=32,
                              predict_batch_size=32)
    est.train(_train_input_fn, max_steps=8)  # one input_fn call (and one lifted array) per host
    assert est.evaluate(_eval_input_fn)["global_step"] == 8
    assert len(list(est.predict(_predict_input_fn))) == 200  # each host reads the whole (unsharded) input
    files = _files(tmp_path)
    assert max(files.values()) < X.nbytes / 2, files


def test_written_graph_still_describes_the_model(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    estimator(tmp_path).train(_train_input_fn, max_steps=4)
    text = (tmp_path / "graph.pbtxt").read_text()
    assert "logits" in text and "MatMul" in text and "TensorSliceDataset" in text
    accumulator = event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    graph_def = accumulator.Graph()  # what TensorBoard's graph tab loads
    names = {node.name for node in graph_def.node}
    assert any(name.endswith("_fed") for name in names)  # the lifted array, as a placeholder
    assert "global_step" in names


def _zero_init_model_fn(features, labels, mode, params):
    import tf_keras
    import tpu_nb

    # Zero initial weights: the comparison below must not depend on random initialization.
    logits = tf_keras.layers.Dense(CLASSES, kernel_initializer="zeros", name="logits")(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def test_lifted_input_trains_exactly_as_the_embedded_one(tmp_path, monkeypatch):
    weights, sizes = [], []
    for name, limit in (("lifted", const_lifting.MIN_BYTES), ("embedded", 1 << 62)):
        monkeypatch.setattr(const_lifting, "MIN_BYTES", limit)
        estimator(tmp_path / name, fn=_zero_init_model_fn).train(_train_input_fn, max_steps=8)
        weights.append(tf.train.load_variable(str(tmp_path / name), "logits/kernel"))
        sizes.append(_files(tmp_path / name)["graph.pbtxt"])
    assert sizes[1] > X.nbytes > 10 * sizes[0]
    assert np.abs(weights[0]).max() > 0
    np.testing.assert_array_equal(weights[0], weights[1])


def test_resume_evaluate_and_predict_feed_the_lifted_input(tmp_path):
    est = estimator(tmp_path)
    est.train(_train_input_fn, max_steps=4)
    est.train(_train_input_fn, max_steps=8)  # restores, then initializes the input again
    assert est.evaluate(_eval_input_fn)["global_step"] == 8
    assert len(list(est.predict(_predict_input_fn))) == 100  # plain session
    hooked = list(est.predict(_predict_input_fn, hooks=[tf.compat.v1.train.StopAtStepHook(last_step=10**9)]))
    assert len(hooked) == 100  # MonitoredSession


def test_checkpoint_and_its_graph_load_with_plain_tensorflow(tmp_path):
    estimator(tmp_path).train(_train_input_fn, max_steps=4)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path))
    assert tf.train.load_variable(checkpoint, "global_step") == 4
    meta = tf.compat.v1.MetaGraphDef()
    with open(checkpoint + ".meta", "rb") as f:
        meta.ParseFromString(f.read())
    with tf.Graph().as_default() as graph:
        # The emptied constants keep dtype and shape, so the recorded output shapes still agree.
        tf.graph_util.import_graph_def(meta.graph_def, name="")
    lifted = [op for op in graph.get_operations() if op.name.endswith("_fed")]
    assert lifted and all(op.type == "Placeholder" for op in lifted)


def test_a_large_constant_the_model_also_reads_stays_a_constant(tmp_path):
    def input_fn(params):
        table = tf.constant(X, name="shared_table")
        tf.compat.v1.add_to_collection("shared_table", table)  # read again in model_fn, every step
        return tf.data.Dataset.from_tensor_slices((table, Y)).repeat().batch(params["batch_size"],
                                                                            drop_remainder=True)

    def table_model_fn(features, labels, mode, params):
        table = tf.compat.v1.get_collection("shared_table")[0]
        return model_fn(features + 0.0 * tf.reduce_mean(table), labels, mode, params)

    estimator(tmp_path, fn=table_model_fn).train(input_fn, max_steps=4)
    text = (tmp_path / "graph.pbtxt").read_text()
    assert "shared_table_fed" not in text and (tmp_path / "graph.pbtxt").stat().st_size > X.nbytes
