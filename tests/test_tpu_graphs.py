"""The TPU backend's training and evaluation graphs, built on this CPU against fake TPU topologies (8x1, 32x4).

As the original TPUEstimator's own tests: TensorFlow's TPU system query is replaced by a fake topology,
and the graph TensorFlow's TPU runtime would compile and run is built and inspected, not executed.
"""

import contextlib
import os
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf
import tf_keras
from tensorflow.python.tpu import topology as tf_topology
from tensorflow.python.tpu import tpu_system_metadata

import tpu_nb
from model_zoo import CLASSES, FEATURES, eval_input_fn, train_input_fn
from tpu_nb.backends import one_device_backend, select_backend
from tpu_nb.backends.tpu_graph import build_tpu_eval_graph, build_tpu_train_graph, query_tpu_system
from tpu_nb.backends.xla_check import ops_without_tpu_kernel

TOPOLOGIES = [(8, 1), (32, 4)]  # (cores, hosts)
PER_SHARD = 4  # params['batch_size'] each core's model_fn sees
ITERATIONS = 3


def _fake_metadata(cores, hosts):
    """A TPU mesh of 2-core chips: ``cores // hosts // 2`` chips per host along x, hosts along y."""
    per_host = cores // hosts
    coordinates = [[[x, h, 0, c] for x in range(per_host // 2) for c in range(2)] for h in range(hosts)]
    topology = tf_topology.Topology(mesh_shape=[per_host // 2, hosts, 1, 2], device_coordinates=coordinates)
    return tpu_system_metadata.TPUSystemMetadata(num_cores=cores, num_hosts=hosts, num_of_cores_per_host=per_host,
                                                 topology=topology, devices=[])


@contextlib.contextmanager
def fake_tpu(cores, hosts):
    """TensorFlow's TPU system query answers with a fake topology (restored on exit)."""
    with mock.patch.object(tpu_system_metadata, "_query_tpu_system_metadata",
                           side_effect=lambda *args, **kwargs: _fake_metadata(cores, hosts)):
        yield query_tpu_system("grpc://10.0.0.2:8470")


def _model_fn(forward_extra=None, seen=None):
    """A tf_keras MLP with CrossShardOptimizer and a host_call of the global step, loss and labels."""

    def fn(features, labels, mode, params):
        if seen is not None:
            seen.append(params["batch_size"])
        hidden = tf_keras.layers.Dense(16, activation="relu", name="hidden")(features)
        if forward_extra is not None:
            hidden = forward_extra(hidden)
        logits = tf_keras.layers.Dense(CLASSES, name="logits")(hidden)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        if mode == tpu_nb.ModeKeys.EVAL:
            def metric_fn(labels, logits):
                return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}

            return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
        global_step = tf.compat.v1.train.get_global_step()
        optimizer = tpu_nb.CrossShardOptimizer(tf.compat.v1.train.AdamOptimizer(1e-3))
        train_op = optimizer.minimize(loss, global_step=global_step)

        def host_fn(step, loss, labels):
            return [tf.reduce_mean(loss), tf.shape(labels)[0], step[0]]

        host_call = (host_fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1]), labels])
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)

    return fn


def _estimator(tmp_path, cores, fn=None, input_mode=True, use_tpu=True):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ITERATIONS,
                                                          per_host_input_for_training=input_mode))
    return tpu_nb.TPUEstimator(fn or _model_fn(), config=config, use_tpu=use_tpu,
                               train_batch_size=PER_SHARD * cores, eval_batch_size=PER_SHARD * cores)


def _build(est, system, input_fn=train_input_fn, build=build_tpu_train_graph):
    graph = tf.Graph()
    with graph.as_default():
        built = build(est, input_fn, ITERATIONS, system)
    return graph, built


def _node_defs(graph):
    """Every node of the graph and of its function library (while-loop bodies under control flow v2)."""
    graph_def = graph.as_graph_def()
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def host_side_graph_def(graph, names):
    """The part of ``graph`` that ``names`` need, cut at the outfeed dequeues (device-free, for this CPU).

    The dequeues' outputs are then the sub-graph's missing inputs: a test maps placeholders onto them.
    """
    sub = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), names)
    kept = [n for n in sub.node if n.op != "OutfeedDequeueTuple"]
    del sub.node[:]
    sub.node.extend(kept)
    for node in sub.node:
        node.device = ""
    return sub


