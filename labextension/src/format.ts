// Small formatting helpers for the status bar and the runs panel.

import { RunInfo } from './protocol';

/** "simulated TPU 8x1 (8 shards on CPU, 1 host)" -> "simulated TPU 8×1". */
export function backendLabel(backend: string): string {
  const short = backend.split(' (')[0];
  return short.replace(/(\d)x(\d)/g, '$1×$2');
}

export function fmt(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined || Number.isNaN(x)) {
    return '—';
  }
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) {
    return x.toExponential(2);
  }
  if (a >= 1000) {
    return Math.round(x).toLocaleString('en-US');
  }
  return Number(x.toPrecision(digits)).toString();
}

/** "train 1,200/5,000" or "train stopped at step 800". */
export function progressText(run: RunInfo): string {
  if (run.phase !== 'running' && run.phase !== 'starting' && run.phase !== 'stopping') {
    // A failed run's state carries its error's first line, which can be long: the bar shows its start.
    const state = run.state.length > 60 ? `${run.state.slice(0, 59)}…` : run.state;
    return `${run.mode} ${state}`;
  }
  const step = run.step === null ? '—' : fmt(run.step);
  const total = run.target === null ? '' : `/${fmt(run.target)}`;
  return `${run.mode} ${step}${total}`;
}

/** An SVG polyline of the last values (the kernel sends a short, downsampled tail). */
export function sparkline(values: number[], width: number, height: number): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('class', 'tpunb-spark');
  const finite = values.filter(v => Number.isFinite(v));
  if (finite.length < 2) {
    return svg;
  }
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const span = hi - lo || 1;
  const points = finite
    .map((v, i) => {
      const x = (i / (finite.length - 1)) * (width - 2) + 1;
      const y = height - 1 - ((v - lo) / span) * (height - 2);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', points);
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', 'var(--jp-brand-color1, #1976d2)');
  line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  return svg;
}
