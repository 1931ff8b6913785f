"""The dashboard's charts in a real browser, and the static picture in exported notebooks.

* The bundled browser module alone in headless Chromium (no Jupyter): several round ticks per
  axis, ranges from the data, one-point charts, min/max thinning.
* JupyterLab and Notebook 7: a run stopped and resumed charts its whole history; light and dark
  screenshots go to artifacts/; the notebook JupyterLab saves keeps the final picture.
* nbclient + nbconvert: the HTML export of an executed notebook shows the dashboard as an image.

Each reads the chart's ticks and ranges from attributes its node carries (data-x-ticks, ...),
the same values the canvas draws. Skipped, with the reason, without /usr/bin/chromium or playwright.
"""

import importlib.resources
import json
import re
import time

import pytest

from browser_support import KERNEL_READY, SETUP, chromium_page, jupyter_server, require_browser, screenshot, \
    screenshot_on_failure

pytestmark = [pytest.mark.notebook, pytest.mark.kernel]

RENDER = """async ([source, snapshot, dark]) => {
  if (dark) {
    document.body.style.setProperty('--jp-ui-font-color1', '#e0e0e0');
    document.body.style.background = '#111';
  }
  const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
  const module = await import(url);
  window.tpunbModule = module;
  const model = {get: (name) => (name === "static_key" ? "k" : snapshot), on() {}, off() {}, send() {}};
  const root = document.createElement("div");
  root.style.width = "1100px";
  document.body.appendChild(root);
  module.default.render({model, el: root});
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 50)));
  return Object.fromEntries([...root.querySelectorAll(".tpunb-chart")].map((chart) => [chart.dataset.chart, {
    xTicks: chart.dataset.xTicks.split("|"), yTicks: chart.dataset.yTicks.split("|"),
    xRange: chart.dataset.xRange.split(",").map(Number), yRange: chart.dataset.yRange.split(",").map(Number),
    width: chart.getBoundingClientRect().width,
    legend: [...chart.querySelectorAll(".u-legend .u-series .u-label")].map((e) => e.textContent),
    values: [...chart.querySelectorAll(".u-legend .u-series .u-value")].map((e) => e.textContent)}]));
}"""


def _module() -> str:
    return importlib.resources.files("tpu_nb.notebook").joinpath("static", "dashboard.js").read_text(encoding="utf-8")


def _snapshot():
    steps = list(range(20, 3001, 20))
    loss = [2.3 * 0.98 ** i + 0.02 for i in range(len(steps))]  # non-negative, near 0 at the end
    rate = [1e-3 * 0.5 ** (i / 3) for i in range(len(steps))]  # decays to ~1e-18: no axis below 0
    return {"status": {"phase": "done", "state": "done"},
            "series": {"loss": [steps, loss], "wall_time": [steps, [1.79e9 + s / 100 for s in steps]],
                       "eval/loss": [[2000], [0.31]],
                       "eval/accuracy": [[2000], [0.98]], "eval/auc": [[2000], [0.9812]],
                       "host/learning_rate": [steps, rate]}}


def _numbers(labels):
    return [float(label.replace(",", "")) for label in labels]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_charts_have_round_ticks_and_ranges_from_the_data(theme):
    require_browser()
    with chromium_page(viewport=(1200, 900)) as page:
        page.goto("about:blank")
        charts = page.evaluate(RENDER, [_module(), _snapshot(), theme == "dark"])
        screenshot(page, f"charts_alone_{theme}.png")
    assert set(charts) == {"loss", "eval metrics", "learning_rate"}
    for title, chart in charts.items():
        assert len(chart["xTicks"]) >= 3, (title, chart)
        assert len(chart["yTicks"]) >= 3, (title, chart)
        assert len(set(chart["yTicks"])) == len(chart["yTicks"]), (title, chart)  # no "0.98" twice
        assert chart["legend"][0] == "step" and len(chart["legend"]) >= 2  # a legend even for one series
        assert chart["width"] >= 500  # the cell's width, not a 280 px tile
        assert chart["yRange"][0] >= 0, (title, chart)  # non-negative data: no negative axis
        assert all(float(t).is_integer() for t in _numbers(chart["xTicks"]))  # steps are whole numbers
    loss = charts["loss"]
    assert loss["xRange"] == [20, 3000]
    assert loss["legend"] == ["step", "train loss", "eval loss"]
    # Away from the cursor, the legend reads out the latest step (with its wall time) and values.
    assert loss["values"][0].startswith("3,000 · ") and loss["values"][2] == "0.31", loss["values"]
    # Eval metrics: one point each at step 2000, near 0.98: a band around it, never past 1.
    metrics = charts["eval metrics"]
    low, high = metrics["xRange"]
    assert low < 2000 < high and high - low >= 100
    assert 0.9 < metrics["yRange"][0] < 0.98 and 0.9812 < metrics["yRange"][1] <= 1.0
    assert metrics["legend"] == ["step", "eval accuracy", "eval auc"]


