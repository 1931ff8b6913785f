"""Running TPU graphs: the TPU system's initialise/shutdown and the host threads beside each device loop.

As the original TPUEstimator did on TensorFlow's TPU runtime:

* ``initialize_system`` runs ``tf.compat.v1.tpu.initialize_system`` in its own graph and session on the
  TPU job before the first training session, and records the serialized topology it returns;
  ``shutdown_system`` runs ``tf.compat.v1.tpu.shutdown_system`` the same way after the last one.
* Every device loop (one session run of ``iterations`` steps on every core) has host threads beside it
  (``LoopThreads``): one infeed thread per host running that host's enqueue loop (``iterations``
  per-shard batches into each of its cores), and one outfeed thread dequeuing each step's tensors of
  every replica, in replica order, and handing them to the host (host_call, eval_metrics).
* An error in any of those threads ends the loop with that error: the session is closed after a short
  grace period, which cancels the device loop's run (it would otherwise wait for infeed forever), and
  the thread's error is raised in the training thread instead of the cancellation.

The TPU system's own sessions come from ``new_session``, looked up at call time, so a test can stand in
for the chip there (and in ``SessionManager``, which opens the training and evaluation sessions).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

import tensorflow as tf

_log = logging.getLogger("tpu_nb")

INIT_TIMEOUT_MS = 5 * 60 * 1000  # TPU system initialisation can take minutes on a large pod
ERROR_GRACE_SECS = 2.0  # lets a more telling error from another thread arrive before the session is closed
JOIN_SECS = 60.0  # after the session is closed, a cancelled thread ends within this


def new_session(target: str, config=None, graph=None):
    """A ``tf.compat.v1.Session`` on ``target`` for ``graph``."""
    return tf.compat.v1.Session(target, graph=graph, config=config)


def _system_config(cluster_def, timeout_ms: int):
    config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=timeout_ms, allow_soft_placement=True)
    if cluster_def is not None:
        config.cluster_def.CopyFrom(cluster_def)
    return config


def initialize_system(master: str, cluster_def=None, job: Optional[str] = None,
                      timeout_ms: int = INIT_TIMEOUT_MS) -> bytes:
    """Initialises the TPU system at ``master`` in its own session; returns the serialized topology."""
    graph = tf.Graph()
    with graph.as_default():
        init = tf.compat.v1.tpu.initialize_system(job=job)
    with new_session(master, _system_config(cluster_def, timeout_ms), graph) as session:
        return session.run(init)


def shutdown_system(master: str, cluster_def=None, job: Optional[str] = None,
                    timeout_ms: int = INIT_TIMEOUT_MS) -> None:
    """Shuts the TPU system at ``master`` down in its own session (frees its memory for the next run)."""
    graph = tf.Graph()
    with graph.as_default():
        shutdown = tf.compat.v1.tpu.shutdown_system(job=job)
    with new_session(master, _system_config(cluster_def, timeout_ms), graph) as session:
        session.run(shutdown)


class ThreadErrors:
    """The first error any host thread of a loop raised, and the session close it triggers."""

    def __init__(self, session, grace_secs: float):
        self._session = session
        self._grace = grace_secs
        self._lock = threading.Lock()
        self.first: Optional[BaseException] = None
        self.source: Optional[str] = None
        self._closer: Optional[threading.Thread] = None
        self.closed = threading.Event()

    def record(self, source: str, error: BaseException):
        with self._lock:
            if self.closed.is_set():
                return  # cancelled (or refused) because the session was closed: a consequence, not the cause
            if self.first is None:
                self.first, self.source = error, source
                _log.error("TPU %s thread failed: %s", source, error)
            if self._closer is None:
                self._closer = threading.Thread(target=self._close_later, name="tpu_nb-close-session", daemon=True)
                self._closer.start()

    def _close_later(self):
        # The device loop waits for infeed (or outfeed room) that will never come: closing the session
        # cancels its run, so the training thread gets control back and raises this error.
        if self._grace > 0:
            self.closed.wait(self._grace)
        self.close_session()

    def close_session(self):
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self._session.close()
        except Exception:  # noqa: BLE001 - already closed, or closing failed: the error to report is elsewhere
            pass


class LoopThreads:
    """The host threads of one device loop; use as ``infeed.start(session, steps)`` returns it.

    Follows the ``tpu_nb.inputs.host_infeed.feeding`` protocol: the caller runs the device loop, sets ``ran`` to
    the steps it completed (left None when the run failed) and calls ``finish(ran)``, which waits for the
    threads and raises the first error one of them raised.
    """

    ran: Optional[int] = None

    def __init__(self, driver: "TPUHostDriver", session, steps: int, initial_sleep_secs: Optional[float] = None):
        self._driver = driver
        self._initial_sleep = initial_sleep_secs
        self.session = session
        self.steps = steps
        self.errors = ThreadErrors(session, driver.error_grace_secs)
        self.dequeued = 0
        driver.set_iterations(session, steps)  # read by the host enqueue loops and the TPU computation
        self._threads: List[threading.Thread] = []
        for host, op in driver.infeed_loops:
            self._start(f"infeed {host}", self._infeed, op)
        if driver.outfeed is not None:
            self._start("outfeed", self._outfeed)

    def _start(self, name, target, *args):
        def run():
            try:
                target(*args)
            except BaseException as error:  # noqa: BLE001 - raised by finish() in the training thread
                self.errors.record(name, error)

        thread = threading.Thread(target=run, name=f"tpu_nb-{name.replace(' ', '-')}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _infeed(self, op):
        if self._initial_sleep:
            _log.info("Waiting %g s before the first infeed (TPUConfig.initial_infeed_sleep_secs).",
                      self._initial_sleep)
            if self.errors.closed.wait(self._initial_sleep):
                return
        # One run: the host-side loop enqueues ``steps`` per-shard batches into each of this host's cores.
        self.session.run(op)

    def _outfeed(self):
        outfeed = self._driver.outfeed
        for i in range(self.steps):
            values = self.session.run(outfeed.fetches(i))
            outfeed.consume(i, values)
            self.dequeued += 1

    def stop(self):
        """Cancels the threads' pending runs (the device loop failed or is abandoned)."""
        self.errors.close_session()

    def finish(self, steps_ran: Optional[int]):
        if steps_ran is None:
            # The device loop's run failed (or was cancelled after a thread's error): enqueues and dequeues
            # still pending would wait forever, so the session goes.
            self.stop()
        for thread in self._threads:
            thread.join(JOIN_SECS if steps_ran is None else None)
        error = self.errors.first
        if error is not None:
            clearer = thread_error(self.errors.source, error)
            if clearer is error:
                raise error
            raise clearer from error


