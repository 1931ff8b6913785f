"""The live dashboard, driven by synthetic engine events: message budget, final sync, static fallback, Stop."""

import base64
import importlib.resources
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")

import tensorflow as tf
import tf_keras

import tpu_nb
from tpu_nb.reporting import events
from tpu_nb.notebook import _fast_stop, _wire
from tpu_nb.notebook.dashboard import MAX_UPDATE_INTERVAL, UPDATE_CPU_SHARE, Dashboard
from tpu_nb.notebook.handles import RunHandle

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeEstimator:
    def __init__(self):
        self.stop_reasons = []

    def request_stop(self, reason="stop requested"):
        self.stop_reasons.append(reason)
        return True


def record_messages(widget, clock):
    """Every comm message the widget sends (custom messages and trait syncs), with its time and size."""
    sent = []
    original = widget.comm.send

    def send(data=None, metadata=None, buffers=None):
        size = len(json.dumps(data, separators=(",", ":"))) + sum(len(b) for b in buffers or [])
        sent.append((clock(), size, data))
        return original(data=data, metadata=metadata, buffers=buffers)

    widget.comm.send = send
    return sent


def started_handle(estimator=None, target=None):
    handle = RunHandle("train", estimator)
    handle._ident = threading.get_ident()  # events come from this thread, as in a foreground run
    handle.notify_interval = 0  # the fake clock drives the throttle: tell the view about every loop
    handle._on_event(events.RunStarted(1, "train", "CPU", 1, 1, 64, 64, "/tmp/model", 0, target, 20))
    return handle


def drive(handle, clock, steps_per_sec=2000, seconds=10, loop=20, scalars=3, eval_every=5000):
    """Publishes what a run at ``steps_per_sec`` publishes: host_call values every step, a loop every
    ``loop`` steps, an evaluation every ``eval_every`` steps."""
    values = {f"scalar_{i}": np.float32(i) for i in range(scalars)}
    for step in range(1, steps_per_sec * seconds + 1):
        clock.now = step / steps_per_sec
        handle._on_event(events.HostCallValues(1, step, values))
        if step % loop == 0:
            handle._on_event(events.LoopFinished(1, step, loop, 1000.0 + clock.now, loop / steps_per_sec,
                                                 1.0 / step, steps_per_sec * 64.0, float(steps_per_sec)))
        if step % eval_every == 0:
            handle.add_eval(step, {"loss": np.float32(0.5), "accuracy": np.float32(0.9), "global_step": step})


def test_message_budget_holds_at_2000_steps_per_second():
    clock = FakeClock()
    handle = started_handle(target=20_000)
    dashboard = Dashboard(handle, clock=clock, send_in_thread=False, cpu_share=None)  # in step with the fake clock
    sent = record_messages(dashboard, clock)

    drive(handle, clock, steps_per_sec=2000, seconds=10)

    per_second = {}
    for t, size, _ in sent:
        count, total = per_second.get(int(t), (0, 0))
        per_second[int(t)] = (count + 1, total + size)
    assert max(c for c, _ in per_second.values()) <= 10  # messages per second
    assert max(b for _, b in per_second.values()) <= 50_000  # bytes per second
    assert max(c for c, _ in per_second.values()) <= 5  # in fact ~4 updates/s (plus an eval's state change)
    # Every point reached the browser exactly once, downsampled only when a delta was over its share.
    received = sum(len(data["content"]["series"].get("host/scalar_0", [[]])[0])
                   for _, _, data in sent if data.get("method") == "custom")
    assert 0 < received <= 20_000
    # Speeds are shown as numbers from the status; their series stay in the kernel.
    sent_series = {name for _, _, data in sent if data.get("method") == "custom" for name in data["content"]["series"]}
    assert "loss" in sent_series and not sent_series & _wire.NOT_CHARTED
    last = sent[-1][2]["content"]
    assert last["status"]["step"] == 20_000 or last["status"]["step"] >= 19_000