def test_thinning_in_the_browser_keeps_a_spike():
    require_browser()
    with chromium_page() as page:
        page.goto("about:blank")
        page.evaluate(RENDER, [_module(), {"status": {}, "series": {}}, False])
        kept = page.evaluate("""() => {
            const series = {s: [], v: []};
            for (let i = 0; i < 4001; i++) { series.s.push(i); series.v.push(i === 1237 ? 50 : 1 + (i % 3) / 10); }
            window.tpunbModule.thin(series);
            return {n: series.s.length, max: Math.max(...series.v), last: series.s[series.s.length - 1]};
        }""")
    assert kept["n"] <= 2001 and kept["max"] == 50 and kept["last"] == 4000


# A run stopped from the notebook, then resumed by the same command: the resumed run's chart
# starts at the first run's first step. The last cell waits for the resumed run's final display.
RESUME_CELLS = [
    SETUP,
    "%tpu_train est train_input_fn --steps 100000 --background -o first",
    "import time\nwhile (first.global_step or 0) < 200: time.sleep(0.2)\nfirst.stop(); first.wait(); first.state",
    "%tpu_train est train_input_fn --steps 100000 --background -o resumed",
    "while (resumed.global_step or 0) < first.stopped_step + 200: time.sleep(0.2)\nresumed.stop(); resumed.wait(); "
    "print('RESUMED', resumed.note, resumed.state)",
]

LOSS_CHARTS = """() => [...document.querySelectorAll(".tpunb-chart[data-chart='loss']")].map((chart) => ({
  firstStep: Number(chart.dataset.firstStep), xRange: chart.dataset.xRange.split(",").map(Number),
  yRange: chart.dataset.yRange.split(",").map(Number), xTicks: chart.dataset.xTicks.split("|"),
  yTicks: chart.dataset.yTicks.split("|"), width: chart.getBoundingClientRect().width}))"""


STATIC_HIDDEN = """() => {
  const pictures = [...document.querySelectorAll('.tpunb-static')];
  return pictures.length === 2 && pictures.every((e) => e.getBoundingClientRect().height === 0);
}"""


def _write(path, cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))


def _run_resume_notebook(page, url):
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=120_000)
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_selector("text=RESUMED resuming", timeout=240_000)  # the output line, not the cell's source
    page.wait_for_function("() => document.querySelectorAll(\".tpunb-badge[data-phase='stopped']\").length == 2",
                           timeout=60_000)
    page.wait_for_timeout(500)  # the final snapshot's redraw (one animation frame)
    charts = page.evaluate(LOSS_CHARTS)
    assert len(charts) == 2, charts
    first, resumed = charts
    text = page.inner_text("body")
    stopped = int(re.search(r"RESUMED resuming the stopped run from step (\d+)", text).group(1))
    # The resumed run's chart holds the whole history: from the first run's first loop (step 20).
    assert first["firstStep"] == 20 and resumed["firstStep"] == 20, charts
    assert resumed["xRange"][0] == 20 and resumed["xRange"][1] >= stopped + 200, (stopped, charts)
    for chart in charts:
        assert len(chart["xTicks"]) >= 3 and len(chart["yTicks"]) >= 3, chart
        assert chart["yRange"][0] >= 0, chart
        assert chart["width"] >= 400, chart
    return stopped


