"""``train_and_evaluate``, ``TrainSpec`` and ``EvalSpec``: train, evaluating each new checkpoint as it comes.

The original's semantics, locally:

* ``estimator.train(train_spec.input_fn, max_steps=train_spec.max_steps, hooks=train_spec.hooks)`` runs once;
* after each checkpoint it saves (``RunConfig.save_checkpoints_steps`` / ``_secs``), except the first one
  (the untrained model), the checkpoint is evaluated with ``eval_spec`` (``steps``, ``name``, ``hooks``),
  at most once every ``eval_spec.throttle_secs`` seconds; the last checkpoint is always evaluated;
* after each evaluation the exporters of ``eval_spec`` run into ``<model_dir>/export/<exporter.name>``,
  with ``is_the_final_export`` true once the evaluated step reaches ``train_spec.max_steps``;
* it returns ``(metrics of the last evaluation, the last exporters' results)``.

With ``TF_CONFIG`` naming this task ``evaluator``, it evaluates the checkpoints other tasks write into
``model_dir`` instead (after ``start_delay_secs``, then every ``throttle_secs``), until it has evaluated the
step ``max_steps``. A ``chief``/``master``/``worker`` task only trains, as in the original.
Evaluations run through ``estimator.evaluate``, so they appear wherever ``evaluate()``'s do (logs, event
files, the notebook dashboard).
"""

from __future__ import annotations

import collections
import logging
import os
import time

import tensorflow as tf

from ..contract.config import read_tf_config
from .exporters import Exporter

_log = logging.getLogger("tpu_nb")


def _check_hooks(kind, hooks, base):
    hooks = tuple(hooks or ())
    for hook in hooks:
        if not isinstance(hook, base):
            raise TypeError(f"{kind} must be a list of {base.__module__}.{base.__name__} instances (e.g. "
                            f"tf.compat.v1.train.StopAtStepHook), got {hook!r}.")
    return hooks


def _check_positive_int_or_none(kind, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"Must specify {kind} > 0, given: {value!r} (a positive int, or None).")


class TrainSpec(collections.namedtuple("TrainSpec", ["input_fn", "max_steps", "hooks", "saving_listeners"])):
    """What ``train_and_evaluate`` trains: ``input_fn``, up to ``max_steps`` (None: until the input ends).

    Example::

        train_spec = TrainSpec(train_input_fn, max_steps=1000, hooks=[my_hook])
    """

    def __new__(cls, input_fn, max_steps=None, hooks=None, saving_listeners=None):
        if not callable(input_fn):
            raise TypeError(f"`input_fn` must be callable, given: {input_fn!r}.")
        _check_positive_int_or_none("max_steps", max_steps)
        hooks = _check_hooks("TrainSpec.hooks", hooks, tf.compat.v1.train.SessionRunHook)
        listeners = _check_hooks("TrainSpec.saving_listeners", saving_listeners,
                                 tf.compat.v1.train.CheckpointSaverListener)
        return super().__new__(cls, input_fn, max_steps, hooks, listeners)


def _exporters_tuple(exporters):
    if exporters is None:
        return ()
    if isinstance(exporters, Exporter):
        exporters = (exporters,)
    exporters = tuple(exporters)
    names = set()
    for exporter in exporters:
        if not isinstance(exporter, Exporter):
            raise TypeError(f"`exporters` must be an Exporter (LatestExporter, BestExporter, FinalExporter...) "
                            f"or a list of them, given: {exporter!r}.")
        if not exporter.name or not exporter.name.strip():
            raise ValueError(f"An Exporter cannot have a name that is None or empty: {exporter!r}.")
        if exporter.name in names:
            raise ValueError(f"`exporters` must have unique names; {exporter.name!r} is used twice: each exporter "
                             "writes to <model_dir>/export/<name>.")
        names.add(exporter.name)
    return exporters


