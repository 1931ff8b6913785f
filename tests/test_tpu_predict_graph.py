"""The TPU backend's prediction graph, built on this CPU against fake TPU topologies (8x1, 32x4).

As tests/test_tpu_graphs.py for training and evaluation: TensorFlow's TPU system query answers with a
fake topology and the graph the TPU runtime would run is built and inspected. The host side (padding
removal, replica order, the stopping signal) is also run here, with the outfeed's dequeued values fed in.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import CLASSES, FEATURES, predict_input_fn
from test_tpu_graphs import (TOPOLOGIES, _node_defs, _shapes, _variables, assert_one_outfeed_dequeued_per_replica_in_order,
                             fake_tpu, host_side_graph_def)
from tpu_nb.backends import one_device_backend, select_backend
from tpu_nb.backends.tpu_predict_graph import _PredictInputs, build_tpu_predict_graph
from tpu_nb.contract.modes import ModeKeys
from tpu_nb.backends.xla_check import ops_without_tpu_kernel

PER_SHARD = 4  # params['batch_size'] each core's model_fn sees
EXAMPLES = 100  # predict_input_fn's examples: with a global batch of 32, three full batches and 4 real rows


def _model_fn(seen=None, extra=None, single=False):
    """A tf_keras MLP predicting class ids and logits (``extra(logits)`` adds predictions)."""

    def fn(features, mode, params):
        assert mode == tpu_nb.ModeKeys.PREDICT
        if seen is not None:
            seen.append(params["batch_size"])
        hidden = tf_keras.layers.Dense(16, activation="relu", name="hidden")(features)
        logits = tf_keras.layers.Dense(CLASSES, name="logits")(hidden)
        if single:
            return tpu_nb.TPUEstimatorSpec(mode, predictions=logits)
        predictions = {"class_ids": tf.argmax(logits, 1), "logits": logits}
        if extra is not None:
            predictions.update(extra(logits))
        return tpu_nb.TPUEstimatorSpec(mode, predictions=predictions)

    return fn


def _estimator(tmp_path, cores, fn=None, use_tpu=True, batch=None):
    return tpu_nb.TPUEstimator(fn or _model_fn(), config=tpu_nb.RunConfig(model_dir=str(tmp_path)), use_tpu=use_tpu,
                               train_batch_size=PER_SHARD * cores,
                               predict_batch_size=PER_SHARD * cores if batch is None else batch)


def _build(est, system, input_fn=predict_input_fn):
    graph = tf.Graph()
    with graph.as_default():
        built = build_tpu_predict_graph(est, input_fn, system)
    return graph, built


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_one_replicated_computation_over_every_core(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores), system)
    metadata = [op for op in graph.get_operations() if op.type == "TPUReplicateMetadata"]
    assert [op.get_attr("num_replicas") for op in metadata] == [cores]
    assert built.num_replicas == len(built.replicated) == cores
    assert len(set(built.replica_hosts)) == hosts
    assert len(built.infeed_loops) == hosts  # one host-side infeed per host
    # No device loop over several steps (one predict step per session run): the only loops are the infeeds'.
    # (A While node under control flow v2; a LoopCond in the loop's scope under TF1 behaviour's v1.)
    nodes = list(_node_defs(graph))
    loops = ([n.name for n in nodes if n.op in ("While", "StatelessWhile")]
             + [n.name.rsplit("/", 1)[0] for n in nodes if n.op == "LoopCond"])
    assert len(loops) == hosts and all(name.split("/")[-1].startswith("infeed_loop") for name in loops), loops


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_infeed_carries_padded_shards_of_params_batch_size_with_mask_and_stop_signal(tmp_path, cores, hosts):
    seen = []
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores, fn=_model_fn(seen=seen)), system)
    assert seen == [PER_SHARD]  # model_fn is built once, for every core
    nodes = list(_node_defs(graph))
    # features, the mask of real rows, the stopping signal (one per row, so it splits with the batch).
    per_shard = [[PER_SHARD, FEATURES], [PER_SHARD], [PER_SHARD]]
    assert [_shapes(n) for n in nodes if n.op == "InfeedDequeueTuple"] == [per_shard]
    enqueues = [n for n in nodes if n.op == "InfeedEnqueueTuple"]
    assert len(enqueues) == cores and all(_shapes(n) == per_shard for n in enqueues)
    assignment = system.device_assignment()
    placed = sorted((n.device, n.attr["device_ordinal"].i) for n in enqueues)
    assert placed == sorted((built.replica_hosts[r], assignment.tpu_ordinal(r)) for r in range(cores))
    structure = built.infeed_structure
    assert set(structure) == {"features", "mask", "stop"}
    assert structure["features"].shape.as_list() == [PER_SHARD, FEATURES]
    assert structure["mask"].dtype == structure["stop"].dtype == tf.bool
    assert built.plan.model_fn_batch == PER_SHARD
    assert built.plan.input_fn_batch == PER_SHARD * cores // hosts  # PER_HOST_V1: one pipeline per host
    assert len(built.initializers) == hosts


def test_per_host_v2_feeds_each_core_its_own_batch_with_the_same_shapes(tmp_path):
    asked = []

    def input_fn(params):
        asked.append(params["batch_size"])
        return predict_input_fn(params)

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), tpu_config=tpu_nb.TPUConfig(
        per_host_input_for_training=tpu_nb.InputPipelineConfig.PER_HOST_V2))
    est = tpu_nb.TPUEstimator(_model_fn(), config=config, train_batch_size=PER_SHARD * 32,
                              predict_batch_size=PER_SHARD * 32)
    with fake_tpu(32, 4) as system:
        graph, built = _build(est, system, input_fn)
    assert asked == [PER_SHARD] * 4  # one pipeline per host, one get_next (and stop signal) per core
    dequeue = next(n for n in _node_defs(graph) if n.op == "InfeedDequeueTuple")
    assert _shapes(dequeue) == [[PER_SHARD, FEATURES], [PER_SHARD], [PER_SHARD]]


def test_labels_from_input_fn_travel_with_the_features(tmp_path):
    def with_labels(params):
        x = np.zeros([10, FEATURES], np.float32)
        return tf.data.Dataset.from_tensor_slices((x, np.arange(10, dtype=np.int32))).batch(params["batch_size"])

    with fake_tpu(8, 1) as system:
        graph, built = _build(_estimator(tmp_path, 8), system, with_labels)
    assert set(built.infeed_structure) == {"features", "labels", "mask", "stop"}
    dequeue = next(n for n in _node_defs(graph) if n.op == "InfeedDequeueTuple")
    assert sorted(map(tuple, _shapes(dequeue))) == sorted([(PER_SHARD, FEATURES), (PER_SHARD,), (PER_SHARD,),
                                                           (PER_SHARD,)])


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_predictions_leave_through_the_outfeed_and_are_dequeued_in_replica_order(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores), system)
    assert_one_outfeed_dequeued_per_replica_in_order(graph, built, system)
    assert set(built.predictions) == {"class_ids", "logits"}
    concat_ops = [op for op in graph.get_operations() if op.type == "ConcatV2"]
    for key, width in (("class_ids", []), ("logits", [CLASSES])):
        # Each prediction: the replicas' rows concatenated in replica order, then the padding rows removed.
        joined = next(op for op in concat_ops if op.inputs[0].dtype == built.predictions[key].dtype
                      and op.inputs[0].shape.as_list() == [PER_SHARD] + width)
        assert [t.op for t in joined.inputs[:-1]] == list(built.outfeed_dequeues)
        assert joined.outputs[0].shape.as_list() == [PER_SHARD * cores] + width
        assert any("real_rows" in consumer.name for consumer in joined.outputs[0].consumers())
    assert built.mask.shape.as_list() == [PER_SHARD * cores] and built.mask.dtype == tf.bool
    assert built.stopping.shape.rank == 0 and built.stopping.dtype == tf.bool


def _host_side(graph, built):
    """The host-side ops after the outfeed, copied into a graph of their own with the dequeued values as
    placeholders (a session places every op of its graph, and the TPU ops have no CPU kernel here).

    Returns the graph and ``run(sess, feed)``: (predictions, stopping) for dequeued values by tensor.
    """
    fetches = [built.predictions, built.stopping]
    names = [t.op.name for t in tf.nest.flatten(fetches)]
    sub = host_side_graph_def(graph, names)
    host = tf.Graph()
    with host.as_default():
        placeholders = {t.name: tf.compat.v1.placeholder(t.dtype, t.shape) for op in built.outfeed_dequeues
                        for t in op.outputs}
        copied = tf.compat.v1.import_graph_def(sub, input_map=placeholders, return_elements=[
            t.name for t in tf.nest.flatten(fetches)], name="host")
    copied_fetches = tf.nest.pack_sequence_as(fetches, copied)

    def run(sess, values):
        return sess.run(copied_fetches, {placeholders[t.name]: v for t, v in values.items()})

    return host, run


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_the_host_removes_padding_keeps_replica_order_and_reads_the_stopping_signal(tmp_path, cores, hosts):
    """The host side, run on the CPU with what each replica's outfeed would return fed in."""
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores), system)
    # The outfeed tuple is (mask, stop, then the predictions by sorted key): class_ids, logits.
    real = 13  # replica 0..2 full, replica 3 one real row, the rest all padding

    def feed(stop):
        values = {}
        for replica, dequeue in enumerate(built.outfeed_dequeues):
            rows = np.arange(replica * PER_SHARD, (replica + 1) * PER_SHARD)
            mask, stops, class_ids, logits = dequeue.outputs
            values[mask] = rows < real
            values[stops] = np.full([PER_SHARD], stop or replica * PER_SHARD >= real)
            values[class_ids] = rows.astype(np.int64)
            values[logits] = np.repeat(rows[:, None], CLASSES, axis=1).astype(np.float32)
        return values

    host, run = _host_side(graph, built)
    with tf.compat.v1.Session(graph=host) as sess:
        predictions, stopping = run(sess, feed(stop=False))
        assert predictions["class_ids"].tolist() == list(range(real))
        assert predictions["logits"][:, 0].tolist() == list(range(real))
        assert not stopping  # replicas 0-3 still had input
        predictions, stopping = run(sess, feed(stop=True))
        assert stopping