def test_expensive_updates_are_spaced_out_to_keep_their_cpu_share():
    clock = FakeClock()
    cpu = FakeClock()  # CPU time is faked too: a busy machine must not change what is asserted
    handle = started_handle(target=10**6)
    dashboard = Dashboard(handle, clock=clock, send_in_thread=False, cpu_clock=cpu)
    build = dashboard._build_and_send_update

    def expensive_update():  # 4 ms of CPU, as many host_call series at thousands of steps/s cost
        cpu.now += 0.004
        build()

    dashboard._build_and_send_update = expensive_update
    sent = record_messages(dashboard, clock)
    for step in range(20, 200_001, 20):  # 100 s of a run at 2,000 steps/s, in fake time
        clock.now = step / 2000
        handle._on_event(events.LoopFinished(1, step, 20, 1000.0 + clock.now, 0.01, 1.0 / step, 128000.0, 2000.0))
    deltas = [t for t, _, data in sent if data.get("method") == "custom"]
    # 4 ms per update at 0.25% of a core allows one update per 1.6 s: ~62 in 100 s, not 400.
    assert 55 <= len(deltas) <= 70, len(deltas)
    assert dashboard._throttle.interval == pytest.approx(0.004 / UPDATE_CPU_SHARE)


def test_one_slow_update_does_not_freeze_the_view_and_no_cost_silences_it():
    clock = FakeClock()
    cpu = FakeClock()
    handle = started_handle(target=10**6)
    dashboard = Dashboard(handle, clock=clock, send_in_thread=False, cpu_clock=cpu)
    build = dashboard._build_and_send_update
    costs = iter([0.001, 0.2] + [0.001] * 60 + [1.0] * 10_000)  # a GC pause, then a run gone expensive

    def update():
        cpu.now += next(costs)
        build()

    dashboard._build_and_send_update = update
    sent = record_messages(dashboard, clock)
    for step in range(20, 240_001, 20):  # 120 s at 2,000 steps/s, in fake time
        clock.now = step / 2000
        handle._on_event(events.LoopFinished(1, step, 20, 1000.0 + clock.now, 0.01, 1.0 / step, 128000.0, 2000.0))
    times = [t for t, _, data in sent if data.get("method") == "custom"]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    # The 0.2 s update once paced the next one 80 s later (0.2 / UPDATE_CPU_SHARE).
    assert max(gaps[:10]) <= 1.0, gaps[:10]
    # Updates costing a whole second each are spaced out, but the view still moves every 5 s.
    assert max(gaps) == pytest.approx(MAX_UPDATE_INTERVAL, abs=0.05)
    assert len(times) > 60


def test_updates_are_built_off_the_training_thread_and_the_final_state_comes_last():
    handle = started_handle(target=4000)
    dashboard = Dashboard(handle)
    senders = []
    original = dashboard._send_update

    def send_update():
        senders.append(threading.get_ident())
        time.sleep(0.05)  # a slow update must hold up neither the loop nor the final state
        original()

    dashboard._send_update = send_update
    sent = record_messages(dashboard, time.monotonic)
    for step in range(20, 4001, 20):
        handle._on_event(events.LoopFinished(1, step, 20, time.time(), 0.01, 1.0 / step, 128000.0, 2000.0))
        time.sleep(0.002)
    handle._on_event(events.RunFinished(1, 4000, "train"))
    handle._finished.set()
    handle._notify("final")

    assert senders and threading.get_ident() not in senders
    kinds = [data.get("method") for _, _, data in sent]
    assert kinds[-1] == "update" and kinds.count("update") == 1  # the final sync, after every delta
    assert dashboard.snapshot["status"]["step"] == 4000
    # After the run, updates (an evaluation added later) are sent directly; no thread is left behind.
    count = len(sent)
    handle.add_eval(4000, {"accuracy": 0.9, "global_step": 4000})
    assert len(sent) > count
    assert not dashboard._sender._thread.is_alive()


