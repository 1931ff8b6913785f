// tpu_nb evaluation dashboard: an anywidget ES module (no build step). The checkpoint list,
// buttons and the Watch toggle edit traits; the kernel fills `rows` (one per checkpoint) and
// `columns`, drawn here as a table and one metric-vs-step chart per column.

const CSS = `
.tpunb-eval { font: 12px/1.5 system-ui, sans-serif; border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 6px; padding: 8px 10px; max-width: 980px; color: var(--jp-ui-font-color1, #222); }
.tpunb-eval .bar { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-bottom: 4px; }
.tpunb-eval select { min-width: 220px; }
.tpunb-eval .err { color: #c62828; white-space: pre-wrap; }
.tpunb-eval table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0; }
.tpunb-eval td, .tpunb-eval th { padding: 1px 10px 1px 0; text-align: right; }
.tpunb-eval .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 8px; }
.tpunb-eval canvas { width: 100%; height: 150px; display: block; }
`;

function fmt(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number") return String(x);
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? x.toExponential(2) : Number(x.toPrecision(4)).toString();
}

function drawChart(canvas, steps, values) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 280, h = canvas.clientHeight || 150;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const pts = steps.map((s, i) => [s, values[i]]).filter(([, v]) => v !== null && v !== undefined);
  if (!pts.length) return;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const L = 42, R = 8, T = 6, B = 18;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (w - L - R);
  const Y = (y) => h - B - ((y - y0) / (y1 - y0)) * (h - T - B);
  ctx.strokeStyle = "#ccc"; ctx.strokeRect(L, T, w - L - R, h - T - B);
  ctx.fillStyle = "#666"; ctx.font = "10px sans-serif";
  ctx.fillText(fmt(y1), 2, T + 8); ctx.fillText(fmt(y0), 2, h - B);
  ctx.fillText(String(x0), L, h - 4); ctx.fillText(String(x1), w - R - 30, h - 4);
  ctx.strokeStyle = "#1f77b4"; ctx.fillStyle = "#1f77b4"; ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
  ctx.stroke();
  for (const [x, y] of pts) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
}

function render({ model, el }) {
  const style = document.createElement("style");
  style.textContent = CSS;
  const root = document.createElement("div");
  root.className = "tpunb-eval";
  el.append(style, root);

  const bar = document.createElement("div");
  bar.className = "bar";
  const list = document.createElement("select");
  list.multiple = true;
  list.size = 5;
  list.onchange = () => {
    model.set("selected", Array.from(list.selectedOptions).map((o) => Number(o.value)));
    model.save_changes();
  };
  const button = (text, trait) => {
    const b = document.createElement("button");
    b.textContent = text;
    b.onclick = () => { model.set(trait, model.get(trait) + 1); model.save_changes(); };
    return b;
  };
  const watch = document.createElement("button");
  watch.onclick = () => { model.set("watching", !model.get("watching")); model.save_changes(); };
  const status = document.createElement("span");
  const controls = document.createElement("div");
  controls.append(button("Evaluate selected", "evaluate_clicks"), " ", button("Evaluate all", "evaluate_all_clicks"),
                  " ", button("Refresh", "refresh_clicks"), " ", watch, document.createElement("br"), status);
  bar.append(list, controls);
  const error = document.createElement("div");
  error.className = "err";
  const table = document.createElement("table");
  const grid = document.createElement("div");
  grid.className = "grid";
  root.append(bar, error, table, grid);

  function drawList() {
    const selected = new Set(model.get("selected"));
    list.replaceChildren();
    for (const c of model.get("checkpoints")) {
      const o = new Option(`step ${c.step}${c.evaluated ? "  ✓" : ""}`, c.step);
      o.selected = selected.has(c.step);
      list.append(o);
    }
  }

  function drawStatus() {
    watch.textContent = model.get("watching") ? "Stop watching" : "Watch new checkpoints";
    status.textContent = model.get("status");
    error.textContent = model.get("error");
  }

  function drawResults() {
    const rows = model.get("rows"), cols = model.get("columns");
    table.replaceChildren();
    grid.replaceChildren();
    if (!rows.length) return;
    const head = table.insertRow();
    for (const c of ["step", ...cols]) { const th = document.createElement("th"); th.textContent = c; head.append(th); }
    for (const r of rows) {
      const tr = table.insertRow();
      for (const c of ["step", ...cols]) tr.insertCell().textContent = fmt(r[c]);
    }
    for (const c of cols) {
      const box = document.createElement("div");
      const title = document.createElement("b");
      title.textContent = c;
      const canvas = document.createElement("canvas");
      box.append(title, canvas);
      grid.append(box);
      requestAnimationFrame(() => drawChart(canvas, rows.map((r) => r.step), rows.map((r) => r[c])));
    }
  }

  drawList(); drawStatus(); drawResults();
  model.on("change:checkpoints", drawList);
  model.on("change:selected", drawList);
  for (const t of ["watching", "status", "error"]) model.on("change:" + t, drawStatus);
  model.on("change:rows", drawResults);
}

export default { render };
