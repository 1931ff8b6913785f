"""The run view (tpu_nb.notebook.view): one immutable snapshot per update tick, shown by the dashboard's
header and legends and by the JupyterLab runs panel and status bar alike. No TensorFlow session: the
engine's events are published by hand."""

import dataclasses
import threading

import pytest

from tpu_nb import events
from tpu_nb.notebook import lab_bridge
from tpu_nb.notebook.handles import RunHandle
from tpu_nb.notebook.view import RunView, run_view, step_fraction

BACKEND = "simulated TPU 8x1 (8 shards on CPU, 1 host)"


def _started(run_id=1, start=1000, target=5000):
    return events.RunStarted(run_id, "train", BACKEND, 8, 1, 128, 16, "/tmp/models/model_a", start, target, 20)


def _loop(run_id, step, loss, wall_time):
    return events.LoopFinished(run_id, step, 20, wall_time, 0.01, loss, None, 100.0)


def _handle(name="run"):
    handle = RunHandle("train", None, name=name)
    handle._ident = threading.get_ident()  # events come from this thread, as in a foreground run
    return handle


def test_view_is_a_frozen_function_of_the_handle_state():
    handle = _handle()
    handle._on_event(_started())
    handle._on_event(_loop(1, 1020, 2.5, 100.0))
    handle._on_event(_loop(1, 1220, 0.75, 102.0))

    view = run_view(handle, 7)
    assert isinstance(view, RunView)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.step = 0
    assert (view.seq, view.run_id, view.kind, view.name, view.phase, view.state) == (7, 1, "train", "run", "running",
                                                                                     "running")
    assert (view.step, view.start_step, view.target_step) == (1220, 1000, 5000)
    # A resumed run's progress counts as its step does, from step 0: 1,220 / 5,000, not 220 / 4,000.
    assert view.fraction == 1220 / 5000
    assert view.loss == 0.75 and view.loss_label == "loss (raw)"  # the raw loss of the loop at `step`
    assert view.steps_per_sec == 100.0  # 200 steps in 2 s, measured from the first loop's end
    assert view.examples_per_sec == 100.0 * 128 and view.eta_seconds == (5000 - 1220) / 100.0
    assert view.backend == BACKEND and view.model_dir == "/tmp/models/model_a"
    assert view.display_name == "run · train" and view.live

    # The same state gives the same view (but its number); the handle was not changed by reading it.
    assert dataclasses.replace(run_view(handle, 8), seq=7) == view
    # The wire form is plain JSON values.
    assert view.as_dict()["step"] == 1220 and view.as_dict()["seq"] == 7


def test_view_before_start_after_stop_and_with_a_nan_loss():
    handle = _handle(name=None)
    before = run_view(handle, 1)
    assert (before.phase, before.step, before.fraction, before.loss, before.backend) == ("starting", None, None, None,
                                                                                          None)
    assert before.display_name == "train"

    handle._on_event(_started(start=0, target=1000))
    handle._on_event(_loop(1, 300, float("nan"), 10.0))
    assert run_view(handle, 2).loss is None  # JSON has no NaN: nothing shown rather than a broken message
    handle._on_event(_loop(1, 320, 0.5, 10.2))
    handle._on_event(events.RunStopped(1, 320, "Stop button"))
    stopped = run_view(handle, 3)
    assert (stopped.phase, stopped.state, stopped.step, stopped.loss) == ("stopped", "stopped at step 320", 320, 0.5)
    assert not stopped.live and stopped.display_name == "train · model_a"


def test_step_fraction_counts_from_step_zero():
    assert step_fraction(None, 100) is None and step_fraction(5, None) is None
    assert step_fraction(150, 1000) == 0.15
    assert step_fraction(2000, 1000) == 1.0 and step_fraction(0, 0) == 1.0


