"""Building one step of a model over N shards with TensorFlow's distribution runtime.

Graph-mode ``MirroredStrategy`` over the topology's devices replicates the
variables. model_fn sees the gradients a TPU core sees (no loss scaling), and
optimizers apply the mean of the replicas' gradients (``replica_updates``):
N=1 and N=8 shards with the same global batch produce the same weights, and
gradients summed with ``cross_replica_sum`` give the TPU's update. Per-replica tensors for
``host_call`` / ``eval_metrics`` / predictions are gathered in replica order
and concatenated along dimension 0, as the TPU outfeed does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import tensorflow as tf
from tensorflow.python.distribute import values as _values

from ..contract.config import InputPipelineConfig as IPC
from .host_calls import taken_before_updates
from ..graph.model_calls import call_model_fn
from .replica_collections import collections_per_replica, regularizers_on_every_replica
from .replica_updates import apply_means_of_replica_gradients
from ..contract.spec import EstimatorSpec, flat_tensors, repacked


def _resource_variables(next_creator, **kwargs):
    # MirroredStrategy mirrors RefVariables (TF1 behaviour's default) poorly: a Saver given them by name,
    # as EMA restoring does, sees tensors, not variables. A TPU computation uses resource variables anyway.
    kwargs["use_resource"] = True
    return next_creator(**kwargs)


@contextlib.contextmanager
def sharded_scope(strategy):
    """The strategy's scope, with every variable created in it a resource variable.

    Example::

        with sharded_scope(strategy):
            global_step = tf.compat.v1.train.get_or_create_global_step()
    """
    with tf.compat.v1.variable_creator_scope(_resource_variables), strategy.scope():
        yield


def _share_creators_with_outer_graphs():
    """Lets ``tf.init_scope`` in a replica thread create mirrored variables.

    Inside the device loop (a while_v2 body, a FuncGraph) ``init_scope`` moves to the outer graph, whose
    variable creators are kept per thread; a replica thread has none there, so a variable created under
    ``init_scope`` (ExponentialMovingAverage's shadow variables, optimizer slots) would escape the strategy
    and break its update. The replica's own creators are installed on the outer graphs for this thread.
    """
    graph = tf.compat.v1.get_default_graph()
    creators = graph._variable_creator_stack  # noqa: SLF001
    strategies = graph._distribution_strategy_stack  # noqa: SLF001
    outer = getattr(graph, "outer_graph", None)
    while outer is not None:
        # Both stacks are per thread: empty in a fresh replica thread.
        if not outer._variable_creator_stack:  # noqa: SLF001
            outer._variable_creator_stack = creators  # noqa: SLF001
        if not outer._distribution_strategy_stack:  # noqa: SLF001
            outer._distribution_strategy_stack = list(strategies)  # noqa: SLF001
        outer = getattr(outer, "outer_graph", None)


@contextlib.contextmanager
def _savers_take_mirrored_variables():
    """A ``Saver({name: variable})`` built meanwhile accepts mirrored variables.

    TensorFlow's graph-mode Saver turns a mirrored variable given by name into a tensor and refuses it
    (it only handles them in a list). Each is replaced by its mirrored saveable under the given name, which
    restores every replica's copy, as the checkpoint written by the default Saver does.
    """
    from tensorflow.python.trackable import base as trackable
    from tensorflow.python.training.saving import saveable_object_util as saveables

    original = saveables.validate_and_slice_inputs

    def as_saveable(name, value):
        if not isinstance(value, _values.DistributedVariable):
            return value
        factory = saveables.saveable_objects_from_trackable(value, tf1_saver=True).get(trackable.VARIABLE_VALUE_KEY)
        if factory is None:
            return value
        return factory(name) if callable(factory) else factory

    def validate(names_to_saveables):
        if isinstance(names_to_saveables, dict):
            names_to_saveables = {name: as_saveable(name, v) for name, v in names_to_saveables.items()}
        return original(names_to_saveables)

    saveables.validate_and_slice_inputs = validate
    try:
        yield
    finally:
        saveables.validate_and_slice_inputs = original


def _scaffold_fn_in_cross_replica_context(spec, strategy):
    """``scaffold_fn`` runs in the strategy's scope, where a mirrored variable reads as one variable.

    Outside it, a Saver given mirrored variables by name (EMA weights through
    ``ema.variables_to_restore()``, a common scaffold_fn) sees tensors and refuses them.
    """
    fn = getattr(spec, "scaffold_fn", None)
    if fn is None:
        return spec

    def scaffold_fn():
        with strategy.scope(), _savers_take_mirrored_variables():
            return fn()

    return dataclasses.replace(spec, scaffold_fn=scaffold_fn)


def _load_into_every_replica(self, value, session=None):
    """``Variable.load`` for a mirrored variable: every replica's copy gets ``value``.

    TensorFlow's inherited ``load`` feeds ``self.initializer.inputs[1]``, which for a mirrored variable
    is a new group op (refused in a finalized graph) without such an input. Hooks written for the
    original (``var.load(v, session=run_context.session)`` in ``after_run``) expect the TPU's single
    copy to change, so each replica's own initializer is fed instead: no op is built.
    """
    if tf.executing_eagerly():
        self.assign(value)
        return
    session = session or tf.compat.v1.get_default_session()
    if session is None:
        raise ValueError(f"{self.name}.load(value) needs a session: pass load(value, session=...), "
                         "e.g. run_context.session in a SessionRunHook.")
    initializers = [v.initializer for v in self._values]  # noqa: SLF001
    session.run(initializers, {init.inputs[1]: value for init in initializers})


def install_mirrored_load():
    if "load" not in vars(_values.DistributedVariable):
        _values.DistributedVariable.load = _load_into_every_replica


def make_mirrored_strategy(devices):
    """A graph-mode MirroredStrategy over ``devices`` whose optimizers apply the mean of the replicas' gradients."""
    install_mirrored_load()
    strategy = tf.compat.v1.distribute.MirroredStrategy(
        devices=list(devices),
        cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0]),
    )
    # Not Estimator's switch (_scale_loss_for_estimator): model_fn sees a TPU core's gradients, and the
    # optimizers apply their mean over shards.
    return apply_means_of_replica_gradients(strategy)


