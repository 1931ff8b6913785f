"""Feeding N shards: input_fn invocations per the batch table, split into per-replica batches.

Training needs static per-replica shapes (as on a TPU). Evaluation and
prediction pad a short last batch to the static size and carry a boolean
mask of real rows; after the input ends every host yields all-padding
batches, so "no real row left on any shard" is the stopping signal.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import tensorflow as tf

from . import const_lifting
from .batching import BatchPlan
from ..contract.config import InputPipelineConfig as IPC
from ..graph.model_calls import call_input_fn, split_features_labels


class InputContext:
    """``params['context']``: the shard layout as seen from ``input_fn`` and ``model_fn``.

    Example::

        def input_fn(params):
            ctx = params['context']
            host_device, host_id, num_hosts, replicas = ctx.current_input_fn_deployment()
            return make_dataset(shard=host_id, num_shards=num_hosts).batch(params['batch_size'])
    """

    def __init__(self, topology, mode, plan: BatchPlan):
        self.num_replicas = topology.num_replicas
        self.num_hosts = topology.num_hosts
        self.num_of_replicas_per_host = topology.replicas_per_host
        self.num_of_cores_per_host = topology.replicas_per_host
        self.mode = mode
        self.global_batch_size = plan.global_batch
        self.batch_size = plan.model_fn_batch
        self.input_mode = plan.input_mode
        self._topology = topology
        self._deployment: Optional[Tuple] = None  # set only while an input_fn call runs

    def _only_in_input_fn(self, what):
        # The original's phrase, which callers match on; one object serves both functions here, so "not
        # inside an input_fn call" is what "called from model_fn" means.
        if self._deployment is None:
            raise RuntimeError(f"This TPUContext instance must not be called from model_fn. {what} describes one "
                               "input_fn call: read it inside input_fn (from params['context']).")

    def current_input_fn_deployment(self):
        """``(host_device, invocation_index, total_invocations, replicas_consumed)`` of this input_fn call.

        Only inside input_fn; the device is in full form, e.g. ``/replica:0/task:0/device:CPU:0``.
        """
        self._only_in_input_fn("current_input_fn_deployment()")
        return self._deployment

    @property
    def current_host(self) -> int:
        """The index of the host this input_fn call feeds (only inside input_fn).

        Example::

            def input_fn(params):
                ctx = params['context']
                return make_dataset().shard(ctx.num_hosts, ctx.current_host).batch(params['batch_size'])
        """
        self._only_in_input_fn("current_host")
        _, index, _, consumed = self._deployment
        # PER_SHARD_V1 counts replicas (1 consumed each), PER_HOST_* hosts, BROADCAST/SLICED one call.
        return index * consumed // self.num_of_replicas_per_host

    @property
    def device_assignment(self):
        """The TPU device assignment, for model parallelism; ``None`` here (only inside model_fn, as the original).

        tpu_nb runs data parallel only (``num_cores_per_replica`` 1), for which the original also gave ``None``.
        """
        if self._deployment is not None:
            raise RuntimeError("This TPUContext instance must not be called from input_fn. device_assignment is "
                               "for model_fn: read params['context'].device_assignment there.")
        return None

    def device_for_replica(self, replica_id: int) -> Tuple[str, int]:
        """``(host CPU device, ordinal of the replica on that host)``, from input_fn or model_fn.

        Example::

            host_device, ordinal = params['context'].device_for_replica(3)  # e.g. ('/task:0/device:CPU:0', 3)
        """
        return self._topology.replica_host(replica_id)

    @property
    def tpu_host_placement_function(self):
        """A function ``host_id -> device`` of that host's input pipeline (full form, as the deployment's)."""
        return lambda host_id: self._topology.host_device(host_id)

    def __repr__(self):
        return (f"InputContext(num_replicas={self.num_replicas}, num_hosts={self.num_hosts}, "
                f"mode={self.mode!r}, input_mode={self.input_mode.name if self.input_mode else None})")


def _deployments(topology, plan: BatchPlan):
    """The input_fn invocations this process makes: (device, index, total, replicas consumed)."""
    r, h, per_host = topology.num_replicas, topology.num_hosts, topology.replicas_per_host
    local = set(topology.local_hosts)
    mode = plan.input_mode
    if mode == IPC.PER_SHARD_V1:
        return [(topology.host_device(i // per_host), i, r, 1) for i in range(r) if i // per_host in local]
    if mode in (IPC.PER_HOST_V1, IPC.PER_HOST_V2):
        return [(topology.host_device(i), i, h, per_host) for i in range(h) if i in local]
    if len(local) != h:
        raise ValueError(f"InputPipelineConfig.{mode.name} feeds every shard from one input_fn call, which "
                         "needs all shards in one process; with several workers use PER_HOST_V1 or PER_HOST_V2.")
    return [(topology.host_device(0), 0, 1, r)]  # BROADCAST, SLICED


_SPLIT_MODES = (IPC.PER_HOST_V1, IPC.SLICED)  # one input_fn batch split over several replicas


def _check_static(element_spec, plan: BatchPlan, what, batch_axis=None):
    """Static shapes for training; a batch axis of the input_fn batch size only where it gets split.

    In PER_SHARD_V1, PER_HOST_V2 and BROADCAST each element goes to one replica whole, so (as the
    original) any fully defined layout is accepted: a transposed or flattened batch is the model's business.
    """
    batch = plan.input_fn_batch
    features_spec, labels_spec = split_features_labels(element_spec)
    for position, structure in ((0, features_spec), (1, labels_spec)):
        role = "features" if position == 0 else "labels"
        axis = _axis(batch_axis, position)
        for spec in tf.nest.flatten(structure):
            if spec is None:  # no labels
                continue
            shape = spec.shape
            if shape.rank is None or not shape.is_fully_defined():
                raise ValueError(
                    f"{what}: {role} must have static shape, got {shape}. Sharded training needs static shapes, "
                    "as on a TPU: batch with drop_remainder=True (dataset.batch(params['batch_size'], "
                    "drop_remainder=True))."
                )
            if plan.input_mode not in _SPLIT_MODES:
                continue
            if shape.rank <= axis:
                raise ValueError(f"{what}: {plan.input_mode.name} splits every {role} tensor along its batch axis "
                                 f"{axis} over the shards, but one has shape {shape}. Give it a batch dimension, "
                                 "or use InputPipelineConfig.PER_HOST_V2, which needs none.")
            size = tf.compat.dimension_value(shape[axis])
            if size != batch:
                raise ValueError(
                    f"{what}: the input yields batches of {size} (axis {axis} of {role} shape {shape}), but "
                    f"params['batch_size'] is {batch}: batch with params['batch_size'], or set batch_axis "
                    "if the batch is not on axis 0."
                )


def _zeros(shape, dtype):
    return tf.fill(shape, "") if dtype == tf.string else tf.zeros(shape, dtype)


def pad_with_stop_signal(dataset: tf.data.Dataset, batch: int, what: str) -> tf.data.Dataset:
    """Adds a mask of real rows to every element, then repeats all-padding elements forever.

    Only an input that can really end short (an unknown batch dimension, axis 0) is padded to ``batch``
    rows. Elements with fully defined shapes pass unchanged, whatever their layout (a transposed or
    flattened batch, as TPU input pipelines use), with every row real.
    """
    element_spec = dataset.element_spec
    specs = tf.nest.flatten(element_spec)
    if all(spec.shape.is_fully_defined() for spec in specs):
        real = dataset.map(lambda *element: (element[0] if len(element) == 1 else element, tf.ones([batch], tf.bool)))
        filler_values = tf.nest.map_structure(lambda s: _zeros(s.shape.as_list(), s.dtype), element_spec)
    else:
        features_spec, labels_spec = split_features_labels(element_spec)
        for role, structure in (("features", features_spec), ("labels", labels_spec)):
            for spec in tf.nest.flatten(structure):
                if spec is not None and (spec.shape.rank is None or spec.shape.rank == 0
                                         or not spec.shape[1:].is_fully_defined()):
                    raise ValueError(
                        f"{what}: {role} must have static shape except for the batch dimension (axis 0), got "
                        f"shape {spec.shape}: give every {role[:-1]} tensor rank >= 1 and static non-batch "
                        "dimensions."
                    )

        def pad(*element):
            structure = element[0] if len(element) == 1 else element
            flat = tf.nest.flatten(structure)
            n = tf.shape(flat[0])[0]
            padded = []
            for t in flat:
                extra = _zeros(tf.concat([[batch - n], tf.shape(t)[1:]], 0), t.dtype)
                padded.append(tf.ensure_shape(tf.concat([t, extra], 0), [batch] + t.shape.as_list()[1:]))
            return tf.nest.pack_sequence_as(structure, padded), tf.range(batch) < n

        real = dataset.map(pad)
        filler_values = tf.nest.map_structure(lambda s: _zeros([batch] + s.shape.as_list()[1:], s.dtype),
                                              element_spec)
    filler = tf.data.Dataset.from_tensors((filler_values, tf.zeros([batch], tf.bool))).repeat()
    return real.concatenate(filler)


def _split(structure, pieces, axis=0):
    if pieces == 1:
        return [structure]
    flat = tf.nest.flatten(structure)
    parts = [tf.split(t, pieces, axis=axis) for t in flat]
    return [tf.nest.pack_sequence_as(structure, [p[i] for p in parts]) for i in range(pieces)]


class ShardedInput:
    """One step's per-replica inputs: ``next()`` -> list of (features, labels, mask) in replica order.

    Each input_fn call may return a Dataset (read inside the device loop) or tensors, e.g. from
    ``make_one_shot_iterator(dataset).get_next()``, which a host thread feeds to the loop (``infeed``).
    """

    def __init__(self, est, input_fn, phase, topology, plan: BatchPlan, pad: bool, context: InputContext,
                 batch_axis=None):
        from .host_infeed import HostInfeed, check_static_tensors

        self.topology = topology
        self.plan = plan
        self.pad = pad
        self._rows_whole = True  # False once an input may end with a short batch (padded row by row)
        self.iterators = []
        self.readers = []  # per input_fn call: () -> (structure, mask or None)
        self.infeed = None
        self.batch_axis = batch_axis
        what = f"input_fn ({plan.input_mode.name}, {phase})"
        calls_per_step = topology.replicas_per_host if plan.input_mode == IPC.PER_HOST_V2 else 1
        for device, index, total, consumed in _deployments(topology, plan):
            context._deployment = (device, index, total, consumed)
            graph = tf.compat.v1.get_default_graph()
            since = const_lifting.mark(graph)
            try:
                with tf.device(device):
                    returned = call_input_fn(input_fn, phase, est.config, est.params, plan.input_fn_batch, context)
            finally:
                context._deployment = None
            const_lifting.lift_dataset_constants(graph, returned, since)  # numpy arrays: fed, not embedded
            if returned is None:
                raise ValueError(f"{what} returned None: return a tf.data.Dataset, (features, labels) or features.")
            if isinstance(returned, tf.data.Dataset):
                self.readers.append(self._dataset_reader(returned, device, what))
                continue
            if phase == "infer":
                raise TypeError(
                    f"For mode PREDICT, `input_fn` must return `Dataset` instead of `features` and `labels` "
                    f"({what} returned {type(returned).__name__}): prediction needs the end of the input to "
                    "stop and to pad the last batch. Return tf.data.Dataset...batch(params['batch_size'])."
                )
            features, labels = split_features_labels(returned)
            check_static_tensors(features, what, "features")
            check_static_tensors(labels, what, "labels")
            _check_static(_spec_of((features, labels) if labels is not None else features), plan, what, batch_axis)
            if self.infeed is None:
                self.infeed = HostInfeed()
            source = self.infeed.add(returned, device, calls_per_step)
            mask = (lambda: tf.ones([plan.input_fn_batch], tf.bool)) if pad else (lambda: None)
            self.readers.append(lambda source=source, mask=mask: (self.infeed.dequeue(source), mask()))

    def _dataset_reader(self, dataset, device, what):
        if self.pad:
            if not all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(dataset.element_spec)):
                self._rows_whole = False
            dataset = pad_with_stop_signal(dataset, self.plan.input_fn_batch, what)
            if self.plan.input_mode in _SPLIT_MODES:
                _check_static(dataset.element_spec[0], self.plan, what, self.batch_axis)
        else:
            _check_static(dataset.element_spec, self.plan, what, self.batch_axis)
        with tf.device(device):
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        self.iterators.append(iterator)
        if self.pad:
            return lambda: tuple(iterator.get_next())
        return lambda: (iterator.get_next(), None)

    loopable = True  # Datasets are read inside the device loop; tensors come through the host infeed

    @property
    def from_tensors(self) -> bool:
        """True when input_fn returned tensors (no end-of-input signal: evaluation needs steps)."""
        return self.infeed is not None

    @property
    def whole_steps(self) -> bool:
        """True when every step's rows are all real or all padding: one input, never padded row by row.

        Then a step's eval_metrics tensors need no row mask (which would lose their static first
        dimension); only the steps past the end of the input, all padding, are left out.
        """
        return len(self.readers) == 1 and self._rows_whole

    @property
    def one_element_per_step(self) -> bool:
        """True when each step takes one element of the input for all its shards (split, sliced or
        broadcast), so a step is all real or all padding whatever the input's length. In PER_HOST_V2 each
        shard takes an element of its own: an input that ends mid-step leaves some shards real, some padding."""
        mode = self.plan.input_mode
        if mode in (IPC.PER_HOST_V1, IPC.SLICED, IPC.BROADCAST):
            return True
        return self.topology.replicas_per_host == 1 if mode == IPC.PER_HOST_V2 else len(self.readers) <= 1

    @property
    def initializer(self):
        return tf.group(*[it.initializer for it in self.iterators])

    def _get(self, reader):
        """One element as (features, labels, mask); labels and mask may be None."""
        structure, mask = reader()
        return (*split_features_labels(structure), mask)

    def next(self) -> List[Tuple]:
        topo, mode = self.topology, self.plan.input_mode
        out = []
        if mode == IPC.PER_SHARD_V1:
            for reader in self.readers:
                out.append(self._get(reader))
        elif mode == IPC.PER_HOST_V2:
            for reader in self.readers:
                for _ in range(topo.replicas_per_host):
                    out.append(self._get(reader))
        elif mode == IPC.BROADCAST:
            out = [self._get(self.readers[0])] * topo.num_replicas  # all shards are local (checked when building)
        else:  # PER_HOST_V1 (one call per host) or SLICED (one call): split along the batch axis
            pieces = topo.replicas_per_host if mode == IPC.PER_HOST_V1 else topo.num_replicas
            for reader in self.readers:
                features, labels, mask = self._get(reader)
                f_parts = _split_batch_axis(features, pieces, self.batch_axis, 0)
                l_parts = _split_batch_axis(labels, pieces, self.batch_axis, 1) if labels is not None else [None] * pieces
                m_parts = _split(mask, pieces) if mask is not None else [None] * pieces
                out.extend(zip(f_parts, l_parts, m_parts))
        return out


def _spec_of(structure):
    return tf.nest.map_structure(lambda t: tf.TensorSpec.from_tensor(tf.convert_to_tensor(t)), structure)


def _axis(batch_axis, position):
    """The batch axis of features (position 0) or labels (1): the original's (features, labels) pair."""
    if batch_axis is None:
        return 0
    return batch_axis[position] if isinstance(batch_axis, (tuple, list)) else batch_axis


def _split_batch_axis(structure, pieces, batch_axis, position):
    """Splits along ``batch_axis`` (default dim 0)."""
    return _split(structure, pieces, axis=_axis(batch_axis, position))
