"""``warm_start_from``: initialise a new model from another model's checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Union

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class WarmStartSettings:
    """Which checkpoint and variables to warm-start from (the original's fields).

    Example::

        TPUEstimator(..., warm_start_from=WarmStartSettings('/models/base', vars_to_warm_start='dense.*'))
    """

    ckpt_to_initialize_from: str
    vars_to_warm_start: Union[str, Sequence[str], None] = ".*"
    var_name_to_vocab_info: Optional[Dict[str, Any]] = None
    var_name_to_prev_var_name: Optional[Dict[str, str]] = None


def as_settings(value) -> WarmStartSettings:
    if isinstance(value, WarmStartSettings):
        return value
    if isinstance(value, (str, os.PathLike)):
        return WarmStartSettings(os.fspath(value))
    raise TypeError(
        f"warm_start_from must be a checkpoint path, a model directory or a tpu_nb.WarmStartSettings, "
        f"got {type(value).__name__}."
    )


def warm_start(value) -> None:
    """Overrides the initializers of matching variables in the default graph."""
    settings = as_settings(value)
    path = settings.ckpt_to_initialize_from
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"warm_start_from={path!r} is a directory without a checkpoint in it.")
        path = latest
    tf.compat.v1.train.warm_start(
        path,
        vars_to_warm_start=settings.vars_to_warm_start,
        var_name_to_vocab_info=settings.var_name_to_vocab_info or {},
        var_name_to_prev_var_name=settings.var_name_to_prev_var_name or {},
    )