@pytest.mark.slow
def test_jupyterlab_resumed_run_charts_its_whole_history_in_light_and_dark(tmp_path):
    require_browser()
    _write(tmp_path / "resume.ipynb", RESUME_CELLS)
    with jupyter_server("lab", tmp_path, tmp_path / "lab.log") as (base, token), chromium_page() as page, \
            screenshot_on_failure(page, "charts_jupyterlab_failure.png"):
        _run_resume_notebook(page, f"{base}/lab/tree/resume.ipynb?reset&token={token}")
        page.locator(".tpunb-chart[data-chart='loss']").nth(1).scroll_into_view_if_needed()
        # The static picture under each dashboard (for exports) stays hidden while the live view shows.
        assert page.evaluate(STATIC_HIDDEN)
        screenshot(page, "charts_jupyterlab_light.png")
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_timeout(1000)
        # Dark theme: the axis ink follows the theme's font colour (light text on a dark page).
        ink = page.evaluate("() => getComputedStyle(document.querySelector('.tpunb')).color")
        assert sum(int(c) for c in re.findall(r"\d+", ink)[:3]) > 3 * 128, ink
        assert len(page.evaluate(LOSS_CHARTS)[1]["yTicks"]) >= 3
        screenshot(page, "charts_jupyterlab_dark.png")
        # The notebook JupyterLab saves keeps the final picture of each dashboard.
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(2000)
    saved = json.loads((tmp_path / "resume.ipynb").read_text())
    pictures = [o for cell in saved["cells"] for o in cell.get("outputs", [])
                if "image/png" in o.get("data", {}) and "data:image/png" in "".join(o["data"].get("text/html", ""))]
    assert len(pictures) == 2


@pytest.mark.slow
def test_notebook7_resumed_run_charts_its_whole_history(tmp_path):
    require_browser()
    _write(tmp_path / "resume.ipynb", RESUME_CELLS)
    with jupyter_server("notebook", tmp_path, tmp_path / "nb.log") as (base, token), chromium_page() as page, \
            screenshot_on_failure(page, "charts_notebook7_failure.png"):
        _run_resume_notebook(page, f"{base}/notebooks/resume.ipynb?token={token}")
        page.locator(".tpunb-chart[data-chart='loss']").nth(1).scroll_into_view_if_needed()
        screenshot(page, "charts_notebook7_light.png")
        assert page.evaluate(STATIC_HIDDEN)


