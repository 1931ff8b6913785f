"""The plain-Python side of the magics: train / evaluate / predict / export, each returning a RunHandle.

Example::

    from tpu_nb import notebook
    run = notebook.train(est, train_input_fn, steps=2000)        # live dashboard in this cell
    notebook.evaluate(est, eval_input_fn).result                 # {'loss': ..., 'accuracy': ...}
    frame = notebook.predict(est, predict_input_fn).result       # one row per example
    notebook.export(est, serving_input_receiver_fn, "/tmp/export").result   # the SavedModel's path
"""

from __future__ import annotations

import os
import threading
from typing import Optional

from .handles import STOPPED, RunHandle, TrainingInterrupted, stopped_message

# The latest training handle per model_dir: evaluations are overlaid on it, and a stopped run
# is resumed to its own target when the same command runs again.
_latest_train = {}
_latest_lock = threading.Lock()


def _check_estimator(estimator):
    from ..estimator.tpu_estimator import TPUEstimator

    if not isinstance(estimator, TPUEstimator):
        raise TypeError(f"expected a tpu_nb.TPUEstimator, got {type(estimator).__name__}.")


def _model_dir_key(estimator) -> str:
    return os.path.abspath(estimator.model_dir)


def latest_train_handle(estimator) -> Optional[RunHandle]:
    """The most recent ``train`` handle for ``estimator``'s model_dir in this session (or None)."""
    with _latest_lock:
        return _latest_train.get(_model_dir_key(estimator))


def _resume_target(estimator, steps, max_steps):
    """max_steps that finishes a stopped run, when the same ``steps=`` command runs again."""
    if steps is None or max_steps is not None:
        return None
    previous = latest_train_handle(estimator)
    if previous is None or previous.phase != STOPPED or getattr(previous, "_request", None) != ("steps", steps):
        return None
    target = previous.target_step
    if target is None or previous.stopped_step is None:
        return None
    from ..run.training import checkpointed_step

    at = checkpointed_step(estimator.model_dir)
    if at != previous.stopped_step or at >= target:
        return None  # the model_dir moved on since (or the run had reached its end)
    return target


def _continue_history(estimator, handle: RunHandle) -> None:
    """The new run's charts begin with the model_dir's earlier runs in this session, up to the
    checkpoint it starts from (a resumed run's curves then start at step 0, not where it resumed)."""
    previous = latest_train_handle(estimator)
    if previous is None or not previous.finished:
        return
    from ..run.training import checkpointed_step

    at = checkpointed_step(estimator.model_dir)
    if at > 0:
        handle.store.continue_from(previous.store, at)


def _want_dashboard(dashboard) -> bool:
    if dashboard is not None:
        return bool(dashboard)
    try:  # default: a dashboard inside IPython, none in scripts
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def train(estimator, input_fn, steps: Optional[int] = None, max_steps: Optional[int] = None, hooks=None,
          background: bool = False, dashboard: Optional[bool] = None, resume: bool = True,
          name: Optional[str] = None) -> RunHandle:
    """Trains with a live dashboard; returns the :class:`RunHandle`.

    ``background=True`` trains in a thread and returns at once (the dashboard stays in this
    cell; ``handle.stop()``/``wait()``). In the foreground, Ctrl-C or Stop ends the run at the
    next loop boundary with a checkpoint and raises ``TrainingInterrupted`` (a
    ``KeyboardInterrupt``; its ``.handle`` is the run's), so queued cells do not run. With
    ``resume`` (default), running the same ``steps=N`` command after a stop continues to the
    stopped run's target instead of training N more steps. ``name`` is what the runs panel calls the
    run (the magics pass their ``-o VAR``).

    Example::

        run = train(est, train_input_fn, steps=2000)
        run.state, run.history.tail()
    """
    _check_estimator(estimator)
    handle = RunHandle("train", estimator, name=name)
    handle._request = ("steps", steps) if steps is not None else ("max_steps", max_steps)
    if resume:
        target = _resume_target(estimator, steps, max_steps)
        if target is not None:
            previous = latest_train_handle(estimator)
            handle.note = f"resuming the stopped run from step {previous.stopped_step} to step {target}"
            steps, max_steps = None, target
    _continue_history(estimator, handle)
    with _latest_lock:
        _latest_train[_model_dir_key(estimator)] = handle
    if _want_dashboard(dashboard):
        from .dashboard import Dashboard

        handle.dashboard = Dashboard(handle).show()
    handle._run(lambda: estimator.train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps), background)
    if not background and handle.phase == STOPPED:
        # Stop (the dashboard's button, the lab panel) ends the cell as Ctrl-C does: an error, so that
        # Run All does not go on with the cells queued after a run the user stopped.
        raise TrainingInterrupted(stopped_message(handle.stopped_step), handle)
    return handle


def evaluate(estimator, input_fn, steps: Optional[int] = None, checkpoint_path: Optional[str] = None,
             hooks=None, name: Optional[str] = None, run_name: Optional[str] = None) -> RunHandle:
    """Evaluates; ``handle.result`` is the metrics dict. The results are also overlaid on the
    latest training dashboard of the same model_dir. ``name`` is the evaluation's name (as in
    ``TPUEstimator.evaluate``); ``run_name`` what the runs panel calls the run.

    Example::

        evaluate(est, eval_input_fn).result["accuracy"]
    """
    _check_estimator(estimator)
    handle = RunHandle("evaluate", estimator, name=run_name)
    handle._run(lambda: estimator.evaluate(input_fn, steps=steps, hooks=hooks, checkpoint_path=checkpoint_path,
                                           name=name), background=False)
    trained = latest_train_handle(estimator)
    if trained is not None and isinstance(handle.result, dict) and "global_step" in handle.result:
        trained.add_eval(int(handle.result["global_step"]), handle.result)
    return handle


def predict(estimator, input_fn, predict_keys=None, checkpoint_path: Optional[str] = None, hooks=None,
            frame=None, name: Optional[str] = None) -> RunHandle:
    """Predicts; ``handle.result`` is a DataFrame with one row per example (``tpu_nb.predict_frame``).

    ``frame`` (a no-argument callable returning the DataFrame) replaces the default conversion.

    Example::

        predict(est, predict_input_fn).result.head()
    """
    from ..estimator.frames import predict_frame

    _check_estimator(estimator)
    handle = RunHandle("predict", estimator, name=name)
    if frame is None:
        def frame():
            return predict_frame(estimator, input_fn, predict_keys=predict_keys, hooks=hooks,
                                 checkpoint_path=checkpoint_path)
    return handle._run(frame, background=False)


def export(estimator, serving_input_receiver_fn, export_dir_base: str, checkpoint_path: Optional[str] = None,
           name: Optional[str] = None) -> RunHandle:
    """Exports a SavedModel under ``export_dir_base``; ``handle.result`` is its path (str).

    Example::

        export(est, serving_input_receiver_fn, "/tmp/export").result
    """
    _check_estimator(estimator)
    handle = RunHandle("export", estimator, name=name)

    def work():
        path = estimator.export_saved_model(os.fspath(export_dir_base), serving_input_receiver_fn,
                                            checkpoint_path=checkpoint_path)
        return path.decode() if isinstance(path, bytes) else path

    return handle._run(work, background=False)
