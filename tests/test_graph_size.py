"""What a big model costs to build and start on simulated shards, and a clear refusal when it won't fit.

A TF1-style train op under ``with tf.control_dependencies(update_ops)`` gives every gradient constant
a control edge to every BatchNorm update; those edges were most of an EfficientNet's loop body and
were paid again per shard and per session copy. They must be shared without changing what runs
before what, and a run whose session cannot fit must stop with a message before anything runs.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from tpu_nb.run import memory_guard
from tpu_nb.graph.control_edges import share_control_inputs

BN_LAYERS = 6


def _control_edges(graph_def):
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return sum(1 for n in nodes for i in n.input if i.startswith("^")), len(nodes)


# --------------------------------------------------------------------------- the graph pass itself


def test_shared_gate_keeps_every_dependency_and_cuts_edges():
    graph = tf.Graph()
    with graph.as_default():
        counters = [tf.compat.v1.get_variable(f"c{i}", initializer=0.0, use_resource=True) for i in range(6)]
        updates = [c.assign_add(1.0) for c in counters]
        with tf.control_dependencies(updates):
            reads = [tf.identity(c.read_value()) for c in counters]  # each must see its update
            consts = [tf.constant(float(i)) for i in range(20)]
        total = tf.add_n(reads + consts)
        before = sum(len(op.control_inputs) for op in graph.get_operations())
        removed = share_control_inputs(graph)
        after = sum(len(op.control_inputs) for op in graph.get_operations())
        assert removed == before - after > 0
        # 20 constants and the 6 reads shared one gate over the 6 updates.
        assert all(len(c.op.control_inputs) == 1 for c in consts)
        gate = consts[0].op.control_inputs[0]
        assert gate.type == "NoOp" and {x.name for x in gate.control_inputs} == {u.name for u in updates}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            assert session.run(total) == pytest.approx(6.0 + sum(range(20)))
            assert session.run(total) == pytest.approx(12.0 + sum(range(20)))


def test_ops_that_add_their_own_inputs_to_a_shared_set_share_a_gate_over_it():
    # The gradients' tuple/group_deps made under control_dependencies(update_ops): each groups its own two
    # ops, so no two have the same control inputs, but all have the updates; those go behind one gate.
    graph = tf.Graph()
    with graph.as_default():
        counters = [tf.compat.v1.get_variable(f"c{i}", initializer=0.0, use_resource=True) for i in range(6)]
        marks = [tf.compat.v1.get_variable(f"m{i}", initializer=0.0, use_resource=True) for i in range(5)]
        updates = [c.assign_add(1.0) for c in counters]
        with tf.control_dependencies(updates):
            groups = [tf.group(m.assign_add(1.0), m.assign_add(2.0)) for m in marks]
        assert all(len(g.control_inputs) == 8 for g in groups)
        assert share_control_inputs(graph) > 0
        gates = {x for g in groups for x in g.control_inputs if x.type == "NoOp"}
        assert len(gates) == 1
        assert {x.name for x in next(iter(gates)).control_inputs} == {u.name for u in updates}
        assert all(len(g.control_inputs) == 3 for g in groups)  # the gate and its own two
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(groups)
            assert session.run([c.read_value() for c in counters]) == pytest.approx([1.0] * 6)
            assert session.run([m.read_value() for m in marks]) == pytest.approx([3.0] * 5)


def test_a_set_that_only_one_op_has_is_left_alone():
    graph = tf.Graph()
    with graph.as_default():
        counters = [tf.compat.v1.get_variable(f"c{i}", initializer=0.0, use_resource=True) for i in range(5)]
        group = tf.group(*[c.assign_add(1.0) for c in counters])
        assert share_control_inputs(graph) == 0
        assert len(group.control_inputs) == 5


def test_inside_a_while_loop_the_gate_lives_in_the_loop():
    # Under TF1 behaviour this is a v1 loop (WhileContext): a gate outside it would be refused by TF.
    graph = tf.Graph()
    with graph.as_default():
        counters = [tf.compat.v1.get_variable(f"c{i}", initializer=0.0, use_resource=True) for i in range(4)]

        def body(i, acc):
            with tf.control_dependencies([c.assign_add(1.0) for c in counters]):
                a = tf.constant(1.0)
                b = tf.constant(2.0)
            share_control_inputs(tf.compat.v1.get_default_graph())
            return i + 1, acc + a + b

        loop = tf.while_loop(lambda i, acc: i < 3, body, [tf.constant(0), tf.constant(0.0)])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            assert session.run(loop[1]) == pytest.approx(9.0)
            assert session.run([c.read_value() for c in counters]) == pytest.approx([3.0] * 4)


# --------------------------------------------------------------------------- through the engine


def _bn_model_fn(features, labels, mode, params):
    h = features
    for i in range(BN_LAYERS):
        h = tf_keras.layers.Dense(8, name=f"dense{i}", kernel_initializer=tf_keras.initializers.GlorotUniform(i))(h)
        bn = tf_keras.layers.BatchNormalization(name=f"bn{i}")
        h = tf.nn.relu(bn(h, training=mode == tpu_nb.ModeKeys.TRAIN))
        for update in bn.updates:
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
    logits = tf_keras.layers.Dense(2, name="out", kernel_initializer=tf_keras.initializers.GlorotUniform(9))(h)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss)
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
    if params["use_tpu"]:
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _input_fn(params):
    rng = np.random.RandomState(0)
    x = rng.randn(64, 5).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


class _GraphDefHook(tf.compat.v1.train.SessionRunHook):
    def begin(self):
        self.graph_def = tf.compat.v1.get_default_graph().as_graph_def()


def _estimator(tmp_path, shards, name):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / name), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    return tpu_nb.TPUEstimator(_bn_model_fn, config=config, use_tpu=bool(shards), train_batch_size=8,
                               params={"use_tpu": bool(shards)})


def test_update_dependencies_cost_edges_per_op_not_per_op_and_update(tmp_path):
    hook = _GraphDefHook()
    est = _estimator(tmp_path, 2, "sharded")
    est.train(_input_fn, steps=4, hooks=[hook])
    edges, nodes = _control_edges(hook.graph_def)
    # 2 replicas x 12 BatchNorm updates, inherited by every gradient constant and by the cross-replica
    # sums: unshared that is well over 10 edges per node.
    assert edges < 2 * nodes, (edges, nodes)
    # The updates still ran before each step's train op: the moving means moved on every replica.
    reader = tf.train.load_checkpoint(est.model_dir)
    assert not np.allclose(reader.get_tensor("bn0/moving_mean"), 0.0)
    assert reader.get_tensor("global_step") == 4


@pytest.mark.parametrize("shards", [0, 2])
def test_shared_edges_change_no_numbers_and_upset_no_graph_optimizer(tmp_path, monkeypatch, capfd, shards):
    shared = _estimator(tmp_path, shards, "shared")
    shared.train(_input_fn, steps=4)
    # TensorFlow's graph optimizer logs (and then skips its work) when a rewrite leaves it a graph it
    # cannot order; a gate shared by constants and other ops once did that through constant folding.
    assert "topological" not in capfd.readouterr().err
    import tpu_nb.backends.device_loop

    monkeypatch.setattr(tpu_nb.backends.device_loop, "share_control_inputs", lambda graph: 0)
    unshared = _estimator(tmp_path, shards, "unshared")
    unshared.train(_input_fn, steps=4)
    a, b = tf.train.load_checkpoint(shared.model_dir), tf.train.load_checkpoint(unshared.model_dir)
    for name in ("dense0/kernel", "bn5/gamma", "bn0/moving_mean", "bn3/moving_variance", "out/kernel"):
        ref = b.get_tensor(name)
        np.testing.assert_allclose(a.get_tensor(name), ref, rtol=1e-5, atol=1e-6 * (1 + np.abs(ref).max()))


# --------------------------------------------------------------------------- memory guard


def test_estimate_is_plain_arithmetic():
    gb = 2**30
    assert memory_guard.estimate(2 * gb, 4 * gb).fits
    result = memory_guard.estimate(4 * gb, 5 * gb)
    assert result.session_bytes == 6 * gb and not result.fits
    assert memory_guard.estimate(-5, 0).fits  # memory freed during a build is not a negative need


def _pretend_build_took(monkeypatch, build_gb, available_gb):
    readings = iter([1 * 2**30, (1 + build_gb) * 2**30])
    monkeypatch.setattr(memory_guard, "resident_bytes", lambda: next(readings, (1 + build_gb) * 2**30))
    monkeypatch.setattr(memory_guard, "available_bytes", lambda: int(available_gb * 2**30))


def test_a_session_that_cannot_fit_is_refused_before_anything_runs(tmp_path, monkeypatch):
    est = _estimator(tmp_path, 2, "sharded")
    est.train(_input_fn, steps=2)
    kept = tf.train.latest_checkpoint(est.model_dir)
    _pretend_build_took(monkeypatch, build_gb=3.0, available_gb=2.0)
    with pytest.raises(tpu_nb.InsufficientMemoryError) as info:
        est.train(_input_fn, steps=2)
    message = str(info.value)
    assert "training on simulated TPU" in message and "2 shards" in message
    assert "3.0 GB" in message and "4.5 GB" in message and "2.0 GB available" in message
    assert "SimulatedTPU(num_cores=1)" in message and "use_tpu=False" in message
    assert "TPU_NB_MEMORY_CHECK=0" in message
    assert tf.train.latest_checkpoint(est.model_dir) == kept
    assert tf.train.load_checkpoint(est.model_dir).get_tensor("global_step") == 2


def test_evaluate_and_predict_are_guarded_too(tmp_path, monkeypatch):
    est = _estimator(tmp_path, 0, "single")
    est.train(_input_fn, steps=2)
    _pretend_build_took(monkeypatch, build_gb=3.0, available_gb=1.0)
    with pytest.raises(tpu_nb.InsufficientMemoryError, match="evaluating on"):
        est.evaluate(lambda params: _input_fn({"batch_size": 8}).take(2), steps=2)
    _pretend_build_took(monkeypatch, build_gb=3.0, available_gb=1.0)
    with pytest.raises(tpu_nb.InsufficientMemoryError, match="predicting on"):
        next(est.predict(lambda params: _input_fn({"batch_size": 8}).map(lambda x, y: x).take(1)))


def test_the_check_can_be_switched_off(tmp_path, monkeypatch):
    est = _estimator(tmp_path, 0, "single")
    _pretend_build_took(monkeypatch, build_gb=3.0, available_gb=1.0)
    monkeypatch.setenv("TPU_NB_MEMORY_CHECK", "0")
    est.train(_input_fn, steps=2)
    assert tf.train.load_checkpoint(est.model_dir).get_tensor("global_step") == 2


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="reads Linux /proc")
def test_real_readings_on_linux():
    assert memory_guard.resident_bytes() > 10 * 2**20
    assert memory_guard.available_bytes() > 0
