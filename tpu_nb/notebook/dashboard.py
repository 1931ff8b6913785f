"""The live training dashboard: an anywidget view fed by throttled deltas, plus a static fallback.

One output per run and no ``clear_output``: the view draws charts in the
browser from small incremental messages (at most ``updates_per_second``, each
at most ``_wire.DELTA_MAX_BYTES``), whatever the step rate (``throttle.UPDATES_PER_SECOND`` by
default; the charts redraw once a second either way). The kernel keeps
the full history; the browser gets at most ``_wire.MAX_POINTS`` points per
series. Under the view sits a second output, the *static picture*, filled
when the run ends with the final charts as a PNG (an ``<img>`` in HTML, plus
``image/png``) and the summary table: exported notebooks (``nbconvert``, which
shows a widget output by its widget view alone) and notebooks saved by
JupyterLab keep it, while a live view hides it (its CSS matches the picture's
class).

Example::

    handle = RunHandle("train", est)
    Dashboard(handle).show()      # then run the handle; the view follows its events
"""

from __future__ import annotations

import base64
import collections
import importlib.resources
import logging
import statistics
import threading
import time
import uuid
from typing import Callable, Deque, Optional

import anywidget
import traitlets

from . import _fast_stop, _static, _wire
from .handles import RunHandle
from .throttle import UPDATES_PER_SECOND, Throttle

_log = logging.getLogger("tpu_nb")

#: The most CPU the live view may spend on updates, as a share of one core (see Dashboard._pace).
UPDATE_CPU_SHARE = 0.0025
#: The longest a live view waits between updates, whatever they cost: longer and it looks frozen.
MAX_UPDATE_INTERVAL = 5.0
#: Updates whose cost sets the pace (the median of the last ones): one slow update (a first-time
#: import, a garbage collection) must not space the next ones out by a minute.
PACE_WINDOW = 5


def _esm_source() -> str:
    """The browser module: labextension/widgets/dashboard.js bundled with uPlot by the package build
    (``jlpm build:prod``, which ``pip install`` runs) into static/dashboard.js, shipped in the wheel."""
    path = importlib.resources.files(__package__).joinpath("static", "dashboard.js")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # A source checkout that was never built: a plain message beats an import-time traceback.
        _log.warning("tpu_nb: the dashboard's browser module is not built; run `pip install -e .` (or "
                     "`jlpm build:widgets` in labextension/) to build it.")
        return ("export default { render({ el }) { el.textContent = 'tpu_nb dashboard not built: run "
                "pip install -e . in the tpu_nb checkout'; } };")


