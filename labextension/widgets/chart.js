// The chart both tpu_nb dashboards draw (training: dashboard.js, evaluation: eval_dashboard.js), on
// uPlot: one look, one set of axes, ticks, legend, hover read-out and theme. `jlpm build:widgets`
// bundles each dashboard with this module and uPlot into tpu_nb/notebook/static/.

// Readable on light and dark backgrounds alike (Tableau 10, slightly deepened).
export const COLORS = ["#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
export const CHART_HEIGHT = 230;
// Step ticks are whole numbers: 1, 2, 5 x 10^k.
export const STEP_INCRS = [];
for (let k = 0; k < 13; k++) for (const m of [1, 2, 5]) STEP_INCRS.push(m * 10 ** k);


export function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
  if (a >= 1000) return Math.round(x).toLocaleString();
  return Number(x.toPrecision(digits)).toString();
}


// The y range from the data: a little padding, never below 0 for data that are all >= 0 and never
// above 1 for data within [0, 1] (accuracies, probabilities); one value gets a band around it.
export function valueRange(min, max, log) {
  if (log && !(min > 0 && max > 0 && Number.isFinite(min) && Number.isFinite(max))) return [0.1, 10];  // nothing > 0 to draw
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (log) {
    if (min === max) return [min / 2, max * 2];
    return [min / Math.pow(max / min, 0.05), max * Math.pow(max / min, 0.05)];
  }
  let lo, hi;
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    lo = min - pad; hi = max + pad;
  } else {
    const pad = (max - min) * 0.06;
    lo = min - pad; hi = max + pad;
  }
  if (min >= 0 && lo < 0) lo = 0;
  if (min >= 0 && max <= 1 && hi > 1) hi = 1;
  if (lo === hi) hi = lo + 1;
  return [lo, hi];
}

// The step range from the data; one step gets a band around it instead of [step, step + 1].
export function stepRange(min, max) {
  if (min === null || max === null || !Number.isFinite(min)) return [0, 1];
  if (min === max) {
    const pad = Math.max(1, Math.round(Math.abs(min) * 0.05));
    return [Math.max(0, min - pad), max + pad];
  }
  return [min, max];
}

// Tick labels with just enough digits to tell neighbouring ticks apart ("0.9800", "0.9802", ...).
export function tickLabels(ticks, incr, log) {
  if (log) return logTickLabels(ticks);
  const big = Math.max(0, ...ticks.map((t) => Math.abs(t)));
  if (big !== 0 && (big < 1e-3 || big >= 1e6)) {
    let digits = 1;
    while (digits < 6 && new Set(ticks.map((t) => t.toExponential(digits))).size < ticks.length) digits++;
    return ticks.map((t) => (t === 0 ? "0" : t.toExponential(digits)));
  }
  // Decimals of the increment itself: 0.5 -> 1, 0.00025 -> 5, 2000 -> 0.
  const exponent = Math.floor(Math.log10(incr) + 1e-9);
  const mantissa = incr / Math.pow(10, exponent);
  const decimals = Math.max(0, Math.min(12, -exponent + (Math.abs(mantissa - Math.round(mantissa)) > 1e-6 ? 1 : 0)));
  return ticks.map((t) => t.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals }));
}

// Log ticks sit at 1, 2, 5 (or more) x 10^k; uPlot passes null for those it leaves unlabelled (no "—").
// One format for the whole axis: plain ("0.002", "50") or, when the axis reaches below 1e-3 or to 1e6,
// powers of ten for all ("2e-4", "1e-3").
export function logTickLabels(ticks) {
  const shown = ticks.filter((t) => t !== null && t !== undefined && Number.isFinite(t) && t > 0);
  const exp = shown.some((t) => t < 1e-3 || t >= 1e6);
  return ticks.map((t) => {
    if (t === null || t === undefined || !Number.isFinite(t) || t <= 0) return "";
    return exp ? t.toExponential(0).replace("e+", "e") : String(Number(t.toPrecision(2)));
  });
}

// Step ticks as whole numbers with thousands separators, all of them ("50,000", "100,000", never 1.0e+5).
export function stepLabels(ticks) {
  return ticks.map((t) => (t === null || t === undefined ? "" : Math.round(t).toLocaleString("en-US")));
}

