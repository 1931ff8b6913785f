"""The evaluation dashboard: checkpoints of a model_dir, evaluated on demand or as training writes them.

Lists the checkpoints in ``model_dir``; evaluates the selected ones, all of
them, or (continuous mode) each new one as training saves it, in a stoppable
background thread. Results are a DataFrame with one row per checkpoint (step,
loss, every metric), drawn in the browser as a table and metric-vs-step charts;
the output bundle also carries a PNG and an HTML table for executed/exported
notebooks, like the training dashboard.

Example::

    dash = EvalDashboard(est, eval_input_fn).show()
    dash.evaluate("all")              # or select steps in the widget
    dash.watch()                      # evaluate each new checkpoint while training runs
    ...; dash.stop(); dash.frame      # step, loss, accuracy, ... per checkpoint
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import io
import math
import os
import re
import threading
from typing import Dict, List, Optional, Sequence, Tuple, Union

import anywidget
import numpy as np
import traitlets

_STEP = re.compile(r"-(\d+)$")
_MAX_PANELS = 6


def list_checkpoints(model_dir: str) -> List[Tuple[int, str]]:
    """(step, path) of every checkpoint ``model_dir``'s checkpoint file lists and that still exists, by step.

    >>> list_checkpoints('/tmp/m')   # doctest: +SKIP
    [(100, '/tmp/m/model.ckpt-100'), (200, '/tmp/m/model.ckpt-200')]
    """
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(model_dir)
    if state is None:
        return []
    found = {}
    for path in list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]:
        if not os.path.isabs(path):
            path = os.path.join(model_dir, path)
        match = _STEP.search(path)
        # keep_checkpoint_max deletes old files while the checkpoint file may still list them.
        if match and tf.io.gfile.exists(path + ".index"):
            found[int(match.group(1))] = path
    return sorted(found.items())


def _scalar(value):
    try:
        number = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        return None  # non-scalar metrics (e.g. a confusion matrix) stay out of the table
    return number if math.isfinite(number) else None


def _esm_source() -> str:
    """The browser module: labextension/widgets/eval_dashboard.js bundled with uPlot and the training
    dashboard's chart module by the package build (``jlpm build:prod``) into static/eval_dashboard.js."""
    path = importlib.resources.files(__package__).joinpath("static", "eval_dashboard.js")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # A source checkout that was never built: a plain message beats an import-time traceback.
        return ("export default { render({ el }) { el.textContent = 'tpu_nb evaluation dashboard not built: "
                "run pip install -e . in the tpu_nb checkout (or jlpm build:widgets in labextension/)'; } };")


#: Metrics where lower is better; any other metric is better higher (accuracy, auc, precision...).
_LOWER_IS_BETTER = re.compile(r"loss|error|mse|mae|rmse|perplexity", re.I)


def best_checkpoint(rows: List[dict], columns: List[str]) -> dict:
    """The checkpoint with the best headline metric: the first metric after the loss (higher is better
    unless its name says error or loss), else the lowest loss. ``{}`` before any result.

    >>> best_checkpoint([{"step": 1, "loss": 0.5, "accuracy": 0.9}, {"step": 2, "loss": 0.4, "accuracy": 0.8}],
    ...                 ["loss", "accuracy"])
    {'step': 1, 'metric': 'accuracy', 'direction': 'max', 'value': 0.9}
    """
    metrics = [c for c in columns if c != "loss"] + (["loss"] if "loss" in columns else [])
    for metric in metrics:
        scored = [r for r in rows if r.get(metric) is not None]
        if not scored:
            continue
        lower = bool(_LOWER_IS_BETTER.search(metric))
        best = (min if lower else max)(scored, key=lambda r: r[metric])
        return {"step": best["step"], "metric": metric, "direction": "min" if lower else "max", "value": best[metric]}
    return {}


