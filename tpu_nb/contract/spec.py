"""What ``model_fn`` returns: ``TPUEstimatorSpec`` / ``EstimatorSpec``, and ``ServingInputReceiver``.

Specs are validated when they are built, so a missing field or a malformed
``eval_metrics`` / ``host_call`` tuple names itself before any session runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

from .modes import ModeKeys
from .signatures import accepts_var_keyword, accepts_var_positional, describe, fn_args


def _is_hook(obj) -> bool:
    import tensorflow as tf

    return isinstance(obj, tf.compat.v1.train.SessionRunHook)


def _check_hooks(field: str, hooks) -> tuple:
    hooks = tuple(hooks or ())
    for hook in hooks:
        if not _is_hook(hook):
            raise TypeError(
                f"All hooks in {field} must be tf.compat.v1.train.SessionRunHook instances, "
                f"got {type(hook).__name__}."
            )
    return hooks


def check_fn_tensors_tuple(field: str, value) -> None:
    """Validates an ``eval_metrics`` or ``host_call`` value: ``(fn, list_or_dict)``."""
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"TPUEstimatorSpec.{field} must be a (fn, tensors) tuple of 2 elements, got {value!r}. "
            f"Example: {field}=(metric_fn, [labels, logits])."
        )
    fn, tensors = value
    if not callable(fn):
        raise TypeError(f"TPUEstimatorSpec.{field}[0] must be callable, got {type(fn).__name__}.")
    if isinstance(tensors, dict):
        if not accepts_var_keyword(fn):
            names = set(fn_args(fn))
            missing = [k for k in tensors if k not in names]
            if missing:
                raise ValueError(
                    f"TPUEstimatorSpec.{field}: {describe(fn)} has no argument(s) named {missing}, "
                    "but the tensors dict passes them as keyword arguments. Rename the keys or the arguments."
                )
        return
    if isinstance(tensors, (list, tuple)):
        if accepts_var_positional(fn):
            return
        n_args = len(fn_args(fn))
        if n_args != len(tensors):
            raise ValueError(
                f"In TPUEstimatorSpec.{field}, the {len(tensors)} tensors passed do not match the "
                f"{n_args} argument(s) of {describe(fn)}. Pass one tensor per argument, or a dict "
                "keyed by argument name."
            )
        return
    raise TypeError(
        f"TPUEstimatorSpec.{field}[1] must be a list or a dict of tensors, got {type(tensors).__name__}."
    )


def flat_tensors(tensors) -> list:
    """The tensors of an eval_metrics/host_call pair's list or dict, in order (dict: insertion order)."""
    return list(tensors.values()) if isinstance(tensors, dict) else list(tensors)


def repacked(structure, flat):
    """``flat`` in the shape of ``structure`` (the pair's list or dict), e.g. after gathering or queueing."""
    return dict(zip(structure.keys(), flat)) if isinstance(structure, dict) else list(flat)


def call_with_tensors(fn: Callable, tensors):
    """Calls ``fn`` the way eval_metrics/host_call tuples mean: list positionally, dict by keyword."""
    if isinstance(tensors, dict):
        return fn(**tensors)
    return fn(*tensors)


def _check_mode_fields(kind: str, mode, predictions, loss, train_op):
    if mode not in ModeKeys.ALL:
        raise ValueError(f"{kind}.mode must be one of ModeKeys.TRAIN/EVAL/PREDICT, got {mode!r}.")
    if mode in (ModeKeys.TRAIN, ModeKeys.EVAL) and loss is None:
        raise ValueError(f"{kind} for mode {mode!r} is missing `loss`: return loss=<scalar tensor> in TRAIN and EVAL.")
    if mode == ModeKeys.TRAIN and train_op is None:
        raise ValueError(f"{kind} for mode 'train' is missing `train_op`: return train_op=optimizer.minimize(loss, ...).")
    if mode == ModeKeys.PREDICT and predictions is None:
        raise ValueError(f"{kind} for mode 'infer' is missing `predictions`: return predictions={{'name': tensor}}.")


