// tpu_nb evaluation dashboard: the anywidget ES module's source, bundled with uPlot and the training
// dashboard's chart module (chart.js) into tpu_nb/notebook/static/eval_dashboard.js by
// `jlpm build:widgets`. The checkpoint list, buttons and the Watch toggle edit traits; the kernel
// fills `rows` (one per evaluated checkpoint), `columns` (loss first, then the metrics) and `best`
// (the checkpoint with the best headline metric), drawn here as a table and one chart per column:
// the same charts, axes, legend, hover read-out and theme as the training dashboard.

import uPlot from "uplot";
import uPlotCss from "uplot/dist/uPlot.min.css";

import { CHART_CSS, CHART_HEIGHT, fmt, plotOptions, stepRange, themeColors } from "./chart.js";

const CSS = `
.tpunb-eval { font: 12px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 8px 10px; box-sizing: border-box; width: 100%; }
.tpunb-eval-head { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.tpunb-eval-title { font-weight: 600; }
.tpunb-eval-badge { padding: 1px 8px; border-radius: 10px; color: #fff; background: #888; }
.tpunb-eval-badge[data-phase="evaluating"] { background: #1a7f37; }
.tpunb-eval-badge[data-phase="watching"] { background: #1f5fa8; }
.tpunb-eval-meta { color: var(--jp-ui-font-color2, #666); }
.tpunb-eval-controls { display: flex; gap: 8px; align-items: flex-start; margin: 6px 0; flex-wrap: wrap; }
.tpunb-eval-controls button, .tpunb-eval-controls select {
  font: inherit; color: inherit; background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 3px; }
.tpunb-eval-controls button { padding: 2px 10px; cursor: pointer; }
.tpunb-eval-controls button:hover { background: var(--jp-layout-color2, #eee); }
.tpunb-eval-controls button[aria-pressed="true"] { background: #1f5fa8; border-color: #1f5fa8; color: #fff; }
.tpunb-eval-controls select { min-width: 200px; padding: 2px; }
.tpunb-eval-buttons { display: flex; gap: 6px; flex-wrap: wrap; }
.tpunb-eval-err { color: #c62828; white-space: pre-wrap; }
.tpunb-eval-table { border-collapse: collapse; font: inherit; color: inherit; font-variant-numeric: tabular-nums; margin: 4px 0 8px; }
.tpunb-eval-table th, .tpunb-eval-table td { padding: 2px 12px 2px 0; text-align: right;
  border-bottom: 1px solid var(--jp-border-color3, #eee); }
.tpunb-eval-table th { font-weight: 600; }
.tpunb-eval-table td.name, .tpunb-eval-table th.name { text-align: left; color: var(--jp-ui-font-color2, #666); }
.tpunb-eval-table tr.best td { font-weight: 600; background: rgba(31, 95, 168, 0.12); }
.tpunb-eval-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 10px; }
`;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Decimals that give a column's largest value 4 significant digits, for every value of the column: the
// numbers then line up on their decimal point (0.9100 above 0.9460, never 0.91 above 0.946).
export function columnDecimals(values) {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (!finite.length) return 0;
  const big = Math.max(...finite.map(Math.abs));
  if (big === 0) return 1;
  return Math.max(0, Math.min(6, 3 - Math.floor(Math.log10(big))));
}

function cell(value, decimals) {
  if (value === null || value === undefined || (typeof value === "number" && !Number.isFinite(value))) return "—";
  if (typeof value !== "number") return String(value);
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-4 || a >= 1e7)) return value.toExponential(3);
  return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