def _shapes(node_def):
    return [[d.size for d in shape.dim] for shape in node_def.attr["shapes"].list.shape]


def _variables(graph):
    return sorted((v.op.name, tuple(v.shape.as_list())) for v in graph.get_collection("variables"))


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_one_replicated_computation_over_every_core(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores), system)
    assert (system.num_cores, system.num_hosts) == (cores, hosts)
    metadata = [op for op in graph.get_operations() if op.type == "TPUReplicateMetadata"]
    assert len(metadata) == 1
    assert metadata[0].get_attr("num_replicas") == cores == built.num_replicas
    assert len(built.replicated) == cores
    assert len(set(built.replica_hosts)) == hosts
    assert len(built.infeed_loops) == hosts  # one host-side infeed loop per host


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_infeed_carries_per_shard_batches_of_params_batch_size(tmp_path, cores, hosts):
    seen = []
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores, fn=_model_fn(seen=seen)), system)
    assert seen == [PER_SHARD]  # model_fn is built once, for every core
    nodes = list(_node_defs(graph))
    dequeues = [n for n in nodes if n.op == "InfeedDequeueTuple"]
    assert len(dequeues) == 1
    assert _shapes(dequeues[0]) == [[PER_SHARD, FEATURES], [PER_SHARD]]
    enqueues = [n for n in nodes if n.op == "InfeedEnqueueTuple"]
    # One enqueue per core, on the host that owns it, with the core's own per-shard batch.
    assert len(enqueues) == cores
    assert all(_shapes(n) == [[PER_SHARD, FEATURES], [PER_SHARD]] for n in enqueues)
    assignment = system.device_assignment()
    placed = sorted((n.device, n.attr["device_ordinal"].i) for n in enqueues)
    expected = sorted((built.replica_hosts[r], assignment.tpu_ordinal(r)) for r in range(cores))
    assert placed == expected
    # PER_HOST_V1: one input pipeline per host, called with the host's batch.
    assert len(built.initializers) == hosts
    assert built.plan.input_fn_batch == PER_SHARD * cores // hosts


@pytest.mark.parametrize("input_mode,input_fn_calls,input_fn_batch", [
    (tpu_nb.InputPipelineConfig.PER_HOST_V2, 4, PER_SHARD),
    (tpu_nb.InputPipelineConfig.PER_SHARD_V1, 32, PER_SHARD),
])
def test_other_input_modes_feed_the_same_shards(tmp_path, input_mode, input_fn_calls, input_fn_batch):
    asked = []

    def input_fn(params):
        asked.append(params["batch_size"])
        return train_input_fn(params)

    with fake_tpu(32, 4) as system:
        graph, built = _build(_estimator(tmp_path, 32, input_mode=input_mode), system, input_fn)
    assert asked == [input_fn_batch] * input_fn_calls
    dequeue = next(n for n in _node_defs(graph) if n.op == "InfeedDequeueTuple")
    assert _shapes(dequeue) == [[PER_SHARD, FEATURES], [PER_SHARD]]


