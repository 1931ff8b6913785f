"""Each replica's ``model_fn`` call sees the graph's collections as a TPU's one trace would.

On a TPU the original traced ``model_fn`` once and the chip replicated that computation, so a
``model_fn`` reading a collection (``tf.compat.v1.losses.get_total_loss()``, UPDATE_OPS under
``control_dependencies``, REGULARIZATION_LOSSES, SUMMARIES, keys of its own) found only what its own
call had put there. On simulated shards the N replicas' calls build into one graph, so without care
replica k would read the entries of replicas 0..k: ``get_total_loss()`` summed k+1 losses.

While the replicas are called, each replica thread reads and writes a view of its own: the graph's
collections as they were before the calls plus what that replica added. Collections that describe the
variables (the variable store, GLOBAL/LOCAL/TRAINABLE variables, the global step) stay shared: the
replicas share one set of variables, as the TPU's replicas do, and later replicas find replica 0's
variables through them. When the calls end, every replica's additions are appended in replica order,
so what the engine collects afterwards (update ops, summaries, table initializers, savers) is complete.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import tensorflow as tf
from tensorflow.python.framework import func_graph
from tensorflow.python.ops import variable_scope

_KEYS = tf.compat.v1.GraphKeys

#: Collections every replica shares: the variables themselves, one set on a TPU as here.
SHARED_KEYS = frozenset(func_graph.ALLOWLIST_COLLECTIONS) | {
    _KEYS.GLOBAL_STEP,
    _KEYS.MODEL_VARIABLES,
    _KEYS.TRAINABLE_RESOURCE_VARIABLES,
    _KEYS.METRIC_VARIABLES,
    _KEYS.CONCATENATED_VARIABLES,
}


class _ReplicaViews(dict):
    """A graph's ``_collections`` while replicas build, over the graph's own dict (``base``).

    A thread registered with ``enter(replica)`` sees its replica's view for every key not in
    ``SHARED_KEYS``; any other thread (the strategy's merge calls run in the caller's) sees ``base``.
    ``base`` is used in place, not copied: a control-flow-v2 loop body shares its outer graph's dict,
    and variables created under ``init_scope`` land in the outer graph while the body is built.
    (A dict subclass only so that type checks pass; its own storage stays empty.)
    """

    def __init__(self, base):
        super().__init__()
        self._base = base
        self._snapshot = {key: list(values) for key, values in base.items() if key not in SHARED_KEYS}
        self._snapshot_ids = {key: {id(v) for v in values} for key, values in self._snapshot.items()}
        self._views = {}  # replica -> {key: list}
        self._threads = {}  # thread ident -> replica
        self._lock = threading.Lock()

    def enter(self, replica):
        with self._lock:
            self._threads[threading.get_ident()] = replica
            self._views.setdefault(replica, {key: list(values) for key, values in self._snapshot.items()})

    def leave(self):
        with self._lock:
            self._threads.pop(threading.get_ident(), None)

    def _own_view(self):
        replica = self._threads.get(threading.get_ident())
        return None if replica is None else self._views[replica]

    def _target(self, key):
        view = None if key in SHARED_KEYS else self._own_view()
        return self._base if view is None else view

    # -- the dict operations tf.Graph uses ---------------------------------
    def __getitem__(self, key):
        return self._target(key)[key]

    def get(self, key, default=None):
        return self._target(key).get(key, default)

    def __setitem__(self, key, value):
        self._target(key)[key] = value

    def __delitem__(self, key):
        del self._target(key)[key]

    def __contains__(self, key):
        return key in self._target(key)

    def _keys(self):
        view = self._own_view()
        if view is None:
            return list(self._base)
        return [key for key in self._base if key in SHARED_KEYS] + list(view)

    def __iter__(self):
        return iter(self._keys())

    def keys(self):
        return self._keys()

    def __len__(self):
        return len(self._keys())

    def items(self):
        return [(key, self[key]) for key in self._keys()]

    def values(self):
        return [self[key] for key in self._keys()]

    def merge_into_base(self, drop=()):
        """Appends each replica's additions to ``base`` in replica order (but keys in ``drop``)."""
        for replica in sorted(self._views):
            for key, values in self._views[replica].items():
                if key in drop:
                    continue
                before = self._snapshot_ids.get(key, ())
                added = [v for v in values if id(v) not in before]
                if added:
                    self._base.setdefault(key, []).extend(added)

    def added(self, key):
        """Whether any replica added to ``key``."""
        before = len(self._snapshot.get(key, ()))
        return any(len(view.get(key, ())) > before for view in self._views.values())