def per_replica(values):
    """A structure whose leaves are PerReplica values, from a list of per-replica structures."""
    if values[0] is None:
        return None
    return tf.nest.map_structure(lambda *xs: _values.PerReplica(tuple(xs)), *values)


def gather(strategy, value, only_first=False):
    """Concatenates a per-replica tensor along dim 0, in replica order (the outfeed's order)."""
    parts = strategy.experimental_local_results(value)
    if only_first:
        return parts[0]
    if parts[0].shape.rank == 0:
        raise ValueError("internal: scalar cannot be gathered along dim 0")
    return tf.concat(list(parts), 0)


def mask_if_batch(gathered, mask):
    """Drops the padded rows of a gathered eval_metrics tensor, if it carries the batch.

    Only a tensor with a row per example (as many rows as ``mask``) was padded; anything else (a learning
    rate tiled to a few rows, per-class counts) reaches metric_fn as the original passed it. A first
    dimension unknown when the graph is built is decided when it runs.
    """
    rows = tf.compat.dimension_value(gathered.shape[0]) if gathered.shape.rank else None
    batch = tf.compat.dimension_value(mask.shape[0])
    if rows is not None and batch is not None:
        return tf.boolean_mask(gathered, mask) if rows == batch else gathered
    if gathered.shape.rank == 0:
        return gathered
    carries_batch = tf.equal(tf.shape(gathered)[0], tf.shape(mask)[0])
    return tf.cond(carries_batch, lambda: tf.boolean_mask(gathered, mask), lambda: tf.identity(gathered))


def _flatten_fn_tensors(field, value):
    """(fn, list_or_dict) -> (fn, structure, flat list); sharded tensors need a batch dimension."""
    fn, tensors = value
    flat = [tf.convert_to_tensor(t) for t in flat_tensors(tensors)]
    for i, t in enumerate(flat):
        if t.shape.rank == 0:
            raise ValueError(
                f"{field}: tensor #{i} ({t.name}) is a scalar, but on shards each replica's tensors are "
                "concatenated along dimension 0. Reshape it to [1], e.g. tf.reshape(t, [1])."
            )
    return fn, tensors, flat


def as_written(fn):
    """``fn`` marked so that a strategy calls it as written rather than through AutoGraph.

    Graph-mode ``call_for_each_replica`` converts its function with AutoGraph unless told not to, and the
    conversion reaches model_fn and everything it calls. A Python ``if`` on a tensor became a ``tf.cond``,
    where one device, and a TPU (TPUEstimator called model_fn as written), raise a TypeError. And converting
    the network's code again for each replica took seconds of a ResNet's build.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def _replica_index():
    """This replica's index among the local replicas (the strategy runs each in a thread of its own)."""
    index = getattr(threading.current_thread(), "replica_id", None)
    if index is None:
        index = tf.distribute.get_replica_context()._replica_id_in_sync_group  # noqa: SLF001
    return int(index)


