"""``host_call``: per-step tensors carried out of the device loop and run on the host.

On a TPU the loop pushes them to the outfeed. Here the loop enqueues them
into a FIFO queue (every step, or every n-th), and after each loop the host
side dequeues every entry and runs the user's function on it. That keeps one
session run per loop for the device work, whatever the host_call does.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from ..graph.control_edges import gate_over
from ..graph.walk import upstream_ops
from ..contract.spec import call_with_tensors, flat_tensors, repacked
from ..contract.signatures import fn_args

_QUEUE_CAPACITY = 2**31 - 1  # bounded by one loop's entries in practice; never blocks the loop


def _names_for(fn, tensors) -> List[str]:
    if isinstance(tensors, dict):
        return list(tensors.keys())
    names = list(fn_args(fn))
    if len(names) == len(tensors):
        return names
    return [f"arg{i}" for i in range(len(tensors))]


class HostCallQueue:
    """Builds the enqueue side (inside the loop) and the host side (after it)."""

    def __init__(self, fn, tensors, every_n_steps: int = 1):
        self.fn = fn
        self.every_n_steps = every_n_steps
        self._structure = tensors
        self.names = _names_for(fn, tensors)
        flat = [tf.convert_to_tensor(t) for t in flat_tensors(tensors)]
        self._dtypes = [tf.int64] + [t.dtype for t in flat]
        shapes = [tf.TensorShape([])] + [t.shape for t in flat]
        self._shapes = shapes if all(s.is_fully_defined() for s in shapes) else None
        with tf.init_scope():
            self.queue = tf.queue.FIFOQueue(
                _QUEUE_CAPACITY, self._dtypes, shapes=self._shapes, name="host_call_outfeed"
            )
        self._flat = flat
        self._callable = None

    def enqueue(self, global_step, loop_index=None):
        """The in-loop op: enqueue this step's tensors on iterations 0, n, 2n, ... of each loop.

        As the original TPUEstimator's outfeed: the count restarts with every loop of
        ``iterations_per_loop`` steps (``loop_index`` is the iteration within the loop).
        """
        # Copies: under TF1 behaviour a RefVariable's read (the global step, a variable the user passes)
        # aliases the variable's buffer, so a queued value would change with later steps' updates.
        copies = taken_before_updates(self._flat)
        values = [tf.raw_ops.DeepCopy(x=tf.cast(global_step, tf.int64))] + copies
        if self.every_n_steps == 1:
            return self.queue.enqueue(values)
        if loop_index is None:
            raise ValueError("internal: host_call every n steps needs the iteration within the loop")
        return tf.cond(
            tf.equal(tf.math.floormod(tf.cast(loop_index, tf.int64), self.every_n_steps), 0),
            lambda: self.queue.enqueue(values),
            tf.no_op,
        )

    def build_host_side(self):
        """Builds (in the outer graph) the dequeue and the user's function on it."""
        dequeued = self.queue.dequeue(name="host_call_dequeue")
        if not isinstance(dequeued, (list, tuple)):
            dequeued = [dequeued]
        step, values = dequeued[0], list(dequeued[1:])
        if self._shapes is None:
            values = [tf.ensure_shape(v, t.shape) if t.shape.rank is not None else v
                      for v, t in zip(values, self._flat)]
        outputs = call_with_tensors(self.fn, repacked(self._structure, values))
        ops = [o for o in tf.nest.flatten(outputs) if o is not None]
        self._fetches = [ops, step, values]
        self.size = self.queue.size()

    def drain(self, session) -> "Optional[Tuple[np.ndarray, Dict[str, np.ndarray]]]":
        """Runs the host function once per queued step.

        Returns ``(steps, columns)``: the queued global steps (int64, in order) and, per host_call
        argument, that argument's values of every step stacked on a new first axis; None when
        nothing was queued. Columns keep one loop's values in a few arrays, so the host side and
        the event subscribers never touch one Python dict per step.
        """
        if self._callable is None:
            self._callable = session.make_callable(self._fetches)
        n = int(session.run(self.size))
        if n == 0:
            return None
        steps = np.empty(n, np.int64)
        per_name = [[] for _ in self.names]
        for i in range(n):
            _, step, values = self._callable()
            steps[i] = step
            for column, value in zip(per_name, values):
                column.append(value)
        return steps, {name: _stack(column) for name, column in zip(self.names, per_name)}