def test_the_stopping_signal_is_set_on_the_batches_after_the_input_ends(tmp_path):
    """What each host's infeed carries: padded batches with a mask, then the signal once the input ended."""
    with fake_tpu(8, 1) as system:
        est = _estimator(tmp_path, 8)
        _, built = _build(est, system)
        graph = tf.Graph()
        with graph.as_default():
            inputs = _PredictInputs(est, predict_input_fn, ModeKeys.PREDICT, built.plan, system.device_assignment(),
                                    built.replica_hosts, pad=True)
            flat = inputs._flat(inputs._iterator("/cpu:0", ("/cpu:0", 0, 1, 8)).get_next())
    batch = PER_SHARD * 8
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(inputs.initializers)
        steps = [sess.run(flat) for _ in range(6)]
    structure = [tf.nest.pack_sequence_as(inputs.structure, s) for s in steps]
    assert [int(s["mask"].sum()) for s in structure] == [batch, batch, batch, EXAMPLES - 3 * batch, 0, 0]
    assert [bool(s["stop"].all()) for s in structure] == [False, False, False, False, True, True]
    assert all(s["stop"].all() == s["stop"].any() for s in structure)  # one signal for the whole host batch


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_no_op_without_a_tpu_kernel_in_the_computation(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, _ = _build(_estimator(tmp_path, cores), system)
    assert ops_without_tpu_kernel(graph) == []


def test_a_host_only_op_in_model_fn_is_found_in_the_computation(tmp_path):
    def with_numpy_function(logits):
        out = tf.numpy_function(lambda a: a * 2.0, [logits], tf.float32, name="double_in_numpy")
        out.set_shape(logits.shape)
        return {"doubled": out}

    with fake_tpu(8, 1) as system:
        graph, _ = _build(_estimator(tmp_path, 8, fn=_model_fn(extra=with_numpy_function)), system)
    found = ops_without_tpu_kernel(graph)
    assert [op_type for name, op_type in found if name.endswith("double_in_numpy")] == ["PyFunc"]


@pytest.mark.parametrize("extra,message", [
    (lambda logits: {"transposed": tf.transpose(logits)},
     r"prediction 'transposed' has shape \(3, 4\), but on a TPU every prediction needs the batch on axis 0.*"
     r"params\['batch_size'\] = 4"),
    (lambda logits: {"mean": tf.reduce_mean(logits)}, r"prediction 'mean' has shape \(\).*batch on axis 0"),
])
def test_predictions_without_the_batch_on_axis_0_are_refused_naming_the_key(tmp_path, extra, message):
    with fake_tpu(8, 1) as system:
        with pytest.raises(ValueError, match=message):
            _build(_estimator(tmp_path, 8, fn=_model_fn(extra=extra)), system)


def test_a_single_prediction_tensor_comes_back_as_a_tensor(tmp_path):
    with fake_tpu(8, 1) as system:
        _, built = _build(_estimator(tmp_path, 8, fn=_model_fn(single=True)), system)
    assert isinstance(built.predictions, tf.Tensor)
    assert built.predictions.shape.as_list() == [None, CLASSES]


def test_a_missing_predict_batch_size_is_refused_with_the_fix(tmp_path):
    est = tpu_nb.TPUEstimator(_model_fn(), config=tpu_nb.RunConfig(model_dir=str(tmp_path)),
                              train_batch_size=PER_SHARD * 8)
    with fake_tpu(8, 1) as system:
        with pytest.raises(ValueError, match=r"predict_batch_size is required on TPU 8x1.*predict_batch_size="):
            _build(est, system)


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_same_variables_as_on_one_device(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        tpu_graph, _ = _build(_estimator(tmp_path / "tpu", cores), system)
    one_device = tf.Graph()
    with one_device.as_default():
        one_device_backend().build_predict(_estimator(tmp_path / "cpu", cores, use_tpu=False), predict_input_fn,
                                           lambda predictions: predictions)
    assert _variables(tpu_graph) == _variables(one_device)
    assert ("hidden/kernel", (FEATURES, 16)) in _variables(tpu_graph)


def test_same_variables_as_on_simulated_shards(tmp_path):
    with fake_tpu(8, 1) as system:
        tpu_graph, _ = _build(_estimator(tmp_path / "tpu", 8), system)
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / "sim"),
                              cluster=tpu_nb.SimulatedTPU(num_cores=8, use_gpus=False))
    est = tpu_nb.TPUEstimator(_model_fn(), config=config, train_batch_size=PER_SHARD * 8,
                              predict_batch_size=PER_SHARD * 8)
    simulated = tf.Graph()
    with simulated.as_default():
        select_backend(est, "predict").build_predict(est, predict_input_fn, lambda predictions: predictions)
    assert _variables(tpu_graph) == _variables(simulated)