def test_publish_view_numbers_views_and_tells_listeners():
    handle = _handle()
    handle._on_event(_started())
    seen = []
    remove = handle.add_view_listener(lambda h, view: seen.append(view))
    first = handle.publish_view()
    handle._on_event(_loop(1, 1020, 1.0, 1.0))
    second = handle.publish_view()
    remove()
    handle.publish_view()
    assert seen == [first, second] and handle.view.seq == 3
    assert (first.seq, first.step, second.seq, second.step) == (1, 1000, 2, 1020)


class _FakeComm:
    def __init__(self, on_message):
        self.on_message, self.sent = on_message, []

    def send(self, data):
        self.sent.append(data)


def test_dashboard_panel_and_status_bar_get_the_same_view():
    """A notebook run (a RunHandle running `work` in this thread) with a dashboard: every dashboard
    update publishes one view, and the lab bridge's message for that tick carries the same one, so
    the header, the legend (which reads the dashboard's status), the runs panel and the status bar
    show one step. The bridge's own ticker does not make views for a run whose dashboard does."""
    pytest.importorskip("anywidget")
    from tpu_nb.notebook.dashboard import Dashboard

    bridge = lab_bridge.LabBridge(comm_factory=_FakeComm, per_second=1000.0)
    handle = _handle(name="run")
    dashboard = Dashboard(handle, send_in_thread=False, cpu_share=None)
    handle.dashboard = dashboard
    statuses = []
    dashboard.send = lambda content, buffers=None: statuses.append(content["status"])
    checked = []

    def compare():
        dashboard._send_update()
        shown = statuses[-1]
        entry = bridge.comm.sent[-1]["runs"][-1]
        assert (entry["seq"], entry["step"], entry["loss"], entry["phase"], entry["state"], entry["fraction"]) == \
            (shown["seq"], shown["step"], shown["loss"], shown["phase"], shown["state"], shown["fraction"])
        assert entry["name"] == "run · train" and entry["backend"] == shown["backend"] == BACKEND
        checked.append(shown["step"])

    def work():
        run_id = events.bus.new_run_id()
        events.publish(_started(run_id, start=0, target=5000))
        for step in range(20, 420, 20):
            events.publish(_loop(run_id, step, 1.0 / step, 100.0 + step / 100.0))
            if step % 100 == 0:
                compare()
        events.publish(events.RunStopped(run_id, 400, "Stop button"))
        compare()

    try:
        handle._run(work, background=False)
        assert checked == [100, 200, 300, 400, 400]
        # The final view (the dashboard's last sync) reached the panel too: stopped, at the same step.
        final = bridge.status()["runs"][-1]
        assert handle.view.phase == "stopped"
        assert (final["id"], final["seq"], final["phase"], final["step"]) == (handle.run_id, handle.view.seq,
                                                                             handle.view.phase, 400)
        assert dashboard.snapshot["status"]["seq"] == handle.view.seq
    finally:
        bridge.close()


def test_bridge_makes_the_views_of_a_run_without_a_dashboard():
    bridge = lab_bridge.LabBridge(comm_factory=_FakeComm, per_second=1000.0)
    handle = _handle(name="quiet")

    def work():
        run_id = events.bus.new_run_id()
        events.publish(_started(run_id, start=0, target=100))
        events.publish(_loop(run_id, 20, 0.5, 1.0))
        run = bridge._runs[run_id]
        assert bridge._drives(run)
        bridge._runs[run_id].handle.publish_view()  # what the ticker does each tick
        entry = bridge.comm.sent[-1]["runs"][-1]
        assert (entry["seq"], entry["step"], entry["loss"], entry["fraction"]) == (handle.view.seq, 20, 0.5, 0.2)
        events.publish(events.RunFinished(run_id, 100, "train"))

    try:
        handle._run(work, background=False)
        final = bridge.comm.sent[-1]["runs"][-1]
        assert (final["phase"], final["state"], final["step"], final["seq"]) == ("done", "done", 100, handle.view.seq)
    finally:
        bridge.close()