def test_run_end_syncs_the_final_state_once_and_updates_the_static_picture():
    clock = FakeClock()
    handle = started_handle(target=4000)
    dashboard = Dashboard(handle, clock=clock, send_in_thread=False, cpu_share=None)  # in step with the fake clock
    sent = record_messages(dashboard, clock)
    drive(handle, clock, seconds=2, eval_every=2000)
    handle._on_event(events.RunFinished(1, 4000, "train"))
    handle._finished.set()
    handle._notify("final")

    syncs = [data for _, _, data in sent if data.get("method") == "update"]
    assert len(syncs) == 1
    snapshot = syncs[0]["state"]["snapshot"]
    assert snapshot["status"]["state"] == "done"
    assert snapshot["status"]["step"] == 4000
    assert set(snapshot["series"]) >= {"loss", "eval/accuracy", "host/scalar_2"}
    assert all(len(steps) <= 2000 for steps, _ in snapshot["series"].values())

    data, _ = dashboard._repr_mimebundle_()
    assert data[WIDGET_MIME]["model_id"] == dashboard.model_id
    assert data["text/plain"].startswith("tpu_nb train: done")
    # The summary table once per export: in the static picture, not also in the view's fallback.
    assert "tpu-nb-summary" not in data["text/html"]
    # The static picture (its own output under the view): the PNG, also as an <img> in its HTML,
    # which front ends and nbconvert rank above image/png.
    picture = dashboard._static_bundle(final=True)
    assert base64.b64decode(picture["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"<img src='data:image/png;base64,{picture['image/png']}'" in picture["text/html"]
    assert f"tpunb-static-{dashboard.static_key}" in picture["text/html"] and "4000" in picture["text/html"]
    assert picture["text/html"].count("tpu-nb-summary") == 1 and "done" in picture["text/html"]
    assert "image/png" not in dashboard._static_bundle(final=False)


def test_stopped_and_failed_runs_say_so_in_the_status():
    handle = started_handle(target=1000)
    dashboard = Dashboard(handle)
    handle._on_event(events.LoopFinished(1, 300, 20, 1.0, 0.1, 0.5, None, 200.0))
    handle._on_event(events.RunStopped(1, 300, "Stop button"))
    assert dashboard._status()["state"] == "stopped at step 300"

    failed = started_handle()
    dashboard = Dashboard(failed)
    failed._on_event(events.RunFailed(1, 40, ValueError("bad input\nsecond line")))
    assert dashboard._status()["state"] == "failed: ValueError: bad input"


def test_stop_button_message_asks_the_estimator_to_stop():
    estimator = FakeEstimator()
    handle = started_handle(estimator, target=1000)
    dashboard = Dashboard(handle)
    dashboard._handle_custom_msg({"type": "stop"}, [])
    assert estimator.stop_reasons == ["Stop button"]
    assert handle.phase == "stopping"


def test_fast_stop_hook_sees_stop_in_the_kernels_shell_channel_thread():
    """ipykernel asks the comm where to route each message before the busy main thread sees it."""
    routed = []

    class Comm:
        def _reply_subshell_for(self, data, default):
            routed.append(data)
            return default

    class Widget:
        comm = Comm()

    stops = []
    assert _fast_stop.install(Widget, {"stop": lambda: stops.append(1)})
    assert Widget.comm._reply_subshell_for({"method": "custom", "content": {"type": "stop"}}, None) is None
    assert Widget.comm._reply_subshell_for({"method": "update", "state": {}}, "sub") == "sub"
    assert stops == [1] and len(routed) == 2  # routing itself is unchanged
    assert not _fast_stop.install(object(), {})  # other kernels: nothing installed, nothing broken


def browser_module() -> str:
    return importlib.resources.files("tpu_nb.notebook").joinpath("static", "dashboard.js").read_text(encoding="utf-8")


def test_the_browser_module_ships_inside_the_package_with_its_chart_library():
    source = browser_module()
    assert Dashboard._esm == source
    assert "u-legend" in source  # uPlot, bundled at build time
    # Nothing fetched at run time: a bundle imports no other module, from a CDN or anywhere.
    assert "import(" not in source and 'from"' not in source.replace(" ", "")


def test_wait_returns_after_the_final_display_of_a_background_run():
    """A notebook that ends right after ``run.wait()`` must keep the final PNG/HTML, which the
    dashboard draws when the run's thread tells its listeners "final"."""
    handle = RunHandle("train")
    finals = []

    def slow_final(h, what):
        if what == "final":
            time.sleep(0.3)  # rendering the PNG takes about this long on a loaded machine
            finals.append(h.state)

    handle.add_listener(slow_final)
    handle._run(lambda: "trained", background=True)
    assert handle.wait(timeout=30) == "trained"
    assert finals == ["done"]


def test_a_final_listener_may_wait_on_its_own_run():
    handle = RunHandle("train")
    results = []
    handle.add_listener(lambda h, what: results.append(h.wait(timeout=5)) if what == "final" else None)
    handle._run(lambda: "trained", background=True)
    assert handle.wait(timeout=30) == "trained" and results == ["trained"]


# -- a real run on simulated shards -------------------------------------------------------------------

SHARDS = 4
_host_fn_saw = []  # what each host_call step handed host_fn: (global_step, loss, learning_rate), one entry per shard


def _sharded_input_fn(params):
    rng = np.random.RandomState(7)
    x = rng.randn(512, 3).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + rng.randn(512, 1).astype(np.float32))
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def _sharded_model_fn(features, labels, mode, params):
    predictions = tf_keras.layers.Dense(1, kernel_initializer="zeros")(features)
    loss = tf.reduce_mean(tf.square(predictions - labels))
    global_step = tf.compat.v1.train.get_global_step()
    learning_rate = tf.compat.v1.train.exponential_decay(0.1, global_step, 4, 0.5, staircase=True)
    optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(learning_rate))
    train_op = optimizer.minimize(loss, global_step)

    def host_fn(global_step, loss, learning_rate):
        def record(*values):
            _host_fn_saw.append(tuple(np.array(v) for v in values))
            return np.int64(0)

        return [tf.numpy_function(record, [global_step, loss, learning_rate], tf.int64)]

    # As on a TPU: each shard passes [1]-shaped tensors, and the host gets them concatenated.
    host_call = (host_fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1]), tf.reshape(learning_rate, [1])])
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)


