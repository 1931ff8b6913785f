"""One TPUEstimator program's TPU graphs, built under fake 8x1 and 32x4 TPU topologies, summarised as JSON.

Runs against either implementation; only the imports and the builder differ:

* ``original``: TF 2.15 + tensorflow-estimator (its own interpreter, as ``benchmarks/mnist_program.py``).
  The graph is built the way ``Estimator.train``/``evaluate`` build it before any session exists:
  a resource global step, ``_get_features_and_labels_from_input_fn`` (on a TPU this hands model_fn the
  input_fn itself) and ``_call_model_fn``, whose TPU wrapper builds the infeed, the replicated loop and
  the host side of host_call / eval_metrics / predictions. Nothing runs.
* ``tpu_nb``: ``build_tpu_train_graph`` / ``build_tpu_eval_graph`` / ``build_tpu_predict_graph`` on TF 2.21.

Both replace ``tpu_system_metadata._query_tpu_system_metadata`` with the same fake topology, as the
original's own tests did. ``python tests/tpu_graph_summary.py original|tpu_nb [tf1]`` prints one JSON line
(``tf1``: both under ``tf.compat.v1.disable_v2_behavior()``):
``{"tf": ..., "train/PER_HOST_V1/8x1": {...}, ...}``.
``tests/test_tpu_graph_vs_original.py`` compares the two.
"""

import collections
import json
import os
import sys
import tempfile
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow.python.tpu import topology as tf_topology
from tensorflow.python.tpu import tpu_system_metadata

FEATURES, CLASSES = 8, 3
PER_SHARD = 8  # params['batch_size'] in model_fn: train/eval batch = 64 on 8 cores, 256 on 32
ITERATIONS = 4
MASTER = "grpc://10.0.0.2:8470"
JOB = "worker"
# Op types only a TPU computation holds, the host-side feed ops, loops (While under control flow v2,
# LoopCond under v1) and iterators: counted over the graph and its function library (while-loop bodies
# under control flow v2).
COUNTED = ("CrossReplicaSum", "InfeedDequeueTuple", "OutfeedEnqueueTuple", "InfeedEnqueueTuple",
           "OutfeedDequeueTuple", "TPUReplicateMetadata", "TPUReplicatedInput", "TPUReplicatedOutput",
           "TPUCompilationResult", "While", "LoopCond", "IteratorGetNext", "IteratorV2", "MakeIterator")

tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)


def fake_metadata(cores, hosts):
    """``cores // hosts // 2`` two-core chips per host along x, hosts along y (as tests/test_tpu_graphs.py)."""
    per_host = cores // hosts
    coordinates = [[[x, h, 0, c] for x in range(per_host // 2) for c in range(2)] for h in range(hosts)]
    topology = tf_topology.Topology(mesh_shape=[per_host // 2, hosts, 1, 2], device_coordinates=coordinates)
    return tpu_system_metadata.TPUSystemMetadata(num_cores=cores, num_hosts=hosts, num_of_cores_per_host=per_host,
                                                 topology=topology, devices=[])


def _data(n):
    rng = np.random.RandomState(0)
    return rng.randn(n, FEATURES).astype(np.float32), rng.randint(0, CLASSES, n).astype(np.int32)


def input_fn(params):
    x, y = _data(1000)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def predict_input_fn(params):
    """100 examples, features only, the last batch short: both implementations pad it."""
    x, _ = _data(100)
    return tf.data.Dataset.from_tensor_slices(x).batch(params["batch_size"])


def _dense(x, units, name):
    with tf.compat.v1.variable_scope(name):
        w = tf.compat.v1.get_variable("kernel", [x.shape[-1], units],
                                      initializer=tf.compat.v1.glorot_uniform_initializer(seed=7))
        b = tf.compat.v1.get_variable("bias", [units], initializer=tf.compat.v1.zeros_initializer())
    return tf.matmul(x, w) + b


def make_model_fn(api):
    """The program: a 2-layer MLP from raw variables (identical on TF 2.15 and 2.21), GradientDescent in
    ``tf.compat.v1.tpu.CrossShardOptimizer``, a host_call of one per-step scalar, eval_metrics accuracy."""

    def metric_fn(labels, logits):
        return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}

    def host_fn(step, loss):
        return [tf.reduce_mean(loss), step[0]]

    def model_fn(features, labels, mode, params):
        logits = _dense(tf.nn.relu(_dense(features, 16, "hidden")), CLASSES, "logits")
        if mode == api.ModeKeys.PREDICT:
            return api.TPUEstimatorSpec(mode, predictions={"class_ids": tf.argmax(logits, 1), "logits": logits})
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        if mode == api.ModeKeys.EVAL:
            return api.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
        global_step = tf.compat.v1.train.get_global_step()
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1))
        train_op = optimizer.minimize(loss, global_step=global_step)
        host_call = (host_fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1])])
        return api.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)

    return model_fn