def thread_error(source: str, error: BaseException) -> BaseException:
    """The error a host thread raised, made to say where it came from when it is the input's end."""
    if isinstance(error, tf.errors.OutOfRangeError) and source.startswith("infeed"):
        return InputEndedOnTPU(
            f"The input of {source[len('infeed '):]} ended in the middle of a TPU loop: the TPU computation "
            "runs iterations_per_loop steps per session run and cannot stop early, so the training input "
            "must supply every step. Repeat the dataset (dataset.repeat()) or pass steps/max_steps that the "
            "input covers; the last checkpoint written before this loop is kept.")
    return error


class InputEndedOnTPU(RuntimeError):
    """A host's training input ended while a TPU loop still needed batches."""


class TPUOutfeed:
    """What the outfeed thread fetches per step, and what it does with the values."""

    def __init__(self, fetches: Callable[[int], Any], consume: Callable[[int, Any], None]):
        self.fetches = fetches
        self.consume = consume


class TPUHostDriver:
    """The host side of a TPU graph: per-host enqueue loops, the iterations variable, the outfeed.

    ``infeed_loops``: (host, op) pairs, one per host; ``iterations``: the variable both the enqueue loops
    and the TPU computation read, set from ``iterations_feed`` by ``assign`` before each loop.
    ``start(session, steps)`` starts one loop's threads (``LoopThreads``).
    """

    def __init__(self, infeed_loops: Sequence, assign, iterations_feed, outfeed: Optional[TPUOutfeed] = None,
                 error_grace_secs: Optional[float] = None, initial_sleep_secs: Optional[float] = None):
        self.infeed_loops = list(infeed_loops)
        # TPUConfig.initial_infeed_sleep_secs: the infeed threads of the first loop wait this long first.
        self.initial_sleep_secs = initial_sleep_secs
        self._assign = assign
        self._feed = iterations_feed
        self.outfeed = outfeed
        self.error_grace_secs = ERROR_GRACE_SECS if error_grace_secs is None else error_grace_secs

    def set_iterations(self, session, steps: int):
        if self._assign is not None:  # None: the loops have a fixed length (prediction: one step per run)
            session.run(self._assign, {self._feed: steps})

    def start(self, session, steps: int) -> LoopThreads:
        sleep, self.initial_sleep_secs = self.initial_sleep_secs, None
        return LoopThreads(self, session, steps, initial_sleep_secs=sleep)


class TPUInput:
    """The ``input`` of a TPU TrainGraph: the per-host iterators' initializer and the host driver."""

    def __init__(self, initializer, infeed: TPUHostDriver):
        self.initializer = initializer
        self.infeed = infeed


class TPUHostCall:
    """host_call on a TPU: run by the outfeed thread once per step while the loop runs.

    Follows ``HostCallQueue``'s interface for the training loop: ``build_host_side()`` (already built
    with the graph), ``drain(session)`` (the steps the last loop ran, and per host_call argument its
    values of every step, for the dashboard's events; None when nothing was dequeued).
    """

    def __init__(self, names: List[str], outputs, values, global_step):
        self.names = names
        self._outputs = [o for o in tf.nest.flatten(outputs) if o is not None]
        self._values = list(values)
        self._global_step = global_step
        self._taken: List[List[Any]] = []
        self._lock = threading.Lock()

    def build_host_side(self):
        pass

    def fetches(self, step_in_loop: int):
        return [self._outputs, self._values]

    def consume(self, step_in_loop: int, fetched):
        with self._lock:
            self._taken.append(list(fetched[1]))

    def drain(self, session):
        import numpy as np

        from .host_calls import _stack

        with self._lock:
            taken, self._taken = self._taken, []
        if not taken:
            return None
        # Every step of a TPU loop runs train_op once: the last dequeued step is the global step now.
        end = int(session.run(self._global_step))
        steps = np.arange(end - len(taken) + 1, end + 1, dtype=np.int64)
        columns: Dict[str, Any] = {}
        for j, name in enumerate(self.names):
            columns[name] = _stack([row[j] for row in taken])
        return steps, columns