@dataclasses.dataclass(frozen=True)
class TPUEstimatorSpec:
    """What ``model_fn`` returns to a ``TPUEstimator``.

    ``eval_metrics`` and ``host_call`` are ``(fn, tensors)``: tensors are a list
    (passed positionally) or a dict (passed by keyword); fn runs on the host
    over the tensors of all shards concatenated along dimension 0.

    Example::

        return TPUEstimatorSpec(mode, loss=loss, train_op=train_op,
                                eval_metrics=(metric_fn, [labels, logits]))
    """

    mode: str
    predictions: Any = None
    loss: Any = None
    train_op: Any = None
    eval_metrics: Optional[tuple] = None
    export_outputs: Optional[Dict[str, Any]] = None
    scaffold_fn: Optional[Callable] = None
    host_call: Optional[tuple] = None
    training_hooks: Sequence = ()
    evaluation_hooks: Sequence = ()
    prediction_hooks: Sequence = ()

    def __post_init__(self):
        _check_mode_fields("TPUEstimatorSpec", self.mode, self.predictions, self.loss, self.train_op)
        check_fn_tensors_tuple("eval_metrics", self.eval_metrics)
        check_fn_tensors_tuple("host_call", self.host_call)
        if self.scaffold_fn is not None and not callable(self.scaffold_fn):
            raise TypeError(f"TPUEstimatorSpec.scaffold_fn must be callable, got {type(self.scaffold_fn).__name__}.")
        for field in ("training_hooks", "evaluation_hooks", "prediction_hooks"):
            object.__setattr__(self, field, _check_hooks(field, getattr(self, field)))

    def as_estimator_spec(self) -> "EstimatorSpec":
        """The equivalent ``EstimatorSpec`` for running off TPU (metrics and scaffold evaluated)."""
        eval_metric_ops = None
        if self.eval_metrics is not None:
            eval_metric_ops = call_with_tensors(*self.eval_metrics)
        scaffold = self.scaffold_fn() if self.scaffold_fn is not None else None
        return EstimatorSpec(
            mode=self.mode, predictions=self.predictions, loss=self.loss, train_op=self.train_op,
            eval_metric_ops=eval_metric_ops, export_outputs=self.export_outputs,
            training_hooks=self.training_hooks, scaffold=scaffold,
            evaluation_hooks=self.evaluation_hooks, prediction_hooks=self.prediction_hooks,
        )


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """The plain (non-TPU) spec; accepted from ``model_fn`` where the original accepted it.

    Example::

        return EstimatorSpec(mode, loss=loss, eval_metric_ops={'acc': tf.compat.v1.metrics.accuracy(y, p)})
    """

    mode: str
    predictions: Any = None
    loss: Any = None
    train_op: Any = None
    eval_metric_ops: Optional[Dict[str, Any]] = None
    export_outputs: Optional[Dict[str, Any]] = None
    training_chief_hooks: Sequence = ()
    training_hooks: Sequence = ()
    scaffold: Any = None
    evaluation_hooks: Sequence = ()
    prediction_hooks: Sequence = ()

    def __post_init__(self):
        _check_mode_fields("EstimatorSpec", self.mode, self.predictions, self.loss, self.train_op)
        if self.eval_metric_ops is not None:
            if not isinstance(self.eval_metric_ops, dict):
                raise TypeError("EstimatorSpec.eval_metric_ops must be a dict of name -> (value, update_op).")
            for name, pair in self.eval_metric_ops.items():
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(
                        f"EstimatorSpec.eval_metric_ops[{name!r}] must be a (value, update_op) pair, got {pair!r}."
                    )
        for field in ("training_chief_hooks", "training_hooks", "evaluation_hooks", "prediction_hooks"):
            object.__setattr__(self, field, _check_hooks(field, getattr(self, field)))


@dataclasses.dataclass(frozen=True)
class ServingInputReceiver:
    """What a ``serving_input_receiver_fn`` returns for ``export_saved_model``.

    A single tensor for ``features`` becomes ``{'feature': t}``; a single
    receiver tensor becomes ``{'input': t}`` (the original's defaults).

    Example::

        def serving_input_receiver_fn():
            x = tf.compat.v1.placeholder(tf.float32, [None, 784], name='x')
            return ServingInputReceiver({'x': x}, {'x': x})
    """

    features: Any
    receiver_tensors: Any
    receiver_tensors_alternatives: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        import tensorflow as tf

        features = self.features
        if not isinstance(features, dict):
            features = {"feature": features}
        receivers = self.receiver_tensors
        if not isinstance(receivers, dict):
            receivers = {"input": receivers}
        for what, d in (("features", features), ("receiver_tensors", receivers)):
            if not d:
                raise ValueError(f"ServingInputReceiver.{what} must not be empty.")
            for key, value in d.items():
                if not isinstance(key, str):
                    raise ValueError(f"ServingInputReceiver.{what} keys must be strings, got {key!r}.")
                if not isinstance(value, (tf.Tensor, tf.SparseTensor, tf.RaggedTensor)):
                    raise ValueError(
                        f"ServingInputReceiver.{what}[{key!r}] must be a Tensor, got {type(value).__name__}."
                    )
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "receiver_tensors", receivers)


@dataclasses.dataclass(frozen=True)
class TensorServingInputReceiver:
    """Like :class:`ServingInputReceiver`, but ``model_fn`` receives ``features`` as one Tensor.

    Example::

        def serving_input_receiver_fn():
            x = tf.compat.v1.placeholder(tf.float32, [None, 784], name='x')
            return TensorServingInputReceiver(x, {'x': x})
    """

    features: Any
    receiver_tensors: Any
    receiver_tensors_alternatives: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        import tensorflow as tf

        if not isinstance(self.features, (tf.Tensor, tf.SparseTensor)):
            raise ValueError(
                f"TensorServingInputReceiver.features must be a single Tensor, got {type(self.features).__name__}; "
                "use ServingInputReceiver for a dict of features."
            )
        checked = ServingInputReceiver({"feature": self.features}, self.receiver_tensors,
                                       self.receiver_tensors_alternatives)
        object.__setattr__(self, "receiver_tensors", checked.receiver_tensors)