def taken_before_updates(tensors):
    """Copies of a step's host_call ``tensors`` that this step's variable updates wait for.

    On shards each replica's values are handed on under ``control_dependencies([train_op])`` (the
    enqueue follows the step, as the original's outfeed did); that dependency makes the optimizer's
    writes ancestors of the values, so the gate in ``HostCallQueue.enqueue`` cannot order them, and a
    replica's ``tf.reshape(global_step, [1])`` now and then read the step's increment. Copied and gated
    here, in the replica, before the dependency is added, every replica sees the step's inputs.
    """
    copies = [tf.raw_ops.DeepCopy(x=tf.convert_to_tensor(t)) for t in tensors]
    _order_writes_after(copies)
    return copies


# Ops that write the variable given as their first input (resource handle or TF1 reference).
_WRITE_OP_PREFIXES = ("Assign", "ResourceApply", "ResourceSparseApply", "ResourceScatter", "Apply", "SparseApply",
                      "Scatter")


def _order_writes_after(copies):
    """Makes this step's variable updates wait until ``copies`` (its host_call values) are taken.

    host_call tensors are read in model_fn, before the train op, but nothing orders a read such as
    ``tf.reshape(global_step, [1])`` against the optimizer's increment: about once in 1,000 steps the
    read ran after it and the step was summarised as the next one. Every write op of the step that the
    values do not themselves depend on now waits for one gate over the copies (a write the values
    depend on, e.g. a read made under ``control_dependencies([train_op])``, keeps its order).
    """
    if not copies:
        return
    graph = tf.compat.v1.get_default_graph()
    context = graph._get_control_flow_context()  # noqa: SLF001
    ancestors = upstream_ops(*copies)
    writes = [op for op in graph.get_operations()
              if op.type.startswith(_WRITE_OP_PREFIXES) and op not in ancestors and op.inputs
              and (op.inputs[0].dtype == tf.resource or op.inputs[0].dtype._is_ref_dtype)  # noqa: SLF001
              and op._get_control_flow_context() is context]  # noqa: SLF001 - v1 loops forbid other edges
    if not writes:
        return
    gate = gate_over(graph, context, [t.op for t in copies], "host_call_values_taken")
    for op in writes:
        op._add_control_input(gate)  # noqa: SLF001


class ConcurrentDrain:
    """Runs a queue's host function on each entry while the device loop that fills it still runs.

    As the original's outfeed thread: a loop of any length (``evaluate(steps=N)`` runs all N steps in
    one session run, as the original did) keeps only the entries the host has not reached yet, not
    the whole loop's. Only this thread dequeues, and only when the queue holds entries, so it never
    blocks; once the loop's run has returned every enqueue is done and an empty queue means finished.

    Example::

        drain = ConcurrentDrain(queue, raw_session)
        try:
            session.run(loop)
        except BaseException:
            drain.abort()
            raise
        taken = drain.finish()
    """

    _POLL_SECONDS = 0.005

    def __init__(self, queue: HostCallQueue, session):
        self._queue = queue
        self._session = session
        if queue._callable is None:  # noqa: SLF001 - built here, not in the thread, so errors surface now
            queue._callable = session.make_callable(queue._fetches)  # noqa: SLF001
        self._loop_done = threading.Event()
        self._abort = threading.Event()
        self._error: Optional[BaseException] = None
        self.taken = 0
        self._thread = threading.Thread(target=self._run, name="tpu_nb-host-drain", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._abort.is_set():
                loop_done = self._loop_done.is_set()  # read before the size: see finish()
                n = int(self._session.run(self._queue.size))
                if n == 0:
                    if loop_done:
                        return
                    self._loop_done.wait(self._POLL_SECONDS)
                    continue
                for _ in range(n):
                    self._queue._callable()  # noqa: SLF001
                    self.taken += 1
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread by finish()
            self._error = error

    def finish(self) -> int:
        """Call after the loop's session run returned: waits for the rest; returns the entries run."""
        self._loop_done.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.taken

    def abort(self):
        """The loop failed: stop without running the entries still queued."""
        self._abort.set()
        self._loop_done.set()
        self._thread.join()


def _stack(values: List[Any]) -> np.ndarray:
    try:
        return np.stack(values)
    except ValueError:  # the shape changed between steps (an unknown static shape): one cell each
        column = np.empty(len(values), dtype=object)
        column[:] = [np.asarray(v) for v in values]
        return column
