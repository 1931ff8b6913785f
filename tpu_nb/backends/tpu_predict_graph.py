"""The TPU backend's prediction graph, built with TensorFlow's own graph-mode TPU runtime.

What one prediction session run executes, as the original TPUEstimator's predict did on a TPU:

* per host, ``input_fn`` on that host's CPU; each batch is padded to full size with a mask of real
  rows, and a stopping signal rides beside it in the infeed: set on every row once the host's input
  has ended (after the end, all-padding batches with the signal set follow forever, so the infeed
  never runs dry);
* one ``tf.compat.v1.tpu.replicate``'d computation over every core: it dequeues its shard
  (``params['batch_size']`` = predict_batch_size / cores rows), calls ``model_fn`` in PREDICT mode
  and sends the predictions, the mask and the stopping signal out through the outfeed;
* on the hosts, each replica's outfeed is dequeued in replica order, the replicas' rows are
  concatenated, and the padding rows are removed; ``stopping`` is True when every replica's input
  had ended, and that run's (empty) batch is not a batch to yield.

One predict step per session run, as the original's prediction loop (it handed the host one batch
at a time and checked the signal after each): the host learns from each run whether the input
ended, so the device never waits on an infeed that will not come and the host never dequeues an
outfeed entry the device will not send; ``predict()`` is a generator, so running ahead by
``iterations_per_loop`` batches would also compute batches a caller that stops early never reads.
Predict is bound by the outfeed and the host, not by the per-run launch that iterations amortise.

This module only builds the graph; ``tests/test_tpu_predict_graph.py`` builds it against fake
8x1 and 32x4 TPU topologies. Executing it needs a TPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from ..graph.model_calls import call_model_fn, split_features_labels
from ..contract.modes import ModeKeys
from .tpu_graph import TPUSystem, _HostInputs, _Outfeed, _layout, _tpu_global_step, _TPUGraph


@dataclasses.dataclass(frozen=True)
class TPUPredictGraph(_TPUGraph):
    """A built TPU prediction graph (one session run = one predict step on every core).

    Run ``infeed_loops``, ``replicated`` and the host-side tensors together in one session run:

    * ``predictions``: the step's predictions of every replica, concatenated in replica order with
      the padding rows removed; a dict of tensors when model_fn returned a dict, else one tensor;
    * ``mask``: the real rows of the step's global batch (every replica's shard, in replica order);
    * ``stopping``: scalar bool, True once every replica's input has ended: that run's batch holds
      no real rows and the host stops after it;
    * ``infeed_structure``: what each core dequeues per step, as ``tf.TensorSpec``s of per-shard
      shape: a dict with ``features``, ``mask``, ``stop`` and, when input_fn gives them, ``labels``.
    """

    predictions: Any
    mask: Any
    stopping: Any
    infeed_structure: Any


class _PredictInputs(_HostInputs):
    """The evaluation infeed (padded shards, mask of real rows) plus the stopping signal of each row."""

    def _flat(self, element):
        data, mask = element
        # Set on every row once the batch holds no real row: the input has ended. Computed on what one
        # get_next returns (PER_HOST_V1: the host's whole batch, split after), so all of a host's shards
        # agree; a row-wise tensor, like the mask, so it splits with the batch along dimension 0.
        stop = tf.broadcast_to(tf.logical_not(tf.reduce_any(mask)), mask.shape)
        features, labels = split_features_labels(data)
        structure = {"features": features, "mask": mask, "stop": stop}
        if labels is not None:
            structure["labels"] = labels
        return self._static_flat(structure, "give every feature a fixed shape except the batch dimension (axis 0)")

    def per_shard_specs(self):
        """The structure each core dequeues, as TensorSpecs of the per-shard shapes the infeed carries."""
        queue = self.queues[0]
        # The queue records the host's shards stacked along dimension 0; each core dequeues one of them.
        specs = [tf.TensorSpec([shape[0] // queue.number_of_shards] + shape[1:].as_list(), dtype)
                 for shape, dtype in zip(queue.tuple_shapes, queue.tuple_types)]
        return tf.nest.pack_sequence_as(self.structure, specs)


def _check_predictions(predictions, per_shard):
    """The predictions as a dict (a single tensor under 'predictions'); each needs the batch on axis 0."""
    if predictions is None:
        raise ValueError("model_fn returned no predictions in PREDICT mode: return "
                         "TPUEstimatorSpec(mode, predictions={...}).")
    as_dict = predictions if isinstance(predictions, dict) else {"predictions": predictions}
    checked = {}
    for key, value in as_dict.items():
        value = tf.convert_to_tensor(value)
        if value.shape.rank is None or value.shape.rank == 0 or tf.compat.dimension_value(value.shape[0]) != per_shard:
            raise ValueError(
                f"prediction {key!r} has shape {value.shape}, but on a TPU every prediction needs the batch on "
                f"axis 0: its first dimension must be the per-shard batch size params['batch_size'] = {per_shard}. "
                f"Return per-example predictions (e.g. tf.transpose so the batch comes first), or reshape a "
                f"per-batch value to [{per_shard}, ...].")
        if not value.shape.is_fully_defined():
            raise ValueError(f"prediction {key!r} has shape {value.shape}; the TPU outfeed needs static shapes. "
                             "Give it a fixed shape before returning it.")
        if value.dtype == tf.string:
            raise ValueError(f"prediction {key!r} is a string tensor, which a TPU cannot compute or outfeed: "
                             "return numbers and map them to strings on the host after predict().")
        checked[key] = value
    return checked


def build_tpu_predict_graph(est, input_fn, system: TPUSystem, job: str = "worker") -> TPUPredictGraph:
    """Builds, in the default graph, the TPU prediction graph: one predict step per session run.

    ``est``: a TPUEstimator (model_fn, params, config, predict_batch_size); ``system``: the TPU
    (``query_tpu_system``, or a fake topology in tests); ``job``: the TPU workers' job name.
    Returns a ``TPUPredictGraph``. Raises for a missing predict_batch_size, an input mode the TPU path
    does not support, tensors instead of a Dataset, and predictions without the batch on axis 0.
    """
    from tensorflow.python.tpu import tpu

    from .replicated import eval_input_mode

    if est.predict_batch_size is None:
        raise ValueError(f"predict_batch_size is required on {system.description}: pass the global batch size, "
                         "e.g. TPUEstimator(..., predict_batch_size=1024).")
    plan, assignment, replica_hosts = _layout(est, system, est.predict_batch_size, eval_input_mode(est),
                                              ModeKeys.PREDICT, job)
    global_step = _tpu_global_step()  # restored from the checkpoint like every other variable
    inputs = _PredictInputs(est, input_fn, ModeKeys.PREDICT, plan, assignment, replica_hosts, pad=True)
    infeed_loops = tuple(inputs.infeed_loop(host, 1) for host in inputs.replicas_of)
    captured = {}
    outfeed = _Outfeed("predictions")

    def computation():
        shard = inputs.dequeue()
        spec = call_model_fn(est.model_fn, shard["features"], shard.get("labels"), ModeKeys.PREDICT, est.config,
                             est.params, plan.model_fn_batch, use_tpu=True, allow_estimator_spec=False,
                             context=inputs.context)
        predictions = _check_predictions(spec.predictions, plan.model_fn_batch)
        captured.update(spec=spec, keys=sorted(predictions))
        # The mask and the signal travel with the predictions: the host reads all three from one dequeue.
        enqueue = outfeed.enqueue([shard["mask"], shard["stop"]] + [predictions[k] for k in captured["keys"]])
        with tf.control_dependencies([enqueue]):
            return tf.identity(shard["stop"][0])

    replicated = tpu.replicate(computation, inputs=[[]] * system.num_cores, device_assignment=assignment)
    (mask, stops, *values), dequeues = outfeed.host_side(assignment, replica_hosts)
    spec = captured["spec"]
    with tf.device(replica_hosts[0]):
        stopping = tf.reduce_all(stops, name="stopping")
        real = {k: tf.boolean_mask(v, mask, name=f"real_rows_{i}")
                for i, (k, v) in enumerate(zip(captured["keys"], values))}
    predictions = real if isinstance(spec.predictions, dict) else real["predictions"]
    return TPUPredictGraph(global_step=global_step, plan=plan, num_replicas=system.num_cores,
                           replica_hosts=replica_hosts, initializers=tuple(inputs.initializers),
                           infeed_loops=infeed_loops, replicated=replicated, spec=spec, outfeed_dequeues=dequeues,
                           predictions=predictions, mask=mask, stopping=stopping,
                           infeed_structure=inputs.per_shard_specs())