@pytest.mark.slow
def test_nbconvert_html_of_an_executed_notebook_shows_the_dashboard_picture(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    import nbformat
    from nbconvert import HTMLExporter

    path = tmp_path / "exported.ipynb"
    _write(path, [SETUP, "%tpu_train est train_input_fn --steps 200"])
    nb = nbformat.read(str(path), as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    html, _ = HTMLExporter().from_notebook_node(nb)
    (tmp_path / "exported.html").write_text(html)
    # The picture: an <img> with the PNG inline (no CDN, no widget state needed to show it).
    images = re.findall(r"<img[^>]*src=[\"']data:image/png;base64,[A-Za-z0-9+/=]{1000,}", html)
    assert len(images) == 1, html[-3000:]
    assert html.count("tpu-nb-summary") == 1  # the run's summary table once, under the picture


def test_a_one_point_chart_shows_its_point_in_a_band_around_it():
    from browser_support import CHART_INK

    require_browser()
    snapshot = {"status": {"phase": "running"}, "series": {"loss": [[20], [2.3]]}}
    with chromium_page() as page:
        page.goto("about:blank")
        chart = page.evaluate(RENDER, [_module(), snapshot, False])["loss"]
        ink = page.evaluate(CHART_INK)
    low, high = chart["xRange"]
    assert 0 <= low < 20 < high  # not [20, 21]
    assert 0 <= chart["yRange"][0] < 2.3 < chart["yRange"][1]
    assert len(chart["yTicks"]) >= 3
    assert ink > 10  # the point is drawn: the chart is not empty


# The module with a model whose handlers the test keeps: window.tpunbSend(msg) delivers a message
# as the kernel would.
RENDER_LIVE = """async ([source, snapshot]) => {
  const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
  const module = await import(url);
  const handlers = {};
  const model = {get: (name) => (name === "static_key" ? "k" : snapshot), on(name, f) { handlers[name] = f; },
                 off() {}, send() {}};
  const root = document.createElement("div");
  root.style.width = "1100px";
  document.body.appendChild(root);
  module.default.render({model, el: root});
  window.tpunbSend = (msg) => handlers["msg:custom"](msg);
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 50)));
}"""

LOSS_RANGE = """() => {
  const chart = document.querySelector(".tpunb-chart[data-chart='loss']");
  return {x: chart.dataset.xRange.split(",").map(Number), points: chart.dataset.points};
}"""

LOSS_POINTS_ARE = "(n) => document.querySelector(\".tpunb-chart[data-chart='loss']\").dataset.points === n"


def test_a_drag_zoom_survives_live_updates_until_a_double_click():
    require_browser()
    steps = list(range(20, 3001, 20))
    snapshot = {"status": {"phase": "running"}, "series": {"loss": [steps, [1.0 / (1 + i) for i in range(len(steps))]]}}
    with chromium_page(viewport=(1200, 900)) as page:
        page.goto("about:blank")
        page.evaluate(RENDER_LIVE, [_module(), snapshot])
        over = page.locator(".tpunb-chart[data-chart='loss'] .u-over").bounding_box()
        y = over["y"] + over["height"] / 2
        page.mouse.move(over["x"] + over["width"] * 0.3, y)
        page.mouse.down()
        page.mouse.move(over["x"] + over["width"] * 0.5, y, steps=5)
        page.mouse.up()
        page.wait_for_timeout(100)
        zoomed = page.evaluate(LOSS_RANGE)
        assert 20 < zoomed["x"][0] < zoomed["x"][1] < 3000, zoomed

        # Three more loops arrive: the window the user chose stays, the new points are in the data.
        for start in (3020, 3220, 3420):
            page.evaluate("(m) => window.tpunbSend(m)",
                          {"type": "delta", "status": {"phase": "running"},
                           "series": {"loss": [[start, start + 100], [0.01, 0.01]]}})
            page.wait_for_timeout(60)
        # While a run goes, charts are redrawn at most once a second: wait for the one after the last loop.
        page.wait_for_function(LOSS_POINTS_ARE, arg=str(len(steps) + 6), timeout=5000)
        after = page.evaluate(LOSS_RANGE)
        assert after["x"] == zoomed["x"] and after["points"] == str(len(steps) + 6), after

        # A double-click goes back to the whole run, and later loops extend it again.
        page.mouse.dblclick(over["x"] + over["width"] * 0.4, y)
        page.wait_for_timeout(100)
        assert page.evaluate(LOSS_RANGE)["x"] == [20, 3520]
        page.evaluate("(m) => window.tpunbSend(m)",
                      {"type": "delta", "status": {"phase": "running"}, "series": {"loss": [[3620], [0.01]]}})
        page.wait_for_function(LOSS_POINTS_ARE, arg=str(len(steps) + 7), timeout=5000)
        assert page.evaluate(LOSS_RANGE)["x"] == [20, 3620]


def test_a_running_chart_is_redrawn_about_once_a_second_and_a_finished_one_at_once():
    """A browser on the training machine takes its CPU from training: redrawing charts is most of
    what a live view costs, so a stream of updates redraws them about once a second; the run's end
    draws at once."""
    require_browser()
    steps = list(range(10, 201, 10))
    snapshot = {"status": {"phase": "running"}, "series": {"loss": [steps, [1.0] * len(steps)]}}
    with chromium_page(viewport=(1200, 900)) as page:
        page.goto("about:blank")
        page.evaluate(RENDER_LIVE, [_module(), snapshot])
        page.evaluate("""() => { window.redraws = 0;
            new MutationObserver(() => { window.redraws += 1; }).observe(
                document.querySelector(".tpunb-chart[data-chart='loss']"),
                {attributes: true, attributeFilter: ["data-points"]}); }""")
        started = time.monotonic()
        for k in range(30):  # 30 loops, 50 ms apart: 1.5 s of a fast run
            page.evaluate("(m) => window.tpunbSend(m)",
                          {"type": "delta", "status": {"phase": "running", "step": 210 + 10 * k},
                           "series": {"loss": [[210 + 10 * k], [0.5]]}})
            page.wait_for_timeout(50)
        elapsed = time.monotonic() - started
        redraws = page.evaluate("() => window.redraws")
        assert 1 <= redraws <= elapsed + 1, (redraws, elapsed)
        # The status line follows every update, whatever the charts do.
        assert "step 500" in page.locator(".tpunb-nums").text_content()

        page.evaluate("(m) => window.tpunbSend(m)", {"type": "delta", "status": {"phase": "done"},
                                                     "series": {"loss": [[510], [0.4]]}})
        page.wait_for_timeout(150)
        assert page.evaluate(LOSS_RANGE)["points"] == str(len(steps) + 31)


# A warm-up learning rate that starts at 0 and a decay that ends at 0: a log axis has no room for them.
def _warmup_snapshot():
    steps = list(range(0, 155_001, 500))
    rate = [0.0 if s == 0 or s >= 150_000 else 7e-4 * min(1.0, s / 10_000) * 0.99997 ** s for s in steps]
    loss = [2.3 * 0.9999 ** s + 0.01 for s in steps]
    return {"status": {"phase": "done", "state": "done", "step": 155_000, "target_step": 155_000},
            "series": {"loss": [steps, loss], "host/learning_rate": [steps, rate],
                       "eval/accuracy": [[100_000], [0.93]]}}


CHART_STATE = """(title) => {
  const chart = document.querySelector(`.tpunb-chart[data-chart='${title}']`);
  const canvas = chart.querySelector('canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 100 && (data[i] > 150 || data[i + 2] > 150) && data[i + 1] < 160) ink++;
  return {yTicks: chart.dataset.yTicks.split("|"), xTicks: chart.dataset.xTicks.split("|"),
          yRange: chart.dataset.yRange.split(",").map(Number), xRange: chart.dataset.xRange.split(",").map(Number),
          note: chart.querySelector('.tpunb-chart-note').textContent, ink,
          legend: [...chart.querySelectorAll(".u-legend .u-series .u-label")].map((e) => e.textContent)};
}"""


def test_log_scale_with_values_at_zero_still_draws_and_says_what_it_left_out():
    require_browser()
    with chromium_page(viewport=(1200, 900)) as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("about:blank")
        page.evaluate(RENDER, [_module(), _warmup_snapshot(), False])
        page.locator("label", has_text="log scale").locator("input").check()
        page.wait_for_function("() => document.querySelector(\".tpunb-chart[data-chart='learning_rate']\")"
                               ".querySelector('.tpunb-chart-note').textContent !== ''")
        rate = page.evaluate(CHART_STATE, "learning_rate")
        loss = page.evaluate(CHART_STATE, "loss")
        screenshot(page, "charts_log_scale_with_zeros.png")
    assert not errors, errors  # "Invalid array length" blanked the chart before
    assert rate["ink"] > 20, rate  # the positive values are drawn
    assert "value(s) ≤ 0 not drawn" in rate["note"], rate["note"]
    low, high = rate["yRange"]
    assert 0 < low < 1e-4 < 5e-4 < high, rate
    # Readable log ticks: no "—" for the ticks uPlot leaves unlabelled, and one format on the axis.
    labels = [t for t in rate["yTicks"] if t]
    assert "—" not in rate["yTicks"] and len(labels) >= 2, rate["yTicks"]
    assert all("e" in t for t in labels) or not any("e" in t for t in labels), labels
    assert loss["note"] == ""  # nothing left out of the loss
    # The step axis: one format ("50,000", never "1.0e+5"), and every chart spans the same steps.
    for chart in (rate, loss):
        assert not [t for t in chart["xTicks"] if "e" in t], chart["xTicks"]
        assert chart["xRange"] == [0, 155_000], chart["xRange"]


def test_a_one_point_eval_chart_spans_the_steps_of_the_charts_beside_it():
    require_browser()
    with chromium_page(viewport=(1200, 900)) as page:
        page.goto("about:blank")
        page.evaluate(RENDER, [_module(), _warmup_snapshot(), False])
        metrics = page.evaluate(CHART_STATE, "eval metrics")
    assert metrics["xRange"] == [0, 155_000], metrics["xRange"]


def test_smoothing_shows_its_weight_and_labels_the_smoothed_lines():
    require_browser()
    with chromium_page(viewport=(1200, 900)) as page:
        page.goto("about:blank")
        page.evaluate(RENDER, [_module(), _snapshot(), False])
        weight = page.locator(".tpunb-smooth-value")
        assert weight.text_content() == "0.60"
        page.locator("label", has_text="smoothing").locator("input[type=checkbox]").check()
        page.wait_for_function("() => [...document.querySelectorAll(\".tpunb-chart[data-chart='loss'] .u-label\")]"
                               ".some((e) => e.textContent.includes('smoothed'))")
        legend = page.evaluate(CHART_STATE, "loss")["legend"]
    assert legend == ["step", "train loss (smoothed 0.60)", "eval loss"], legend  # evaluations are never smoothed


def _eval_module() -> str:
    return importlib.resources.files("tpu_nb.notebook").joinpath("static", "eval_dashboard.js").read_text(encoding="utf-8")


# The evaluation dashboard's module alone, with a model holding what the kernel syncs after 5 checkpoints.
RENDER_EVAL = """async ([source, state, dark]) => {
  if (dark) {
    document.body.style.setProperty('--jp-ui-font-color1', '#e0e0e0');
    document.body.style.setProperty('--jp-layout-color1', '#222');
    document.body.style.background = '#111';
  }
  const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
  const module = await import(url);
  const model = {get: (name) => state[name], set() {}, save_changes() {}, on() {}, off() {}, send() {}};
  const root = document.createElement("div");
  root.style.width = "1100px";
  document.body.appendChild(root);
  module.default.render({model, el: root});
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 100)));
}"""

EVAL_CHARTS = """() => Object.fromEntries([...document.querySelectorAll(".tpunb-eval .tpunb-chart")].map((chart) => [
  chart.dataset.chart, {xTicks: chart.dataset.xTicks.split("|").filter(Boolean), yTicks: chart.dataset.yTicks.split("|").filter(Boolean),
  legend: [...chart.querySelectorAll(".u-legend .u-series .u-label")].map((e) => e.textContent),
  values: [...chart.querySelectorAll(".u-legend .u-series .u-value")].map((e) => e.textContent)}]))"""


def _eval_state():
    steps = [400, 800, 1200, 1600, 2000]
    accuracy = [0.91, 0.946, 0.95, 0.9533, 0.952]
    loss = [0.3121, 0.19, 0.1502, 0.09348, 0.1004]
    rows = [{"step": s, "loss": l, "accuracy": a, "checkpoint": f"model.ckpt-{s}"} for s, l, a in zip(steps, loss, accuracy)]
    return {"checkpoints": [{"step": s, "name": f"model.ckpt-{s}", "evaluated": True} for s in steps],
            "selected": [], "rows": rows, "columns": ["loss", "accuracy"], "status": "watching", "error": "",
            "watching": True, "best": {"step": 1600, "metric": "accuracy", "direction": "max", "value": 0.9533},
            "model_dir": "/tmp/model"}


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_evaluation_dashboard_has_the_training_dashboards_charts(theme):
    require_browser()
    with chromium_page(viewport=(1200, 900)) as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("about:blank")
        page.evaluate(RENDER_EVAL, [_eval_module(), _eval_state(), theme == "dark"])
        page.wait_for_function("() => document.querySelectorAll('.tpunb-eval .tpunb-chart canvas').length === 2")
        charts = page.evaluate(EVAL_CHARTS)
        table = page.evaluate("() => [...document.querySelectorAll('.tpunb-eval-table tr')].map((tr) => "
                              "({best: tr.classList.contains('best'), cells: [...tr.cells].map((c) => c.textContent)}))")
        screenshot(page, f"eval_dashboard_{theme}.png")
        # Hovering a point reads it out in the legend, as on the training charts.
        canvas = page.locator(".tpunb-eval .tpunb-chart[data-chart='accuracy'] .u-over")
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(100)
        hovered = page.evaluate(EVAL_CHARTS)["accuracy"]["values"]
    assert not errors, errors
    assert set(charts) == {"loss", "accuracy"}
    for title, chart in charts.items():
        assert len(chart["xTicks"]) >= 3 and len(chart["yTicks"]) >= 3, (title, chart)
        assert not [t for t in chart["xTicks"] if "e" in t], chart["xTicks"]
    assert charts["accuracy"]["legend"] == ["step", "eval accuracy"]
    assert charts["accuracy"]["values"][0] == "2,000"  # away from the cursor: the latest checkpoint
    assert hovered[0] == "400" and hovered[1] == "0.91", hovered  # the hovered one: the first
    header, *rows = table
    assert header["cells"] == ["step", "loss", "accuracy", "checkpoint"]
    assert [r["cells"][2] for r in rows] == ["0.9100", "0.9460", "0.9500", "0.9533", "0.9520"]  # aligned
    assert [r["cells"][1] for r in rows] == ["0.3121", "0.1900", "0.1502", "0.0935", "0.1004"]
    assert [r["best"] for r in rows] == [False, False, False, True, False]
    assert rows[3]["cells"][3].endswith("★ best accuracy")