class Dashboard(anywidget.AnyWidget):
    """Live view of one :class:`RunHandle` (charts, progress, ETA, Stop button).

    At most ``updates_per_second`` updates, fewer if building them would take more than
    ``cpu_share`` of a core (None: no such limit); ``send_in_thread=False`` builds them in the
    caller's thread, for tests that drive a fake ``clock``; ``cpu_clock`` measures what an update
    cost (the calling thread's CPU time), replaceable so that tests need not burn real CPU.
    """

    _esm = _esm_source()
    #: Full state (every series downsampled); synced at the start and once at the end of the run.
    snapshot = traitlets.Dict().tag(sync=True)
    #: Names this dashboard's static picture (CSS class ``tpunb-static-<key>``), which live views hide.
    static_key = traitlets.Unicode("").tag(sync=True)

    def __init__(self, handle: RunHandle, updates_per_second: float = UPDATES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic, max_message_bytes: int = _wire.DELTA_MAX_BYTES,
                 send_in_thread: bool = True, cpu_share: Optional[float] = UPDATE_CPU_SHARE,
                 cpu_clock: Callable[[], float] = time.thread_time):
        super().__init__()
        self.handle = handle
        self._throttle = Throttle(updates_per_second, clock)
        self._base_interval = self._throttle.interval
        self._update_cost: Optional[float] = None  # CPU seconds per update, typical of the last few
        self._recent_costs: Deque[float] = collections.deque(maxlen=PACE_WINDOW)
        self._cpu_share = cpu_share  # None: updates_per_second whatever they cost
        self._cpu_clock = cpu_clock
        # Building and sending an update (downsampling, JSON) takes a few hundred microseconds:
        # done in a thread of its own, it overlaps the next loop instead of delaying it.
        self._sender: Optional[_Sender] = _Sender(lambda: self._send_update()) if send_in_thread else None
        self._cursor = _wire.DeltaCursor(max_message_bytes)
        self._display = None
        self._static_display = None
        self.static_key = uuid.uuid4().hex[:12]
        self._resync_wanted = False
        # Stop must work while a foreground run keeps the kernel busy; see _fast_stop.
        self.fast_stop = _fast_stop.install(self, {"stop": self._stop_clicked, "hello": self._resync_requested})
        self.snapshot = self._full_state()
        self._cursor.mark_all_sent(handle.store)
        self.on_msg(self._on_front_end_message)
        handle.add_listener(self._on_change)

    # -- display -----------------------------------------------------------------------------------
    def show(self):
        """Displays the dashboard in the current cell (once); returns self."""
        from IPython.display import display

        if self._display is None:
            self._display = display(self, display_id=True)
            # Placed now, right under the view, and filled when the run ends (see _finish).
            self._static_display = display(self._static_bundle(final=False), raw=True, display_id=True)
        return self

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"tpu_nb {self.handle.summary()}"
        # Where no widget renders (nbconvert without widget state, a plain front end) the table stands in
        # for the view while the run goes. Once it ended, the static picture under the view carries the
        # final table: shown here too, an export would list the run's summary twice.
        data["text/html"] = ("<div class='tpunb-summary-in-picture'></div>" if self.handle.finished
                             else _static.summary_html(self.handle))
        return data, metadata

    def _static_bundle(self, final: bool) -> dict:
        """The static picture's output: empty (and hidden) while the run goes, then the final PNG
        and summary. Its HTML carries the PNG as an ``<img>``: front ends and nbconvert rank
        text/html above image/png, and the table alone would hide the picture."""
        css_class = f"tpunb-static tpunb-static-{self.static_key}"
        if not final:
            return {"text/html": f"<div class='{css_class}'></div>", "text/plain": ""}
        png = _static.render_png(self.handle)
        bundle = {"text/plain": f"tpu_nb {self.handle.summary()}"}
        image = ""
        if png is not None:
            encoded = base64.b64encode(png).decode("ascii")
            bundle["image/png"] = encoded
            image = (f"<img src='data:image/png;base64,{encoded}' alt='tpu_nb {self.handle.kind} dashboard' "
                     "style='max-width:100%'>")
        bundle["text/html"] = f"<div class='{css_class}'>{image}{_static.summary_html(self.handle)}</div>"
        return bundle

    # -- kernel -> browser ---------------------------------------------------------------------------
    def _status(self) -> dict:
        """This update's status: the run's view of this tick (``RunHandle.publish_view``, which the
        lab bridge's runs panel and status bar get too, so all show the same step), plus what only
        the dashboard shows."""
        h = self.handle
        view = h.publish_view()
        # notes: how a chart's points were made ("mean of 4 shards"), for its legend and tooltip. In
        # every status, not just the snapshot: a series becomes a mean mid-run, when shards first differ.
        status = dict(view.as_dict(), note=h.note, notes=h.store.notes, fast_stop=self.fast_stop)
        started = h.started
        if started is not None:
            status.update(num_shards=started.num_shards, num_hosts=started.num_hosts,
                          global_batch_size=started.global_batch_size,
                          per_shard_batch_size=started.per_shard_batch_size,
                          iterations_per_loop=str(started.iterations_per_loop))
        return status

    def _full_state(self) -> dict:
        return {"status": self._status(), "series": _wire.snapshot(self.handle.store)}

    def _send_update(self) -> None:
        started = self._cpu_clock()
        try:
            self._build_and_send_update()
        finally:
            self._pace(self._cpu_clock() - started)

    def _pace(self, cost: float) -> None:
        """Spaces updates so that building and sending them takes at most UPDATE_CPU_SHARE of a
        core: ``updates_per_second`` while updates are cheap, fewer when a run logs so much per
        second that each update gets expensive (many host_call series at thousands of steps/s), but
        never fewer than one per MAX_UPDATE_INTERVAL. The pace follows the median of the last few
        costs: paced by one 0.2 s outlier, a view once stayed silent for 80 s (0.2 / 0.0025)."""
        if self._cpu_share is None:
            return
        self._recent_costs.append(cost)
        typical = statistics.median_low(self._recent_costs)  # of two, the cheaper
        self._update_cost = typical
        self._throttle.interval = min(max(self._base_interval, typical / self._cpu_share),
                                      max(self._base_interval, MAX_UPDATE_INTERVAL))

    def _build_and_send_update(self) -> None:
        if self._resync_wanted:
            self._resync_wanted = False
            state = self._full_state()
            self._cursor.mark_all_sent(self.handle.store)
            self.send({"type": "snapshot", **state})
            return
        status = self._status()
        reserved = _wire.json_size(status) + 40
        # In the update thread, hand the GIL back between series: numpy on small arrays keeps it,
        # and a training thread back from Session.run would otherwise wait out the whole update.
        between = _yield_gil if threading.current_thread() is not threading.main_thread() else None
        series = self._cursor.next_delta(self.handle.store, reserved, between)
        self.send({"type": "delta", "status": status, "series": series})

    def _on_change(self, handle: RunHandle, what: str) -> None:
        # Called in the training thread (at most 20 times a second while data flows, see
        # RunHandle.notify_interval): everything but the throttle check waits for an update slot.
        if what == "final":
            self._finish()
            return
        if what == "state":
            self._throttle.reset()  # state changes (started, stopping, stopped) show at once
        if self._throttle.due():
            sender = self._sender
            if sender is not None and sender.open:
                sender.wake()
            else:
                self._send_update()  # no training thread to spare (or sending in threads is off)

    def _finish(self) -> None:
        """One sync of the final state (nbclient records traits, not custom messages) and one
        display update (the PNG and HTML with the final numbers)."""
        if self._sender is not None:
            self._sender.close()  # an update in flight goes out before the final state, never after
        self._cursor.mark_all_sent(self.handle.store)
        self.snapshot = self._full_state()
        if self._display is not None:
            self._display.update(self)
        if self._static_display is not None:
            self._static_display.update(self._static_bundle(final=True), raw=True)

    # -- browser -> kernel ---------------------------------------------------------------------------
    def _stop_clicked(self) -> None:
        self.handle.stop("Stop button")

    def _resync_requested(self) -> None:
        self._resync_wanted = True  # a view opened mid-run: the next update carries everything
        self._throttle.reset()

    def _on_front_end_message(self, widget, content, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "stop":
            self._stop_clicked()
        elif kind == "hello" and not self.handle.finished:
            self._resync_requested()  # the run's next update carries it; a finished run's snapshot is final


def _yield_gil() -> None:
    time.sleep(0)  # releases the GIL; a thread waiting for it runs first


class _Sender:
    """Runs ``send()`` in a daemon thread each time it is woken (wakes while busy coalesce).

    The thread starts at the first wake, so a dashboard whose run never starts holds none.
    """

    def __init__(self, send: Callable[[], None]):
        self._send = send
        self._wanted = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.open = True

    def wake(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and self.open:
                    self._thread = threading.Thread(target=self._loop, daemon=True, name="tpu_nb dashboard")
                    self._thread.start()
        self._wanted.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stops the thread after the update it is sending, if any; later wakes are refused."""
        with self._lock:
            self.open = False
            thread = self._thread
        self._wanted.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if not self.open:
                return
            try:
                self._send()
            except Exception:  # a failed update must not end live updates (the next one resyncs)
                _log.debug("tpu_nb dashboard update failed", exc_info=True)
