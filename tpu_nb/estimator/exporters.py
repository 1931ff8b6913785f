"""Exporters that ``train_and_evaluate`` runs after each evaluation: ``LatestExporter``, ``BestExporter``,
``FinalExporter``, and their base class ``Exporter``.

Each writes SavedModels with ``estimator.export_saved_model`` into ``<model_dir>/export/<name>/<timestamp>``.
Semantics of the original's exporters:

* ``LatestExporter`` exports after every evaluation and keeps the newest ``exports_to_keep``;
* ``BestExporter`` exports when ``compare_fn(best_eval_result=..., current_eval_result=...)`` says the new
  evaluation is better (default: smaller ``loss``). Its first export in a process always happens; the best
  result so far is read back from the evaluation event files, so a restarted job keeps comparing against
  the best of the earlier runs;
* ``FinalExporter`` exports once, after the evaluation of the last training step.
"""

from __future__ import annotations

import abc
import inspect
import logging
import os
import shutil

import tensorflow as tf

_log = logging.getLogger("tpu_nb")


class Exporter(abc.ABC):
    """What ``EvalSpec(exporters=...)`` accepts: a ``name`` and an ``export`` method.

    Subclass it for a custom export step::

        class CopyCheckpoint(Exporter):
            name = 'copy'

            def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
                ...  # return something describing the export, or None
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The directory under ``<model_dir>/export`` this exporter writes to."""

    @abc.abstractmethod
    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        """Exports after an evaluation; returns the export's path or None when it did not export."""


def _check_exports_to_keep(exports_to_keep):
    if exports_to_keep is not None and (isinstance(exports_to_keep, bool) or not isinstance(exports_to_keep, int)
                                        or exports_to_keep <= 0):
        raise ValueError(f"`exports_to_keep`, if provided, must be a positive number. Got {exports_to_keep!r}; "
                         "pass a positive int, or None to keep every export.")


class _SavedModelExporting:
    """The export itself, shared by the three exporters."""

    def __init__(self, kind, name, serving_input_receiver_fn, assets_extra, as_text):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind}: name must be a non-empty string (the export directory), got {name!r}.")
        if not callable(serving_input_receiver_fn):
            raise ValueError(f"{kind}: serving_input_receiver_fn must be a function returning a "
                             f"ServingInputReceiver, got {serving_input_receiver_fn!r}.")
        self.name = name
        self._receiver_fn = serving_input_receiver_fn
        self._assets_extra = assets_extra
        self._as_text = as_text

    def export(self, estimator, export_path, checkpoint_path):
        return estimator.export_saved_model(export_path, self._receiver_fn, assets_extra=self._assets_extra,
                                            as_text=self._as_text, checkpoint_path=checkpoint_path)


def keep_newest_exports(export_dir_base, exports_to_keep):
    """Deletes all but the ``exports_to_keep`` newest timestamp-named (10 digits) exports in ``export_dir_base``."""
    if exports_to_keep is None or not tf.io.gfile.isdir(export_dir_base):
        return
    versions = sorted(int(entry.rstrip("/")) for entry in tf.io.gfile.listdir(export_dir_base)
                      if len(entry.rstrip("/")) == 10 and entry.rstrip("/").isdigit())
    for version in versions[:-exports_to_keep]:
        path = os.path.join(export_dir_base, str(version))
        try:
            tf.io.gfile.rmtree(path)
        except tf.errors.NotFoundError:  # someone else removed it first
            pass
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


class LatestExporter(Exporter):
    """Exports after every evaluation, keeping the ``exports_to_keep`` newest exports (None: all).

    Example::

        exporter = LatestExporter('latest', serving_input_receiver_fn, exports_to_keep=3)
        EvalSpec(eval_input_fn, steps=10, exporters=exporter)
    """

    def __init__(self, name, serving_input_receiver_fn, assets_extra=None, as_text=False, exports_to_keep=5):
        self._exporting = _SavedModelExporting("LatestExporter", name, serving_input_receiver_fn, assets_extra,
                                               as_text)
        _check_exports_to_keep(exports_to_keep)
        self._exports_to_keep = exports_to_keep

    @property
    def name(self):
        return self._exporting.name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        result = self._exporting.export(estimator, export_path, checkpoint_path)
        keep_newest_exports(export_path, self._exports_to_keep)
        return result