def _node_defs(graph):
    graph_def = graph.as_graph_def()
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def _shapes(attr):
    return [[d.size for d in shape.dim] for shape in attr.list.shape]


def _dtypes(attr):
    return [tf.dtypes.as_dtype(t).name for t in attr.list.type]


def summarize(graph):
    """What both implementations must (or may deliberately not) agree on, from the built graph alone."""
    nodes = list(_node_defs(graph))
    counts = collections.Counter(n.op for n in nodes)
    in_computation = collections.Counter(n.op for n in nodes if "_tpu_replicate" in n.attr)
    dequeues = [n for n in nodes if n.op == "InfeedDequeueTuple"]
    enqueues = [n for n in nodes if n.op == "InfeedEnqueueTuple"]
    outfeed_enqueues = [n for n in nodes if n.op == "OutfeedEnqueueTuple"]
    # Host-side outfeed dequeues in graph (creation) order: the order their tensors are concatenated in.
    outfeed_dequeues = [op for op in graph.get_operations() if op.type == "OutfeedDequeueTuple"]
    return {
        "num_replicas": [op.get_attr("num_replicas") for op in graph.get_operations()
                         if op.type == "TPUReplicateMetadata"],
        "counts": {k: counts.get(k, 0) for k in COUNTED},
        "ops_with_tpu_replicate_attr": sum(in_computation.values()),
        "infeed_dequeue": [{"shapes": _shapes(n.attr["shapes"]), "dtypes": _dtypes(n.attr["dtypes"])}
                           for n in dequeues],
        "infeed_enqueue": sorted([{"shapes": _shapes(n.attr["shapes"]), "dtypes": _dtypes(n.attr["dtypes"]),
                                   "device": n.device, "device_ordinal": n.attr["device_ordinal"].i}
                                  for n in enqueues], key=lambda e: (e["device"], e["device_ordinal"])),
        "outfeed_enqueue": [{"shapes": _shapes(n.attr["shapes"]) if "shapes" in n.attr else None,
                             "dtypes": _dtypes(n.attr["dtypes"])} for n in outfeed_enqueues],
        "outfeed_dequeue": [{"device": op.device, "device_ordinal": op.get_attr("device_ordinal"),
                             "shapes": _shapes(op.node_def.attr["shapes"]),
                             "dtypes": _dtypes(op.node_def.attr["dtypes"])} for op in outfeed_dequeues],
        "trainable_variables": sorted([v.op.name, v.shape.as_list()]
                                      for v in graph.get_collection("trainable_variables")),
        "global_variables": sorted([v.op.name, v.shape.as_list(), v.dtype.base_dtype.name]
                                   for v in graph.get_collection("variables")),
        "global_step": [v.op.name for v in graph.get_collection("global_step")],
    }


def _original_graph(mode, input_mode, cores, model_dir):
    from tensorflow.compat.v1 import estimator
    from tensorflow.compat.v1.estimator import tpu

    config = tpu.RunConfig(master=MASTER, model_dir=model_dir,
                           tpu_config=tpu.TPUConfig(iterations_per_loop=ITERATIONS, tpu_job_name=JOB,
                                                    per_host_input_for_training=getattr(
                                                        tpu.InputPipelineConfig, input_mode)))
    est = tpu.TPUEstimator(make_model_fn(tpu_api()), config=config, use_tpu=True,
                           train_batch_size=PER_SHARD * cores, eval_batch_size=PER_SHARD * cores,
                           predict_batch_size=PER_SHARD * cores)
    key = {"train": estimator.ModeKeys.TRAIN, "eval": estimator.ModeKeys.EVAL,
           "predict": estimator.ModeKeys.PREDICT}[mode]
    from tensorflow_estimator.python.estimator.tpu import error_handling

    est._rendezvous[key] = error_handling.ErrorRendezvous(num_sources=3)  # as train()/evaluate() set it
    graph = tf.Graph()
    with graph.as_default():
        # What Estimator._train_model_default / _evaluate_build_graph do before any session is made.
        est._create_and_assert_global_step(graph)
        features, labels, _ = est._get_features_and_labels_from_input_fn(
            predict_input_fn if mode == "predict" else input_fn, key)
        est._call_model_fn(features, labels, key, est.config)
    return graph


