"""Calling the user's ``model_fn`` and ``input_fn`` with the arguments they ask for."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Dict, Optional

import tensorflow as tf

from ..contract.modes import ModeKeys
from ..contract.signatures import check_input_fn, check_model_fn, describe
from ..contract.spec import EstimatorSpec, TPUEstimatorSpec
from .eager_checks import fast_eager_checks
from .tf_tpu_ops import tpu_ops_off_tpu

_RESERVED_PARAMS = ("batch_size", "context")


def check_params(params) -> Dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}.")
    for key in _RESERVED_PARAMS:
        if key in params:
            raise ValueError(
                f"params contains the reserved key {key!r}: {list(_RESERVED_PARAMS)} are reserved keys, which "
                "TPUEstimator sets for input_fn and model_fn. Remove it from params and pass the global batch "
                "size as train_batch_size/eval_batch_size/predict_batch_size instead."
            )
    return dict(params)


class Keras3InModelFnError(TypeError):
    """A Keras 3 object was used inside a graph-mode model_fn."""


def _created_by_keras3() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "keras" or module.startswith("keras."):
            return True
        frame = frame.f_back
    return False


_KERAS3_MESSAGE = (
    "model_fn created a variable through Keras 3 (the `keras` package, which `tf.keras` is on "
    "TF >= 2.16). Keras 3 layers are silently wrong in the TF1 graph mode a model_fn runs in "
    "(variable names not reset per graph, dropout masks fixed, BatchNorm statistics frozen). "
    "Use Keras 2 instead: `pip install tf-keras` and `import tf_keras` (tf_keras.layers.Dense, ...), "
    "or set TF_USE_LEGACY_KERAS=1 before importing TensorFlow so tf.keras is Keras 2."
)


@contextlib.contextmanager
def refuse_keras3():
    """Fails fast when a Keras 3 layer creates variables inside model_fn."""

    def creator_v2(next_creator, **kwargs):
        if _created_by_keras3():
            raise Keras3InModelFnError(_KERAS3_MESSAGE)
        return next_creator(**kwargs)

    def creator_v1(next_creator, **kwargs):
        if _created_by_keras3():
            raise Keras3InModelFnError(_KERAS3_MESSAGE)
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator_v2), tf.compat.v1.variable_creator_scope(creator_v1):
        yield


_MODEL_OP_SEED_BASE = 1 << 20  # above the op seeds an input pipeline asks for first


@contextlib.contextmanager
def _same_op_seeds_on_every_backend():
    """Gives model_fn's random ops (initializers, dropout) the same op seeds whatever was built before.

    With a graph seed (``RunConfig(tf_random_seed=...)``) TensorFlow numbers op seeds per graph in creation
    order, so one device, N shards (input pipelines per host, a loop of another shape) and TF1/TF2 control
    flow would initialise the same model differently. Starting model_fn's numbering at a fixed base in every
    graph it can create ops in makes a fixed seed give the same initial weights on every backend.
    """
    from tensorflow.python.framework import random_seed

    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if graph.seed is not None:
            counters = random_seed._graph_to_seed_dict  # noqa: SLF001
            counters[graph] = max(counters.get(graph, 0), _MODEL_OP_SEED_BASE)
        graph = getattr(graph, "outer_graph", None)
    yield


_keras_op_layer_lock = threading.Lock()
_keras_op_layer_users = 0


@contextlib.contextmanager
def _keras_op_layers_keep_constants():
    """tf_keras keeps a TF op's constant inputs as tensors while model_fn runs, as on a TPU.

    In TF1 graph mode tf_keras evaluates them with a Session when a TF op is applied to Keras inputs
    (a functional Model around tf.concat, say). Inside the device loop control flow v1 holds the graph's
    mutation lock for the loop's whole construction, so that Session would wait forever. The original
    ran model_fn in a TPU (XLA) context, where tf_keras keeps such constants as tensors: so does this.
    Counted, not saved and restored, because replica threads enter and leave interleaved.
    """
    global _keras_op_layer_users
    module = sys.modules.get("tf_keras.src.engine.base_layer_utils")
    if module is None or not hasattr(module, "_UNSAFE_GRAPH_OP_LAYER_CREATION"):
        yield
        return
    with _keras_op_layer_lock:
        if _keras_op_layer_users == 0:
            _keras_op_layers_keep_constants.saved = module._UNSAFE_GRAPH_OP_LAYER_CREATION  # noqa: SLF001
        _keras_op_layer_users += 1
        module._UNSAFE_GRAPH_OP_LAYER_CREATION = True  # noqa: SLF001
    try:
        yield
    finally:
        with _keras_op_layer_lock:
            _keras_op_layer_users -= 1
            if _keras_op_layer_users == 0:
                module._UNSAFE_GRAPH_OP_LAYER_CREATION = _keras_op_layers_keep_constants.saved  # noqa: SLF001


def call_model_fn(model_fn, features, labels, mode, config, params, batch_size: Optional[int], use_tpu: bool,
                  allow_estimator_spec: bool = True, context=None, first_replica: bool = True):
    """Calls ``model_fn`` with the subset of (features, labels, mode, params, config) it accepts.

    ``first_replica``: the first of this graph's model_fn calls (the one that creates the variables).
    """
    args = check_model_fn(model_fn, calling=True)
    kwargs = {"features": features}
    if "labels" in args:
        kwargs["labels"] = labels
    elif labels is not None and mode != ModeKeys.PREDICT:
        raise ValueError(
            f"model_fn does not take labels, but input_fn returns labels ({describe(model_fn)}). "
            "Add a `labels` argument to model_fn, or return only features from input_fn."
        )
    if "mode" in args:
        kwargs["mode"] = mode
    if "config" in args:
        kwargs["config"] = config
    if "params" in args:
        p = dict(params)
        if batch_size is not None:
            p["batch_size"] = batch_size
        p["use_tpu"] = use_tpu
        if context is not None:
            p["context"] = context
        kwargs["params"] = p
    shards = getattr(context, "num_replicas", 1) if context is not None else 1
    seeds = _same_op_seeds_on_every_backend() if first_replica else contextlib.nullcontext()
    with refuse_keras3(), tpu_ops_off_tpu(shards), seeds, _keras_op_layers_keep_constants(), fast_eager_checks():
        spec = model_fn(**kwargs)
    if isinstance(spec, TPUEstimatorSpec):
        pass
    elif isinstance(spec, EstimatorSpec):
        if not allow_estimator_spec:
            # "... must have type`TPUEstimatorSpec`" (sic) is the original's wording, which callers match on.
            phase = "evaluation" if mode == ModeKeys.EVAL else "prediction"
            raise RuntimeError(
                f"estimator_spec used by TPU {phase} must have type`TPUEstimatorSpec`: model_fn returned an "
                "EstimatorSpec, which sharded evaluation and prediction cannot run. Return a TPUEstimatorSpec "
                "(with eval_metrics=(metric_fn, tensors) for metrics)."
            )
    else:
        raise TypeError(
            f"model_fn must return a TPUEstimatorSpec or EstimatorSpec, got {type(spec).__name__}."
        )
    if spec.mode != mode:
        raise ValueError(f"model_fn was called in mode {mode!r} but returned a spec for mode {spec.mode!r}.")
    if mode in (ModeKeys.TRAIN, ModeKeys.EVAL):
        loss = tf.convert_to_tensor(spec.loss)
        if loss.shape.rank not in (None, 0):
            raise ValueError(
                f"The loss returned by model_fn must be a scalar, got shape {loss.shape}. "
                "Reduce it, e.g. with tf.reduce_mean."
            )
    return spec


def call_input_fn(input_fn, mode, config, params, batch_size: Optional[int], context=None,
                  params_required: bool = True):
    """Calls ``input_fn``; returns what it returned (Dataset, (features, labels) or features)."""
    args = check_input_fn(input_fn, params_required)
    p = dict(params)
    if batch_size is not None:
        p["batch_size"] = batch_size
    if context is not None:
        p["context"] = context
    kwargs = {"params": p} if "params" in args else {}
    if "mode" in args:
        kwargs["mode"] = mode
    if "config" in args:
        kwargs["config"] = config
    if "input_context" in args:
        kwargs["input_context"] = None
    with tf.device("/cpu:0"):
        return input_fn(**kwargs)


def split_features_labels(element):
    """An input element is ``(features, labels)`` or just features."""
    if isinstance(element, tuple) and len(element) == 2:
        return element[0], element[1]
    if isinstance(element, list) and len(element) == 2 and not isinstance(element[0], (int, float)):
        return element[0], element[1]
    return element, None