class FinalExporter(Exporter):
    """Exports once, after the evaluation of the final checkpoint (``TrainSpec.max_steps`` reached).

    Example::

        EvalSpec(eval_input_fn, exporters=FinalExporter('final', serving_input_receiver_fn))
    """

    def __init__(self, name, serving_input_receiver_fn, assets_extra=None, as_text=False):
        self._exporting = _SavedModelExporting("FinalExporter", name, serving_input_receiver_fn, assets_extra,
                                               as_text)

    @property
    def name(self):
        return self._exporting.name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if not is_the_final_export:
            return None
        return self._exporting.export(estimator, export_path, checkpoint_path)


def _loss_smaller(best_eval_result, current_eval_result):
    """The default ``compare_fn``: the current evaluation is better when its ``loss`` is smaller."""
    for which, result in (("best_eval_result", best_eval_result), ("current_eval_result", current_eval_result)):
        if not result or "loss" not in result:
            raise ValueError(f"{which} cannot be empty or no loss is found in it; BestExporter's default "
                             "compare_fn compares 'loss': pass a compare_fn for other metrics.")
    return best_eval_result["loss"] > current_eval_result["loss"]


def _check_compare_fn(compare_fn):
    if compare_fn is None or not callable(compare_fn):
        raise ValueError(f"`compare_fn` must be a function of (best_eval_result, current_eval_result), got "
                         f"{compare_fn!r}.")
    params = inspect.signature(compare_fn).parameters
    names = {name for name, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for needed in ("best_eval_result", "current_eval_result"):
        if needed not in names:
            raise ValueError(f"compare_fn ({compare_fn}) must include {needed} argument: it is called as "
                             "compare_fn(best_eval_result=..., current_eval_result=...).")
    extra = names - {"best_eval_result", "current_eval_result"}
    if extra:
        raise ValueError(f"compare_fn ({compare_fn}) has following not expected args: {sorted(extra)}; it takes "
                         "exactly best_eval_result and current_eval_result.")


class BestExporter(Exporter):
    """Exports when an evaluation beats the best so far (``compare_fn``; default: smaller ``loss``).

    The best so far includes earlier runs: it is read from the evaluation event files matching
    ``event_file_pattern`` (relative to model_dir) the first time it exports into a model_dir.

    Example::

        def higher_accuracy(best_eval_result, current_eval_result):
            return current_eval_result['accuracy'] > best_eval_result['accuracy']

        EvalSpec(eval_input_fn, exporters=BestExporter('best', serving_input_receiver_fn,
                                                       compare_fn=higher_accuracy, exports_to_keep=2))
    """

    def __init__(self, name="best_exporter", serving_input_receiver_fn=None, event_file_pattern="eval/*.tfevents.*",
                 compare_fn=_loss_smaller, assets_extra=None, as_text=False, exports_to_keep=5):
        _check_compare_fn(compare_fn)
        self._exporting = _SavedModelExporting("BestExporter", name, serving_input_receiver_fn, assets_extra,
                                               as_text)
        _check_exports_to_keep(exports_to_keep)
        self._compare_fn = compare_fn
        self._event_file_pattern = event_file_pattern
        self._exports_to_keep = exports_to_keep
        self._model_dir = None
        self._best_eval_result = None
        self._has_exported = False

    @property
    def name(self):
        return self._exporting.name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if self._event_file_pattern and self._model_dir != estimator.model_dir:
            self._model_dir = estimator.model_dir
            self._best_eval_result = self._best_in_event_files(os.path.join(self._model_dir,
                                                                            self._event_file_pattern))
        if (self._best_eval_result is None or not self._has_exported
                or self._compare_fn(best_eval_result=self._best_eval_result, current_eval_result=eval_result)):
            _log.info("BestExporter %r: exporting the evaluation at step %s.", self.name,
                      eval_result.get("global_step"))
            self._best_eval_result = eval_result
            result = self._exporting.export(estimator, export_path, checkpoint_path)
            keep_newest_exports(export_path, self._exports_to_keep)
            self._has_exported = True
            return result
        return None

    def _best_in_event_files(self, pattern):
        best = None
        for path in tf.io.gfile.glob(pattern):
            for event in tf.compat.v1.train.summary_iterator(path):
                if not event.HasField("summary"):
                    continue
                result = {value.tag: value.simple_value for value in event.summary.value
                          if value.HasField("simple_value")}
                if result and (best is None or self._compare_fn(best, result)):
                    best = result
        return best