def assert_one_outfeed_dequeued_per_replica_in_order(graph, built, system):
    """One outfeed enqueue in the computation, no host-side queue, a dequeue per replica on its host in order."""
    nodes = list(_node_defs(graph))
    assert sum(n.op == "OutfeedEnqueueTuple" for n in nodes) == 1
    assert not [n.name for n in nodes if "Queue" in n.op]  # no host-side FIFOQueue anywhere
    assignment = system.device_assignment()
    dequeues = built.outfeed_dequeues
    assert [op.get_attr("device_ordinal") for op in dequeues] == [assignment.tpu_ordinal(r)
                                                                   for r in range(built.num_replicas)]
    assert [op.device for op in dequeues] == list(built.replica_hosts)


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_host_call_leaves_through_the_outfeed_and_is_dequeued_in_replica_order(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores), system)
    assert_one_outfeed_dequeued_per_replica_in_order(graph, built, system)
    # Each host_call tensor is the replicas' entries concatenated in replica order.
    loss_value, rows, step = built.host_call_outputs
    concat_ops = [op for op in graph.get_operations() if op.type == "ConcatV2"]
    labels = next(op for op in concat_ops if op.inputs[0].shape.as_list() == [PER_SHARD])
    assert [t.op for t in labels.inputs[:-1]] == list(built.outfeed_dequeues)
    assert labels.outputs[0].shape.as_list() == [PER_SHARD * cores]
    assert step.dtype == tf.int64


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_cross_shard_optimizer_sums_gradients_across_cores(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, _ = _build(_estimator(tmp_path, cores), system)
    sums = [n for n in _node_defs(graph) if n.op == "CrossReplicaSum"]
    assert len(sums) == len(graph.get_collection("trainable_variables")) == 4


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_no_op_without_a_tpu_kernel_in_the_computation(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        graph, _ = _build(_estimator(tmp_path, cores), system)
    assert ops_without_tpu_kernel(graph) == []


def test_a_host_only_op_in_model_fn_is_found_in_the_computation(tmp_path):
    def with_numpy_function(hidden):
        out = tf.numpy_function(lambda a: a * 2.0, [hidden], tf.float32, name="double_in_numpy")
        out.set_shape(hidden.shape)
        return out

    with fake_tpu(8, 1) as system:
        graph, _ = _build(_estimator(tmp_path, 8, fn=_model_fn(with_numpy_function)), system)
    found = ops_without_tpu_kernel(graph)
    assert [op_type for name, op_type in found if name.endswith("double_in_numpy")] == ["PyFunc"]


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_same_variables_as_on_one_device(tmp_path, cores, hosts):
    with fake_tpu(cores, hosts) as system:
        tpu_graph, _ = _build(_estimator(tmp_path / "tpu", cores), system)
    one_device = tf.Graph()
    with one_device.as_default():
        one_device_backend().build_train(_estimator(tmp_path / "cpu", cores, use_tpu=False), train_input_fn,
                                         ITERATIONS)
    assert _variables(tpu_graph) == _variables(one_device)
    assert ("hidden/kernel", (FEATURES, 16)) in _variables(tpu_graph)


def test_same_variables_as_on_simulated_shards(tmp_path):
    # 8 simulated shards only: the simulated backend calls model_fn once per shard, 32 would cost seconds.
    with fake_tpu(8, 1) as system:
        tpu_graph, _ = _build(_estimator(tmp_path / "tpu", 8), system)
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / "sim"),
                              cluster=tpu_nb.SimulatedTPU(num_cores=8, use_gpus=False))
    est = tpu_nb.TPUEstimator(_model_fn(), config=config, train_batch_size=PER_SHARD * 8)
    simulated = tf.Graph()
    with simulated.as_default():
        select_backend(est, "train").build_train(est, train_input_fn, ITERATIONS)
    assert _variables(tpu_graph) == _variables(simulated)


def test_unsupported_inputs_are_refused_with_the_fix(tmp_path):
    def tensors_input_fn(params):
        return tf.zeros([params["batch_size"], FEATURES]), tf.zeros([params["batch_size"]], tf.int32)

    with fake_tpu(8, 1) as system:
        with pytest.raises(ValueError, match="must return a tf.data.Dataset"):
            _build(_estimator(tmp_path, 8), system, tensors_input_fn)
        broadcast = _estimator(tmp_path, 8, input_mode=tpu_nb.InputPipelineConfig.BROADCAST)
        with pytest.raises(NotImplementedError, match="BROADCAST"):
            _build(broadcast, system)


def test_a_scalar_host_call_tensor_is_refused_as_on_simulated_shards(tmp_path):
    def fn(features, labels, mode, params):
        loss = tf.reduce_mean(tf_keras.layers.Dense(1)(features))
        train_op = tpu_nb.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1)).minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=(lambda loss: [], [loss]))

    with fake_tpu(8, 1) as system:
        with pytest.raises(ValueError, match=r"host_call: tensor #0 .* is a scalar.*tf.reshape\(t, \[1\]\)"):
            _build(_estimator(tmp_path, 8, fn=fn), system)


