"""The TPU backend's training and evaluation graphs, built with TensorFlow's own graph-mode TPU runtime.

What a TPU training session run would execute, as the original TPUEstimator built it:

* per host, the input pipeline on that host's CPU, in a host-side loop that
  puts ``iterations`` per-shard batches into the infeed of each of the host's
  TPU cores (``InfeedQueue``);
* one ``tf.compat.v1.tpu.replicate``'d computation over every core: a
  ``training_loop.repeat`` of ``iterations`` steps, each dequeuing its shard's
  batch, calling ``model_fn`` (``params['batch_size']`` = the per-shard batch)
  and running its ``train_op``; ``CrossShardOptimizer``'s ``cross_replica_sum``
  stays TensorFlow's TPU op;
* ``host_call`` tensors leave the computation through the outfeed (no host-only
  op such as a FIFOQueue inside it) and are dequeued on the hosts in replica
  order, concatenated along dimension 0 and handed to the host function.

Evaluation is built the same way, with each host's batches padded to full size and a mask of real
rows in the infeed; the loss, the mask and ``eval_metrics`` tensors leave through the outfeed and the
host runs ``metric_fn`` on the real rows (a step without real rows is the stopping signal).

This module only builds the graphs; the TPU backend (``tpu.py``) runs them, with the host threads of
``tpu_runtime.py`` beside each loop. Building needs no TPU (``tests/test_tpu_graphs.py`` fakes
TensorFlow's TPU system query with 8x1 and 32x4 topologies); running needs one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from ..inputs.batching import BatchPlan, plan_batches
from ..contract.config import InputPipelineConfig
from ..graph.model_calls import call_input_fn, call_model_fn, split_features_labels
from ..contract.modes import ModeKeys
from .sharded import _flatten_fn_tensors, mask_if_batch
from ..contract.spec import call_with_tensors, repacked


@dataclasses.dataclass(frozen=True)
class TPUSystem:
    """A TPU system as TensorFlow's metadata query describes it (``query_tpu_system``).

    ``topology``: TensorFlow's ``tf.tpu.experimental.Topology`` (mesh and core coordinates).
    """

    num_cores: int
    num_hosts: int
    cores_per_host: int
    topology: Any

    @property
    def description(self) -> str:
        """One line for logs: 'TPU 8x1 (8 cores, 1 host)'."""
        hosts = f"{self.num_hosts} host{'s' if self.num_hosts != 1 else ''}"
        return f"TPU {self.num_cores}x{self.num_hosts} ({self.num_cores} cores, {hosts})"

    def device_assignment(self):
        """One replica per core (data parallelism; model parallelism is not supported)."""
        from tensorflow.python.tpu import device_assignment

        return device_assignment.device_assignment(self.topology, num_replicas=self.num_cores)


def query_tpu_system(master: str, cluster_def=None) -> TPUSystem:
    """Asks the TPU at ``master`` (``grpc://...``, or ``''`` for a local TPU VM) for its cores, hosts and mesh.

    Goes through TensorFlow's own query (``tpu_system_metadata._query_tpu_system_metadata``), the
    function the original TPUEstimator's tests replace with a fake topology.
    """
    from tensorflow.python.tpu import tpu_system_metadata

    meta = tpu_system_metadata._query_tpu_system_metadata(  # noqa: SLF001
        master, cluster_def=cluster_def, query_topology=True)
    if meta.topology is None:
        raise RuntimeError(f"The TPU system at {master or 'local'} reported no topology; a TPU training graph "
                           "needs the core mesh. Check that the address names a TPU worker.")
    return TPUSystem(int(meta.num_cores), int(meta.num_hosts), int(meta.num_of_cores_per_host), meta.topology)


@dataclasses.dataclass(frozen=True)
class _TPUGraph:
    """What a built TPU train or evaluation graph holds either way.

    ``infeed_loops``: one op per host that enqueues ``iterations`` per-shard batches (run beside the
    computation); ``replicated``: the per-replica outputs of ``tpu.replicate``; ``replica_hosts``: the
    host device of each replica; ``outfeed_dequeues``: per replica, in replica order, its
    ``OutfeedDequeueTuple`` op.
    """

    global_step: Any
    plan: BatchPlan
    num_replicas: int
    replica_hosts: Tuple[str, ...]
    initializers: Tuple[Any, ...]
    infeed_loops: Tuple[Any, ...]
    replicated: Any
    spec: Any
    outfeed_dequeues: Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class TPUTrainGraph(_TPUGraph):
    """A built TPU training graph (one session run = ``iterations`` steps on every core).

    ``loss``: replica 0's loss after the loop; ``host_call_outputs``: what the host function returned
    on the dequeued tensors (None without host_call); ``host_call_values``: the dequeued tensors the host
    function got, concatenated in replica order (one step's; None without host_call).
    """

    loss: Any
    host_call_outputs: Any
    host_call_values: Any = None


def _tpu_global_step():
    """The global step as the original created it for TPUs: a resource variable (TF1 behaviour too)."""
    graph = tf.compat.v1.get_default_graph()
    if tf.compat.v1.train.get_global_step(graph) is not None:
        raise ValueError("The graph already has a global step; build the TPU training graph in a new tf.Graph.")
    with graph.name_scope(None):
        return tf.compat.v1.get_variable(
            tf.compat.v1.GraphKeys.GLOBAL_STEP, shape=[], dtype=tf.int64,
            initializer=tf.compat.v1.zeros_initializer(), trainable=False, use_resource=True,
            collections=[tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, tf.compat.v1.GraphKeys.GLOBAL_STEP])


class _HostInputs:
    """Per-host input pipelines and the infeed they fill: each replica's core gets its own shard."""

    def __init__(self, est, input_fn, mode, plan, assignment, replica_hosts, pad=False):
        self._est, self._input_fn, self._mode, self._plan, self._pad = est, input_fn, mode, plan, pad
        self._assignment = assignment
        self.queues: List[Any] = []  # one InfeedQueue per host
        self.structure = None
        self.initializers: List[Any] = []
        hosts = list(dict.fromkeys(replica_hosts))  # in the order of their first replica
        self.replicas_of = {h: [r for r, rh in enumerate(replica_hosts) if rh == h] for h in hosts}
        # params['context'] for input_fn and model_fn, as on simulated shards: which host an input_fn call
        # feeds (without it every host of a pod read the whole input, so each example counted once per host).
        from ..inputs.sharded_inputs import InputContext
        from .topology import Topology

        layout = Topology("tpu", len(replica_hosts), len(hosts), devices=(), device_type="TPU", description="TPU",
                          host_devices=tuple(hosts), local_host_ids=tuple(range(len(hosts))))
        self.context = InputContext(layout, mode, plan)

    def _iterator(self, device, deployment):
        """One input_fn call on ``device``; ``deployment``: what current_input_fn_deployment() answers in it."""
        self.context._deployment = deployment  # noqa: SLF001 - set only while this input_fn call runs
        try:
            with tf.device(device):
                returned = call_input_fn(self._input_fn, self._mode, self._est.config, self._est.params,
                                         self._plan.input_fn_batch, self.context)
        finally:
            self.context._deployment = None  # noqa: SLF001
        with tf.device(device):
            if not isinstance(returned, tf.data.Dataset):
                raise ValueError("On a TPU, input_fn must return a tf.data.Dataset (the infeed needs a batch "
                                 f"per step), got {type(returned).__name__}: wrap the tensors with "
                                 "tf.data.Dataset.from_tensor_slices(...).batch(params['batch_size'], "
                                 "drop_remainder=True).")
            if self._pad:
                # Evaluation: a short last batch padded to full size with a mask of real rows, then
                # all-padding batches forever, so the infeed never runs dry; a step without real rows is
                # the host's stopping signal.
                from ..inputs.sharded_inputs import pad_with_stop_signal

                returned = pad_with_stop_signal(returned, self._plan.input_fn_batch, "input_fn")
            iterator = tf.compat.v1.data.make_initializable_iterator(returned)
        self.initializers.append(iterator.initializer)
        return iterator

    def _flat(self, element):
        if self._pad:
            element, mask = element
            structure = (*split_features_labels(element), mask)
        else:
            structure = split_features_labels(element)
        return self._static_flat(structure, "batch with drop_remainder=True and give every feature a fixed shape")

    def _static_flat(self, structure, fix):
        """``structure`` flattened for the infeed (the first one is kept to pack dequeues); static shapes only."""
        flat = tf.nest.flatten(structure)
        if self.structure is None:
            self.structure = structure
        for t in flat:
            if not t.shape.is_fully_defined():
                raise ValueError(f"The TPU infeed needs static shapes, but input_fn gives {t.name} the shape "
                                 f"{t.shape}: {fix}.")
        return flat

    def infeed_loop(self, host, iterations):
        """The op that enqueues ``iterations`` steps of ``host``'s shards, as one host-side loop."""
        replicas = self.replicas_of[host]
        mode = self._plan.input_mode
        if mode == InputPipelineConfig.PER_SHARD_V1:  # one call per replica, numbered over all replicas
            iterators = [self._iterator(host, (host, r, self.context.num_replicas, 1)) for r in replicas]
        else:  # one call per host
            host_index = list(self.replicas_of).index(host)
            iterators = [self._iterator(host, (host, host_index, len(self.replicas_of), len(replicas)))]

        def shards():
            if mode == InputPipelineConfig.PER_HOST_V1:
                # One host batch, split into the host's per-shard batches along dimension 0.
                flat = self._flat(iterators[0].get_next())
                pieces = [tf.split(t, len(replicas), axis=0) for t in flat]
                return [[p[i] for p in pieces] for i in range(len(replicas))]
            if mode == InputPipelineConfig.PER_HOST_V2:
                return [self._flat(iterators[0].get_next()) for _ in replicas]
            return [self._flat(it.get_next()) for it in iterators]  # PER_SHARD_V1

        queue = []

        def body(i):
            from tensorflow.python.tpu import tpu_feed

            sharded = shards()
            # One queue per host, as the original: TF allows one enqueue-op generation per queue (TF1 graphs).
            queue.append(tpu_feed.InfeedQueue(number_of_tuple_elements=len(sharded[0])))
            enqueues = queue[-1].generate_enqueue_ops(
                sharded, tpu_ordinal_function=lambda k: self._assignment.tpu_ordinal(replicas[k]),
                placement_function=lambda k: host)
            with tf.control_dependencies(enqueues):
                return i + 1

        with tf.device(host):
            loop = tf.while_loop(lambda i: i < iterations, body, [tf.constant(0)], parallel_iterations=1,
                                 name="infeed_loop")
        if self.queues and (queue[-1].tuple_shapes, queue[-1].tuple_types) != (self.queues[0].tuple_shapes,
                                                                                self.queues[0].tuple_types):
            raise ValueError(
                f"input_fn gave host {host} per-shard batches of {queue[-1].tuple_shapes} "
                f"({queue[-1].tuple_types}), but the first host {self.queues[0].tuple_shapes} "
                f"({self.queues[0].tuple_types}): every core runs the same computation, so every host must "
                "feed the same shapes and dtypes.")
        self.queues.append(queue[-1])
        return loop

    def dequeue(self):
        """Inside the computation: this replica's (features, labels) for one step."""
        # Every host's queue has the same tuple of per-shard shapes; any of them builds the dequeue.
        return tf.nest.pack_sequence_as(self.structure, self.queues[0].generate_dequeue_op())


class _Outfeed:
    """Per-step tensors through the outfeed: enqueued in the computation, dequeued per replica on the hosts."""

    def __init__(self, what):
        self.what = what  # 'host_call' or 'eval_metrics', for names and messages
        self.dtypes = None
        self.shapes = None

    def enqueue(self, flat):
        flat = [tf.convert_to_tensor(t) for t in flat]
        # Concatenated along dimension 0 on the host: the backend's own scalars (the eval loss) travel as [1];
        # users' scalars were refused before, as the original and the simulated backend refuse them.
        flat = [tf.reshape(t, [1]) if t.shape.rank == 0 else t for t in flat]
        for t in flat:
            if not t.shape.is_fully_defined():
                raise ValueError(f"{self.what} tensor {t.name} has shape {t.shape}; the TPU outfeed needs static "
                                 f"shapes. Reshape it to a fixed shape before returning it in {self.what}.")
        self.dtypes = [t.dtype for t in flat]
        self.shapes = [t.shape for t in flat]
        from tensorflow.python.tpu.ops import tpu_ops

        return tpu_ops.outfeed_enqueue_tuple(flat, name=f"{self.what}_outfeed")

    def host_side(self, assignment, replica_hosts):
        """(tensors, per-replica dequeue ops): one step's entries of every replica, concatenated in replica order."""
        from tensorflow.python.tpu.ops import tpu_ops

        dequeues = []
        for replica, host in enumerate(replica_hosts):
            with tf.device(host):
                dequeues.append(tpu_ops.outfeed_dequeue_tuple(
                    dtypes=self.dtypes, shapes=self.shapes, device_ordinal=assignment.tpu_ordinal(replica),
                    name=f"{self.what}_dequeue_replica_{replica}"))
        with tf.device(replica_hosts[0]):
            joined = [tf.concat([d[j] for d in dequeues], axis=0) for j in range(len(self.dtypes))]
        return joined, tuple(d[0].op for d in dequeues)


def _layout(est, system, batch_size, mode, phase, job):
    """(plan, device assignment, host device of each replica) for one phase on ``system``."""
    if batch_size is None:
        kind = {ModeKeys.TRAIN: "train", ModeKeys.EVAL: "eval"}[phase]
        raise ValueError(f"{kind}_batch_size is required on {system.description}: pass the global batch "
                         f"size, e.g. TPUEstimator(..., {kind}_batch_size=1024).")
    if mode in (InputPipelineConfig.BROADCAST, InputPipelineConfig.SLICED):
        raise NotImplementedError(f"InputPipelineConfig.{mode.name} is not supported on the TPU backend yet: "
                                  "use PER_HOST_V1, PER_HOST_V2 or PER_SHARD_V1.")
    plan = plan_batches(batch_size, system.num_cores, system.num_hosts, mode, phase)
    assignment = system.device_assignment()
    replica_hosts = tuple(assignment.host_device(r, job=job) for r in range(assignment.num_replicas))
    return plan, assignment, replica_hosts


def build_tpu_train_graph(est, input_fn, iterations, system: TPUSystem, job: Optional[str] = "worker"):
    """Builds, in the default graph, the TPU training graph of ``iterations`` steps per session run.

    ``est``: a TPUEstimator (its model_fn, params, config, train_batch_size); ``iterations``: an int, or
    the scalar int32 variable the TPU backend sets before each loop (read by the host enqueue loops and
    the computation alike); ``system``: the TPU (``query_tpu_system``, or a fake topology in tests);
    ``job``: the TPU workers' job name.
    Returns a ``TPUTrainGraph``. Raises for what the TPU path does not support (BROADCAST input,
    tensors instead of a Dataset, dynamic shapes).
    """
    from tensorflow.python.tpu import tpu, training_loop

    plan, assignment, replica_hosts = _layout(est, system, est.train_batch_size, est.config.tpu_config.input_mode,
                                              ModeKeys.TRAIN, job)
    global_step = _tpu_global_step()
    inputs = _HostInputs(est, input_fn, ModeKeys.TRAIN, plan, assignment, replica_hosts)
    # The host loops first: they fix the infeed's shapes, which the dequeue in the computation reads.
    infeed_loops = tuple(inputs.infeed_loop(host, iterations) for host in inputs.replicas_of)
    captured = {}

    def step(last_loss):
        features, labels = inputs.dequeue()
        spec = call_model_fn(est.model_fn, features, labels, ModeKeys.TRAIN, est.config, est.params,
                             plan.model_fn_batch, use_tpu=True, context=inputs.context)
        captured.setdefault("spec", spec)
        deps = [spec.train_op]
        if getattr(spec, "host_call", None) is not None:
            outfeed = captured.setdefault("outfeed", _Outfeed("host_call"))
            deps.append(outfeed.enqueue(_flatten_fn_tensors("host_call", spec.host_call)[2]))
        with tf.control_dependencies(deps):
            return tf.identity(tf.cast(spec.loss, tf.float32))

    def computation():
        return training_loop.repeat(iterations, step, [tf.constant(0.0)])

    replicated = tpu.replicate(computation, inputs=[[]] * system.num_cores, device_assignment=assignment)
    host_call_outputs, dequeues, joined = None, (), None
    if "outfeed" in captured:
        joined, dequeues = captured["outfeed"].host_side(assignment, replica_hosts)
        fn, structure = captured["spec"].host_call
        with tf.device(replica_hosts[0]):
            host_call_outputs = call_with_tensors(fn, repacked(structure, joined))
    return TPUTrainGraph(global_step=global_step, plan=plan, num_replicas=system.num_cores,
                         replica_hosts=replica_hosts, initializers=tuple(inputs.initializers),
                         infeed_loops=infeed_loops, replicated=replicated, spec=captured["spec"],
                         outfeed_dequeues=dequeues, loss=replicated[0][0], host_call_outputs=host_call_outputs,
                         host_call_values=joined)


@dataclasses.dataclass(frozen=True)
class TPUEvalGraph(_TPUGraph):
    """A built TPU evaluation graph (one session run = ``iterations`` eval steps on every core).

    Per step, on the host: ``loss`` and ``metrics`` are (value, update) pairs over the real rows of every
    replica (padding masked out); ``real_rows``: the step's real rows, 0 once every host's input has
    ended (the stopping signal); ``host_call_outputs``: what an evaluation host_call returned (None
    without one), run with the metric updates.
    """

    loss: Any
    metrics: Dict[str, Any]
    real_rows: Any
    host_call_outputs: Any = None


def build_tpu_eval_graph(est, input_fn, iterations, system: TPUSystem, job: Optional[str] = "worker"):
    """Builds, in the default graph, the TPU evaluation graph of ``iterations`` steps per session run.

    Each core's shard is padded to ``params['batch_size']`` rows with a mask of real rows; the loss, the
    mask and ``eval_metrics`` tensors leave through the outfeed, and the host runs ``metric_fn`` on the
    real rows of all replicas. Returns a ``TPUEvalGraph``.
    """
    from tensorflow.python.tpu import tpu, training_loop

    from ..graph.metric_calls import check_metric_dict
    from .replicated import eval_input_mode

    plan, assignment, replica_hosts = _layout(est, system, est.eval_batch_size, eval_input_mode(est),
                                              ModeKeys.EVAL, job)
    global_step = _tpu_global_step()
    inputs = _HostInputs(est, input_fn, ModeKeys.EVAL, plan, assignment, replica_hosts, pad=True)
    infeed_loops = tuple(inputs.infeed_loop(host, iterations) for host in inputs.replicas_of)
    captured = {}
    outfeed = _Outfeed("eval_metrics")

    def step(total_loss):
        features, labels, mask = inputs.dequeue()
        spec = call_model_fn(est.model_fn, features, labels, ModeKeys.EVAL, est.config, est.params,
                             plan.model_fn_batch, use_tpu=True, context=inputs.context, allow_estimator_spec=False)
        captured.setdefault("spec", spec)
        loss = tf.cast(spec.loss, tf.float32)
        metric_tensors = (_flatten_fn_tensors("eval_metrics", spec.eval_metrics)[2]
                          if spec.eval_metrics is not None else [])
        # As the original: an evaluation step's host_call leaves through the same outfeed, after eval_metrics.
        host_tensors = (_flatten_fn_tensors("host_call", spec.host_call)[2]
                        if getattr(spec, "host_call", None) is not None else [])
        captured.setdefault("metric_count", len(metric_tensors))
        enqueue = outfeed.enqueue([loss, mask] + metric_tensors + host_tensors)
        with tf.control_dependencies([enqueue]):
            return total_loss + loss

    def computation():
        return training_loop.repeat(iterations, step, [tf.constant(0.0)])

    replicated = tpu.replicate(computation, inputs=[[]] * system.num_cores, device_assignment=assignment)
    (losses, masks, *dequeued), dequeues = outfeed.host_side(assignment, replica_hosts)
    spec = captured["spec"]
    metric_tensors, host_tensors = dequeued[:captured["metric_count"]], dequeued[captured["metric_count"]:]
    with tf.device(replica_hosts[0]):
        rows = tf.reduce_sum(tf.cast(masks, tf.int64), name="real_rows")
        # A replica's loss is the mean over its shard; weight it by the shard's real rows.
        real_per_replica = tf.reduce_sum(tf.reshape(tf.cast(masks, tf.float32), [system.num_cores, -1]), axis=1)
        loss = tf.compat.v1.metrics.mean(losses, weights=real_per_replica, name="mean_loss")
        metrics = {}
        if spec.eval_metrics is not None:
            # Padding rows leave every per-example tensor before metric_fn sees it.
            real = [mask_if_batch(t, masks) for t in metric_tensors]
            metrics = check_metric_dict(call_with_tensors(spec.eval_metrics[0],
                                                           repacked(spec.eval_metrics[1], real)))
        host_call_outputs = None
        if getattr(spec, "host_call", None) is not None:
            # Every replica's rows, padding included, as the host_call of a simulated evaluation step sees them.
            host_call_outputs = call_with_tensors(spec.host_call[0], repacked(spec.host_call[1], host_tensors))
    return TPUEvalGraph(global_step=global_step, plan=plan, num_replicas=system.num_cores,
                        replica_hosts=replica_hosts, initializers=tuple(inputs.initializers),
                        infeed_loops=infeed_loops, replicated=replicated, spec=spec, outfeed_dequeues=dequeues,
                        loss=loss, metrics=metrics, real_rows=rows, host_call_outputs=host_call_outputs)
