"""The kernel side of the JupyterLab extension: run status over the ``tpu_nb`` comm, and Stop.

``%load_ext tpu_nb`` calls :func:`start`, which registers one comm (target ``tpu_nb``) in the
kernel without announcing it, and subscribes to :mod:`tpu_nb.events`. The JupyterLab extension
finds it with a ``comm_info_request`` (on connecting, and after each cell while it has none) and
says hello; only then does the kernel send anything. Announcing the comm with ``comm_open`` would
make every front end without the extension complain (nbclient logs "No handler found for comm
target 'tpu_nb'" in each headless run), and a listed comm is all the extension needs. The front end (status bar,
runs panel) gets the whole, small state of the kernel's runs in each message, at most
``per_second`` messages per second (``throttle.UPDATES_PER_SECOND``, as the dashboard) whatever
the event rate; the last change always arrives
(a timer sends it when the throttle held it back). Outside a kernel (a script, a terminal IPython)
the comm is a no-op.

A notebook run (one with a :class:`.handles.RunHandle`) is shown from its handle's views
(:mod:`.view`): the run's dashboard publishes one view per update and this bridge sends that same
view at once, so the runs panel and the status bar show the step the dashboard's header and legend
show (``seq`` says which view). For a notebook run without a dashboard the ticker thread publishes
the views, at the message rate. A run without a handle (a plain ``train()`` in a cell) is followed
from its events: loop progress costs the training thread one attribute store per loop, and the
ticker, alive while a run is, reads the latest loop at the message rate.

Messages, kernel -> front end::

    {"type": "status", "backend": "simulated TPU 8x1 (...)", "active": 3,
     "runs": [{"id": 3, "name": "run · train", "mode": "train", "phase": "running",
               "state": "running", "step": 1200, "start": 0, "target": 5000, "fraction": 0.24,
               "seq": 17, "loss": 0.31,
               "examples_per_sec": 9100.0, "steps_per_sec": 142.0, "backend": "...",
               "model_dir": "/tmp/model_a", "spark": [2.3, 1.1, 0.6, ...]}, ...]}

front end -> kernel: ``{"type": "hello"}`` (send the status now), ``{"type": "stop", "run_id": 3}``,
``{"type": "stop_all"}``; each may carry a ``nonce`` so it is acted on once.

Stop must reach a foreground run that keeps the kernel busy: as in :mod:`._fast_stop`, the
request is noticed in ipykernel's shell-channel thread (``_reply_subshell_for``) and the run's
``estimator.request_stop()`` (thread-safe) is called there; the ordinary handler sees the same
message later and ignores it by its nonce.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, Optional

from ..reporting import events
from ._progress import Progress
from .throttle import UPDATES_PER_SECOND, Throttle
from .view import step_fraction

_log = logging.getLogger("tpu_nb")

TARGET = "tpu_nb"
#: Runs kept in the list (the oldest finished ones are dropped first).
MAX_RUNS = 20
#: Loss values per run for the panel's sparkline (downsampled by halving when full).
SPARK_POINTS = 60


# Events that change nothing the front end shows.
_QUIET = frozenset(getattr(events, name) for name in ("HostCallValues", "HostCallBatch", "CheckpointSaved",
                                                      "EvalFinished") if hasattr(events, name))


class _Run:
    """What the front end shows for one run, and how to stop it."""

    __slots__ = ("id", "mode", "model_dir", "backend", "phase", "state", "step", "start", "target", "loss",
                 "examples_per_sec", "steps_per_sec", "spark", "_every", "_seen", "stopper", "last_loop",
                 "_applied", "_progress", "first_loop", "label", "handle", "seq", "fraction", "_unlisten")

    def __init__(self, started: events.RunStarted, stopper, label: Optional[str] = None, handle=None):
        self.id = started.run_id
        # A notebook run: everything shown comes from its handle's views (see .view), the same objects
        # its dashboard shows; None: a run without a handle (a plain train() call), followed by events.
        self.handle = handle
        self._unlisten = None
        self.seq = 0  # the number of the view shown (handle runs: the handle's; else counted here)
        self.fraction = None
        self.label = label  # the notebook's name for the run (``-o VAR``), when it has one
        self.mode = started.mode
        self.model_dir = started.model_dir
        self.backend = started.backend
        self.phase, self.state = "running", "running"
        self.step = self.start = started.start_step
        self.target = started.target_step
        self.loss = self.examples_per_sec = self.steps_per_sec = None
        self.spark = []
        self._every, self._seen = 1, 0  # keep every _every-th loss; halve when the list is full
        self.stopper = stopper
        self.last_loop: Optional[events.LoopFinished] = None  # set by the training thread, nothing else
        self.first_loop: Optional[events.LoopFinished] = None  # ditto: where speeds are measured from
        self._applied: Optional[events.LoopFinished] = None
        # The dashboard's arithmetic (average since the first loop), so both show the same rates.
        self._progress = Progress()
        self._progress.run_started(started.start_step, started.target_step, started.global_batch_size, time.time())

    def apply_last_loop(self) -> bool:
        """Takes in the latest loop (one per tick, not one per loop); True if it was new."""
        event = self.last_loop
        if event is None or event is self._applied:
            return False
        self._applied = event
        self.step = event.global_step
        first, self.first_loop = self.first_loop, None
        if first is not None and first is not event:  # speeds count from the run's first loop, as the dashboard's
            self._progress.loop_finished(first.global_step, first.wall_time, first.examples_per_sec)
        self._progress.loop_finished(event.global_step, event.wall_time, event.examples_per_sec)
        self.examples_per_sec = _finite(self._progress.examples_per_sec)
        self.steps_per_sec = _finite(self._progress.steps_per_sec)
        self.fraction = step_fraction(self.step, self.target)
        self.seq += 1
        loss = _finite(event.loss)
        if loss is not None:
            self.loss = loss
            self.add_loss(loss)
        return True

    def apply_view(self, view) -> bool:
        """Shows the handle's view ``view`` (an older one than shown is ignored); True if it was new."""
        if view.seq <= self.seq:
            return False
        moved = view.step != self.step
        self.seq = view.seq
        self.step, self.start, self.target, self.fraction = view.step, view.start_step, view.target_step, view.fraction
        self.phase, self.state = view.phase, view.state
        self.examples_per_sec, self.steps_per_sec = view.examples_per_sec, view.steps_per_sec
        if view.backend:
            self.backend = view.backend
        if view.loss is not None:
            self.loss = view.loss
            if moved:
                self.add_loss(view.loss)
        return True

    def add_loss(self, loss: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self._every:
            return
        self.spark.append(loss)
        if len(self.spark) > SPARK_POINTS:
            self.spark = self.spark[::2]
            self._every *= 2

    @classmethod
    def unstarted(cls, run_id: int, handle, backend: str) -> "_Run":
        """A run that failed before the engine started it (its model_fn raised while the graph was built)."""
        model_dir = getattr(handle.estimator, "model_dir", "") or ""
        run = cls.__new__(cls)  # no RunStarted to build it from: every slot set here
        run.id, run.label, run.mode, run.model_dir, run.backend = run_id, handle.name, handle.kind, model_dir, backend
        run.phase, run.state = "failed", handle.state
        run.handle, run._unlisten, run.seq, run.fraction = None, None, 0, None
        run.step = run.start = run.target = None
        run.loss = run.examples_per_sec = run.steps_per_sec = None
        run.spark, run._every, run._seen = [], 1, 0
        run.stopper = run.last_loop = run.first_loop = run._applied = None
        run._progress = Progress()
        return run

    @property
    def live(self) -> bool:
        return self.phase in ("running", "stopping")

    def as_dict(self) -> Dict[str, Any]:
        where = os.path.basename(self.model_dir.rstrip(os.sep)) or self.model_dir
        name = f"{self.label} · {self.mode}" if self.label else f"{self.mode} · {where}"
        return {"id": self.id, "name": name, "mode": self.mode, "phase": self.phase, "state": self.state,
                "step": self.step, "start": self.start, "target": self.target, "fraction": self.fraction,
                "seq": self.seq, "loss": self.loss,
                "examples_per_sec": self.examples_per_sec, "steps_per_sec": self.steps_per_sec,
                "backend": self.backend, "model_dir": self.model_dir, "spark": list(self.spark)}


def _handles():
    from . import handles

    return handles


def _finite(value) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def _find_stopper(started: events.RunStarted):
    """The way to stop the run that just published ``started`` (called in that run's thread).

    A notebook run's handle is preferred (its state shows 'stopping' at once); otherwise the
    TPUEstimator whose ``train()`` is on this thread's stack. Held weakly.
    """
    if started.mode != "train":
        return None
    from ..estimator.tpu_estimator import TPUEstimator
    from . import runs

    handle = runs._latest_train.get(os.path.abspath(started.model_dir))
    if handle is not None and handle._ident == threading.get_ident():
        return weakref.ref(handle)
    frame = sys._getframe(1)
    while frame is not None:
        for value in (frame.f_locals.get("self"), frame.f_locals.get("est")):
            if isinstance(value, TPUEstimator):
                return weakref.ref(value)
        frame = frame.f_back
    return None


def default_backend() -> str:
    """The backend before any run said: ``TPU_NB_SIMULATE`` (cores x hosts) or one device."""
    simulate = os.environ.get("TPU_NB_SIMULATE", "").strip()
    if simulate:
        cores, _, hosts = simulate.partition("x")
        return f"simulated TPU {cores}x{hosts or 1}"
    return "CPU"


class LabBridge:
    """Sends the kernel's run status to the front end over one comm; handles Stop.

    ``comm_factory(on_msg)`` returns an object with ``send(dict)`` (tests pass a fake).
    ``wait_for_hello``: send nothing until a front end has said hello (nobody may be listening).
    """

    def __init__(self, comm_factory: Optional[Callable] = None, per_second: float = UPDATES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic, wait_for_hello: bool = False):
        from . import handles

        self._lock = threading.RLock()
        self._unstarted_ids = 0  # runs that failed before the engine gave them an id get -1, -2, ...
        self._runs: "collections.OrderedDict[int, _Run]" = collections.OrderedDict()
        self._backend = default_backend()
        self._active: Optional[int] = None
        self._throttle = Throttle(per_second, clock)
        self._timer: Optional[threading.Timer] = None
        self._handled = collections.deque(maxlen=256)  # nonces already acted on
        self._ticker: Optional[threading.Thread] = None
        self._dirty = False  # a live run moved on since the last message
        self._closed = threading.Event()
        self.messages_sent = 0
        self._heard_from_front_end = not wait_for_hello
        self.comm = (comm_factory or _open_comm)(self._on_message)
        self._unsubscribe = events.subscribe(self._on_event)
        self._unobserve = handles.observe_finished_runs(self._on_handle_final)
        self.send_now()

    def close(self) -> None:
        self._unsubscribe()
        self._unobserve()
        self._closed.set()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        close = getattr(self.comm, "close", None)
        if callable(close):
            close()

    # -- state -------------------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        with self._lock:
            for run in self._runs.values():
                if run.handle is None:
                    run.apply_last_loop()
            return {"type": "status", "backend": self._backend, "active": self._active,
                    "runs": [run.as_dict() for run in self._runs.values()]}

    def set_backend(self, description: str) -> None:
        """Shows ``description`` as the backend until a run says otherwise (a connection was made).

        A finished run stops being the active one: its rate was measured on the old backend, and the
        status bar would pair it with the new one.
        """
        with self._lock:
            self._backend = description
            active = self._runs.get(self._active)
            if active is not None and not active.live:
                self._active = None
        self.send_now()

    def _on_handle_final(self, handle, what: str) -> None:
        """A notebook run ended (in its thread, once): the panel shows the handle's final state.

        The handle is the one truth: a foreground Stop ends the cell through KeyboardInterrupt, and a
        model_fn that raises while the graph is built fails before the engine published RunStarted,
        so no event says either. A run that never started is listed as failed with its error.
        """
        from .handles import DONE, FAILED, STOPPED

        with self._lock:
            run = self._runs.get(handle.run_id) if handle.run_id is not None else None
            if run is None:
                if handle.phase != FAILED or handle.run_id is not None:
                    return
                self._unstarted_ids -= 1
                run = _Run.unstarted(self._unstarted_ids, handle, self._backend)
                self._runs[run.id] = run
                self._active = run.id
                self._trim()
            elif run.handle is not None:
                # The final view: the dashboard's last update published it; without one, published here.
                view = handle.view
                if view is None or view.live or view.phase != handle.phase:
                    view = handle.publish_view()  # our listener shows it
                else:
                    run.apply_view(view)
                if run._unlisten is not None:
                    run._unlisten()
                    run._unlisten = None
            elif handle.phase in (STOPPED, FAILED, DONE) and run.phase != handle.phase:
                run.apply_last_loop()
                run.phase, run.state = handle.phase, handle.state
                if handle.phase == STOPPED and handle.stopped_step is not None:
                    run.step = handle.stopped_step
            else:
                return
        self._schedule()

    def _on_event(self, event) -> None:
        kind = type(event)
        if kind is events.LoopFinished:
            # Hundreds per second in the training thread: keep the latest and let the ticker,
            # running at the message rate, read it (a dict lookup and an attribute store).
            run = self._runs.get(event.run_id)
            if run is not None:
                if run.last_loop is None:
                    run.first_loop = event
                run.last_loop = event
            return
        if kind in _QUIET:
            return  # host_call values and checkpoints change nothing the front end shows
        with self._lock:
            if kind is events.RunStarted:
                handle = _handles().current_handle()  # the notebook run publishing this, in its thread
                if handle is not None and handle.run_id not in (None, event.run_id):
                    handle = None  # a run inside another one's (an evaluate() from a hook)
                run = _Run(event, _find_stopper(event), handle.name if handle is not None else None, handle)
                if handle is not None:
                    run._unlisten = handle.add_view_listener(self._on_view)
                self._runs[run.id] = run
                self._backend = event.backend
                self._active = run.id
                self._trim()
                self._start_ticker()
            else:
                run = self._runs.get(getattr(event, "run_id", None))
                if run is None or run.handle is not None:
                    return  # a notebook run's end shows with its handle's next view, as on its dashboard
                run.apply_last_loop()  # the final numbers come before the final state
                if isinstance(event, events.RunStopped):
                    run.phase, run.step = "stopped", event.global_step
                    run.state = f"stopped at step {event.global_step}"
                elif isinstance(event, events.RunFailed):
                    run.phase = "failed"
                    text = str(event.error).strip().splitlines()
                    run.state = f"failed: {type(event.error).__name__}" + (f": {text[0]}" if text else "")
                elif isinstance(event, events.RunFinished):
                    if event.global_step is not None:
                        run.step = event.global_step
                    if run.phase in ("running", "stopping"):
                        run.phase = run.state = "done"
        self._schedule()

    def _on_view(self, handle, view) -> None:
        """A notebook run published a view (its dashboard's update, or our ticker): shown at once.

        Not throttled here: views come at most at the dashboard's (or the ticker's) rate, and the
        panel and status bar must show the view the dashboard shows now, not one a timer later.
        """
        with self._lock:
            run = self._runs.get(view.run_id) if view.run_id is not None else None
            if run is None or run.handle is not handle or not run.apply_view(view):
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._throttle.due()
            self._send()

    def _drives(self, run: "_Run") -> bool:
        """True when this bridge makes ``run``'s views: a notebook run whose dashboard does not."""
        handle = run.handle
        return handle is not None and (handle.dashboard is None or handle.finished)

    def _trim(self) -> None:
        while len(self._runs) > MAX_RUNS:
            finished = next((rid for rid, r in self._runs.items() if not r.live), None)
            self._runs.pop(finished if finished is not None else next(iter(self._runs)))

    # -- the ticker: progress of live runs, at the message rate ---------------------------------------
    def _start_ticker(self) -> None:
        """Starts the ticker thread unless one runs (lock held); it ends when no run is live."""
        if self._ticker is None or not self._ticker.is_alive():
            self._ticker = threading.Thread(target=self._tick_loop, daemon=True, name="tpu_nb lab bridge")
            self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._closed.wait(self._throttle.interval):
            with self._lock:
                live = [run for run in self._runs.values() if run.live]
                for run in live:
                    if self._drives(run):
                        run.handle.publish_view()  # our listener sends it
                if any([run.apply_last_loop() for run in live if run.handle is None]):  # a list: no short cut
                    self._dirty = True
                if self._dirty and self._timer is None and self._throttle.due():
                    self._send()
                if not live:
                    self._ticker = None
                    return

    # -- sending (throttled; the last change always goes out) ----------------------------------------
    def _schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                return  # a send is already due; it will carry this change
            if self._throttle.due():
                self._send()
                return
            self._timer = threading.Timer(self._throttle.interval, self._timer_fired)
            self._timer.daemon = True
            self._timer.start()

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer = None
            self._throttle.reset()
            self._throttle.due()
            self._send()

    def send_now(self) -> None:
        """Sends the status at once (a front end said hello); counts against the rate."""
        with self._lock:
            self._throttle.due()
            self._send()

    def _send(self) -> None:
        self._dirty = False
        if not self._heard_from_front_end:
            return  # the hello's send_now carries the whole state, so nothing is lost by waiting
        try:
            self.comm.send(self.status())
            self.messages_sent += 1
        except Exception:  # a closed front end must not break a run
            _log.debug("tpu_nb lab bridge: send failed", exc_info=True)

    # -- front end -> kernel -------------------------------------------------------------------------
    def handle(self, content) -> None:
        """Acts on one front-end message (once per nonce); safe from any thread."""
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        nonce = content.get("nonce")
        with self._lock:
            if nonce is not None:
                if nonce in self._handled:
                    return
                self._handled.append(nonce)
        if kind == "hello":
            self._heard_from_front_end = True
            self.send_now()
        elif kind == "stop":
            self.stop(content.get("run_id"))
        elif kind == "stop_all":
            self.stop_all()

    def stop(self, run_id, reason: str = "Stop in the tpu_nb panel") -> bool:
        """Asks run ``run_id`` to stop at its next loop boundary; False if it is not running."""
        with self._lock:
            run = self._runs.get(run_id)
            stopper = run.stopper() if run is not None and run.stopper is not None else None
            if run is None or stopper is None or run.phase != "running":
                return False
            if run.handle is None:
                run.phase = run.state = "stopping"
        if hasattr(stopper, "request_stop"):
            stopper.request_stop(reason)
        else:
            stopper.stop(reason)  # a handle: its dashboard's next view says "stopping"
        if run.handle is not None and self._drives(run):
            run.handle.publish_view()
        else:
            self._schedule()
        return True

    def stop_all(self) -> int:
        with self._lock:
            ids = [rid for rid, run in self._runs.items() if run.phase == "running"]
        return sum(self.stop(rid, "Stop all runs (tpu_nb)") for rid in ids)

    def _on_message(self, content) -> None:
        self.handle(content)


def _open_comm(on_message: Callable[[Any], None]):
    """Registers the ``tpu_nb`` comm for the front end to find (see the module docstring); Stop
    also works while the kernel is busy."""
    import comm as comm_package

    comm = comm_package.create_comm(target_name=TARGET, primary=False)
    comm_package.get_comm_manager().register_comm(comm)
    comm.on_msg(lambda msg: on_message(msg.get("content", {}).get("data")))
    original = getattr(comm, "_reply_subshell_for", None)
    if callable(original):  # ipykernel >= 7: see _fast_stop and the module docstring
        def route(data, default):
            try:
                if isinstance(data, dict) and data.get("type") in ("stop", "stop_all", "hello"):
                    on_message(data)
            except Exception:
                _log.debug("tpu_nb lab bridge: fast path failed", exc_info=True)
            return original(data, default)

        comm._reply_subshell_for = route
    return comm


_bridge: Optional[LabBridge] = None
_bridge_lock = threading.Lock()


def start(ipython=None) -> Optional[LabBridge]:
    """Starts the bridge once per kernel (``%load_ext tpu_nb`` calls this); returns it.

    Returns None, and does nothing, outside a Jupyter kernel.
    """
    global _bridge
    if ipython is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        ipython = get_ipython()
    if ipython is None or getattr(ipython, "kernel", None) is None:
        return None
    with _bridge_lock:
        if _bridge is None:
            try:
                _bridge = LabBridge(wait_for_hello=True)
            except Exception:  # no comm support: the notebook still works, without the lab panel
                _log.debug("tpu_nb lab bridge not started", exc_info=True)
                return None
        return _bridge


def show_backend(description: str) -> None:
    """The status bar shows ``description`` as the kernel's backend (the running bridge's; none: nothing)."""
    with _bridge_lock:
        bridge = _bridge
    if bridge is not None:
        bridge.set_backend(description)


def stop() -> None:
    """Closes the bridge (``%unload_ext tpu_nb``)."""
    global _bridge
    with _bridge_lock:
        if _bridge is not None:
            _bridge.close()
            _bridge = None
