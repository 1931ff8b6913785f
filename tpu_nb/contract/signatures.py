"""Inspecting the argument names of user functions (model_fn, input_fn, metric_fn)."""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Tuple


def fn_args(fn: Callable) -> Tuple[str, ...]:
    """Names of the arguments ``fn`` still accepts (partials and bound methods resolved)."""
    bound_kwargs = set()
    bound_positional = 0
    while isinstance(fn, functools.partial):
        bound_kwargs.update(fn.keywords or {})
        bound_positional += len(fn.args)
        fn = fn.func
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    names = []
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        names.append(param.name)
    names = names[bound_positional:]
    return tuple(n for n in names if n not in bound_kwargs)


def _has_param_kind(fn: Callable, kind) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True  # builtins without a signature: assume they accept anything
    return any(p.kind == kind for p in sig.parameters.values())


def accepts_var_positional(fn: Callable) -> bool:
    """Whether ``fn`` takes ``*args``."""
    return _has_param_kind(fn, inspect.Parameter.VAR_POSITIONAL)


def accepts_var_keyword(fn: Callable) -> bool:
    """Whether ``fn`` takes ``**kwargs``."""
    return _has_param_kind(fn, inspect.Parameter.VAR_KEYWORD)


def describe(fn: Callable) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{name}{_signature_text(fn)}"


def _signature_text(fn):
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


_MODEL_FN_ALLOWED = ("features", "labels", "mode", "params", "config")
_INPUT_FN_ALLOWED = ("params", "mode", "config", "input_context")


def check_model_fn(model_fn: Callable, params=None, calling: bool = False) -> Tuple[str, ...]:
    """Validates ``model_fn``'s signature; returns its argument names.

    As the original, a model_fn without ``params`` is refused when the user passes ``params`` to the
    constructor, and whenever TPUEstimator calls it (``calling=True``): the batch size reaches it only as
    ``params['batch_size']``.

    Example::

        check_model_fn(lambda features, labels, mode, params: ...)  # -> ('features', 'labels', 'mode', 'params')
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}.")
    args = fn_args(model_fn)
    if "features" not in args:
        raise ValueError(
            f"model_fn {describe(model_fn)} must take an argument named 'features'. "
            "Define it as model_fn(features, labels, mode, params, config) (labels, mode, params, "
            "config are optional)."
        )
    unexpected = [a for a in args if a not in _MODEL_FN_ALLOWED]
    if unexpected:
        raise ValueError(
            f"model_fn {describe(model_fn)} has following not expected args: {unexpected}. "
            f"It may only take {list(_MODEL_FN_ALLOWED)}; give the others default values via functools.partial."
        )
    if "params" not in args and (calling or params is not None):
        why = ("TPUEstimator passes the batch size as params['batch_size']" if calling
               else f"but params ({params!r}) is passed to TPUEstimator")
        raise ValueError(
            f"model_fn ({describe(model_fn)}) does not include params argument, {why}. "
            "Define it as model_fn(features, labels, mode, params)."
        )
    return args


def check_input_fn(input_fn: Callable, params_required: bool = True) -> Tuple[str, ...]:
    """Validates ``input_fn``'s signature; returns its argument names.

    ``params_required=False`` for a plain ``Estimator``, whose input_fn batches itself and may take no
    arguments at all, as ``tf.estimator.Estimator`` allowed.
    """
    if not callable(input_fn):
        raise TypeError(f"input_fn must be callable, got {type(input_fn).__name__}.")
    args = fn_args(input_fn)
    if "params" not in args and params_required:
        raise ValueError(
            f"input_fn {describe(input_fn)} must take an argument named 'params': TPUEstimator "
            "passes the per-shard batch size as params['batch_size']. Define it as "
            "input_fn(params) and batch with params['batch_size']."
        )
    return args
