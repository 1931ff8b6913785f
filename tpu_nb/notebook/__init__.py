"""tpu_nb's notebook toolkit: ``%tpu_train`` and friends, run handles and the live dashboard.

Load the magics with ``%load_ext tpu_nb``; every magic has a plain Python twin here::

    from tpu_nb import notebook
    run = notebook.train(est, train_input_fn, steps=2000)   # same as %tpu_train est train_input_fn --steps 2000
    run.state, run.history

The dashboard needs the ``notebooks`` extras (anywidget, ipywidgets, matplotlib, IPython);
the history store and the handles need only numpy and pandas.

The top layer: it may import every engine layer and learns what a run does from ``tpu_nb.events``;
no engine module imports it (docs/architecture.md).
"""

import importlib

from .handles import RunHandle
from .history import RunHistory
from .runs import evaluate, export, latest_train_handle, predict, train

# Widgets import anywidget: loaded on first use, so handles and history work without it.
_WIDGETS = {
    "Connection": ".connection_widget", "ConnectionWidget": ".connection_widget", "connect": ".connection_widget",
    "BatchSizeWidget": ".batch_widget",
    "EvalDashboard": ".eval_dashboard", "evaluate_dashboard": ".eval_dashboard", "list_checkpoints": ".eval_dashboard",
    # The connection that %tpu_connect or the widget chose (the README names it as tpu_nb.notebook's).
    "current_connection": ".magics_extra",
}


def __getattr__(name):
    if name in _WIDGETS:
        return getattr(importlib.import_module(_WIDGETS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RunHandle", "RunHistory", "evaluate", "export", "latest_train_handle", "predict", "train",
           *_WIDGETS]
