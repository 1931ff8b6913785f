// tpu_nb live training dashboard: an anywidget ES module (no build step, no dependencies).
//
// The kernel sends {type: "delta", status, series: {name: [steps, values]}} at most a few
// times per second and syncs the `snapshot` trait ({status, series}) at the start and end of a
// run. Each view keeps at most MAX_POINTS points per series (halving when it grows past) and
// redraws at most once per animation frame, so the page stays light whatever the step rate.

const MAX_POINTS = 2000;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];

const CSS = `
.tpunb { font: 12px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 8px 10px; max-width: 980px; }
.tpunb-head { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.tpunb-title { font-weight: 600; }
.tpunb-badge { padding: 1px 8px; border-radius: 10px; color: #fff; background: #888; }
.tpunb-badge[data-phase="running"] { background: #1a7f37; }
.tpunb-badge[data-phase="stopping"], .tpunb-badge[data-phase="stopped"] { background: #b35900; }
.tpunb-badge[data-phase="failed"] { background: #c62828; }
.tpunb-badge[data-phase="done"] { background: #1f5fa8; }
.tpunb-meta { color: var(--jp-ui-font-color2, #666); }
.tpunb-bar { height: 6px; background: var(--jp-layout-color3, #eee); border-radius: 3px; margin: 6px 0 2px; overflow: hidden; }
.tpunb-bar > div { height: 100%; width: 0; background: #1a7f37; transition: width .2s; }
.tpunb-nums { font-variant-numeric: tabular-nums; }
.tpunb-controls { display: flex; gap: 12px; align-items: center; margin: 4px 0; flex-wrap: wrap; }
.tpunb-controls button { padding: 1px 10px; }
.tpunb-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 8px; }
.tpunb-chart { border: 1px solid var(--jp-border-color3, #eee); border-radius: 4px; padding: 2px 4px; }
.tpunb-chart-title { font-weight: 600; }
.tpunb-chart canvas { width: 100%; height: 170px; display: block; }
.tpunb-legend span { margin-right: 8px; }
`;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
  if (a >= 1000) return Math.round(x).toLocaleString();
  return Number(x.toPrecision(digits)).toString();
}

function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
}

// Same grouping as _static.chart_groups in the kernel.
function chartGroups(names) {
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

// Keeps every other point (and always the latest) once a series outgrows MAX_POINTS.
function halve(series) {
  const s = [], v = [];
  for (let i = 0; i < series.s.length; i += 2) { s.push(series.s[i]); v.push(series.v[i]); }
  const last = series.s.length - 1;
  if (s[s.length - 1] !== series.s[last]) { s.push(series.s[last]); v.push(series.v[last]); }
  series.s = s; series.v = v;
}

function smooth(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = null, debias = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (x === null || !Number.isFinite(x)) { out[i] = x; continue; }
    last = last === null ? 0 : last;
    last = last * weight + (1 - weight) * x;
    n += 1; debias = 1 - Math.pow(weight, n);
    out[i] = last / debias;
  }
  return out;
}

function drawChart(canvas, lines, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300, h = canvas.clientHeight || 170;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(canvas);
  const ink = style.color || "#444";
  const left = 48, right = 8, top = 6, bottom = 18;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  const ty = (y) => (opts.log ? (y > 0 ? Math.log10(y) : null) : y);
  const prepared = lines.map((line) => {
    const ys = (line.dots ? line.v : smooth(line.v, opts.smoothing)).map((y) => (y === null ? null : ty(y)));
    for (let i = 0; i < line.s.length; i++) {
      const y = ys[i];
      if (y === null || !Number.isFinite(y)) continue;
      x0 = Math.min(x0, line.s[i]); x1 = Math.max(x1, line.s[i]);
      y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    return { ...line, ys };
  });
  ctx.strokeStyle = "rgba(128,128,128,0.35)"; ctx.lineWidth = 1;
  ctx.strokeRect(left, top, w - left - right, h - top - bottom);
  if (!Number.isFinite(x0)) {
    ctx.fillStyle = ink; ctx.fillText("waiting for data…", left + 8, top + 16);
    return;
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.05 || 0.5; y1 += Math.abs(y1) * 0.05 || 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const px = (x) => left + ((x - x0) / (x1 - x0)) * (w - left - right);
  const py = (y) => top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom);
  ctx.fillStyle = ink; ctx.font = "10px sans-serif";
  const yl = (y) => fmt(opts.log ? Math.pow(10, y) : y, 3);
  ctx.textAlign = "right";
  ctx.fillText(yl(y1), left - 3, top + 9); ctx.fillText(yl(y0), left - 3, h - bottom);
  ctx.textAlign = "left"; ctx.fillText(String(Math.round(x0)), left, h - 5);
  ctx.textAlign = "right"; ctx.fillText(String(Math.round(x1)), w - right, h - 5);
  for (const line of prepared) {
    ctx.strokeStyle = line.color; ctx.fillStyle = line.color; ctx.lineWidth = line.dots ? 1 : 1.5;
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < line.s.length; i++) {
      const y = line.ys[i];
      if (y === null || !Number.isFinite(y)) { pen = false; continue; }
      const X = px(line.s[i]), Y = py(y);
      if (pen) ctx.lineTo(X, Y); else ctx.moveTo(X, Y);
      pen = true;
    }
    ctx.stroke();
    if (line.dots) {
      for (let i = 0; i < line.s.length; i++) {
        const y = line.ys[i];
        if (y === null || !Number.isFinite(y)) continue;
        ctx.beginPath(); ctx.arc(px(line.s[i]), py(y), 2.5, 0, 2 * Math.PI); ctx.fill();
      }
    }
  }
}

