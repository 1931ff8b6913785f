"""Run handles: one object per train / evaluate / predict / export call made from a notebook.

A handle listens to the engine's event stream for its own run, keeps the run's
history, and knows the run's state. It works the same in the foreground and in
a background thread.

Example::

    run = tpu_nb.notebook.train(est, train_input_fn, steps=2000, background=True)
    run.state              # 'running'
    run.stop()             # ends at the next loop boundary, with a checkpoint
    run.wait(); run.state  # 'stopped at step 800'
    run.history.tail()     # step, wall_time, loss, ... as a DataFrame
"""

from __future__ import annotations

import threading
from time import monotonic as _monotonic
from typing import Any, Callable, List, Optional

from ..reporting import events
from . import _busy
from ._progress import Progress
from .history import RunHistory

STARTING, RUNNING, STOPPING, STOPPED, FAILED, DONE = "starting", "running", "stopping", "stopped", "failed", "done"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or Stop ended a foreground training run: shown as one line, and (being an error)
    it keeps Jupyter from running the cells queued after it. ``handle`` is the stopped run's."""

    def __init__(self, message: str = "training interrupted", handle: Optional["RunHandle"] = None):
        super().__init__(message)
        self.handle = handle

    def _render_traceback_(self):
        return [f"KeyboardInterrupt: {self}"]


def stopped_message(step: Optional[int]) -> str:
    """The one line a stopped foreground run ends its cell with (the same for Stop and Ctrl-C)."""
    if step is None:
        return "training stopped before it began. Run the same command to start it."
    return f"training stopped at step {step}; checkpoint saved. Run the same command to resume."


#: Called with (handle, "final") when any handle's run ends, after its own listeners: the lab bridge,
#: whose runs panel and status bar then show the same final state as the handle (a foreground Stop
#: or a model_fn that raised before the run began publish no event of their own). Once per run,
#: never per loop.
_final_observers: List[Callable[["RunHandle", str], None]] = []
_current = threading.local()


def observe_finished_runs(callback: Callable[["RunHandle", str], None]) -> Callable[[], None]:
    """Calls ``callback(handle, "final")`` when any notebook run ends; returns the unsubscribe function."""
    _final_observers.append(callback)

    def unsubscribe():
        if callback in _final_observers:
            _final_observers.remove(callback)

    return unsubscribe


def current_handle() -> Optional["RunHandle"]:
    """The handle whose run is executing in this thread (the engine publishes its events here), or None."""
    return getattr(_current, "handle", None)