class EvalSpec(collections.namedtuple("EvalSpec", ["input_fn", "steps", "name", "hooks", "exporters",
                                                   "start_delay_secs", "throttle_secs"])):
    """How ``train_and_evaluate`` evaluates: ``steps`` batches of ``input_fn`` (None: until the input ends).

    Example::

        eval_spec = EvalSpec(eval_input_fn, steps=50, throttle_secs=60,
                             exporters=LatestExporter('latest', serving_input_receiver_fn))
    """

    def __new__(cls, input_fn, steps=100, name=None, hooks=None, exporters=None, start_delay_secs=120,
                throttle_secs=600):
        if not callable(input_fn):
            raise TypeError(f"`input_fn` must be callable, given: {input_fn!r}.")
        _check_positive_int_or_none("steps", steps)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be string, given: {name!r}.")
        hooks = _check_hooks("EvalSpec.hooks", hooks, tf.compat.v1.train.SessionRunHook)
        exporters = _exporters_tuple(exporters)
        for kind, value in (("start_delay_secs", start_delay_secs), ("throttle_secs", throttle_secs)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Must specify {kind} >= 0, given: {value!r}.")
        return super().__new__(cls, input_fn, steps, name, hooks, exporters, start_delay_secs, throttle_secs)


class _Evaluator:
    """Evaluates the newest checkpoint (once per checkpoint) and runs the exporters after it."""

    def __init__(self, estimator, eval_spec, max_steps):
        self._estimator = estimator
        self._spec = eval_spec
        self._max_steps = max_steps
        self._previous = None
        self.metrics, self.export_results = None, []
        self.final_evaluated = False

    def evaluate_and_export(self) -> bool:
        """True when it evaluated a checkpoint it had not evaluated before."""
        checkpoint = self._estimator.latest_checkpoint()
        if not checkpoint or checkpoint == self._previous:
            return False
        metrics = self._estimator.evaluate(self._spec.input_fn, steps=self._spec.steps, hooks=list(self._spec.hooks),
                                           checkpoint_path=checkpoint, name=self._spec.name)
        final = bool(self._max_steps) and metrics["global_step"] >= self._max_steps
        base = os.path.join(self._estimator.model_dir, "export")
        self.export_results = [
            exporter.export(estimator=self._estimator, export_path=os.path.join(base, exporter.name),
                            checkpoint_path=checkpoint, eval_result=metrics, is_the_final_export=final)
            for exporter in self._spec.exporters]
        self.metrics, self._previous = metrics, checkpoint
        self.final_evaluated = self.final_evaluated or final
        return True


class _EvaluateNewCheckpoints(tf.compat.v1.train.CheckpointSaverListener):
    """Evaluates after checkpoints are saved, at most every ``throttle_secs``, and after the last one."""

    def __init__(self, evaluator, throttle_secs):
        self._evaluator = evaluator
        self._throttle_secs = throttle_secs

    def begin(self):
        self._timer = tf.compat.v1.train.SecondOrStepTimer(every_secs=self._throttle_secs)
        self._first = True

    def after_save(self, session, global_step_value):
        if self._first:  # the checkpoint written before the first step: nothing trained yet
            self._first = False
            return
        if self._timer.should_trigger_for_step(global_step_value):
            self._evaluate(global_step_value)
        else:
            _log.info("Skipping the evaluation of the checkpoint at step %d: the last one was less than "
                      "throttle_secs=%s seconds ago.", global_step_value, self._throttle_secs)

    def end(self, session, global_step_value):
        if global_step_value != self._timer.last_triggered_step():
            self._evaluate(global_step_value)

    def _evaluate(self, global_step_value):
        self._timer.update_last_triggered_step(global_step_value)
        self._evaluator.evaluate_and_export()


def _check_arguments(estimator, train_spec, eval_spec):
    from .tpu_estimator import TPUEstimator

    if not isinstance(estimator, TPUEstimator):
        raise TypeError(f"`estimator` must be a tpu_nb Estimator or TPUEstimator, given {estimator!r}.")
    if not isinstance(train_spec, TrainSpec):
        raise TypeError(f"`train_spec` must have type `tf.estimator.TrainSpec` (tpu_nb.TrainSpec). Got: "
                        f"{type(train_spec)}")
    if not isinstance(eval_spec, EvalSpec):
        raise TypeError(f"`eval_spec` must have type `tf.estimator.EvalSpec` (tpu_nb.EvalSpec). Got: "
                        f"{type(eval_spec)}")


def train_and_evaluate(estimator, train_spec, eval_spec):
    """Trains ``estimator`` per ``train_spec``, evaluating and exporting per ``eval_spec`` as checkpoints come.

    Returns ``(metrics, export_results)`` of the last evaluation (``(None, [])`` if none ran)::

        est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=d, save_checkpoints_steps=100),
                                  use_tpu=False, train_batch_size=32, eval_batch_size=32)
        metrics, exports = train_and_evaluate(
            est, TrainSpec(train_input_fn, max_steps=1000),
            EvalSpec(eval_input_fn, steps=10, throttle_secs=0,
                     exporters=LatestExporter('latest', serving_input_receiver_fn, exports_to_keep=2)))
    """
    _check_arguments(estimator, train_spec, eval_spec)
    task_type = read_tf_config().get("task", {}).get("type")
    if task_type == "evaluator":
        return _run_evaluator(estimator, train_spec, eval_spec)
    if task_type == "ps":
        raise ValueError("TF_CONFIG names this task 'ps': tpu_nb has no parameter servers. Run chief and worker "
                         "tasks (and optionally an evaluator), or unset TF_CONFIG to train and evaluate locally.")
    evaluator = _Evaluator(estimator, eval_spec, train_spec.max_steps)
    listeners = list(train_spec.saving_listeners)
    if task_type is None:
        listeners.append(_EvaluateNewCheckpoints(evaluator, eval_spec.throttle_secs))
    # In a TF_CONFIG job, the chief and the workers only train; the evaluator task evaluates.
    estimator.train(train_spec.input_fn, max_steps=train_spec.max_steps, hooks=list(train_spec.hooks),
                    saving_listeners=listeners)
    return evaluator.metrics, evaluator.export_results


def _run_evaluator(estimator, train_spec, eval_spec, sleep=time.sleep):
    """The evaluator task: evaluates each new checkpoint in model_dir until the step max_steps is evaluated."""
    if not train_spec.max_steps:
        _log.warning("The evaluator task evaluates new checkpoints until one reaches TrainSpec.max_steps; "
                     "with max_steps=None it runs until it is stopped.")
    sleep(eval_spec.start_delay_secs)
    evaluator = _Evaluator(estimator, eval_spec, train_spec.max_steps)
    while not evaluator.final_evaluated:
        started = time.time()
        if not evaluator.evaluate_and_export():
            _log.info("No new checkpoint in %s to evaluate yet.", estimator.model_dir)
        if evaluator.final_evaluated:
            break
        sleep(max(eval_spec.throttle_secs - (time.time() - started), 1))
    return evaluator.metrics, evaluator.export_results
