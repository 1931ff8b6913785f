"""Real-browser tests: JupyterLab and Notebook 7 in headless Chromium, driven by Playwright.

JupyterLab: run all cells of a notebook whose foreground ``%tpu_train`` keeps the kernel busy;
the live chart draws points, the status bar shows the run, the tpu_nb side panel lists it,
and the panel's Stop stops it (at a loop boundary, with a checkpoint). Notebook 7: the live
chart draws points and its own Stop button stops a background run. Screenshots go to
artifacts/. Skipped, with the reason, without /usr/bin/chromium or playwright.
"""

import pytest

from browser_support import CHART_INK, KERNEL_READY, chromium_page, jupyter_server, require_browser, \
    screenshot, screenshot_on_failure, write_notebook


LONG_RUN = 200_000  # steps: far more than a test waits for; only Stop ends it


def _open_and_run_all(page, url):
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=120_000)
    # Not awaited: the command's promise resolves only when every cell has run.
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def _wait_for_chart(page):
    page.wait_for_selector(".tpunb-chart canvas", timeout=120_000)
    page.wait_for_function(f"() => ({CHART_INK})() > 20", timeout=60_000)


# The step each place shows, as numbers: the dashboard header ("step 1,234 / 200,000"), the loss chart's
# legend away from the cursor ("1,234 · 12:03:41"), the runs panel ("step 1,234/200,000") and the status
# bar ("... train stopped at step 1,234").
FOUR_STEPS = """() => {
  const number = (text, pattern) => { const m = (text || '').match(pattern); return m ? Number(m[1].replace(/,/g, '')) : null; };
  const header = number(document.querySelector('.tpunb-nums')?.textContent, /step ([0-9,]+)/);
  const legend = number(document.querySelector(".tpunb-chart[data-chart='loss'] .u-legend .u-series .u-value")?.textContent, /^([0-9,]+)/);
  const panel = number(document.querySelector('#tpu-nb-runs .tpunb-run .tpunb-run-step')?.textContent, /step ([0-9,]+)/);
  const bar = number(document.querySelector('.tpunb-status')?.textContent, /step ([0-9,]+)/);
  return [header, legend, panel, bar];
}"""


# During the run: the step each place shows and the number (seq) of the run's view it shows it from.
# Each place marks the view it draws with data-seq: the dashboard's header (.tpunb-nums), the loss
# chart (set when its legend is refreshed), the runs panel's card and the status bar.
LIVE_STEPS = """() => {
  const number = (text, pattern) => { const m = (text || '').match(pattern); return m ? Number(m[1].replace(/,/g, '')) : null; };
  const seq = (node) => (node && node.dataset.seq ? Number(node.dataset.seq) : null);
  const header = document.querySelector('.tpunb-nums');
  const chart = document.querySelector(".tpunb-chart[data-chart='loss']");
  const legend = chart && chart.querySelector('.u-legend .u-series .u-value');
  const card = document.querySelector('#tpu-nb-runs .tpunb-run');
  const bar = document.querySelector('.tpunb-status');
  return [
    {place: 'header', step: number(header?.textContent, /step ([0-9,]+)/), seq: seq(header)},
    {place: 'legend', step: number(legend?.textContent, /^([0-9,]+)/), seq: seq(chart)},
    {place: 'panel', step: number(card?.querySelector('.tpunb-run-step')?.textContent, /step ([0-9,]+)/), seq: seq(card)},
    {place: 'status bar', step: number(bar?.textContent, /train ([0-9,]+)\\//), seq: seq(bar)},
  ];
}"""


def _assert_four_places_agree_while_training(page, samples=12):
    """Agreement within one update, while the run goes: in each sample every place shows the step of
    the latest view or of the one before it (their view numbers differ by at most 1), and a view's
    step is the same wherever it is shown. Between samples the run moves on (it is not stopped)."""
    import time

    step_of_view = {}
    seen = []
    deadline = time.monotonic() + 120  # views come twice a second; a loaded machine may space them out
    while len(seen) < samples:
        assert time.monotonic() < deadline, f"only {len(seen)} new views in 120 s: {seen}"
        places = page.evaluate(LIVE_STEPS)
        assert all(p["step"] is not None and p["seq"] is not None for p in places), places
        seqs = [p["seq"] for p in places]
        assert max(seqs) - min(seqs) <= 1, places
        for p in places:
            assert step_of_view.setdefault(p["seq"], p["step"]) == p["step"], (p, step_of_view)
        if not seen or max(seqs) > max(p["seq"] for p in seen[-1]):
            seen.append(places)  # one sample per new view: spread over the run, not many of one view
        page.wait_for_timeout(150)
    first, last = min(p["step"] for p in seen[0]), max(p["step"] for p in seen[-1])
    assert first < last, seen  # sampled while training, not after it
    return seen


