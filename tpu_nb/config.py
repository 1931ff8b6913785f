"""Run configuration: ``RunConfig``, ``TPUConfig`` and ``InputPipelineConfig``.

Plain frozen data, validated on construction so a typo fails before any
graph is built.
"""

from __future__ import annotations

import dataclasses
import enum
import numbers
import os
import re
from typing import Any, Optional, Union


class InputPipelineConfig(enum.IntEnum):
    """How ``input_fn`` is deployed over shards (values match the original)."""

    PER_SHARD_V1 = 1
    PER_HOST_V1 = 2
    PER_HOST_V2 = 3
    BROADCAST = 4
    SLICED = 5


@dataclasses.dataclass(frozen=True)
class IterationsPerLoop:
    """A parsed ``iterations_per_loop``: a step count or a time budget in seconds."""

    value: float
    unit: str  # 'count' or 'seconds'

    @property
    def is_time(self) -> bool:
        return self.unit == "seconds"


_IPL_PATTERN = re.compile(r"^([1-9][0-9]*)([smh]?)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_iterations_per_loop(value: Union[int, str]) -> IterationsPerLoop:
    """Parses ``iterations_per_loop``: a positive int, or '30s' / '5m' / '1h'.

    >>> parse_iterations_per_loop(100)
    IterationsPerLoop(value=100, unit='count')
    >>> parse_iterations_per_loop('2m')
    IterationsPerLoop(value=120, unit='seconds')
    """
    if isinstance(value, bool):
        raise ValueError(f"iterations_per_loop must be a positive int or a duration like '30s', got {value!r}.")
    if isinstance(value, numbers.Integral):
        if value <= 0:
            raise ValueError(
                f"iterations_per_loop must be a positive int, got {value}. "
                "Use e.g. iterations_per_loop=100, or a time budget such as '30s'."
            )
        return IterationsPerLoop(int(value), "count")
    if isinstance(value, str):
        match = _IPL_PATTERN.match(value)
        if match:
            number, unit = int(match.group(1)), match.group(2)
            if not unit:
                return IterationsPerLoop(number, "count")
            return IterationsPerLoop(number * _UNIT_SECONDS[unit], "seconds")
    raise ValueError(
        f"iterations_per_loop={value!r} is not valid: use a positive int (steps per loop) "
        "or a positive whole duration with a unit and no space: '30s', '5m' or '1h'."
    )


_CORES_PER_REPLICA = {1, 2, 4, 8, 16, 32, 64, 128}


@dataclasses.dataclass(frozen=True)
class TPUConfig:
    """TPU-specific settings (same fields and defaults as the original).

    Example::

        TPUConfig(iterations_per_loop=100, num_shards=8)
    """

    iterations_per_loop: Union[int, str] = 2
    num_shards: Optional[int] = None
    num_cores_per_replica: Optional[int] = None
    per_host_input_for_training: Union[bool, int] = True
    tpu_job_name: Optional[str] = None
    initial_infeed_sleep_secs: Optional[float] = None
    input_partition_dims: Any = None
    eval_training_input_configuration: int = InputPipelineConfig.PER_HOST_V1
    experimental_host_call_every_n_steps: int = 1
    experimental_allow_per_host_v2_parallel_get_next: bool = False
    experimental_feed_hook: Any = None
    # tpu_nb's own: how long finding the TPU may take before a clear error (TensorFlow alone waits ~5 min).
    connect_timeout_secs: float = 30.0

    def __post_init__(self):
        parse_iterations_per_loop(self.iterations_per_loop)
        if not isinstance(self.connect_timeout_secs, numbers.Real) or self.connect_timeout_secs <= 0:
            raise ValueError(f"TPUConfig.connect_timeout_secs must be positive, got {self.connect_timeout_secs!r}.")
        if self.num_shards is not None:
            _check_positive_int("TPUConfig.num_shards", self.num_shards)
        if self.num_cores_per_replica is not None and self.num_cores_per_replica not in _CORES_PER_REPLICA:
            raise ValueError(
                f"TPUConfig.num_cores_per_replica must be one of {sorted(_CORES_PER_REPLICA)}, "
                f"got {self.num_cores_per_replica!r}."
            )
        if self.initial_infeed_sleep_secs is not None and self.initial_infeed_sleep_secs < 0:
            raise ValueError("TPUConfig.initial_infeed_sleep_secs must be >= 0.")
        _check_positive_int("TPUConfig.experimental_host_call_every_n_steps", self.experimental_host_call_every_n_steps)
        if self.eval_training_input_configuration not in (InputPipelineConfig.PER_HOST_V1, InputPipelineConfig.SLICED):
            raise ValueError(
                "TPUConfig.eval_training_input_configuration must be InputPipelineConfig.PER_HOST_V1 "
                f"or InputPipelineConfig.SLICED, got {self.eval_training_input_configuration!r}."
            )
        mode = self.per_host_input_for_training
        if not isinstance(mode, bool) and mode not in set(InputPipelineConfig):
            raise ValueError(
                "TPUConfig.per_host_input_for_training must be True, False or an InputPipelineConfig "
                f"value, got {mode!r}."
            )

    @property
    def parsed_iterations_per_loop(self) -> IterationsPerLoop:
        return parse_iterations_per_loop(self.iterations_per_loop)

    @property
    def input_mode(self) -> InputPipelineConfig:
        """The training input mode the ``per_host_input_for_training`` flag selects."""
        mode = self.per_host_input_for_training
        if mode is True:
            return InputPipelineConfig.PER_HOST_V1
        if mode is False:
            return InputPipelineConfig.PER_SHARD_V1
        return InputPipelineConfig(mode)

    def replace(self, **changes) -> "TPUConfig":
        return dataclasses.replace(self, **changes)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}.")