def _tpu_nb_graph(mode, input_mode, cores, model_dir):
    import tpu_nb
    from tpu_nb.backends.tpu_graph import build_tpu_eval_graph, build_tpu_train_graph, query_tpu_system
    from tpu_nb.backends.tpu_predict_graph import build_tpu_predict_graph

    config = tpu_nb.RunConfig(model_dir=model_dir, tpu_config=tpu_nb.TPUConfig(
        iterations_per_loop=ITERATIONS,
        per_host_input_for_training=getattr(tpu_nb.InputPipelineConfig, input_mode)))
    est = tpu_nb.TPUEstimator(make_model_fn(tpu_api()), config=config, use_tpu=True,
                              train_batch_size=PER_SHARD * cores, eval_batch_size=PER_SHARD * cores,
                              predict_batch_size=PER_SHARD * cores)
    graph = tf.Graph()
    with graph.as_default():
        if mode == "predict":
            build_tpu_predict_graph(est, predict_input_fn, query_tpu_system(MASTER), job=JOB)
        else:
            build = {"train": build_tpu_train_graph, "eval": build_tpu_eval_graph}[mode]
            build(est, input_fn, ITERATIONS, query_tpu_system(MASTER), job=JOB)
    return graph


def tpu_api():
    """The names the program uses (ModeKeys, TPUEstimatorSpec) from the implementation under test."""
    if IMPL == "original":
        from tensorflow.compat.v1.estimator import ModeKeys
        from tensorflow.compat.v1.estimator.tpu import TPUEstimatorSpec
    else:
        from tpu_nb import ModeKeys, TPUEstimatorSpec
    return collections.namedtuple("Api", "ModeKeys TPUEstimatorSpec")(ModeKeys, TPUEstimatorSpec)


IMPL = "tpu_nb"
# (mode, input mode, cores, hosts). The original evaluates on several hosts only with PER_HOST_V2 (or
# BROADCAST), so eval/PER_HOST_V1 is compared on one host only; it predicts on one host only (tpu_nb
# predicts on several: tests/test_tpu_predict_graph.py).
CASES = [("train", "PER_HOST_V1", 8, 1), ("train", "PER_HOST_V2", 8, 1), ("eval", "PER_HOST_V1", 8, 1),
         ("eval", "PER_HOST_V2", 8, 1), ("train", "PER_HOST_V1", 32, 4), ("train", "PER_HOST_V2", 32, 4),
         ("eval", "PER_HOST_V2", 32, 4), ("predict", "PER_HOST_V1", 8, 1), ("predict", "PER_HOST_V2", 8, 1)]


def summaries(impl):
    """{'tf': version, 'train/PER_HOST_V1': summary, ...} for ``impl`` ('original' or 'tpu_nb')."""
    global IMPL
    IMPL = impl
    build = _original_graph if impl == "original" else _tpu_nb_graph
    out = {"tf": tf.__version__}
    for mode, input_mode, cores, hosts in CASES:
        with mock.patch.object(tpu_system_metadata, "_query_tpu_system_metadata",
                               side_effect=lambda *args, **kwargs: fake_metadata(cores, hosts)):
            with tempfile.TemporaryDirectory() as model_dir:
                out[f"{mode}/{input_mode}/{cores}x{hosts}"] = summarize(build(mode, input_mode, cores, model_dir))
    return out


if __name__ == "__main__":
    if "tf1" in sys.argv[2:]:
        # As most TPUEstimator programs started: TF1 behaviour (control flow v1, no eager), in both.
        tf.compat.v1.disable_v2_behavior()
    print(json.dumps(summaries(sys.argv[1] if len(sys.argv) > 1 else "tpu_nb")))
