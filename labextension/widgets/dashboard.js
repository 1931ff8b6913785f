// tpu_nb live training dashboard: the anywidget ES module's source. `jlpm build:widgets` bundles it
// with uPlot (charts) into tpu_nb/notebook/static/dashboard.js, so nothing is fetched at run time.
//
// The kernel sends {type: "delta", status, series: {name: [steps, values]}} at most a few times per
// second and syncs the `snapshot` trait ({status, series}) at the start and end of a run; a snapshot
// holds the whole history of the model_dir's runs in this session (a resumed run's chart starts at
// step 0), already thinned in the kernel with each bucket's min and max kept. Each view keeps at
// most MAX_POINTS points per series (thinned the same way), redraws its status at most once per
// animation frame and its charts at most once per CHART_INTERVAL_MS (none while off screen), so the
// page stays light whatever the step rate.

import uPlot from "uplot";
import uPlotCss from "uplot/dist/uPlot.min.css";

import { CHART_CSS, CHART_HEIGHT, fmt, lastValue, plotOptions, sharedStepRange, stepRange, themeColors } from "./chart.js";

// Re-exported for tests and tools that load this module alone.
export { logTickLabels, sharedStepRange, stepLabels, stepRange, tickLabels, valueRange } from "./chart.js";

const MAX_POINTS = 2000;
// While a run goes, charts are redrawn at most this often (the status line follows every update, up
// to 4 a second): redrawing a chart is most of what a live dashboard costs the page, and a browser on
// the training machine takes its CPU from training. State changes, user actions and the final state
// draw at once.
const CHART_INTERVAL_MS = 1000;
const CSS = `
.tpunb { font: 12px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 8px 10px; box-sizing: border-box; width: 100%; }
.tpunb-head { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.tpunb-title { font-weight: 600; }
.tpunb-badge { padding: 1px 8px; border-radius: 10px; color: #fff; background: #888; }
.tpunb-badge[data-phase="running"] { background: #1a7f37; }
.tpunb-badge[data-phase="stopping"], .tpunb-badge[data-phase="stopped"] { background: #b35900; }
.tpunb-badge[data-phase="failed"] { background: #c62828; }
.tpunb-badge[data-phase="done"] { background: #1f5fa8; }
.tpunb-meta { color: var(--jp-ui-font-color2, #666); }
.tpunb-bar { height: 6px; background: var(--jp-layout-color3, #eee); border-radius: 3px; margin: 6px 0 2px; overflow: hidden; }
.tpunb-bar > div { height: 100%; width: 0; background: #1a7f37; }
.tpunb-nums { font-variant-numeric: tabular-nums; }
.tpunb-controls { display: flex; gap: 12px; align-items: center; margin: 4px 0; flex-wrap: wrap; }
.tpunb-controls button { padding: 1px 10px; }
.tpunb-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 10px; }
.tpunb-smooth-value { font-variant-numeric: tabular-nums; display: inline-block; min-width: 2.4em; }
.tpunb-empty { color: var(--jp-ui-font-color2, #666); padding: 20px 8px; }
`;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Writes only on change: assigning the same text still replaces the node's text and lays the page out.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// Compared with what was last written: the browser reads colours back in its own notation.
const written = new WeakMap();
function setStyle(node, name, value) {
  let last = written.get(node);
  if (!last) written.set(node, (last = {}));
  if (last[name] !== value) { last[name] = value; node.style[name] = value; }
}

function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
}

// Same grouping as _static.chart_groups in the kernel.
export function chartGroups(names) {
  const groups = [];
  const loss = ["loss", "eval/loss"].filter((n) => names.includes(n));
  if (loss.length) groups.push(["loss", loss]);
  const metrics = names.filter((n) => n.startsWith("eval/") && n !== "eval/loss");
  if (metrics.length) groups.push(["eval metrics", metrics]);
  for (const n of names) {
    if (!n.startsWith("host/")) continue;
    // A host_call argument named "loss" is the usual case: titled apart from the training loss's chart.
    groups.push([n === "host/loss" ? "host_call loss" : n.slice(5), [n]]);
  }
  return groups;
}

function label(name) {
  if (name === "loss") return "train loss";
  if (name.startsWith("eval/")) return "eval " + name.slice(5);
  if (name.startsWith("host/")) return name.slice(5);
  return name;
}