class RunHandle:
    """The state, history and result of one notebook run; see the module docstring.

    ``phase`` is one of 'starting', 'running', 'stopping', 'stopped', 'failed', 'done';
    ``state`` says it for people ('stopped at step 800', 'failed: NanLossError: ...').
    """

    def __init__(self, kind: str, estimator=None, description: str = "", name: Optional[str] = None):
        self.kind = kind
        #: What the user called the run (the magics' ``-o VAR``): the runs panel lists it by this name.
        self.name = name
        self.estimator = estimator
        self.description = description
        self.phase = STARTING
        self.run_id: Optional[int] = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.stopped_step: Optional[int] = None
        self.stop_reason: Optional[str] = None
        self.last_checkpoint: Optional[str] = None
        self.started: Optional[events.RunStarted] = None
        self.note: Optional[str] = None  # e.g. "resuming the stopped run from step 800 to step 2000"
        self.dashboard = None  # the live view, when one is shown
        self._request = None  # ("steps", N) or ("max_steps", N): what the user asked for
        self._progress = Progress()
        self._progress_lock = threading.Lock()
        self._last_loop: Optional[events.LoopFinished] = None  # set per loop; progress reads it lazily
        self._applied_loop: Optional[events.LoopFinished] = None
        #: Seconds between "data" notifications to listeners (whose own throttles send ~2/s):
        #: per loop, the training thread then pays for a queue append and one clock read.
        self.notify_interval = 0.05
        self._next_notify = 0.0
        self.store = RunHistory()
        self._listeners: List[Callable[["RunHandle", str], None]] = []
        self._thread: Optional[threading.Thread] = None
        self._ident: Optional[int] = None
        self._finished = threading.Event()
        # Set after the "final" listeners too: a background run's dashboard syncs its final state and
        # redraws its PNG/HTML then, and a notebook that ends right after wait() must keep that display.
        self._settled = threading.Event()
        self._stop_wanted: Optional[str] = None
        #: The latest view of this run (see .view): what the dashboard and the lab bridge show now.
        self.view = None
        self._view_seq = 0
        self._view_lock = threading.Lock()
        self._view_listeners: List[Callable[["RunHandle", Any], None]] = []
        self._unsubscribe = None

    # -- what users read ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.phase == STOPPED:
            return "stopped before training began" if self.stopped_step is None else f"stopped at step {self.stopped_step}"
        if self.phase == FAILED:
            return f"failed: {_describe(self.error)}"
        return self.phase

    @property
    def history(self):
        """A DataFrame: one row per step with a record (step, wall_time, loss, host_call scalars, eval_*)."""
        return self.store.to_frame()

    def series(self, name: str):
        """One series without gaps as a pandas Series indexed by step (e.g. 'loss', 'eval/accuracy')."""
        import pandas as pd

        steps, values = self.store.series(name)
        return pd.Series(values, index=pd.Index(steps, name="step"), name=name)

    @property
    def progress(self) -> Progress:
        """Step, speeds and ETA, brought up to the latest finished loop."""
        with self._progress_lock:
            loop = self._last_loop
            if loop is not None and loop is not self._applied_loop:
                self._applied_loop = loop
                self._progress.loop_finished(loop.global_step, loop.wall_time, loop.examples_per_sec)
            return self._progress

    def progress_and_loop(self):
        """A copy of the progress and the loop it last took in, read together (for one view)."""
        import copy

        with self._progress_lock:
            loop = self._last_loop
            if loop is not None and loop is not self._applied_loop:
                self._applied_loop = loop
                self._progress.loop_finished(loop.global_step, loop.wall_time, loop.examples_per_sec)
            return copy.copy(self._progress), self._applied_loop

    def publish_view(self):
        """Makes this tick's :class:`.view.RunView` (once), keeps it as ``view`` and gives it to every
        view listener; returns it. Called by whatever drives the run's display: the dashboard's update,
        or the lab bridge's ticker when the run has no dashboard. Safe from any thread."""
        from .view import run_view

        with self._view_lock:
            self._view_seq += 1
            view = run_view(self, self._view_seq)
            self.view = view
            listeners = list(self._view_listeners)
        for callback in listeners:
            try:
                callback(self, view)
            except Exception:  # noqa: BLE001 - one display's failure must not stop the others
                pass
        return view

    def add_view_listener(self, callback: Callable[["RunHandle", Any], None]) -> Callable[[], None]:
        """``callback(handle, view)`` for each published view (in the publishing thread); returns the
        function that removes it."""
        self._view_listeners.append(callback)

        def remove():
            if callback in self._view_listeners:
                self._view_listeners.remove(callback)

        return remove

    @property
    def global_step(self) -> Optional[int]:
        return self.progress.step

    @property
    def target_step(self) -> Optional[int]:
        return self.progress.target_step

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def stop(self, reason: str = "stop requested from the notebook") -> bool:
        """Asks the run to stop at the next loop boundary (a checkpoint is saved); returns at once.

        Safe from any thread. Returns False when the run has already ended.
        """
        if self.finished or self.kind != "train":
            return False
        self._stop_wanted = reason
        if self.phase in (STARTING, RUNNING):
            self.phase = STOPPING
            self._notify("state")
        if self.estimator is not None:
            self.estimator.request_stop(reason)  # thread-safe; a no-op until train() has begun
        return True

    def wait(self, timeout: Optional[float] = None):
        """Waits for the run to end and returns ``result``; re-raises the run's error if it failed.

        A stopped run is not an error. Raises ``TimeoutError`` if ``timeout`` passes first.
        """
        # A "final" listener that waits on its own run would wait for itself: the run has ended.
        done = self._finished if threading.get_ident() == self._ident else self._settled
        if not done.wait(timeout):
            raise TimeoutError(f"{self.kind} run still {self.state} after {timeout} s.")
        if self.phase == FAILED and self.error is not None and not isinstance(self.error, KeyboardInterrupt):
            raise self.error
        return self.result

    def add_listener(self, callback: Callable[["RunHandle", str], None]) -> None:
        """``callback(handle, what)`` with what in 'data', 'state', 'final' (called in the run's thread)."""
        self._listeners.append(callback)

    def summary(self) -> str:
        """One line: kind, state, step, loss."""
        parts = [f"{self.kind}: {self.state}"]
        if self.progress.step is not None:
            target = f"/{self.progress.target_step}" if self.progress.target_step is not None else ""
            parts.append(f"step {self.progress.step}{target}")
        loss = self.store.last("loss")
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        return ", ".join(parts)

    def __repr__(self):
        return f"<RunHandle {self.summary()}>"

    def _repr_html_(self):
        if self.kind == "train":
            return None  # the dashboard is the display; a second chart would repeat it
        from ._static import result_html

        return result_html(self)

    # -- running -----------------------------------------------------------------------------------
    def _run(self, work: Callable[[], Any], background: bool) -> "RunHandle":
        """Runs ``work()`` here, or in a daemon thread, with this handle subscribed to events."""
        if background:
            self._thread = threading.Thread(target=self._body, args=(work, False), daemon=True,
                                            name=f"tpu_nb {self.kind}")
            self._thread.start()
        else:
            with _busy.kept_busy():  # the kernel indicator stays Busy while this cell runs
                self._body(work, True)
        return self

    def _body(self, work, reraise: bool):
        self._ident = threading.get_ident()
        _current.handle = self
        self._unsubscribe = events.subscribe(self._on_event)
        try:
            if self.kind != "train":
                self.phase = RUNNING
                self._notify("state")
            result = work()
            self.result = result
            if self.phase in (STARTING, RUNNING, STOPPING):
                self.phase = STOPPED if self.phase == STOPPING and self.stopped_step is not None else DONE
        except KeyboardInterrupt as error:
            # The engine stopped at a loop boundary and saved (RunStopped came first), or the
            # interrupt came before training began: either way a stop, not a failure.
            if self.phase != STOPPED:
                self.phase, self.stopped_step = STOPPED, self.progress.step
                self.stop_reason = "interrupted"
            self.error = error
            if reraise:
                raise
        except BaseException as error:
            self.phase, self.error = FAILED, error
            if reraise:
                raise
        finally:
            self._unsubscribe()
            _current.handle = None
            self._finished.set()
            try:
                self._notify("final")
                for observer in list(_final_observers):
                    try:
                        observer(self, "final")
                    except Exception:  # noqa: BLE001 - a display's failure must not change the run's outcome
                        pass
            finally:
                self._settled.set()

    def _notify(self, what: str) -> None:
        for callback in self._listeners:
            callback(self, what)

    # -- the event stream (called in the training thread; cheap for other runs' events) -------------
    def _on_event(self, event) -> None:
        if event.run_id == self.run_id and type(event) is events.LoopFinished:
            # The per-loop path, first and short: an O(1) queue append, one clock read.
            self.store.add_loop(event.global_step, event.wall_time, event.loss, event.steps_per_sec,
                                event.examples_per_sec)
            self._last_loop = event
            if self._applied_loop is None:
                self.progress  # the first loop's end is where speeds and the ETA are measured from
            now = _monotonic()
            if now >= self._next_notify:
                self._next_notify = now + self.notify_interval
                self._notify("data")
            return
        if event.run_id != self.run_id:
            if threading.get_ident() != self._ident:
                return  # another thread's run
            if isinstance(event, events.RunStarted) and self.run_id is None:
                self._on_started(event)
                return
            if not isinstance(event, events.EvalFinished):
                return  # an evaluate() inside our run (e.g. from a hook) publishes with its own id
        if isinstance(event, events.HostCallBatch):
            # Once per loop: queue only. The LoopFinished that follows each drain notifies the view.
            self.store.queue_columns(event.global_steps, event.values)
        elif isinstance(event, events.HostCallValues):
            # Once per step: queue only. The LoopFinished that follows each drain notifies the view.
            self.store.queue_scalars(event.global_step, event.values)
        elif isinstance(event, events.EvalFinished):
            self.add_eval(event.global_step, event.results)
        elif isinstance(event, events.CheckpointSaved):
            self.last_checkpoint = event.path
        elif isinstance(event, events.RunStopped):
            self.phase, self.stopped_step, self.stop_reason = STOPPED, event.global_step, event.reason
            self.progress.step = event.global_step
            self._notify("state")
        elif isinstance(event, events.RunFailed):
            self.phase, self.error = FAILED, event.error
            self._notify("state")
        elif isinstance(event, events.RunFinished):
            if event.global_step is not None:
                self.progress.step = event.global_step
            if self.phase != STOPPED:
                self.phase = DONE
            self._notify("state")

    def _on_started(self, event: events.RunStarted) -> None:
        import time

        self.run_id = event.run_id
        self.started = event
        # Before the first host_call batch, which carries one entry per shard of each argument.
        self.store.num_shards = event.num_shards
        self.progress.run_started(event.start_step, event.target_step, event.global_batch_size, time.time())
        if self.phase == STARTING:
            self.phase = RUNNING
        if self._stop_wanted is not None and self.estimator is not None:
            self.estimator.request_stop(self._stop_wanted)  # Stop was pressed before train() began
        self._notify("state")

    def add_eval(self, step: int, results: dict) -> None:
        """Adds an evaluation's results to this run's history (the dashboard overlays them)."""
        self.store.add_eval(int(step), results)
        self._notify("data")
        if self.finished:
            self._notify("final")  # a finished run's display is redrawn with the new points


def _describe(error: Optional[BaseException]) -> str:
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