def test_the_fake_topology_is_removed_afterwards():
    original = tpu_system_metadata._query_tpu_system_metadata
    with fake_tpu(8, 1):
        assert tpu_system_metadata._query_tpu_system_metadata is not original
    assert tpu_system_metadata._query_tpu_system_metadata is original


@pytest.mark.parametrize("cores,hosts", TOPOLOGIES)
def test_evaluation_graph_pads_shards_and_sends_eval_metrics_through_the_outfeed(tmp_path, cores, hosts):
    seen = []
    with fake_tpu(cores, hosts) as system:
        graph, built = _build(_estimator(tmp_path, cores, fn=_model_fn(seen=seen)), system, eval_input_fn,
                              build_tpu_eval_graph)
    assert seen == [PER_SHARD]
    metadata = [op for op in graph.get_operations() if op.type == "TPUReplicateMetadata"]
    assert [op.get_attr("num_replicas") for op in metadata] == [cores]
    nodes = list(_node_defs(graph))
    # Each core's shard: features, labels and the mask of real rows (the short last batch is padded).
    dequeue = [n for n in nodes if n.op == "InfeedDequeueTuple"]
    assert [_shapes(n) for n in dequeue] == [[[PER_SHARD, FEATURES], [PER_SHARD], [PER_SHARD]]]
    assert sum(n.op == "InfeedEnqueueTuple" for n in nodes) == cores
    assert sum(n.op == "OutfeedEnqueueTuple" for n in nodes) == 1
    assert not [n.name for n in nodes if "Queue" in n.op]
    assignment = system.device_assignment()
    assert [op.get_attr("device_ordinal") for op in built.outfeed_dequeues] == [
        assignment.tpu_ordinal(r) for r in range(cores)]
    assert [op.device for op in built.outfeed_dequeues] == list(built.replica_hosts)
    assert set(built.metrics) == {"accuracy"}
    # metric_fn sees every replica's rows, in replica order, with the padding masked out.
    concat_ops = [op for op in graph.get_operations() if op.type == "ConcatV2"]
    labels = next(op for op in concat_ops if op.outputs[0].dtype == tf.int32)
    assert [t.op for t in labels.inputs[:-1]] == list(built.outfeed_dequeues)
    assert any("boolean_mask" in consumer.name for consumer in labels.outputs[0].consumers())
    assert ops_without_tpu_kernel(graph) == []
    assert built.real_rows.dtype == tf.int64


@pytest.mark.parametrize("input_mode", [True, tpu_nb.InputPipelineConfig.PER_HOST_V2,
                                        tpu_nb.InputPipelineConfig.PER_SHARD_V1])
def test_each_input_fn_call_knows_its_host_as_on_simulated_shards(tmp_path, input_mode):
    """params['context'] in input_fn says which host a call feeds, so a pod's hosts read disjoint data."""
    calls, model_contexts = [], []

    def input_fn(params):
        ctx = params["context"]
        calls.append((ctx.current_host, ctx.current_input_fn_deployment()))
        return train_input_fn(params).shard(ctx.num_hosts, ctx.current_host)

    def model_fn(features, labels, mode, params):
        model_contexts.append(params["context"])
        return _model_fn()(features, labels, mode, params)

    with fake_tpu(32, 4) as system:
        _build(_estimator(tmp_path, 32, fn=model_fn, input_mode=input_mode), system, input_fn=input_fn)
    if input_mode is tpu_nb.InputPipelineConfig.PER_SHARD_V1:  # one call per core (True, PER_HOST_V1, == 1)
        assert [host for host, _ in calls] == [r // 8 for r in range(32)]
        assert [d[1:] for _, d in calls] == [(r, 32, 1) for r in range(32)]
    else:  # one call per host
        assert [host for host, _ in calls] == [0, 1, 2, 3]
        assert [d[1:] for _, d in calls] == [(h, 4, 8) for h in range(4)]
    assert [d[0] for _, d in calls][-1] == "/job:worker/task:3/device:CPU:0"  # TF's DeviceAssignment.host_device
    ctx = model_contexts[0]
    assert ctx.device_for_replica(9) == ("/job:worker/task:1/device:CPU:0", 1)
    with pytest.raises(RuntimeError, match="must not be called from model_fn"):
        ctx.current_host  # noqa: B018 - only inside input_fn, as the original