function render({ model, el: root }) {
  if (!document.getElementById("tpunb-dashboard-css")) {
    const shared = el("style");
    shared.id = "tpunb-dashboard-css";
    shared.textContent = uPlotCss + CHART_CSS;
    document.head.appendChild(shared);
  }
  if (!document.getElementById("tpunb-eval-css")) {
    const own = el("style");
    own.id = "tpunb-eval-css";
    own.textContent = CSS;
    document.head.appendChild(own);
  }
  const box = el("div", "tpunb-eval"); root.appendChild(box);
  const head = el("div", "tpunb-eval-head");
  const badge = el("span", "tpunb-eval-badge", "idle");
  const meta = el("span", "tpunb-eval-meta");
  head.append(el("span", "tpunb-eval-title", "tpu_nb evaluate"), badge, meta);

  const controls = el("div", "tpunb-eval-controls");
  const list = el("select");
  list.multiple = true;
  list.size = 5;
  list.title = "Checkpoints in model_dir (✓: evaluated); select some, then Evaluate selected";
  list.onchange = () => {
    model.set("selected", Array.from(list.selectedOptions).map((o) => Number(o.value)));
    model.save_changes();
  };
  const button = (text, trait, title) => {
    const b = el("button", "", text);
    b.title = title;
    b.onclick = () => { model.set(trait, model.get(trait) + 1); model.save_changes(); };
    return b;
  };
  const watch = el("button");
  watch.title = "Evaluate each new checkpoint as training saves it";
  watch.onclick = () => { model.set("watching", !model.get("watching")); model.save_changes(); };
  const buttons = el("div", "tpunb-eval-buttons");
  buttons.append(button("Evaluate selected", "evaluate_clicks", "Evaluate the selected checkpoints"),
                 button("Evaluate all", "evaluate_all_clicks", "Evaluate every checkpoint not evaluated yet"),
                 button("Refresh", "refresh_clicks", "Read model_dir's checkpoint list again"), watch);
  controls.append(list, buttons);
  const error = el("div", "tpunb-eval-err");
  const table = el("table", "tpunb-eval-table");
  const grid = el("div", "tpunb-eval-grid");
  box.append(head, controls, error, table, grid);

  const charts = new Map();  // column -> {node, plot, key}
  let frame = null;

  function drawList() {
    const selected = new Set(model.get("selected"));
    list.replaceChildren();
    for (const c of model.get("checkpoints")) {
      const o = new Option(`step ${Number(c.step).toLocaleString("en-US")}${c.evaluated ? "  ✓" : ""}`, c.step);
      o.selected = selected.has(c.step);
      list.append(o);
    }
  }

  function drawStatus() {
    const watching = model.get("watching");
    watch.textContent = watching ? "■ Stop watching" : "Watch new checkpoints";
    watch.setAttribute("aria-pressed", watching ? "true" : "false");
    const status = model.get("status") || "idle";
    badge.textContent = status;
    badge.dataset.phase = status.startsWith("evaluating") ? "evaluating" : status.startsWith("watching") ? "watching" : "idle";
    const checkpoints = model.get("checkpoints").length;
    meta.textContent = `${model.get("rows").length} of ${checkpoints} checkpoint(s) evaluated · ${model.get("model_dir")}`;
    error.textContent = model.get("error");
  }

  function drawTable() {
    const rows = model.get("rows"), cols = model.get("columns"), best = model.get("best") || {};
    table.replaceChildren();
    if (!rows.length) return;
    const decimals = Object.fromEntries(cols.map((c) => [c, columnDecimals(rows.map((r) => r[c]))]));
    const headRow = table.insertRow();
    for (const c of ["step", ...cols]) headRow.append(el("th", "", c));
    headRow.append(el("th", "name", "checkpoint"));
    for (const r of rows) {
      const tr = table.insertRow();
      tr.dataset.step = String(r.step);
      const isBest = best.step === r.step;
      if (isBest) {
        tr.className = "best";
        tr.title = `best ${best.metric} (${best.direction === "min" ? "lowest" : "highest"})`;
      }
      tr.insertCell().textContent = Number(r.step).toLocaleString("en-US");
      for (const c of cols) tr.insertCell().textContent = cell(r[c], decimals[c]);
      const name = tr.insertCell();
      name.className = "name";
      name.textContent = r.checkpoint + (isBest ? `  ★ best ${best.metric}` : "");
    }
  }

  function drawCharts() {
    const rows = model.get("rows"), cols = model.get("columns");
    const steps = rows.map((r) => r.step);
    const all = Object.fromEntries(cols.map((c) => [c, { s: steps, v: rows.map((r) => (r[c] === undefined ? null : r[c])) }]));
    const sorted = [...steps].sort((a, b) => a - b);
    const range = sorted.length ? stepRange(sorted[0], sorted[sorted.length - 1]) : null;
    const ink = themeColors(box);
    for (const [name, chart] of charts) {
      if (!cols.includes(name)) { if (chart.plot) chart.plot.destroy(); chart.node.remove(); charts.delete(name); }
    }
    for (const c of cols) {
      let chart = charts.get(c);
      if (!chart) {
        const node = el("div", "tpunb-chart");
        node.dataset.chart = c;
        node.append(el("div", "tpunb-chart-title", c));
        grid.appendChild(node);
        chart = { node, plot: null };
        charts.set(c, chart);
      }
      if (chart.plot) chart.plot.destroy();
      const data = all[c];
      const node = chart.node;
      const opts = plotOptions({
        width: Math.max(200, (node.clientWidth || grid.clientWidth || 400) - 12), height: CHART_HEIGHT,
        log: false, ink, names: [c], label: (n) => `eval ${n}`, dots: () => true,
        // Checkpoints arrive in any order and may be one: every chart spans the evaluated steps.
        xRange: (u, min, max) => range || [min, max],
        stepText: (s) => (s === null || s === undefined ? "—" : Math.round(s).toLocaleString("en-US")),
        value: (n, v) => fmt(v, 5),
        latest: () => { for (let i = data.v.length - 1; i >= 0; i--) if (data.v[i] !== null) return data.v[i]; return null; },
        latestStep: () => (steps.length ? Math.max(...steps) : null),
        hooks: { draw: [(u) => {
          node.dataset.xTicks = (u.axes[0]._values || []).join("|");
          node.dataset.yTicks = (u.axes[1]._values || []).join("|");
        }] },
      });
      const order = steps.map((s, i) => i).sort((a, b) => steps[a] - steps[b]);
      chart.plot = new uPlot(opts, [order.map((i) => steps[i]), order.map((i) => data.v[i])], node);
    }
  }

  function drawResults() {
    drawStatus();
    drawTable();
    if (frame === null) frame = requestAnimationFrame(() => { frame = null; drawCharts(); });
  }

  drawList(); drawStatus(); drawResults();
  model.on("change:checkpoints", () => { drawList(); drawStatus(); });
  model.on("change:selected", drawList);
  for (const t of ["watching", "status", "error"]) model.on("change:" + t, drawStatus);
  model.on("change:rows", drawResults);
  model.on("change:best", drawTable);
  // Charts follow the cell's width, and a JupyterLab theme switch changes their ink.
  let lastWidth = 0;
  const resize = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
    if (grid.clientWidth === lastWidth) return;
    lastWidth = grid.clientWidth;
    for (const chart of charts.values()) {
      if (chart.plot) chart.plot.setSize({ width: Math.max(200, chart.node.clientWidth - 12), height: CHART_HEIGHT });
    }
  }) : null;
  if (resize) resize.observe(grid);
  const themeWatch = typeof MutationObserver !== "undefined" ? new MutationObserver(() => drawResults()) : null;
  if (themeWatch) themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });

  return () => {
    if (resize) resize.disconnect();
    if (themeWatch) themeWatch.disconnect();
    if (frame !== null) cancelAnimationFrame(frame);
    for (const chart of charts.values()) if (chart.plot) chart.plot.destroy();
  };
}

export default { render };