def column_decimals(values) -> int:
    """Decimals that give the column's largest value 4 significant digits, used for all its values, so
    the numbers line up (0.9100 above 0.9460, never 0.91 above 0.946); as the browser table does."""
    finite = [abs(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return 0
    big = max(finite)
    if big == 0:
        return 1
    return max(0, min(6, 3 - math.floor(math.log10(big))))


class EvalDashboard(anywidget.AnyWidget):
    """Evaluates ``estimator``'s checkpoints with ``input_fn``; see the module docstring.

    Browser controls drive traits: ``selected`` (steps), ``evaluate_clicks`` (evaluate the
    selection), ``evaluate_all_clicks``, ``refresh_clicks`` and ``watching`` (True starts
    continuous evaluation, False stops it).

    Example::

        dash = EvalDashboard(est, eval_input_fn, poll_secs=5).show()
        dash.watch(stop_after_step=10_000)   # stops by itself once step 10000 is evaluated
    """

    _esm = _esm_source()
    checkpoints = traitlets.List().tag(sync=True)  # [{"step", "name", "evaluated"}]
    selected = traitlets.List(traitlets.Int()).tag(sync=True)
    rows = traitlets.List().tag(sync=True)  # one dict per evaluated checkpoint, by step
    columns = traitlets.List().tag(sync=True)  # loss first, then the metrics
    status = traitlets.Unicode("idle").tag(sync=True)
    best = traitlets.Dict().tag(sync=True)  # best_checkpoint(rows, columns)
    model_dir = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    watching = traitlets.Bool(False).tag(sync=True)
    evaluate_clicks = traitlets.Int(0).tag(sync=True)
    evaluate_all_clicks = traitlets.Int(0).tag(sync=True)
    refresh_clicks = traitlets.Int(0).tag(sync=True)

    def __init__(self, estimator, input_fn, steps: Optional[int] = None, name: Optional[str] = None,
                 poll_secs: float = 2.0, hooks=None):
        super().__init__()
        from ..estimator.tpu_estimator import TPUEstimator

        if not isinstance(estimator, TPUEstimator):
            raise TypeError(f"expected a tpu_nb.TPUEstimator, got {type(estimator).__name__}.")
        if not callable(input_fn):
            raise TypeError(f"input_fn must be a function input_fn(params), got {type(input_fn).__name__}.")
        if not poll_secs > 0:
            raise ValueError(f"poll_secs must be positive, got {poll_secs!r}.")
        self.estimator, self.input_fn = estimator, input_fn
        self.model_dir = str(estimator.model_dir)
        self.eval_steps, self.name, self.hooks, self.poll_secs = steps, name, hooks, poll_secs
        self._results: Dict[str, dict] = {}  # checkpoint path -> row
        self._eval_lock = threading.Lock()  # one evaluation at a time, whoever asks
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._worker: Optional[threading.Thread] = None
        self._stop_after: Optional[int] = None
        self._display = None
        self.refresh()
        self.observe(lambda _: self.evaluate("selected", block=False), names="evaluate_clicks")
        self.observe(lambda _: self.evaluate("all", block=False), names="evaluate_all_clicks")
        self.observe(lambda _: self.refresh(), names="refresh_clicks")
        self.observe(self._watching_changed, names="watching")

    # -- checkpoints -------------------------------------------------------------------------------
    def refresh(self) -> List[Tuple[int, str]]:
        """Re-reads the checkpoint list of ``model_dir``; returns (step, path) pairs."""
        found = list_checkpoints(self.estimator.model_dir)
        self.checkpoints = [{"step": step, "name": os.path.basename(path), "evaluated": path in self._results}
                            for step, path in found]
        return found

    def _resolve(self, which) -> List[str]:
        found = dict(self.refresh())
        if which == "all":
            return [found[s] for s in sorted(found)]
        if which == "latest":
            return [found[max(found)]] if found else []
        steps = self.selected if which == "selected" else [which] if isinstance(which, int) else list(which)
        missing = [s for s in steps if s not in found]
        if missing:
            raise ValueError(f"No checkpoint for step(s) {missing} in {self.estimator.model_dir}; "
                             f"available: {sorted(found)}.")
        return [found[s] for s in sorted(set(steps))]

    # -- evaluating --------------------------------------------------------------------------------
    def evaluate(self, which: Union[str, int, Sequence[int]] = "selected", block: bool = True):
        """Evaluates checkpoints: 'selected', 'all', 'latest', a step or a list of steps.

        ``block=False`` (the buttons) runs in a thread; errors then show in ``error``. Returns the
        results DataFrame when blocking.
        """
        if not block:
            def work():
                try:
                    self._evaluate_paths(self._resolve(which))
                except Exception as e:  # shown in the widget; a button must not raise in the kernel
                    self.error = f"{type(e).__name__}: {e}"
            self._worker = threading.Thread(target=work, name="tpu_nb-eval-dashboard", daemon=True)
            self._worker.start()
            return None
        self._evaluate_paths(self._resolve(which), raise_errors=True)
        return self.frame

    def _evaluate_paths(self, paths: List[str], raise_errors: bool = False) -> None:
        for path in paths:
            self._evaluate_one(path, raise_errors)
        self.status = "watching" if self.watching else "idle"
        self._update_display()

    def _evaluate_one(self, path: str, raise_errors: bool = False) -> Optional[dict]:
        with self._eval_lock:
            self.status = f"evaluating {os.path.basename(path)}"
            try:
                results = self.estimator.evaluate(self.input_fn, steps=self.eval_steps, hooks=self.hooks,
                                                  checkpoint_path=path, name=self.name)
            except Exception as e:
                if raise_errors:
                    raise
                self.error = f"{os.path.basename(path)}: {type(e).__name__}: {e}"
                self._status_after_evaluation()
                return None
            match = _STEP.search(path)
            row = {"step": int(results.get("global_step", match.group(1) if match else -1))}
            for key, value in results.items():
                if key != "global_step":
                    row[key] = _scalar(value)
            row["checkpoint"] = os.path.basename(path)
            self._results[path] = row
            self._publish()
            self._status_after_evaluation()
            self._overlay(row["step"], results)
            return row

    def _status_after_evaluation(self) -> None:
        """What the dashboard does now, not what it last did: once a row is in the table, the status no
        longer says "evaluating" it (a watcher then waits for the next checkpoint)."""
        self.status = "watching" if self.watching and not self._stop.is_set() else "idle"

    def _overlay(self, step: int, results: dict) -> None:
        """Adds the results to the latest training dashboard of this model_dir (its eval points)."""
        from . import runs

        trained = runs.latest_train_handle(self.estimator)
        if trained is not None and step >= 0:
            trained.add_eval(step, results)

    def _publish(self) -> None:
        rows = sorted(self._results.values(), key=lambda r: r["step"])
        names = []
        for row in rows:
            names += [k for k in row if k not in ("step", "checkpoint") and k not in names]
        names.sort(key=lambda n: (n != "loss", n))
        self.columns = names
        self.best = best_checkpoint(rows, names)
        self.rows = rows
        self.checkpoints = [dict(c, evaluated=any(r["checkpoint"] == c["name"] for r in rows))
                            for c in self.checkpoints]

    @property
    def frame(self):
        """Results as a DataFrame: one row per evaluated checkpoint (step, loss, metrics, checkpoint)."""
        import pandas as pd

        columns = ["step"] + list(self.columns) + ["checkpoint"]
        return pd.DataFrame(list(self.rows), columns=columns).reset_index(drop=True)

    # -- continuous evaluation ---------------------------------------------------------------------
    def watch(self, poll_secs: Optional[float] = None, stop_after_step: Optional[int] = None) -> "EvalDashboard":
        """Evaluates each new checkpoint as it appears (checked every ``poll_secs``), in a thread.

        Stops on ``stop()`` (or ``watching = False``), or by itself once a checkpoint at or past
        ``stop_after_step`` has been evaluated. Checkpoints already evaluated are skipped.
        """
        if poll_secs is not None:
            if not poll_secs > 0:
                raise ValueError(f"poll_secs must be positive, got {poll_secs!r}.")
            self.poll_secs = poll_secs
        self._stop_after = stop_after_step
        self._start_watcher()
        if not self.watching:
            self.watching = True  # the observer sees a running watcher and does nothing more
        return self

    def _start_watcher(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch_loop, name="tpu_nb-eval-watch", daemon=True)
        self._watcher.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stops continuous evaluation after the evaluation in progress (if any); waits for it."""
        self._stop.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)
        if self.watching:
            self.watching = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the watcher (or a button's evaluation) ends; True if nothing is running."""
        for thread in (self._watcher, self._worker):
            if thread is not None:
                thread.join(timeout)
        return not any(t is not None and t.is_alive() for t in (self._watcher, self._worker))

    def _watching_changed(self, change) -> None:
        if change["new"]:
            self._start_watcher()  # the Watch toggle; keeps options given to watch()
        else:
            self._stop.set()  # no join here: this may run in the kernel's comm handler

    def _watch_loop(self) -> None:
        self.status = "watching"
        try:
            while not self._stop.is_set():
                try:
                    fresh = [p for _, p in self.refresh() if p not in self._results]
                except Exception as e:  # e.g. model_dir briefly unreadable: try again at the next poll
                    self.error = f"{type(e).__name__}: {e}"
                    fresh = []
                for path in fresh:
                    if self._stop.is_set():
                        break
                    row = self._evaluate_one(path)
                    if row is not None and self._stop_after is not None and row["step"] >= self._stop_after:
                        self._stop.set()
                self._update_display()
                self._stop.wait(self.poll_secs)
        finally:
            self.status = "idle"
            if self.watching:
                self.watching = False
            self._update_display()

    # -- display -----------------------------------------------------------------------------------
    def show(self) -> "EvalDashboard":
        """Displays the dashboard in the current cell (once); returns self."""
        from IPython.display import display

        if self._display is None:
            self._display = display(self, display_id=True)
        return self

    def _update_display(self) -> None:
        if self._display is not None:
            self._display.update(self)  # refreshes the PNG/HTML fallback with the latest results

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"tpu_nb evaluation: {len(self.rows)} checkpoint(s) evaluated, {self.status}"
        data["text/html"] = self._html()
        png = self.render_png()
        if png is not None:
            data["image/png"] = base64.b64encode(png).decode("ascii")
        return data, metadata

    def _html(self) -> str:
        head = (f"<b>tpu_nb evaluation</b> of {html.escape(self.estimator.model_dir)}: "
                f"{len(self.rows)} of {len(self.checkpoints)} checkpoint(s) evaluated")
        error = f"<div style='color:#c62828'>{html.escape(self.error)}</div>" if self.error else ""
        return f"<div class='tpu-nb-eval'>{head}{error}{self._table_html()}</div>"

    def _table_html(self) -> str:
        """The results with each column's numbers to the same decimals, right-aligned, the best marked."""
        rows, columns, best = list(self.rows), list(self.columns), dict(self.best)
        if not rows:
            return ""
        decimals = {c: column_decimals([r.get(c) for r in rows]) for c in columns}
        cell = "style='text-align:right;padding:1px 12px 1px 0;font-variant-numeric:tabular-nums'"
        head = "".join(f"<th {cell}>{html.escape(c)}</th>" for c in ["step", *columns]) + "<th>checkpoint</th>"
        body = []
        for r in rows:
            values = "".join(f"<td {cell}>{'—' if r.get(c) is None else f'{r[c]:,.{decimals[c]}f}'}</td>" for c in columns)
            is_best = best.get("step") == r["step"]
            mark = f" ★ best {html.escape(best['metric'])}" if is_best else ""
            style = " style='font-weight:600'" if is_best else ""
            body.append(f"<tr{style}><td {cell}>{r['step']:,}</td>{values}<td>{html.escape(r['checkpoint'])}{mark}</td></tr>")
        return f"<table class='tpu-nb-eval-table'><tr>{head}</tr>{''.join(body)}</table>"

    def render_png(self, width_px: int = 900) -> Optional[bytes]:
        """Metric-vs-step charts as PNG bytes (None before any result)."""
        rows, names = list(self.rows), list(self.columns)[:_MAX_PANELS]
        if not rows or not names:
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cols = min(3, len(names))
        nrows = -(-len(names) // cols)
        fig = Figure(figsize=(width_px / 100, 2.4 * nrows + 0.4), dpi=100)
        FigureCanvasAgg(fig)
        from ._static import _step_axis

        steps = [r["step"] for r in rows]
        best = dict(self.best)
        for i, name in enumerate(names):
            ax = fig.add_subplot(nrows, cols, i + 1)
            values = [np.nan if r.get(name) is None else r[name] for r in rows]
            # The training dashboard's look: its first colour, dots for evaluations, the same step axis.
            ax.plot(steps, values, "o-", markersize=3, color="#1f77b4", label=f"eval {name}")
            if best.get("metric") == name:
                ax.plot([best["step"]], [best["value"]], "*", markersize=10, color="#e8710a", label="best")
                ax.legend(fontsize=7)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            _step_axis(ax)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()


def evaluate_dashboard(estimator, input_fn, steps: Optional[int] = None, which: str = "all",
                       watch: bool = False, poll_secs: float = 2.0, stop_after_step: Optional[int] = None,
                       show: bool = True) -> EvalDashboard:
    """What ``%tpu_evaluate --dashboard`` does: show an EvalDashboard and evaluate ``which``
    ('all', 'latest', 'none'), or with ``watch`` evaluate each new checkpoint in the background.

    Example::

        dash = evaluate_dashboard(est, eval_input_fn, watch=True)
    """
    dash = EvalDashboard(estimator, input_fn, steps=steps, poll_secs=poll_secs)
    if show:
        dash.show()
    if watch:
        dash.watch(stop_after_step=stop_after_step)
    elif which != "none":
        dash.evaluate(which)
    return dash
