"""The engine's event stream: what a run publishes for dashboards and loggers.

The engine never imports notebook code. It publishes small frozen records at
loop boundaries (never per step inside a session run); anything may
subscribe. Publishing with no subscribers costs one attribute check.

Example::

    import tpu_nb
    def show(event):
        if isinstance(event, tpu_nb.events.LoopFinished):
            print(event.global_step, event.loss)
    with tpu_nb.events.subscribed(show):
        estimator.train(input_fn, steps=1000)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
from typing import Any, Callable, Dict, List, Optional

_log = logging.getLogger("tpu_nb")


@dataclasses.dataclass(frozen=True)
class RunStarted:
    run_id: int
    mode: str
    backend: str
    num_shards: int
    num_hosts: int
    global_batch_size: Optional[int]
    per_shard_batch_size: Optional[int]
    model_dir: str
    start_step: int
    target_step: Optional[int]
    iterations_per_loop: Any


@dataclasses.dataclass(frozen=True)
class LoopFinished:
    run_id: int
    global_step: int
    steps: int
    wall_time: float
    seconds: float
    loss: Optional[float]
    examples_per_sec: Optional[float]
    steps_per_sec: float


@dataclasses.dataclass(frozen=True)
class HostCallValues:
    """Values passed to ``host_call`` for one step (scalars and small arrays, as numpy)."""

    run_id: int
    global_step: int
    values: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class HostCallBatch:
    """The host_call values of every step of one loop, published once per loop, by column.

    ``global_steps`` is an int64 array (one entry per host_call step) and ``values`` maps each
    host_call argument to its values of those steps stacked on the first axis (``values['loss']``
    has shape ``(len(global_steps),) + loss_shape``). One event per loop (not per step) keeps
    subscribers off the per-step path: at thousands of steps/s, per-step dispatch alone would cost
    more than the dashboards' whole budget. ``records()`` gives the per-step view.
    """

    run_id: int
    global_steps: Any
    values: Dict[str, Any]

    def records(self) -> List[HostCallValues]:
        names = list(self.values)
        return [HostCallValues(self.run_id, int(step), {name: self.values[name][i] for name in names})
                for i, step in enumerate(self.global_steps)]


@dataclasses.dataclass(frozen=True)
class EvalFinished:
    run_id: int
    global_step: int
    name: Optional[str]
    results: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CheckpointSaved:
    run_id: int
    global_step: int
    path: str


@dataclasses.dataclass(frozen=True)
class RunStopped:
    run_id: int
    global_step: int
    reason: str


@dataclasses.dataclass(frozen=True)
class RunFailed:
    run_id: int
    global_step: Optional[int]
    error: BaseException


@dataclasses.dataclass(frozen=True)
class RunFinished:
    run_id: int
    global_step: Optional[int]
    mode: str


class EventBus:
    """A list of subscribers; a failing subscriber is logged and never breaks a run."""

    def __init__(self):
        self._subscribers: List[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def new_run_id(self) -> int:
        return next(self._ids)

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Adds ``callback``; returns a function that removes it."""
        with self._lock:
            self._subscribers = self._subscribers + [callback]

        def unsubscribe():
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]

        return unsubscribe

    def publish(self, event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # a broken dashboard must not kill training
                _log.exception("tpu_nb event subscriber %r failed on %s", callback, type(event).__name__)


bus = EventBus()
subscribe = bus.subscribe
publish = bus.publish


@contextlib.contextmanager
def subscribed(callback: Callable[[Any], None]):
    """Context manager form of :func:`subscribe`."""
    unsubscribe = bus.subscribe(callback)
    try:
        yield
    finally:
        unsubscribe()
