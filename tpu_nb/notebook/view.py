"""One immutable view of a run, computed once per update tick and shown everywhere the run is shown.

The training dashboard's header and legends (an anywidget in the cell) and the JupyterLab
extension's runs panel and status bar (fed by :mod:`.lab_bridge`) used to read a run's step, state
and loss each on its own clock, and showed different steps at the same moment (header 68,600,
legend 66,350, panel and bar 69,050). Now a run's :class:`RunView` is made by one function,
:func:`run_view`, at one place per tick (``RunHandle.publish_view``: the dashboard's update, or the
lab bridge's ticker for a run without a dashboard), and every consumer of that tick sends the same
object: the dashboard as its status, the bridge as the run's entry. Each view carries ``seq``, its
number within the run, so a front end (and a test) can tell which tick it shows.

Steps are counted one way everywhere: from step 0 to the run's target (``fraction`` is
``step / target_step``), as the header writes "step 68,600 / 100,000"; a resumed run's bar
therefore starts where the header's step does, not at 0%.

``loss`` is the raw training loss of the loop that ended at ``step``; smoothing is a view setting of
the dashboard (its slider), and a smoothed line or value is always labelled "smoothed <weight>"
where it is shown. ``loss_label`` names the value so a front end never shows it unlabelled.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Optional

#: Phases in which a run may still move on (its views keep coming).
LIVE_PHASES = ("starting", "running", "stopping")


@dataclasses.dataclass(frozen=True)
class RunView:
    """What every place that shows a run shows, at one tick. Immutable; ``as_dict()`` is its wire form."""

    seq: int  # this view's number within the run: 1, 2, ... (a later view has a larger one)
    run_id: Optional[int]
    kind: str  # 'train', 'evaluate', ...
    name: Optional[str]  # the notebook's name for the run (``-o VAR``), if any
    phase: str  # 'starting', 'running', 'stopping', 'stopped', 'failed', 'done'
    state: str  # for people: 'stopped at step 800', 'failed: ValueError: ...'
    step: Optional[int]  # the global step, counted from 0
    start_step: Optional[int]  # where this run began (a resumed run: the checkpoint's step)
    target_step: Optional[int]
    fraction: Optional[float]  # step / target_step, in [0, 1]: the same count as the step
    loss: Optional[float]  # raw training loss at ``step`` (never smoothed)
    steps_per_sec: Optional[float]
    examples_per_sec: Optional[float]
    eta_seconds: Optional[float]
    elapsed_seconds: Optional[float]
    backend: Optional[str]
    model_dir: Optional[str]
    loss_label: str = "loss (raw)"

    @property
    def live(self) -> bool:
        return self.phase in LIVE_PHASES

    @property
    def display_name(self) -> str:
        """'run · train' (the -o name), else 'train · <model_dir's last folder>'."""
        if self.name:
            return f"{self.name} · {self.kind}"
        where = os.path.basename((self.model_dir or "").rstrip(os.sep)) or (self.model_dir or "")
        return f"{self.kind} · {where}" if where else self.kind

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def finite(value) -> Optional[float]:
    """``value`` as a float, or None when it is missing, NaN or infinite (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def step_fraction(step: Optional[int], target_step: Optional[int]) -> Optional[float]:
    """Progress counted as the step is: ``step / target_step`` from step 0, clipped to [0, 1]."""
    if step is None or target_step is None:
        return None
    if target_step <= 0:
        return 1.0
    return min(1.0, max(0.0, step / target_step))


def make_view(seq: int, run_id: Optional[int], kind: str, name: Optional[str], phase: str, state: str,
              progress, loss: Optional[float], backend: Optional[str], model_dir: Optional[str]) -> RunView:
    """A view from a :class:`._progress.Progress` and the run's other facts (no side effects)."""
    elapsed = None
    if progress.started_at is not None and progress.last_time is not None:
        elapsed = finite(progress.last_time - progress.started_at)
    step = progress.step
    return RunView(seq=seq, run_id=run_id, kind=kind, name=name, phase=phase, state=state,
                   step=None if step is None else int(step),
                   start_step=None if progress.start_step is None else int(progress.start_step),
                   target_step=None if progress.target_step is None else int(progress.target_step),
                   fraction=step_fraction(step, progress.target_step), loss=finite(loss),
                   steps_per_sec=finite(progress.steps_per_sec), examples_per_sec=finite(progress.examples_per_sec),
                   eta_seconds=finite(progress.eta_seconds), elapsed_seconds=elapsed,
                   backend=backend, model_dir=model_dir)


def run_view(handle, seq: int) -> RunView:
    """The view of ``handle``'s run now: a function of the handle's state alone.

    The step and the loss come from the same finished loop (the one the handle's progress last
    took in), so the header's step and loss, the legend and the panel always pair them alike.
    """
    progress, loop = handle.progress_and_loop()
    loss = loop.loss if loop is not None and loop.global_step == progress.step else handle.store.last("loss")
    started = handle.started
    model_dir = started.model_dir if started is not None else (getattr(handle.estimator, "model_dir", None) or None)
    return make_view(seq, handle.run_id, handle.kind, handle.name, handle.phase, handle.state, progress, loss,
                     started.backend if started is not None else None, model_dir)
