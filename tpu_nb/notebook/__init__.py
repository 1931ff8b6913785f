"""tpu_nb's notebook toolkit: ``%tpu_train`` and friends, run handles and the live dashboard.

Load the magics with ``%load_ext tpu_nb``; every magic has a plain Python twin here::

    from tpu_nb import notebook
    run = notebook.train(est, train_input_fn, steps=2000)   # same as %tpu_train est train_input_fn --steps 2000
    run.state, run.history

The dashboard needs the ``notebooks`` extras (anywidget, ipywidgets, matplotlib, IPython);
the history store and the handles need only numpy and pandas.
"""

from .handles import RunHandle
from .history import RunHistory
from .runs import evaluate, export, latest_train_handle, predict, predictions_frame, train

__all__ = ["RunHandle", "RunHistory", "evaluate", "export", "latest_train_handle", "predict",
           "predictions_frame", "train"]