def test_host_call_values_of_simulated_shards_reach_the_dashboard(tmp_path):
    from tpu_nb import notebook

    steps = 12
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=SHARDS),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4))
    est = tpu_nb.TPUEstimator(_sharded_model_fn, config=config, use_tpu=True, train_batch_size=8 * SHARDS)
    _host_fn_saw.clear()
    handle = notebook.train(est, _sharded_input_fn, steps=steps, dashboard=True)
    assert handle.state == "done"

    saw = dict(zip(("global_step", "loss", "learning_rate"), (np.stack(v) for v in zip(*_host_fn_saw))))
    assert saw["loss"].shape == (steps, SHARDS)
    assert np.all(saw["loss"].std(axis=1) > 0)  # each shard's batch has its own loss: the case to average
    store = handle.store
    expected_notes = {}
    for name, per_shard in saw.items():
        recorded_steps, values = store.series("host/" + name)
        assert recorded_steps.tolist() == list(range(1, steps + 1))
        agree = np.all(per_shard == per_shard[:, :1], axis=1)
        # Where the shards agree, their value exactly (no mean's rounding); elsewhere, their mean.
        assert values[agree].tolist() == per_shard[agree, 0].astype(np.float64).tolist()
        np.testing.assert_allclose(values[~agree], per_shard[~agree].astype(np.float64).mean(axis=1), rtol=1e-6)
        if not agree.all():
            expected_notes["host/" + name] = f"mean of {SHARDS} shards"
    assert expected_notes.get("host/loss") == f"mean of {SHARDS} shards"
    assert store.notes == expected_notes  # only series whose shards differed say they are means
    # The loss at each loop's end is the engine's own training loss there (its mean over replicas).
    losses = store.series("host/loss")[1]
    loop_steps, loop_losses = store.series("loss")
    assert loop_steps.tolist() == [4, 8, 12]
    np.testing.assert_allclose(losses[loop_steps - 1], loop_losses, rtol=1e-5)
    # The global steps are the steps (each step's, or where a read saw the step's own increment, the
    # next: the tolerance of test_notebook_tf1). Every shard should pass the same one; where the engine
    # let one shard's read see the increment, that step's point is the noted mean, checked above.
    recorded_steps, global_steps = store.series("host/global_step")
    agree = np.all(saw["global_step"] == saw["global_step"][:, :1], axis=1)
    assert set((recorded_steps - global_steps)[agree].tolist()) <= {0, 1}

    # The dashboard's final state: one chart per host_call argument, the mean labelled for the legend.
    snapshot = handle.dashboard.snapshot
    series = snapshot["series"]
    assert "host/global_step" not in series  # the step of every point already, not a chart of its own
    np.testing.assert_allclose(series["host/loss"][1], losses, rtol=1e-4)  # 5 significant digits on the wire
    assert snapshot["status"]["notes"] == expected_notes
    assert snapshot["status"]["num_shards"] == SHARDS
    data = handle.dashboard._static_bundle(final=True)
    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert handle.history.attrs["notes"]["host_loss"] == f"mean of {SHARDS} shards"