function render({ model, el: root }) {
  const style = el("style"); style.textContent = CSS; root.appendChild(style);
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
  const smoothLabel = el("label"); smoothLabel.append(smoothBox, " smoothing ", smoothRange);
  const hint = el("span", "tpunb-meta");
  controls.append(stop, logLabel, smoothLabel, hint);
  const grid = el("div", "tpunb-grid");
  box.append(head, bar, nums, controls, grid);

  let status = {};
  let series = {};
  const charts = new Map();
  let frame = null;
  let stopSent = false;

  function applySeries(update, replace) {
    if (replace) series = {};
    for (const [name, pair] of Object.entries(update || {})) {
      const target = series[name] || (series[name] = { s: [], v: [] });
      const [steps, values] = pair;
      for (let i = 0; i < steps.length; i++) { target.s.push(steps[i]); target.v.push(values[i]); }
      while (target.s.length > MAX_POINTS) halve(target);
    }
  }

  function drawStatus() {
    const phase = status.phase || "starting";
    badge.dataset.phase = phase;
    badge.textContent = status.state || phase;
    title.textContent = `tpu_nb ${status.kind || "train"}`;
    const parts = [];
    if (status.backend) parts.push(`${status.backend} · ${status.num_shards} shard(s) × ${status.num_hosts} host(s)`);
    if (status.global_batch_size) parts.push(`batch ${status.global_batch_size} (${status.per_shard_batch_size}/shard)`);
    if (status.iterations_per_loop) parts.push(`${status.iterations_per_loop} steps/loop`);
    if (status.model_dir) parts.push(status.model_dir);
    if (status.note) parts.push(status.note);
    meta.textContent = parts.join(" · ");
    const f = status.fraction;
    fill.style.width = f === null || f === undefined ? "0" : `${(100 * f).toFixed(1)}%`;
    fill.style.background = phase === "failed" ? "#c62828" : phase === "stopped" ? "#b35900" : "#1a7f37";
    const step = status.step === null || status.step === undefined ? "—" : status.step;
    const target = status.target_step === null || status.target_step === undefined ? "" : ` / ${status.target_step}`;
    nums.textContent = [
      `step ${step}${target}`,
      `loss ${fmt(status.loss)}`,
      `${fmt(status.steps_per_sec)} steps/s`,
      `${fmt(status.examples_per_sec)} examples/s`,
      `ETA ${phase === "running" ? fmtTime(status.eta_seconds) : "—"}`,
      `elapsed ${fmtTime(status.elapsed_seconds)}`,
    ].join("  ·  ");
    const live = phase === "running" || phase === "starting";
    stop.disabled = !live || stopSent;
    if (phase === "stopping" || (stopSent && live)) stop.textContent = "Stopping…";
    else stop.textContent = "■ Stop";
    hint.textContent = stopSent && live && !status.fast_stop
      ? "this kernel handles Stop when idle: use Interrupt (■ in the toolbar) for a foreground run" : "";
  }

  function drawCharts() {
    const groups = chartGroups(Object.keys(series));
    for (const [name, names] of groups) {
      let chart = charts.get(name);
      if (!chart) {
        const node = el("div", "tpunb-chart");
        const titleNode = el("div", "tpunb-chart-title", name);
        const legend = el("div", "tpunb-legend tpunb-meta");
        const canvas = el("canvas");
        node.append(titleNode, legend, canvas);
        grid.appendChild(node);
        chart = { node, legend, canvas };
        charts.set(name, chart);
      }
      const lines = names.map((n, i) => ({ ...series[n], color: COLORS[i % COLORS.length], dots: n.startsWith("eval/") }));
      // A note says how the points were made (a host_call value averaged over shards): the legend
      // shows it, so a mean is never mistaken for one shard's value, and so does the tooltip.
      const notes = status.notes || {};
      const described = (n) => (notes[n] ? `${label(n)} (${notes[n]})` : label(n));
      chart.legend.textContent = "";
      if (names.length > 1 || name === "loss" || names.some((n) => notes[n])) {
        names.forEach((n, i) => {
          const item = el("span", "", `● ${described(n)}`); item.style.color = COLORS[i % COLORS.length];
          chart.legend.appendChild(item);
        });
      }
      chart.node.title = names.map(described).join("\n");
      drawChart(chart.canvas, lines, { log: logBox.checked, smoothing: smoothBox.checked ? Number(smoothRange.value) : 0 });
    }
  }

  function redraw() {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => { frame = null; drawStatus(); drawCharts(); });
  }

  function applySnapshot(snap) {
    if (!snap) return;
    status = snap.status || status;
    applySeries(snap.series, true);
    redraw();
  }

  function onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "snapshot") { applySnapshot(msg); return; }
    if (msg.type === "delta") {
      status = msg.status || status;
      applySeries(msg.series, false);
      redraw();
    }
  }

  const onSnapshot = () => applySnapshot(model.get("snapshot"));
  model.on("msg:custom", onMessage);
  model.on("change:snapshot", onSnapshot);
  stop.addEventListener("click", () => { stopSent = true; model.send({ type: "stop" }); drawStatus(); });
  for (const input of [logBox, smoothBox, smoothRange]) input.addEventListener("input", redraw);
  const resize = typeof ResizeObserver !== "undefined" ? new ResizeObserver(redraw) : null;
  if (resize) resize.observe(grid);

  applySnapshot(model.get("snapshot"));
  // A view opened mid-run (page reload, second view) asks for everything sent so far.
  const phase = (model.get("snapshot") || {}).status?.phase;
  if (phase === "running" || phase === "starting" || phase === "stopping") model.send({ type: "hello" });

  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:snapshot", onSnapshot);
    if (resize) resize.disconnect();
    if (frame !== null) cancelAnimationFrame(frame);
  };
}

export default { render };
