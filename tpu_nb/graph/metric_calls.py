"""Calling the user's metric functions: ``eval_metrics`` (fn, tensors) pairs and ``eval_metric_ops``.

Every backend builds evaluation metrics from a spec the same way, and ``host_call`` pairs are called
the same way on the host; the checks name what a metric function returned wrong.
"""

from __future__ import annotations

from ..contract.spec import EstimatorSpec, call_with_tensors, flat_tensors, repacked

#: Keys an evaluation result has already: a metric may not take them.
RESERVED_METRIC_NAMES = ("loss", "global_step")


def metric_ops_from_spec(spec):
    """{name: (value, update_op)} from eval_metrics (TPU spec) or eval_metric_ops (plain spec)."""
    if isinstance(spec, EstimatorSpec):
        ops = dict(spec.eval_metric_ops or {})
    elif spec.eval_metrics is not None:
        fn, tensors = spec.eval_metrics
        ops = call_with_tensors(fn, tensors)
    else:
        ops = {}
    return check_metric_dict(ops)


def check_metric_dict(ops):
    """``ops`` if it is a dict of name -> (value, update_op) with no reserved name; else the error saying what."""
    if not isinstance(ops, dict):
        raise TypeError(
            f"eval_metrics' metric_fn must return a dict of name -> (value, update_op), got {type(ops).__name__}."
        )
    for name, pair in ops.items():
        if name in RESERVED_METRIC_NAMES:
            raise ValueError(f"Metric name {name!r} is reserved (the result dict has it already): rename the metric.")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"metric {name!r} must be a (value, update_op) pair as tf.compat.v1.metrics.* return, got {pair!r}."
            )
    return ops


def flat_fn_tensors(fn_and_tensors):
    """The tensors of an (fn, list or dict) pair, flat (none for None)."""
    return [] if fn_and_tensors is None else flat_tensors(fn_and_tensors[1])


def call_on_flat(fn_and_tensors, flat):
    """Calls the pair's fn on ``flat`` put back in the pair's structure."""
    fn, structure = fn_and_tensors
    return call_with_tensors(fn, repacked(structure, flat))