# Run in the kernel after the stop: a training whose model_fn raises before the run begins.
BROKEN_RUN = (
    "def broken_model_fn(features, labels, mode, params):\n"
    "    raise ValueError('the model_fn is broken')\n"
    "broken = TPUEstimator(model_fn=broken_model_fn, use_tpu=False, train_batch_size=32,\n"
    "                      config=RunConfig(model_dir=tempfile.mkdtemp(prefix='broken_')))\n"
    "get_ipython().run_line_magic('tpu_train', 'broken train_input_fn --steps 10 --no-dashboard -o broken_run')\n"
)


@pytest.mark.slow
def test_jupyterlab_status_bar_panel_chart_and_stop(tmp_path):
    require_browser()
    write_notebook(tmp_path / "dash.ipynb", f"%tpu_train est train_input_fn --steps {LONG_RUN} -o run")
    with jupyter_server("lab", tmp_path, tmp_path / "lab.log") as (base, token), chromium_page() as page, \
            screenshot_on_failure(page, "jupyterlab_failure.png"):
        _open_and_run_all(page, f"{base}/lab/tree/dash.ipynb?reset&token={token}")

        # The extension is loaded and registered its palette commands.
        assert page.evaluate("() => window.jupyterapp.commands.hasCommand('tpu-nb:insert-train-cell')")
        assert page.evaluate("() => window.jupyterapp.commands.hasCommand('tpu-nb:stop-all')")

        _wait_for_chart(page)  # the anywidget dashboard in the cell drew the loss

        # The status bar first shows the run at its start step (no speed yet); the ticker's
        # next message, a quarter second later on an idle machine, adds the loop's speed.
        page.wait_for_function(
            "() => /tpu_nb · CPU · train [0-9,]+\\/200,000 · \\S+ ex\\/s/.test("
            "(document.querySelector('.tpunb-status') || {}).textContent || '')", timeout=60_000)

        page.evaluate("() => window.jupyterapp.shell.activateById('tpu-nb-runs')")
        row = page.locator("#tpu-nb-runs .tpunb-run[data-phase='running']")
        row.wait_for(timeout=30_000)
        assert row.locator(".tpunb-run-name").text_content() == "run · train"  # the -o name
        page.wait_for_function(  # the sparkline has a line once a few losses arrived
            "() => !!document.querySelector('#tpu-nb-runs .tpunb-run polyline')", timeout=30_000)
        page.locator(".tpunb-chart").first.scroll_into_view_if_needed()
        # The dashboard's header, its loss legend, the runs panel and the status bar show one step
        # (that of the same view, or of the view just before: within one update), during training.
        _assert_four_places_agree_while_training(page)
        screenshot(page, "jupyterlab_running.png")
        # With smoothing on, the legend's loss is labelled smoothed and the header's says it is raw.
        smoothing = page.locator(".tpunb-controls label", has_text="smoothing").locator("input[type=checkbox]")
        smoothing.check()
        page.wait_for_function("() => /train loss \\(smoothed 0\\.60\\)/.test(document.querySelector("
                               "\".tpunb-chart[data-chart='loss'] .u-legend\").textContent)", timeout=30_000)
        page.wait_for_function("() => /loss \\S+ \\(raw\\)/.test(document.querySelector('.tpunb-nums').textContent)",
                               timeout=30_000)
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        _assert_four_places_agree_while_training(page, samples=4)
        screenshot(page, "jupyterlab_running_dark.png")
        smoothing.uncheck()
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)

        row.locator("button.tpunb-stop").click()
        stopped = page.locator("#tpu-nb-runs .tpunb-run[data-phase='stopped']")
        stopped.wait_for(timeout=30_000)
        state = stopped.locator(".tpunb-run-state").text_content()
        assert state.startswith("stopped at step ")
        step = int(state.rsplit(" ", 1)[1])
        assert 0 < step < LONG_RUN
        page.wait_for_function("() => /stopped at step/.test(document.querySelector('.tpunb-status').textContent)")
        # The foreground cell ended with the one-line interrupt message and the dashboard says stopped.
        page.wait_for_selector(".tpunb-badge[data-phase='stopped']", timeout=30_000)
        page.wait_for_selector("text=training stopped at step", timeout=30_000)
        # The four places that show the run agree: the dashboard's header and its legend, the runs
        # panel and the status bar (each follows the kernel's updates, two a second; the wait is long
        # only for a loaded machine, where the kernel's last messages can take seconds to arrive).
        page.wait_for_function(f"() => JSON.stringify(({FOUR_STEPS})()) === JSON.stringify([{step}, {step}, {step}, {step}])",
                               timeout=30_000)
        screenshot(page, "jupyterlab_stopped.png")

        # A run whose model_fn raises while the graph is built (no RunStarted ever) is listed as failed,
        # with its error's first line, and the status bar follows it instead of the stopped run.
        page.evaluate(f"() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                      f".requestExecute({{code: {BROKEN_RUN!r}}})")
        failed = page.locator("#tpu-nb-runs .tpunb-run[data-phase='failed']")
        failed.wait_for(timeout=120_000)
        assert failed.locator(".tpunb-run-name").text_content() == "broken_run · train"
        assert failed.locator(".tpunb-run-state").text_content() == "failed: ValueError: the model_fn is broken"
        page.wait_for_function("() => /train failed: ValueError/.test(document.querySelector('.tpunb-status').textContent)",
                               timeout=30_000)
        screenshot(page, "jupyterlab_failed_run.png")


@pytest.mark.slow
def test_notebook7_live_chart_and_stop(tmp_path):
    require_browser()
    write_notebook(tmp_path / "dash.ipynb", f"%tpu_train est train_input_fn --steps {LONG_RUN} --background -o run")
    with jupyter_server("notebook", tmp_path, tmp_path / "notebook.log") as (base, token), chromium_page() as page, \
            screenshot_on_failure(page, "notebook7_failure.png"):
        _open_and_run_all(page, f"{base}/notebooks/dash.ipynb?token={token}")
        _wait_for_chart(page)
        page.wait_for_selector(".tpunb-badge[data-phase='running']", timeout=30_000)
        page.locator(".tpunb-chart").first.scroll_into_view_if_needed()
        screenshot(page, "notebook7_running.png")
        page.locator(".tpunb-controls button", has_text="Stop").first.click()
        page.wait_for_selector(".tpunb-badge[data-phase='stopped']", timeout=60_000)
        screenshot(page, "notebook7_stopped.png")


class _FakeComm:
    def __init__(self, on_message):
        self.on_message, self.sent = on_message, []

    def send(self, data):
        self.sent.append(data)


def _fake_estimator():
    from tpu_nb import TPUEstimator

    class FakeEstimator(TPUEstimator):
        def __init__(self):  # no model: only request_stop matters here
            self.stops = []

        def request_stop(self, reason):
            self.stops.append(reason)
            return True

    return FakeEstimator()


def test_lab_bridge_throttles_and_stops_without_a_browser():
    """The kernel side alone: a burst of loop events gives a few messages, the last state always
    arrives, and a 'stop' message calls the run's estimator.request_stop() once per nonce."""
    import time

    from tpu_nb.reporting import events
    from tpu_nb.notebook import lab_bridge

    estimator = _fake_estimator()

    def train(est):  # the bridge finds the estimator on the publishing thread's stack
        run_id = events.bus.new_run_id()
        events.publish(events.RunStarted(run_id, "train", "simulated TPU 8x1 (8 shards on CPU, 1 host)", 8, 1,
                                         128, 16, "/tmp/model_a", 0, 5000, 10))
        for step in range(10, 2010, 10):
            events.publish(events.LoopFinished(run_id, step, 10, time.time(), 0.01, 1.0 / step, 9000.0, 70.0))
        return run_id

    bridge = lab_bridge.LabBridge(comm_factory=_FakeComm, per_second=4.0)
    try:
        started = time.monotonic()
        run_id = train(estimator)
        burst = time.monotonic() - started
        time.sleep(0.6)  # the trailing send
        sent = bridge.comm.sent
        assert len(sent) <= 2 + 4 * (burst + 0.6) + 1, len(sent)
        last = sent[-1]["runs"][-1]
        assert sent[-1]["backend"].startswith("simulated TPU 8x1") and sent[-1]["active"] == run_id
        assert (last["step"], last["target"], last["phase"]) == (2000, 5000, "running")
        assert 0 < len(last["spark"]) <= lab_bridge.SPARK_POINTS and last["loss"] == 1.0 / 2000

        bridge.handle({"type": "stop", "run_id": run_id, "nonce": "a"})
        bridge.handle({"type": "stop", "run_id": run_id, "nonce": "a"})  # the same message, seen twice
        assert estimator.stops == ["Stop in the tpu_nb panel"]
        events.publish(events.RunStopped(run_id, 2010, "Stop in the tpu_nb panel"))
        time.sleep(0.6)
        assert bridge.comm.sent[-1]["runs"][-1]["state"] == "stopped at step 2010"
        assert bridge.stop_all() == 0  # nothing left running
        assert bridge._ticker is None  # the progress ticker ends with the last live run
    finally:
        bridge.close()
