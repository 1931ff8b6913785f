"""The status bar (lab bridge) and the dashboard (run handle) show the same speeds for the same run."""

import threading

import pytest

from tpu_nb.reporting import events
from tpu_nb.notebook import lab_bridge
from tpu_nb.notebook.handles import RunHandle

pytestmark = pytest.mark.notebook


class _FakeComm:
    def __init__(self, on_message):
        self.sent = []

    def send(self, data):
        self.sent.append(data)


def test_status_bar_and_dashboard_agree_on_rates():
    handle = RunHandle("train")
    handle._ident = threading.get_ident()  # as if this thread ran the handle's training
    bridge = lab_bridge.LabBridge(comm_factory=_FakeComm, per_second=4.0)
    unsubscribe = events.subscribe(handle._on_event)
    try:
        run_id = events.bus.new_run_id()
        events.publish(events.RunStarted(run_id, "train", "CPU", 1, 1, 128, 128, "/tmp/model_r", 0, 10_000, 10))
        # Loops of uneven speed: the per-loop rate jumps around, the run's average does not.
        wall, seen = 1000.0, []
        for i, seconds in enumerate([5.0, 0.1, 0.3, 0.1, 0.2, 0.1, 0.4, 0.1]):
            wall += seconds
            step = 10 * (i + 1)
            events.publish(events.LoopFinished(run_id, step, 10, wall, seconds, 1.0, 1280 / seconds, 10 / seconds))
            if i in (0, 3, 7):  # the bridge's ticker reads the latest loop now and then, not every loop
                seen.append(bridge.status()["runs"][-1])
        bar = seen[-1]
        dashboard = handle.progress.as_dict()
        assert bar["step"] == dashboard["step"] == 80
        assert bar["steps_per_sec"] == pytest.approx(dashboard["steps_per_sec"])
        assert bar["examples_per_sec"] == pytest.approx(dashboard["examples_per_sec"])
        assert dashboard["examples_per_sec"] == pytest.approx(128 * 70 / 1.3)  # since the first loop ended
        assert seen[0]["examples_per_sec"] is None  # one loop: compile time included, no speed yet
    finally:
        unsubscribe()
        bridge.close()
