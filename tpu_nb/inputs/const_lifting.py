"""Large constants an ``input_fn`` put in the graph, moved to placeholders fed when the input starts.

``Dataset.from_tensor_slices((x, y))`` over numpy arrays, the most common notebook input, embeds the
arrays in the graph as ``Const`` nodes. Every copy of the graph then carries them: building it,
handing it to the session, grappler's passes and each graph file written to ``model_dir``
(graph.pbtxt, a ``.meta`` per checkpoint, the events file). For an 8192x784 float32 array that is
about 1.3 s of session start-up and ~200 MB of files. TF1's own advice was a placeholder fed when the
iterator is initialized; this does that for the user, once the graph is built.

Only constants read by nothing but the returned Dataset are lifted: the dataset reads them once,
when its iterator is initialized, which is exactly when the feed is given (the Scaffold's
``local_init_feed_dict``). A constant anything else reads stays where it is. The lifted ``Const``
keeps its name and shape but loses its bytes; nothing reads it any more.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from ..graph.walk import upstream_ops

#: Constants at least this large (bytes) are lifted (64 KiB: in graph.pbtxt they grow ~4x).
MIN_BYTES = 1 << 16

_pending_by_graph: "weakref.WeakKeyDictionary[tf.Graph, list]" = weakref.WeakKeyDictionary()
_feeds_by_graph: "weakref.WeakKeyDictionary[tf.Graph, dict]" = weakref.WeakKeyDictionary()


def mark(graph: tf.Graph) -> int:
    """A position in ``graph``'s op list: call before ``input_fn``, pass to :func:`lift_dataset_constants`."""
    return len(graph.get_operations())


def lift_dataset_constants(graph: tf.Graph, returned, since: int, min_bytes: Optional[int] = None) -> None:
    """Marks large ``Const`` ops created since ``since`` for lifting when ``returned`` is a Dataset.

    The lifting itself happens in :func:`input_feeds` (or :func:`add_to_scaffold`), once the model is
    built: creating the placeholders now would shift the op ids the model's random initializers derive
    their seeds from, and the same ``tf_random_seed`` would give other initial weights than without it.
    Anything else ``input_fn`` returned (tensors, not a Dataset) is left alone.
    """
    if not isinstance(returned, tf.data.Dataset) or not _can_rewire():
        return
    limit = MIN_BYTES if min_bytes is None else min_bytes
    consts = [op for op in graph.get_operations()[since:] if op.type == "Const" and _nbytes(op) >= limit]
    if consts:
        _pending_by_graph.setdefault(graph, []).append((returned._variant_tensor, consts))  # noqa: SLF001


def input_feeds(graph: tf.Graph) -> dict:
    """``{placeholder: array}`` for every constant lifted in ``graph``, lifting those still marked.

    Call before the graph is finalized; feed the result whenever the input's iterator is initialized.
    """
    pending = _pending_by_graph.pop(graph, [])
    feeds = _feeds_by_graph.setdefault(graph, {})
    with graph.as_default():
        for variant, consts in pending:
            upstream = upstream_ops(variant)
            for const in consts:
                out = const.outputs[0]
                consumers = out.consumers()
                if const._control_outputs or not consumers or any(c not in upstream for c in consumers):  # noqa: SLF001
                    continue  # something besides the dataset reads it: it must stay a constant
                value = tf.make_ndarray(const.get_attr("value"))
                feeds[_rewire(const, out, consumers)] = value
                _drop_bytes(const, out)
    return dict(feeds)


def add_to_scaffold(scaffold, graph: tf.Graph):
    """Adds ``graph``'s lifted-constant feeds to ``scaffold``'s local init feed; returns ``scaffold``."""
    feeds = input_feeds(graph)
    if feeds:
        # Scaffold has no setter; finalize() and the SessionManager read this attribute.
        scaffold._local_init_feed_dict = {**(scaffold.local_init_feed_dict or {}), **feeds}  # noqa: SLF001
    return scaffold


def _can_rewire() -> bool:
    # Both are private Operation methods; without them (a future TensorFlow) nothing is lifted.
    return hasattr(tf.Operation, "_update_input") and hasattr(tf.Operation, "_set_attr")


def _nbytes(op) -> int:
    shape = op.outputs[0].shape
    if not shape.is_fully_defined():
        return 0
    dtype = op.outputs[0].dtype
    if dtype == tf.string or dtype == tf.resource or dtype == tf.variant:
        return 0  # strings' sizes are not in the shape; keep them simple and in place
    return int(np.prod(shape.as_list(), dtype=np.int64)) * dtype.size


def _rewire(const, out, consumers):
    device = const.graph.device(const.device) if const.device else contextlib.nullcontext()
    with tf.control_dependencies(None), const.graph.name_scope(None), device:
        placeholder = tf.compat.v1.placeholder(out.dtype, out.shape, name=const.name + "_fed")
    for consumer in consumers:
        for index, tensor in enumerate(consumer.inputs):
            if tensor is out:
                consumer._update_input(index, placeholder)  # noqa: SLF001
    return placeholder


def _drop_bytes(const, out):
    # Same dtype and shape (so graph files stay consistent when imported), no content.
    proto = tensor_pb2.TensorProto(dtype=out.dtype.as_datatype_enum, tensor_shape=out.shape.as_proto())
    const._set_attr("value", tf.compat.v1.AttrValue(tensor=proto))  # noqa: SLF001
