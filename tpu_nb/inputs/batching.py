"""Pure arithmetic for how a global batch is split over shards and hosts (SPEC's batch table).

G = global batch of the phase, R = replicas (shards), H = hosts.

| input mode   | phase          | input_fn calls | input_fn batch | model_fn batch |
|--------------|----------------|----------------|----------------|----------------|
| PER_SHARD_V1 | train          | R              | G/R            | G/R            |
| PER_SHARD_V1 | eval, predict  | as PER_HOST_V1                                   |
| PER_HOST_V1  | all            | H              | G/H            | G/R            |
| PER_HOST_V2  | all            | H              | G/R            | G/R            |
| BROADCAST    | all            | 1              | G              | G              |
| SLICED       | eval, predict  | 1              | G              | G/R            |
| unsharded    | any            | 1              | G              | G              |
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

from ..contract.config import InputPipelineConfig
from ..contract.modes import ModeKeys


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How one phase's global batch reaches input_fn and model_fn."""

    input_mode: Optional[InputPipelineConfig]  # None: unsharded
    global_batch: int
    input_fn_calls: int
    input_fn_batch: int
    model_fn_batch: int

    @property
    def per_host_batch(self) -> int:
        """Examples each input_fn invocation's host feeds per step."""
        return self.global_batch // self.input_fn_calls if self.input_mode != InputPipelineConfig.BROADCAST else self.global_batch


_PHASE_NAMES = {"infer": "predict"}  # ModeKeys.PREDICT is "infer"; users and the original say predict


def _check(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be int, got {value!r} ({type(value).__name__}): pass a whole number.")
    if value < minimum:
        wanted = "must be positive" if minimum == 1 else f"must be >= {minimum}"
        raise ValueError(f"{name} {wanted}, got {value}: pass a whole number >= {minimum}.")
    return int(value)


def plan_batches(global_batch: int, num_replicas: int = 1, num_hosts: int = 1,
                 input_mode: Optional[InputPipelineConfig] = None, phase: str = ModeKeys.TRAIN) -> BatchPlan:
    """Splits ``global_batch`` for ``phase`` (``ModeKeys``) under ``input_mode`` (None: unsharded).

    >>> plan_batches(64, num_replicas=8, num_hosts=2, input_mode=InputPipelineConfig.PER_HOST_V1)
    BatchPlan(input_mode=<InputPipelineConfig.PER_HOST_V1: 2>, global_batch=64, input_fn_calls=2, input_fn_batch=32, model_fn_batch=8)
    """
    g = _check("global batch size", global_batch)
    if input_mode is None:
        return BatchPlan(None, g, 1, g, g)
    r = _check("num_replicas", num_replicas)
    h = _check("num_hosts", num_hosts)
    mode = InputPipelineConfig(input_mode)
    if phase not in ModeKeys.ALL:
        raise ValueError(f"phase must be one of {ModeKeys.ALL}, got {phase!r}.")
    if r % h:
        raise ValueError(f"{r} replicas cannot be spread evenly over {h} hosts.")
    if mode == InputPipelineConfig.PER_SHARD_V1 and phase != ModeKeys.TRAIN:
        mode = InputPipelineConfig.PER_HOST_V1
    if mode == InputPipelineConfig.SLICED and phase == ModeKeys.TRAIN:
        raise ValueError("InputPipelineConfig.SLICED is only for evaluation and prediction; "
                         "train with PER_HOST_V1, PER_HOST_V2, PER_SHARD_V1 or BROADCAST.")
    if mode == InputPipelineConfig.BROADCAST:
        return BatchPlan(mode, g, 1, g, g)
    if g % r:
        lower, upper = (g // r) * r, (g // r + 1) * r
        raise ValueError(
            f"{mode.name}: the {_PHASE_NAMES.get(phase, phase)} batch size {g} is not divisible by the {r} shards "
            "(a global batch size "
            f"must be divisible by the number of shards). Use a multiple of {r}, e.g. {lower or upper} or {upper}."
        )
    per_replica = g // r
    if mode == InputPipelineConfig.PER_SHARD_V1:
        return BatchPlan(mode, g, r, per_replica, per_replica)
    if mode == InputPipelineConfig.PER_HOST_V1:
        return BatchPlan(mode, g, h, g // h, per_replica)
    if mode == InputPipelineConfig.PER_HOST_V2:
        return BatchPlan(mode, g, h, per_replica, per_replica)
    return BatchPlan(mode, g, 1, g, per_replica)  # SLICED


@dataclasses.dataclass(frozen=True)
class PaddingPlan:
    """How ``num_examples`` fill batches of ``batch_size`` when the last batch is padded to full size."""

    num_examples: int
    batch_size: int
    num_batches: int
    last_batch_real: int
    padding_rows: int

    @property
    def waste(self) -> float:
        """Fraction of computed rows that are padding."""
        total = self.num_batches * self.batch_size
        return self.padding_rows / total if total else 0.0


def plan_padding(num_examples: int, batch_size: int) -> PaddingPlan:
    """Batches needed for ``num_examples`` and the padding of the last one.

    >>> plan_padding(1003, 64)
    PaddingPlan(num_examples=1003, batch_size=64, num_batches=16, last_batch_real=43, padding_rows=21)
    """
    n = _check("num_examples", num_examples, minimum=0)
    b = _check("batch_size", batch_size)
    batches = -(-n // b)
    last = n - (batches - 1) * b if batches else 0
    return PaddingPlan(n, b, batches, last, batches * b - n)