class ShardedStep:
    """Calls model_fn once per replica for one step and gathers what the host needs.

    After ``build()``: ``loss`` (mean over replicas, float32), ``host_call`` ((fn, gathered tensors) or
    None), ``eval_metrics`` ((fn, gathered tensors) or None), ``predictions`` (gathered dict or None),
    ``mask`` (gathered bool vector or None), ``spec`` (replica 0's spec).
    """

    def __init__(self, est, strategy, backend, plan, context, mode):
        self.est = est
        self.strategy = strategy
        self.backend = backend  # where per-replica values meet: gather_in_replica / gather_to_host
        self.plan = plan
        self.context = context
        self.mode = mode

    def _gather_in_replica(self, tensors):
        return self.backend.gather_in_replica(tensors)

    def _gather(self, value, only_first=False):
        return self.backend.gather_to_host(self.strategy, value, only_first=only_first)

    def build(self, replica_inputs, train=False, mask_rows=True):
        """``mask_rows=False``: eval_metrics tensors keep every row (the step is all real or all padding)."""
        features = per_replica([f for f, _, _ in replica_inputs])
        labels = per_replica([l for _, l, _ in replica_inputs])
        masks = [m for _, _, m in replica_inputs]
        captured = {}
        est = self.est

        def replica_fn(features, labels):
            index = _replica_index()
            regularizers = regularizers_on_every_replica() if index > 0 else contextlib.nullcontext()
            with views.replica(index), regularizers:
                return build_replica(features, labels)

        def build_replica(features, labels):
            _share_creators_with_outer_graphs()
            spec = call_model_fn(est.model_fn, features, labels, self.mode, est.config, est.params,
                                 self.plan.model_fn_batch, True, allow_estimator_spec=train, context=self.context,
                                 first_replica="spec" not in captured)
            captured.setdefault("spec", spec)
            deps = [spec.train_op] if train else []
            outputs = {}
            host_values = None
            if self.mode != "infer" and getattr(spec, "host_call", None) is not None:  # every train/eval step
                _, _, host_values = _flatten_fn_tensors("host_call", spec.host_call)
                if train:
                    host_values = taken_before_updates(host_values)
            with tf.control_dependencies(deps):
                if spec.loss is not None:
                    outputs["loss"] = tf.identity(tf.cast(tf.convert_to_tensor(spec.loss), tf.float32))
                if host_values is not None:
                    outputs["host_call"] = self._gather_in_replica([tf.identity(t) for t in host_values])
                if not train and isinstance(spec, EstimatorSpec) is False and spec.eval_metrics is not None:
                    _, _, flat = _flatten_fn_tensors("eval_metrics", spec.eval_metrics)
                    outputs["eval_metrics"] = self._gather_in_replica(list(flat))
                if spec.predictions is not None and self.mode == "infer":
                    preds = spec.predictions if isinstance(spec.predictions, dict) else {"predictions": spec.predictions}
                    for key, value in preds.items():
                        value = tf.convert_to_tensor(value)
                        if value.shape.rank == 0 or tf.compat.dimension_value(value.shape[0]) != self.plan.model_fn_batch:
                            raise ValueError(
                                f"prediction {key!r} has shape {value.shape}: its first dimension should be static "
                                f"and equal to the per-shard batch size {self.plan.model_fn_batch}."
                            )
                    outputs["predictions"] = dict(preds)
            return outputs

        with sharded_scope(self.strategy), collections_per_replica() as views:
            results = self.strategy.extended.call_for_each_replica(as_written(replica_fn), args=(features, labels))
        self.spec = _scaffold_fn_in_cross_replica_context(captured["spec"], self.strategy)
        broadcast = self.plan.input_mode == IPC.BROADCAST
        self.loss = None
        if "loss" in results:
            self.loss = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, results["loss"], axis=None)
            if not train and masks[0] is not None and self.plan.input_mode != IPC.BROADCAST:
                self.loss = _loss_of_real_rows(self.strategy.experimental_local_results(results["loss"]),
                                               masks, self.loss)
        self.host_call = None
        if "host_call" in results:
            fn, structure, _ = _flatten_fn_tensors("host_call", self.spec.host_call)
            gathered = [self._gather(v) for v in results["host_call"]]
            self.host_call = (fn, repacked(structure, gathered))
        self.eval_metrics = None
        self.mask = None
        if masks[0] is not None:
            self.mask = masks[0] if broadcast else tf.concat(masks, 0)
        if "eval_metrics" in results:
            fn, structure, _ = _flatten_fn_tensors("eval_metrics", self.spec.eval_metrics)
            gathered = [self._gather(v, only_first=broadcast) for v in results["eval_metrics"]]
            if self.mask is not None and mask_rows:
                gathered = [mask_if_batch(t, self.mask) for t in gathered]
            self.eval_metrics = (fn, repacked(structure, gathered))
        self.predictions = None
        if "predictions" in results:
            self.predictions = {k: gather(self.strategy, v, only_first=broadcast)
                                for k, v in results["predictions"].items()}
            if self.mask is not None:
                self.predictions = {k: tf.boolean_mask(v, self.mask) for k, v in self.predictions.items()}
        return self


def _loss_of_real_rows(replica_losses, masks, mean):
    """A step's eval loss with each shard weighted by its real rows, so that shards of padding (an input
    that ended mid-step) do not pull the mean towards their loss on zeros; ``mean`` where they don't match."""
    if len(replica_losses) != len(masks):
        return mean
    real = [tf.reduce_sum(tf.cast(m, tf.float32)) for m in masks]
    total = tf.add_n(real)
    weighted = tf.add_n([tf.cast(loss, tf.float32) * r for loss, r in zip(replica_losses, real)])
    return tf.where(total > 0, weighted / tf.maximum(total, 1.0), mean)