// The step range every chart shares, so charts side by side line up (a one-point eval chart spans
// the run, not 1,900-2,100): the lowest first step and the highest last step of the charted series.
export function sharedStepRange(all, names) {
  let lo = Infinity, hi = -Infinity;
  for (const n of names) {
    const data = all[n];
    if (!data || !data.s.length) continue;
    if (n.startsWith("eval/")) {  // evaluations arrive in any step order; they are few
      for (const x of data.s) { if (x < lo) lo = x; if (x > hi) hi = x; }
    } else {
      lo = Math.min(lo, data.s[0]); hi = Math.max(hi, data.s[data.s.length - 1]);
    }
  }
  return Number.isFinite(lo) ? stepRange(lo, hi) : null;
}

export function themeColors(node) {
  const style = getComputedStyle(node);
  const ink = style.color || "#222";
  return { ink, grid: "rgba(128, 128, 128, 0.28)", ticks: "rgba(128, 128, 128, 0.5)" };
}

// Width of the widest tick label, so long labels (1.2345e-5) are not cut.
export function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, b) => (String(b).length > a.length ? String(b) : a), "");
  if (longest) { u.ctx.font = axis.font[0]; size += u.ctx.measureText(longest).width / devicePixelRatio; }
  return Math.ceil(size) + 4;
}


export function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) {
    const y = values[i];
    if (y !== null && y !== undefined && Number.isFinite(y)) return y;
  }
  return null;
}


// The charts' stylesheet, shared by both dashboards (each puts it in the page once).
export const CHART_CSS = `
.tpunb-chart { border: 1px solid var(--jp-border-color3, #eee); border-radius: 4px; padding: 4px 6px; min-width: 0; }
.tpunb-chart-title { font-weight: 600; }
.tpunb-chart .uplot { width: 100% !important; font-family: inherit; }
.tpunb-chart .u-legend { font-size: 11px; text-align: left; margin-top: 2px; color: inherit; }
.tpunb-chart .u-legend th, .tpunb-chart .u-legend td { color: inherit; }
.tpunb-chart .u-legend th { font-weight: 500; }
.tpunb-chart .u-legend .u-series > * { padding: 1px 4px; }
.tpunb-chart .u-legend .u-value { font-variant-numeric: tabular-nums; }
.tpunb-chart .u-select { background: rgba(128, 128, 128, 0.15); }
.tpunb-chart-note { color: var(--jp-warn-color1, #b35900); font-size: 11px; min-height: 0; }
.tpunb-chart-note:empty { display: none; }
`;

// uPlot options for one chart: steps on x (whole numbers, "50,000"), values on y (linear or log),
// a legend that reads out the hovered point or, away from the cursor, what `latest` gives.
//   spec: {width, height, log, ink (themeColors), names, label(n), dots(n), xRange(u, min, max),
//          stepText(step), value(n, v) (the legend's text of value v of series n), latest(n) and
//          latestStep() (the values shown away from the cursor), hooks}
export function plotOptions(spec) {
  const { log, ink, names } = spec;
  return {
    width: spec.width,
    height: spec.height,
    padding: [8, 26, 0, 0],  // room on the right for half of the last step label
    cursor: { drag: { x: true, y: false }, points: { size: 7 } },
    legend: { live: true },
    scales: {
      x: { time: false, range: spec.xRange },
      y: { distr: log ? 3 : 1, range: (u, min, max) => valueRange(min, max, log) },
    },
    axes: [
      { stroke: ink.ink, grid: { stroke: ink.grid, width: 1 }, ticks: { stroke: ink.ticks, width: 1 },
        incrs: STEP_INCRS, space: 70, label: "step", labelSize: 18, labelFont: "11px system-ui, sans-serif",
        values: (u, ticks) => stepLabels(ticks) },
      { stroke: ink.ink, grid: { stroke: ink.grid, width: 1 }, ticks: { stroke: ink.ticks, width: 1 },
        space: 28, size: axisSize, values: (u, ticks, axisIdx, space, incr) => tickLabels(ticks, incr, log) },
    ],
    series: [
      // Away from the cursor the legend reads out the latest values (idx is null there).
      { label: "step", value: (u, v, si, idx) => spec.stepText(idx == null ? spec.latestStep() : v) },
      ...names.map((n, i) => {
        const dots = spec.dots(n);
        const color = COLORS[i % COLORS.length];
        return {
          label: spec.label(n),
          stroke: color,
          width: dots ? 1.5 : 1.25,
          spanGaps: dots,
          // Dotted series always show their points; a line gets dots only while its points are sparse
          // (uPlot's default), so a run's first point shows instead of an empty chart.
          points: dots ? { show: true, size: 6, fill: color } : { size: 4 },
          value: (u, v, si, idx) => spec.value(n, idx == null ? spec.latest(n) : v),
        };
      }),
    ],
    hooks: spec.hooks || {},
  };
}