def test_the_browser_labels_a_mean_of_shards_in_the_legend_and_tooltip():
    """dashboard.js alone in headless Chromium (no Jupyter), given a snapshot with a noted series."""
    from browser_support import chromium_page, require_browser

    require_browser()
    source = browser_module()
    snapshot = {"status": {"phase": "done", "state": "done", "notes": {"host/loss": "mean of 4 shards"}},
                "series": {"loss": [[4, 8], [1.0, 0.5]], "host/loss": [[1, 2, 3], [1.5, 1.0, 0.75]],
                           "host/global_step": [[1, 2, 3], [0, 1, 2]]}}
    with chromium_page() as page:
        page.goto("about:blank")
        charts = page.evaluate("""async ([source, snapshot]) => {
            const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
            const module = await import(url);
            const model = {get: () => snapshot, on() {}, off() {}, send() {}};
            const root = document.createElement("div");
            document.body.appendChild(root);
            module.default.render({model, el: root});
            await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
            return [...root.querySelectorAll(".tpunb-chart")].map((chart) => ({
                title: chart.querySelector(".tpunb-chart-title").textContent,
                legend: [...chart.querySelectorAll(".u-legend .u-series .u-label")].map((e) => e.textContent)}));
        }""", [source, snapshot])
    assert charts == [  # the training loss, then one chart per host_call argument: only the mean says so
        {"title": "loss", "legend": ["step", "train loss"]},
        {"title": "host_call loss", "legend": ["step", "loss (mean of 4 shards)"]},
        {"title": "global_step", "legend": ["step", "global_step"]},
    ]


def test_a_host_call_loss_gets_a_chart_of_its_own():
    from tpu_nb.notebook._static import chart_groups

    # The browser keys its charts by title: a host_call "loss" titled "loss" drew over the training loss.
    assert chart_groups(["loss", "host/loss", "host/global_step", "eval/loss"]) == [
        ("loss", ["loss", "eval/loss"]), ("host_call loss", ["host/loss"]), ("global_step", ["host/global_step"])]


def test_the_static_pictures_step_labels_never_collide_on_a_long_run():
    from tpu_nb.notebook._static import render_figure

    handle = started_handle(target=155_000)
    for step in range(500, 155_001, 500):
        handle._on_event(events.LoopFinished(1, step, 500, 1.0, 0.01, 2.0 / (1 + step / 1000), None, 200.0))
        handle._on_event(events.HostCallValues(1, step, {"learning_rate": np.float32(7e-4), "gs": np.int64(step - 1)}))
    handle.add_eval(100_000, {"accuracy": 0.93, "loss": 0.3, "global_step": 100_000})
    fig = render_figure(handle)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    titles = [ax.get_title() for ax in fig.axes]
    assert "gs" not in titles  # the host_call's step argument is the step, not a chart
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2, ax.get_title()
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.x0)
        gaps = [right.x0 - left.x1 for left, right in zip(boxes, boxes[1:])]
        assert min(gaps) > 2, (ax.get_title(), [t.get_text() for t in labels], gaps)
        assert len({t.get_text()[-1] for t in labels if t.get_text() != "0"}) == 1  # one format: all "k"