@contextlib.contextmanager
def collections_per_replica(graph=None):
    """Within it, each replica function that enters ``replica(k)`` sees only its own collection entries.

    ``tf.compat.v1.summary`` ops the replicas build inside a control-flow-v1 loop are left out afterwards:
    the session's ``merge_all`` cannot fetch ops inside a loop (it fails), and on a TPU they were never
    written either (summaries from the device go through ``host_call``). With control flow v2 the loop body
    is a function graph whose summaries never reach the session, so nothing changes there.

    Example::

        with collections_per_replica() as views:
            def replica_fn(x):
                with views.replica(replica_id):
                    return model_fn(x)
            strategy.extended.call_for_each_replica(replica_fn, ...)
    """
    graph = graph or tf.compat.v1.get_default_graph()
    original = graph._collections  # noqa: SLF001
    if isinstance(original, _ReplicaViews):  # already inside a window (a nested build): share it
        yield _Window(original)
        return
    views = _ReplicaViews(original)
    graph._collections = views  # noqa: SLF001
    try:
        yield _Window(views)
    finally:
        graph._collections = original  # noqa: SLF001
        in_v1_loop = graph._get_control_flow_context() is not None  # noqa: SLF001
        if in_v1_loop and views.added(_KEYS.SUMMARIES):
            _warn_summaries_once()
        views.merge_into_base(drop=(_KEYS.SUMMARIES,) if in_v1_loop else ())


_warned = []


def _warn_summaries_once():
    if not _warned:
        _warned.append(True)
        logging.getLogger("tpu_nb").warning(
            "model_fn built tf.compat.v1.summary ops inside the device loop (iterations_per_loop steps per "
            "session run), where they cannot be fetched, so they are not written (on a TPU neither). Write "
            "summaries from host_call with tf.summary (v2).")


class _Window:
    def __init__(self, views):
        self._views = views

    @contextlib.contextmanager
    def replica(self, index):
        self._views.enter(index)
        try:
            yield
        finally:
            self._views.leave()


@contextlib.contextmanager
def regularizers_on_every_replica():
    """``get_variable(..., regularizer=r)`` adds ``r(var)`` in every replica, not only the one that created ``var``.

    TensorFlow runs a ``get_variable`` regularizer when it creates the variable; replicas after the
    first find the variable already made and would add no regularization loss, so their
    ``get_total_loss()`` would lack it. On a TPU the one trace created every variable, so every replica
    had the loss: here each later replica computes it on its own copy, under the name TensorFlow uses.
    """

    def getter(next_getter, name, *args, **kwargs):
        regularizer = kwargs.get("regularizer")
        store = variable_scope._get_default_variable_store()  # noqa: SLF001
        existed = name in getattr(store, "_vars", {})
        var = next_getter(name, *args, **kwargs)
        if regularizer is not None and existed and isinstance(var, tf.Variable):
            with tf.name_scope(name + "/Regularizer/"):
                loss = regularizer(var)
            if loss is not None:
                tf.compat.v1.add_to_collection(_KEYS.REGULARIZATION_LOSSES, loss)
        return var

    scope = tf.compat.v1.get_variable_scope()
    with tf.compat.v1.variable_scope(scope, custom_getter=getter, auxiliary_name_scope=False):
        yield
