"""``TPUEstimator``: the original's contract on TensorFlow >= 2.16."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from ..contract.config import RunConfig, check_estimator_config, check_positive_int
from ..run.export import check_export_api_version
from ..run.interrupts import StopRequest
from ..graph.model_calls import check_params
from ..contract.signatures import check_model_fn, fn_args
from ..reporting.tf_logs import quiet_tf_logs
from ..contract.warm_start import as_settings

_log = logging.getLogger("tpu_nb")


def _check_batch_size(name, value):
    if value is None:
        return None
    return check_positive_int(name, value)


class TPUEstimator:
    """Trains, evaluates, predicts with and exports a ``model_fn`` with TPUEstimator semantics.

    ``params['batch_size']`` in ``input_fn`` and ``model_fn`` is the batch of
    the current mode (``train_batch_size`` etc., per shard when sharded).
    ``iterations_per_loop`` steps run per session run; hooks, checkpoints and
    summaries happen between loops.

    Example::

        est = TPUEstimator(model_fn, config=RunConfig(model_dir='/tmp/m'), use_tpu=False,
                           train_batch_size=128, eval_batch_size=128, predict_batch_size=64)
        est.train(train_input_fn, max_steps=1000)
        print(est.evaluate(eval_input_fn))
    """

    #: input_fn must take ``params`` (it reads the per-shard ``params['batch_size']``), as the original said.
    input_fn_needs_params = True

    def __init__(self, model_fn: Optional[Callable] = None, model_dir: Optional[str] = None,
                 config: Optional[RunConfig] = None, params: Optional[Dict[str, Any]] = None,
                 use_tpu: bool = True, train_batch_size: Optional[int] = None,
                 eval_batch_size: Optional[int] = None, predict_batch_size: Optional[int] = None,
                 batch_axis=None, eval_on_tpu: bool = True, export_to_tpu: bool = True,
                 export_to_cpu: bool = True, warm_start_from=None, embedding_config_spec=None,
                 export_saved_model_api_version=None):
        if model_fn is None:
            raise ValueError("model_fn must be provided.")
        check_model_fn(model_fn, params)
        config = check_estimator_config(config, use_tpu)
        if model_dir is not None:
            model_dir = os.fspath(model_dir)
            if config.model_dir is not None and os.path.abspath(config.model_dir) != os.path.abspath(model_dir):
                raise ValueError(
                    f"model_dir={model_dir!r} differs from config.model_dir={config.model_dir!r}: pass only one."
                )
            config = config.replace(model_dir=model_dir)
        if config.model_dir is None:
            config = config.replace(model_dir=tempfile.mkdtemp(prefix="tpu_nb_model_"))
            _log.warning("No model_dir given: using the temporary directory %s.", config.model_dir)
        self._params = check_params(params)
        if use_tpu and train_batch_size is None:
            # As the original: required up front, even for a program that only evaluates or predicts.
            raise ValueError("`train_batch_size` cannot be `None` when use_tpu=True: pass the global batch size, "
                             "e.g. TPUEstimator(..., train_batch_size=1024), or use_tpu=False to run unsharded.")
        self._train_batch_size = _check_batch_size("train_batch_size", train_batch_size)
        self._eval_batch_size = _check_batch_size("eval_batch_size", eval_batch_size)
        self._predict_batch_size = _check_batch_size("predict_batch_size", predict_batch_size)
        if not isinstance(use_tpu, bool):
            raise TypeError(f"use_tpu must be True or False, got {use_tpu!r}.")
        if not export_to_cpu and not export_to_tpu:
            raise ValueError("export_to_cpu and export_to_tpu are both False, so export_saved_model would have "
                             "nothing to export: set at least one of them to True.")
        self._warm_start_from = as_settings(warm_start_from) if warm_start_from is not None else None
        self._model_fn = model_fn
        self._config = config
        self._use_tpu = use_tpu
        self._eval_on_tpu = eval_on_tpu
        self._export_to_tpu = export_to_tpu
        self._export_to_cpu = export_to_cpu
        self._export_saved_model_api_version = check_export_api_version(export_saved_model_api_version)
        self._batch_axis = batch_axis
        # Kept so the TPU backend can refuse it (TPU embedding is not supported there); unused elsewhere.
        self._embedding_config_spec = embedding_config_spec
        self._stop = None

    # -- read-only properties -------------------------------------------------
    model_fn = property(lambda self: self._model_fn)
    config = property(lambda self: self._config)
    params = property(lambda self: dict(self._params))
    model_dir = property(lambda self: self._config.model_dir)
    use_tpu = property(lambda self: self._use_tpu)
    train_batch_size = property(lambda self: self._train_batch_size)
    eval_batch_size = property(lambda self: self._eval_batch_size)
    predict_batch_size = property(lambda self: self._predict_batch_size)
    export_to_tpu = property(lambda self: self._export_to_tpu)
    export_to_cpu = property(lambda self: self._export_to_cpu)
    export_saved_model_api_version = property(lambda self: self._export_saved_model_api_version)
    warm_start_from = property(lambda self: self._warm_start_from)

    def _backend(self, what):
        """Where ``what`` runs (``tpu_nb.backends``): one device, simulated shards, workers, or a TPU."""
        from ..backends import select_backend

        return select_backend(self, what)

    # -- the four verbs ---------------------------------------------------------
    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        """Trains for ``steps`` more steps or up to ``max_steps``; returns ``self``.

        Ctrl-C stops at the next loop boundary, saves a checkpoint and re-raises
        ``KeyboardInterrupt``; a NaN/Inf loss raises without saving the bad state.
        """
        from ..run.training import run_train

        backend = self._backend("train")
        self._stop = StopRequest()
        try:
            with quiet_tf_logs():
                return run_train(self, input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                                 saving_listeners=saving_listeners, stop=self._stop, backend=backend)
        finally:
            self._stop = None

    def request_stop(self, reason: str = "stop requested") -> bool:
        """Asks a running ``train()`` (e.g. in another thread) to stop at the next loop boundary.

        Returns False when no training is running.
        """
        stop = self._stop
        if stop is None:
            return False
        stop.set(reason)
        return True

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        """Evaluates on ``steps`` batches (None: until the input ends); returns a dict.

        The dict holds ``loss`` (mean over batches), ``global_step`` and every metric.
        """
        from ..run.evaluation import run_evaluate

        backend = self._backend("evaluate")
        with quiet_tf_logs():
            return run_evaluate(self, input_fn, steps=steps, hooks=hooks, checkpoint_path=checkpoint_path,
                                name=name, backend=backend)

    def predict(self, input_fn, predict_keys=None, hooks=None, checkpoint_path=None, yield_single_examples=True):
        """Yields predictions: one dict per example, or one dict of arrays per batch."""
        from ..run.prediction import run_predict

        backend = self._backend("predict")
        return run_predict(self, input_fn, predict_keys=predict_keys, hooks=hooks,
                           checkpoint_path=checkpoint_path, yield_single_examples=yield_single_examples,
                           backend=backend)

    def export_saved_model(self, export_dir_base, serving_input_receiver_fn, assets_extra=None, as_text=False,
                           checkpoint_path=None, experimental_mode=None):
        """Writes a SavedModel with the ``serve`` (CPU) and ``serve,tpu`` metagraphs; returns its path (bytes).

        ``experimental_mode=ModeKeys.EVAL`` or ``TRAIN`` writes one CPU metagraph tagged ``eval`` /
        ``train`` instead; its receiver function returns a ``SupervisedInputReceiver``
        (see ``build_raw_supervised_input_receiver_fn``).
        """
        from ..run.export import run_export

        with quiet_tf_logs():
            return run_export(self, export_dir_base, serving_input_receiver_fn, assets_extra=assets_extra,
                              as_text=as_text, checkpoint_path=checkpoint_path,
                              mode=experimental_mode or "infer")

    export_savedmodel = export_saved_model

    def check_tpu_compatibility(self, input_fn):
        """Compiles one training step with XLA on the CPU; reports ops XLA cannot compile, by name.

        A cheap check before spending TPU time (CPU XLA is close to, not exactly, TPU XLA).

        Example::

            report = est.check_tpu_compatibility(train_input_fn)
            print(report)   # ok, or the ops to move into input_fn / host_call
        """
        from ..backends.xla_check import check_tpu_compatibility

        with quiet_tf_logs():
            return check_tpu_compatibility(self, input_fn)

    # -- checkpoint inspection --------------------------------------------------
    def latest_checkpoint(self) -> Optional[str]:
        """Path prefix of the newest checkpoint in ``model_dir`` (None before training)."""
        return tf.train.latest_checkpoint(self.model_dir)

    def _checkpoint_or_fail(self):
        path = self.latest_checkpoint()
        if path is None:
            raise ValueError(f"No checkpoint in model_dir {self.model_dir!r}: call train() first.")
        return path

    def get_variable_names(self):
        """Names of the variables in the latest checkpoint."""
        return [name for name, _ in tf.train.list_variables(self._checkpoint_or_fail())]

    def get_variable_value(self, name):
        """Value (numpy) of variable ``name`` in the latest checkpoint."""
        return tf.train.load_variable(self._checkpoint_or_fail(), name)


class Estimator(TPUEstimator):
    """``tf.estimator.Estimator``'s contract on one device, for programs that choose it off TPU.

    Programs written for the original often build ``TPUEstimator`` when ``FLAGS.use_tpu`` and a plain
    ``tf.estimator.Estimator`` otherwise (both left TensorFlow in 2.16). This is ``TPUEstimator`` with
    ``use_tpu=False``: ``model_fn`` may return an ``EstimatorSpec``, ``params`` carries no
    ``batch_size`` (the input_fn batches itself), and ``export_saved_model`` writes the ``serve``
    metagraph only.

    Example::

        est = tpu_nb.Estimator(model_fn, model_dir="/tmp/m", warm_start_from="/tmp/tpu_run")
        est.train(input_fn, steps=100)
    """

    #: As ``tf.estimator.Estimator``: input_fn batches itself and may take no arguments.
    input_fn_needs_params = False

    def __init__(self, model_fn: Optional[Callable] = None, model_dir: Optional[str] = None,
                 config: Optional[RunConfig] = None, params: Optional[Dict[str, Any]] = None,
                 warm_start_from=None):
        if callable(model_fn) and params is None and "params" not in fn_args(model_fn):
            model_fn = _ignoring_params(model_fn)  # tf.estimator.Estimator accepts model_fn(features, labels, mode)
        super().__init__(model_fn, model_dir=model_dir, config=config, params=params, use_tpu=False,
                         warm_start_from=warm_start_from, export_to_tpu=False)


def _ignoring_params(model_fn: Callable) -> Callable:
    """``model_fn`` as one that also takes ``params`` (and drops it): the plain Estimator's model_fn need not
    take params, while the engine always offers them. Its other arguments, and their checks, stay as written."""
    signature = inspect.signature(model_fn)
    parameters = [p for p in signature.parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    parameters.append(inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=None))

    @functools.wraps(model_fn)
    def call(*args, params=None, **kwargs):
        return model_fn(*args, **kwargs)

    call.__signature__ = signature.replace(parameters=parameters)
    return call