// Halves a series that outgrew MAX_POINTS keeping, of every 4 points, the lowest and the highest
// (in step order), and always the latest: a spike survives any number of halvings.
export function thin(series) {
  const s = [], v = [];
  const n = series.s.length;
  for (let i = 0; i < n; i += 4) {
    const end = Math.min(i + 4, n);
    let lo = -1, hi = -1;
    for (let j = i; j < end; j++) {
      const y = series.v[j];
      if (y === null || !Number.isFinite(y)) continue;
      if (lo < 0 || y < series.v[lo]) lo = j;
      if (hi < 0 || y > series.v[hi]) hi = j;
    }
    if (lo < 0) { s.push(series.s[i]); v.push(series.v[i]); continue; }  // a gap stays a gap
    for (const j of lo === hi ? [lo] : [Math.min(lo, hi), Math.max(lo, hi)]) { s.push(series.s[j]); v.push(series.v[j]); }
  }
  if (s[s.length - 1] !== series.s[n - 1]) { s.push(series.s[n - 1]); v.push(series.v[n - 1]); }
  series.s = s; series.v = v;
}

function smooth(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = null, n = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (x === null || x === undefined || !Number.isFinite(x)) { out[i] = x; continue; }
    last = (last === null ? 0 : last) * weight + (1 - weight) * x;
    n += 1;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

// A run that may still send data (its charts are throttled; a view opened now asks for the history).
function runGoing(phase) {
  return phase === "running" || phase === "starting" || phase === "stopping";
}

function lowerBound(xs, x) {
  let lo = 0, hi = xs.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

function render({ model, el: root }) {
  // The stylesheet goes into the page once, however many dashboards it shows: each new stylesheet
  // makes the browser restyle the whole page (in JupyterLab, thousands of elements).
  if (!document.getElementById("tpunb-dashboard-css")) {
    const shared = el("style");
    shared.id = "tpunb-dashboard-css";
    shared.textContent = uPlotCss + CHART_CSS + CSS;
    document.head.appendChild(shared);
  }
  // The static picture published under the dashboard (for exported notebooks) hides while a live view shows.
  const key = model.get("static_key");
  if (key) root.appendChild(el("style", "", `.tpunb-static-${key} { display: none; }`));
  const box = el("div", "tpunb"); root.appendChild(box);
  const head = el("div", "tpunb-head");
  const title = el("span", "tpunb-title", "tpu_nb");
  const badge = el("span", "tpunb-badge", "starting");
  const meta = el("span", "tpunb-meta");
  head.append(title, badge, meta);
  const bar = el("div", "tpunb-bar"); const fill = el("div"); bar.appendChild(fill);
  const nums = el("div", "tpunb-nums");
  const controls = el("div", "tpunb-controls");
  const stop = el("button", "", "■ Stop");
  stop.title = "Stop at the next loop boundary and save a checkpoint";
  const logBox = el("input"); logBox.type = "checkbox";
  const logLabel = el("label"); logLabel.append(logBox, " log scale");
  const smoothBox = el("input"); smoothBox.type = "checkbox";
  const smoothRange = el("input"); smoothRange.type = "range"; smoothRange.min = "0"; smoothRange.max = "0.99";
  smoothRange.step = "0.01"; smoothRange.value = "0.6";
  const smoothValue = el("span", "tpunb-smooth-value");
  const smoothLabel = el("label"); smoothLabel.append(smoothBox, " smoothing ", smoothRange, " ", smoothValue);
  // The weight beside the slider; greyed while smoothing is off.
  const showWeight = () => {
    setText(smoothValue, Number(smoothRange.value).toFixed(2));
    setStyle(smoothValue, "opacity", smoothBox.checked ? "1" : "0.5");
  };
  showWeight();
  const hint = el("span", "tpunb-meta");
  controls.append(stop, logLabel, smoothLabel, hint);
  const grid = el("div", "tpunb-grid");
  box.append(head, bar, nums, controls, grid);

  let status = {};
  let series = {};
  let sharedRange = null;  // sharedStepRange of every chart, as of the last chart draw
  const charts = new Map();  // group title -> {node, plot, names, key}
  let frame = null;
  let stopSent = false;
  let dirty = true;  // series changed since the charts were last given data

  function applySeries(update, replace) {
    if (replace) series = {};
    for (const [name, pair] of Object.entries(update || {})) {
      const target = series[name] || (series[name] = { s: [], v: [] });
      const [steps, values] = pair;
      for (let i = 0; i < steps.length; i++) { target.s.push(steps[i]); target.v.push(values[i]); }
      while (target.s.length > MAX_POINTS) thin(target);
    }
    dirty = true;
  }

  function drawStatus() {
    const phase = status.phase || "starting";
    if (badge.dataset.phase !== phase) badge.dataset.phase = phase;
    setText(badge, status.state || phase);
    setText(title, `tpu_nb ${status.kind || "train"}`);
    const parts = [];
    if (status.backend) parts.push(`${status.backend} · ${status.num_shards} shard(s) × ${status.num_hosts} host(s)`);
    if (status.global_batch_size) parts.push(`batch ${status.global_batch_size} (${status.per_shard_batch_size}/shard)`);
    if (status.iterations_per_loop) parts.push(`${status.iterations_per_loop} steps/loop`);
    if (status.model_dir) parts.push(status.model_dir);
    if (status.note) parts.push(status.note);
    setText(meta, parts.join(" · "));
    // The bar counts as the header does, from step 0 to the target: the view's fraction is step / target.
    const f = status.fraction;
    setStyle(fill, "width", f === null || f === undefined ? "0" : `${(100 * f).toFixed(1)}%`);
    setStyle(fill, "background", phase === "failed" ? "#c62828" : phase === "stopped" ? "#b35900" : "#1a7f37");
    // Steps as the legends and the status bar write them: "68,600 / 100,000".
    const count = (n) => Math.round(n).toLocaleString("en-US");
    const step = status.step === null || status.step === undefined ? "—" : count(status.step);
    const target = status.target_step === null || status.target_step === undefined ? "" : ` / ${count(status.target_step)}`;
    // Which of the run's views this shows (the runs panel and the status bar show the same ones).
    if (status.seq !== undefined && nums.dataset.seq !== String(status.seq)) nums.dataset.seq = String(status.seq);
    // The header's loss is the raw one; with smoothing on it says so, beside legends that say "smoothed".
    setText(nums, [
      `step ${step}${target}`,
      `loss ${fmt(status.loss)}${smoothBox.checked ? " (raw)" : ""}`,
      `${fmt(status.steps_per_sec)} steps/s`,
      `${fmt(status.examples_per_sec)} examples/s`,
      `ETA ${phase === "running" ? fmtTime(status.eta_seconds) : "—"}`,
      `elapsed ${fmtTime(status.elapsed_seconds)}`,
    ].join("  ·  "));
    const live = phase === "running" || phase === "starting";
    stop.disabled = !live || stopSent;
    if (phase === "stopping" || (stopSent && live)) setText(stop, "Stopping…");
    else setText(stop, "■ Stop");
    setText(hint, stopSent && live && !status.fast_stop
      ? "this kernel handles Stop when idle: use Interrupt (■ in the toolbar) for a foreground run" : "");
  }

  // Hover read-out of the step: "1,200 · 12:03:41" (the wall time of the loop that ended there).
  function stepText(step) {
    if (step === null || step === undefined) return "—";
    const wall = series.wall_time;
    let text = Math.round(step).toLocaleString();
    if (wall && wall.s.length) {
      const i = Math.min(lowerBound(wall.s, step), wall.s.length - 1);
      const t = wall.v[i];
      if (t !== null && Number.isFinite(t)) text += " · " + new Date(t * 1000).toLocaleTimeString();
    }
    return text;
  }

  // Away from the cursor the legend reads the run's current view, as the header does: charts are
  // redrawn at most once a second, the header and legends at every update (setLegend is a few text nodes).
  // A chart of evaluations alone reads its latest evaluation's step.
  function latestStep(names) {
    if (names.some((n) => !n.startsWith("eval/")) && status.step !== null && status.step !== undefined) return status.step;
    let step = null;
    for (const n of names) {
      const data = series[n];
      if (data && data.s.length) step = Math.max(step === null ? -Infinity : step, data.s[data.s.length - 1]);
    }
    return step;
  }
  function latestValue(n) {
    const weight = smoothBox.checked && !n.startsWith("eval/") ? Number(smoothRange.value) : 0;
    // The raw loss is the view's (the header's); a smoothed one is computed here and labelled so.
    if (n === "loss" && !weight && status.loss !== null && status.loss !== undefined) return status.loss;
    const data = series[n];
    if (!data) return null;
    return lastValue(weight ? smooth(data.v, weight) : data.v);
  }
  function refreshLegends() {
    const seq = status.seq === undefined ? "" : String(status.seq);
    for (const chart of charts.values()) {
      const u = chart.plot;
      if (u && u.legend && u.legend.idx == null) {
        u.setLegend({ idx: null });
        if (chart.node.dataset.seq !== seq) chart.node.dataset.seq = seq;  // the view the legend shows
      }
    }
  }

  function chartWidth(node) {
    return Math.max(200, (node.clientWidth || grid.clientWidth || 400) - 12);
  }

  function makePlot(node, names, colors, described) {
    const log = logBox.checked;
    const opts = plotOptions({
      width: chartWidth(node), height: CHART_HEIGHT, log, ink: colors, names, label: described,
      dots: (n) => n.startsWith("eval/"),
      // uPlot pads a lone x value by its own magnitude (step 2000 -> 0..4000) before asking. Not
      // zoomed, every chart spans the same steps (sharedStepRange); a zoom is taken as asked.
      xRange: (u, min, max) => {
        const xs = u.data[0], n = xs.length;
        const auto = n <= 1 || (min === xs[0] && max === xs[n - 1]);
        if (!auto) return [min, max];
        return sharedRange || (n === 1 ? stepRange(xs[0], xs[0]) : [min, max]);
      },
      stepText, value: (n, v) => fmt(v, 5), latest: latestValue, latestStep: () => latestStep(names),
    });
    // What the chart shows, as attributes of its node: tick labels and axis ranges, for tests and
    // tools that cannot read a canvas (cheap: a few short strings per draw).
    opts.hooks = {
      draw: [(u) => {
        node.dataset.xTicks = (u.axes[0]._values || []).join("|");
        node.dataset.yTicks = (u.axes[1]._values || []).join("|");
        node.dataset.xRange = `${u.scales.x.min},${u.scales.x.max}`;
        node.dataset.yRange = `${u.scales.y.min},${u.scales.y.max}`;
        node.dataset.points = names.map((n) => (series[n] ? series[n].s.length : 0)).join("|");
        node.dataset.firstStep = String(u.data[0].length ? u.data[0][0] : "");
      }],
      // A drag-zoom narrows x inside the data: live updates then keep that window instead of snapping
      // back to the whole run every loop; a double-click (uPlot's reset to the data's range) ends it.
      setScale: [(u, key) => {
        if (key !== "x") return;
        const xs = u.data[0];
        const n = xs.length;
        node.dataset.zoomed = n > 1 && (u.scales.x.min > xs[0] || u.scales.x.max < xs[n - 1]) ? "1" : "";
      }],
    };
    return new uPlot(opts, chartData(names), node);
  }

  // chartData(names, skipped): skipped.count gets the number of values a log axis cannot show.
  function chartData(names, skipped = { count: 0 }) {
    const weight = smoothBox.checked ? Number(smoothRange.value) : 0;
    const log = logBox.checked;
    const tables = names.map((n) => {
      const data = series[n] || { s: [], v: [] };
      let values = n.startsWith("eval/") ? data.v : smooth(data.v, weight);
      if (log) {
        // A log axis has no room for y <= 0 (a learning rate decayed to 0): those points are left out,
        // and the chart says how many, instead of drawing nothing.
        values = values.map((y) => {
          if (y === null || y === undefined || !Number.isFinite(y)) return y;
          if (y > 0) return y;
          skipped.count += 1;
          return null;
        });
      }
      return [data.s, values];
    });
    // join aligns the series on one step axis and sorts it (evaluations arrive in any step order).
    return uPlot.join(tables);
  }

  function drawCharts(rebuild) {
    const groups = chartGroups(Object.keys(series));
    sharedRange = sharedStepRange(series, groups.flatMap(([, names]) => names));
    const notes = status.notes || {};
    const weight = smoothBox.checked ? Number(smoothRange.value) : 0;
    // A note says how the points were made (a host_call value averaged over shards), and a smoothed
    // line says so: the legend shows both.
    const described = (n) => {
      const extra = [];
      if (notes[n]) extra.push(notes[n]);
      if (weight && !n.startsWith("eval/")) extra.push(`smoothed ${weight.toFixed(2)}`);
      return extra.length ? `${label(n)} (${extra.join(", ")})` : label(n);
    };
    const colors = themeColors(box);
    for (const [name, names] of groups) {
      const key = names.map(described).join("|");
      let chart = charts.get(name);
      if (!chart) {
        const node = el("div", "tpunb-chart");
        node.dataset.chart = name;
        const note = el("div", "tpunb-chart-note");
        node.append(el("div", "tpunb-chart-title", name), note);
        grid.appendChild(node);
        chart = { node, note, plot: null, key: null };
        charts.set(name, chart);
      }
      const skipped = { count: 0 };
      if (rebuild || !chart.plot || chart.key !== key) {
        if (chart.plot) chart.plot.destroy();
        chart.plot = makePlot(chart.node, names, colors, described);
        chart.key = key;
        chartData(names, skipped);
      } else if (dirty) {
        const zoomed = Boolean(chart.node.dataset.zoomed);
        chart.plot.setData(chartData(names, skipped), !zoomed);
        if (zoomed) chart.plot.redraw();  // uPlot draws nothing on its own when the scales are kept
      } else {
        continue;
      }
      const drawn = names.some((n) => series[n] && series[n].v.some((y) => y !== null && Number.isFinite(y) && y > 0));
      setText(chart.note, !skipped.count ? "" : drawn
        ? `log scale: ${skipped.count.toLocaleString("en-US")} value(s) ≤ 0 not drawn`
        : "log scale: no value above 0 to draw (untick log scale to see them)");
      chart.node.dataset.logSkipped = String(skipped.count);
    }
    dirty = false;
  }

  // urgent: draw the charts in the next frame, whenever they were last drawn.
  function redraw(rebuild = false, urgent = false) {
    if (rebuild) pendingRebuild = true;
    if (urgent) chartsUrgent = true;
    if (frame !== null) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      drawStatus();
      chartsWhenDue();
      refreshLegends();
    });
  }
  let pendingRebuild = false;
  let chartsUrgent = false;
  let chartTimer = null;
  let lastChartDraw = -Infinity;
  let onScreen = true;  // false while the dashboard is scrolled out of view: charts wait for it

  function chartsWhenDue() {
    if (!dirty && !pendingRebuild) return;
    if (!onScreen) return;  // drawn when it scrolls back into view
    const live = runGoing(status.phase || "starting");
    const wait = lastChartDraw + CHART_INTERVAL_MS - performance.now();
    if (!live || pendingRebuild || chartsUrgent || charts.size === 0 || wait <= 0) {
      if (chartTimer !== null) { clearTimeout(chartTimer); chartTimer = null; }
      const again = pendingRebuild; pendingRebuild = false; chartsUrgent = false;
      drawCharts(again);
      lastChartDraw = performance.now();
    } else if (chartTimer === null) {
      chartTimer = setTimeout(() => { chartTimer = null; redraw(); }, wait);
    }
  }

  function applySnapshot(snap) {
    if (!snap) return;
    status = snap.status || status;
    applySeries(snap.series, true);
    redraw(false, true);
  }

  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "snapshot") { applySnapshot(msg); return; }
    if (msg.type === "delta") {
      const phase = status.phase;
      status = msg.status || status;
      applySeries(msg.series, false);
      redraw(false, status.phase !== phase);  // started, stopping, stopped: at once
    }
  }

  const onSnapshot = () => applySnapshot(model.get("snapshot"));
  model.on("msg:custom", onMessage);
  model.on("change:snapshot", onSnapshot);
  stop.addEventListener("click", () => { stopSent = true; model.send({ type: "stop" }); drawStatus(); });
  for (const input of [logBox, smoothBox, smoothRange]) input.addEventListener("input", () => { showWeight(); redraw(true); });
  // Charts follow the cell's width.
  let lastWidth = 0;
  const resize = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
    const width = grid.clientWidth;
    if (width === lastWidth) return;
    lastWidth = width;
    for (const chart of charts.values()) if (chart.plot) chart.plot.setSize({ width: chartWidth(chart.node), height: CHART_HEIGHT });
  }) : null;
  if (resize) resize.observe(grid);
  // A JupyterLab theme switch changes the ink colour: charts are rebuilt with the new one.
  const themeWatch = typeof MutationObserver !== "undefined" ? new MutationObserver(() => redraw(true)) : null;
  if (themeWatch) themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  // Off screen, the charts are not redrawn (a long notebook scrolled past a running dashboard).
  const seen = typeof IntersectionObserver !== "undefined" ? new IntersectionObserver((entries) => {
    const visible = entries.some((entry) => entry.isIntersecting);
    if (visible === onScreen) return;
    onScreen = visible;
    if (visible) redraw(false, true);
  }) : null;
  if (seen) seen.observe(box);

  applySnapshot(model.get("snapshot"));
  // A view opened mid-run (page reload, second view) asks for everything sent so far.
  const phase = (model.get("snapshot") || {}).status?.phase;
  if (runGoing(phase)) model.send({ type: "hello" });

  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:snapshot", onSnapshot);
    if (resize) resize.disconnect();
    if (themeWatch) themeWatch.disconnect();
    if (seen) seen.disconnect();
    if (frame !== null) cancelAnimationFrame(frame);
    if (chartTimer !== null) clearTimeout(chartTimer);
    for (const chart of charts.values()) if (chart.plot) chart.plot.destroy();
  };
}

export default { render };
