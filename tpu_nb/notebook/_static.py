"""The static picture of a run: a PNG (matplotlib Agg, no pyplot) and an HTML summary.

These ride along in the dashboard's output bundle, so a notebook executed by
nbclient or exported by nbconvert shows the final chart and numbers even where
no widget can render.
"""

from __future__ import annotations

import html
import io
from typing import List, Optional, Tuple

import numpy as np

from . import _wire
from .history import EVAL_PREFIX, HOST_PREFIX

_MAX_PANELS = 6


def chart_groups(names: List[str]) -> List[Tuple[str, List[str]]]:
    """(title, series) per chart: loss with eval loss overlaid, eval metrics together, one per host_call scalar
    (``host/loss`` titled ``host_call loss``).

    The browser module groups the same way (dashboard.js, ``chartGroups``).
    """
    groups = []
    loss = [n for n in ("loss", EVAL_PREFIX + "loss") if n in names]
    if loss:
        groups.append(("loss", loss))
    metrics = [n for n in names if n.startswith(EVAL_PREFIX) and n != EVAL_PREFIX + "loss"]
    if metrics:
        groups.append(("eval metrics", metrics))
    # A host_call argument named "loss" is the usual case: titled apart from the training loss's chart.
    groups += [("host_call loss" if n == HOST_PREFIX + "loss" else n[len(HOST_PREFIX):], [n])
               for n in names if n.startswith(HOST_PREFIX)]
    return groups


def render_png(handle, width_px: int = 900) -> Optional[bytes]:
    """The run's charts as PNG bytes (None when there is nothing to draw)."""
    fig = render_figure(handle, width_px)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_figure(handle, width_px: int = 900):
    """The run's charts as a matplotlib Figure (Agg canvas, no pyplot), or None with nothing to draw."""
    # The model_dir's earlier runs too (RunHistory.continue_from), as the live charts show them.
    groups = chart_groups(handle.store.chart_names)[:_MAX_PANELS]
    if not groups:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(groups))
    rows = (len(groups) + cols - 1) // cols
    dpi = 100
    height = 2.6 * rows + 0.5
    fig = Figure(figsize=(width_px / dpi, height), dpi=dpi)
    # Fixed margins in inches: tight_layout would measure every tick label first (a third of the time).
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.55 / height, bottom=0.45 / height,
                        wspace=0.28, hspace=0.75 / 2.6 + 0.1)
    FigureCanvasAgg(fig)
    fig.suptitle(f"{handle.kind}: {handle.state}" + _speed_text(handle), fontsize=10)
    notes = handle.store.notes
    for i, (title, names) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name in names:
            steps, values = _wire.downsample(*handle.store.chart_series(name), _wire.MAX_POINTS)
            order = np.argsort(steps, kind="stable")  # evaluations arrive in any step order
            steps, values = steps[order], values[order]
            label = name.replace(EVAL_PREFIX, "eval ").replace(HOST_PREFIX, "")
            if name in notes:
                label += f" ({notes[name]})"
            if name.startswith(EVAL_PREFIX):
                ax.plot(steps, values, "o-", markersize=3, label=label)
            else:
                # One point has no line to draw: a marker shows it.
                ax.plot(steps, values, linewidth=1, marker="o" if len(steps) == 1 else None, markersize=3,
                        label="train " + label if name == "loss" else label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        _step_axis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        _clamp_to_data(ax, [handle.store.chart_series(name)[1] for name in names])
        if len(names) > 1 or title == "eval metrics" or any(name in notes for name in names):
            ax.legend(fontsize=7)
    return fig


def _step_axis(ax) -> None:
    """At most 5 step ticks in one short format ("50k", "100k"; "1.5M"): a third of a 900 px figure
    holds five 150,000-step labels only if they are short ("50000 75000100000125000150000" collided)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True, min_n_ticks=2))

    def label(x, _pos):
        top = max(abs(t) for t in ax.get_xticks()) if len(ax.get_xticks()) else abs(x)
        if top >= 1e6:
            return f"{x / 1e6:g}M"
        if top >= 1e4:
            return f"{x / 1e3:g}k"
        return f"{x:,.0f}"

    ax.xaxis.set_major_formatter(FuncFormatter(label))


def _clamp_to_data(ax, value_arrays) -> None:
    """No axis below 0 for data that are all >= 0, none above 1 for data within [0, 1]; one point
    gets a band around it (as the live charts do)."""
    values = np.concatenate([np.asarray(v, np.float64) for v in value_arrays]) if value_arrays else np.empty(0)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    low, high = float(values.min()), float(values.max())
    bottom, top = ax.get_ylim()
    if low >= 0 and bottom < 0:
        bottom = 0.0
    if low >= 0 and high <= 1 and top > 1:
        top = 1.0
    if bottom < top:
        ax.set_ylim(bottom, top)


def _speed_text(handle) -> str:
    rate = handle.progress.steps_per_sec
    return f" — {rate:,.0f} steps/s" if rate else ""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def summary_rows(handle) -> List[Tuple[str, str]]:
    """(label, value) pairs shared by the HTML summary and the plain-text line."""
    p = handle.progress
    rows = [("state", html.escape(handle.state))]
    if p.step is not None:
        rows.append(("global step", f"{p.step}" + (f" / {p.target_step}" if p.target_step is not None else "")))
    loss = handle.store.last("loss")
    if loss is not None:
        rows.append(("loss", _fmt(loss)))
    for name in handle.store.names:
        if name.startswith(EVAL_PREFIX):
            rows.append((html.escape(name.replace(EVAL_PREFIX, "eval ")), _fmt(handle.store.last(name))))
    if p.steps_per_sec:
        rows.append(("steps/s", _fmt(p.steps_per_sec)))
    if p.examples_per_sec:
        rows.append(("examples/s", _fmt(p.examples_per_sec)))
    elapsed = p.as_dict()["elapsed_seconds"]
    if elapsed:
        rows.append(("wall time", f"{elapsed:,.1f} s"))
    started = handle.started
    if started is not None:
        rows.append(("backend", html.escape(f"{started.backend}, {started.num_shards} shard(s) on "
                                            f"{started.num_hosts} host(s)")))
        if started.global_batch_size:
            rows.append(("batch", f"{started.global_batch_size} global, {started.per_shard_batch_size} per shard"))
        rows.append(("model_dir", html.escape(started.model_dir)))
    if handle.note:
        rows.append(("note", html.escape(handle.note)))
    return rows


def summary_html(handle) -> str:
    """A small table: state, step, loss, eval metrics, speed, backend, model_dir."""
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>"
                   for k, v in summary_rows(handle))
    return f"<div class='tpu-nb-summary'><b>tpu_nb {html.escape(handle.kind)}</b><table>{body}</table></div>"


def result_html(handle) -> str:
    """HTML for an evaluate/predict/export handle: its state and result."""
    import pandas as pd

    head = f"<b>tpu_nb {html.escape(handle.kind)}</b>: {html.escape(handle.state)}"
    result = handle.result
    if isinstance(result, pd.DataFrame):
        return f"{head} ({len(result)} rows){result.head(10).to_html()}"
    if isinstance(result, dict):
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
                       f"<td>{_fmt(float(v) if hasattr(v, '__float__') else v)}</td></tr>" for k, v in result.items())
        return f"{head}<table>{rows}</table>"
    if result is not None:
        return f"{head}: <code>{html.escape(str(result))}</code>"
    return head