class _Default:
    def __repr__(self):
        return "<default>"


_USE_DEFAULT = _Default()


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where and how a ``TPUEstimator`` runs.

    Accepts the original's arguments. Checkpoints default to every 600 s when
    neither ``save_checkpoints_steps`` nor ``save_checkpoints_secs`` is given;
    the final step of ``train()`` is always checkpointed.

    Example::

        config = RunConfig(model_dir='/tmp/mnist', save_checkpoints_steps=1000,
                           tpu_config=TPUConfig(iterations_per_loop=100))
    """

    tpu_config: TPUConfig = dataclasses.field(default_factory=TPUConfig)
    evaluation_master: Optional[str] = None
    master: Optional[str] = None
    cluster: Any = None
    model_dir: Optional[str] = None
    tf_random_seed: Optional[int] = None
    save_summary_steps: Optional[int] = 100
    save_checkpoints_steps: Optional[int] = None
    save_checkpoints_secs: Any = _USE_DEFAULT
    session_config: Any = None
    keep_checkpoint_max: Optional[int] = 5
    keep_checkpoint_every_n_hours: float = 10000
    log_step_count_steps: Optional[int] = 100
    train_distribute: Any = None
    device_fn: Any = None
    protocol: Optional[str] = None
    eval_distribute: Any = None
    experimental_distribute: Any = None
    experimental_max_worker_delay_secs: Optional[int] = None
    session_creation_timeout_secs: int = 7200
    checkpoint_save_graph_def: bool = True

    def __post_init__(self):
        if self.tpu_config is None:
            object.__setattr__(self, "tpu_config", TPUConfig())
        if not isinstance(self.tpu_config, TPUConfig):
            raise TypeError(
                f"RunConfig.tpu_config must be a tpu_nb.TPUConfig, got {type(self.tpu_config).__name__}."
            )
        if self.model_dir is not None:
            if not isinstance(self.model_dir, (str, os.PathLike)):
                raise TypeError(f"RunConfig.model_dir must be a path string, got {type(self.model_dir).__name__}.")
            object.__setattr__(self, "model_dir", os.fspath(self.model_dir))
        secs = self.save_checkpoints_secs
        if secs is _USE_DEFAULT:
            secs = 600 if self.save_checkpoints_steps is None else None
            object.__setattr__(self, "save_checkpoints_secs", secs)
        if self.save_checkpoints_steps is not None and secs is not None:
            raise ValueError(
                "RunConfig: save_checkpoints_steps and save_checkpoints_secs cannot both be set; "
                "choose one of them."
            )
        if self.save_checkpoints_steps is not None:
            _check_positive_int("RunConfig.save_checkpoints_steps", self.save_checkpoints_steps)
        if secs is not None and (not isinstance(secs, numbers.Real) or secs <= 0):
            raise ValueError(f"RunConfig.save_checkpoints_secs must be a positive number, got {secs!r}.")
        if self.keep_checkpoint_max is not None and (
            isinstance(self.keep_checkpoint_max, bool) or not isinstance(self.keep_checkpoint_max, numbers.Integral)
            or self.keep_checkpoint_max < 0
        ):
            raise ValueError(f"RunConfig.keep_checkpoint_max must be an int >= 0, got {self.keep_checkpoint_max!r}.")
        for name in ("save_summary_steps", "log_step_count_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
                raise ValueError(f"RunConfig.{name} must be an int >= 0 or None, got {value!r}.")

    # Read-only views the original RunConfig offered and model_fns use.
    @property
    def is_chief(self) -> bool:
        return True

    @property
    def num_worker_replicas(self) -> int:
        return 1

    @property
    def num_ps_replicas(self) -> int:
        return 0

    @property
    def task_type(self) -> str:
        return "worker"

    @property
    def task_id(self) -> int:
        return 0

    @property
    def random_seed(self) -> Optional[int]:
        return self.tf_random_seed

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed (as the original's ``RunConfig.replace``)."""
        if "save_checkpoints_steps" in changes and "save_checkpoints_secs" not in changes:
            changes["save_checkpoints_secs"] = _USE_DEFAULT
        return dataclasses.replace(self, **changes)
