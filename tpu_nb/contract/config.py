"""Run configuration: ``RunConfig``, ``TPUConfig`` and ``InputPipelineConfig``.

Plain frozen data, validated on construction so a typo fails before any
graph is built.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import numbers
import os
import re
from typing import Any, Optional, Union

_log = logging.getLogger("tpu_nb")


class NotARunConfigError(ValueError, TypeError):
    """``TPUEstimator(config=...)`` got something that is not a ``tpu_nb.RunConfig``.

    A ValueError as in the original, and a TypeError for code written against earlier tpu_nb.
    """


class ModelParallelismError(ValueError):
    """The config asks for model parallelism (several cores per replica), which tpu_nb cannot run."""


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
                f"iterations_per_loop must be positive, got {value}. "
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
        f"iterations_per_loop={value!r} is not valid: it must be positive, a whole number of steps per loop "
        "or a whole duration with a unit and no space: '30s', '5m' or '1h'."
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
            check_positive_int("TPUConfig.num_shards", self.num_shards)
        if self.num_cores_per_replica is not None and self.num_cores_per_replica not in _CORES_PER_REPLICA:
            raise ValueError(
                "TPUConfig: num_cores_per_replica must be 1, 2, 4, 8, 16, 32, 64, 128; "
                f"got {self.num_cores_per_replica!r}."
            )
        if self.initial_infeed_sleep_secs is not None and self.initial_infeed_sleep_secs < 0:
            raise ValueError("TPUConfig.initial_infeed_sleep_secs must be >= 0.")
        check_positive_int("TPUConfig.experimental_host_call_every_n_steps", self.experimental_host_call_every_n_steps)
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
        _check_input_partition_dims(self)
        if not self.tpu_job_name:
            # As the original: a cluster manager names the TPU job in TF_CONFIG's service section.
            job = read_tf_config().get("service", {}).get("tpu_worker_job_name")
            if job:
                _log.info("TPU job name from TF_CONFIG: %s", job)
                object.__setattr__(self, "tpu_job_name", job)

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


def _check_input_partition_dims(tpu_config):
    """The original's structural checks on ``input_partition_dims`` (tpu_nb refuses using it later)."""
    dims = tpu_config.input_partition_dims
    if dims is None:
        return
    if not isinstance(dims, (list, tuple)) or len(dims) not in (1, 2):
        raise ValueError("TPUConfig.input_partition_dims must be a list/tuple with one or two elements "
                         f"(features' and labels' partition dims), got {dims!r}.")
    if tpu_config.input_mode != InputPipelineConfig.PER_HOST_V2:
        raise ValueError("TPUConfig.input_partition_dims is only supported in PER_HOST_V2 mode: set "
                         "per_host_input_for_training=InputPipelineConfig.PER_HOST_V2.")
    if tpu_config.num_cores_per_replica is None:
        raise ValueError("TPUConfig.input_partition_dims requires setting num_cores_per_replica.")


def check_positive_int(name, value):
    """Raises the original's TypeError "must be int" / ValueError "must be positive", with the fix named.

    >>> check_positive_int("train_batch_size", 64)
    64
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be int, got {value!r} ({type(value).__name__}): pass a whole number "
                        f"such as {name}={_example_int(value)}.")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}: pass a whole number >= 1.")
    return int(value)


def _example_int(value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return 8



def read_tf_config() -> dict:
    """The ``TF_CONFIG`` environment variable as a dict (``{}`` when unset).

    Example::

        # with TF_CONFIG='{"session_master": "grpc://10.0.0.2:8470"}' in the environment
        read_tf_config()["session_master"]   # 'grpc://10.0.0.2:8470'
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise ValueError(f"The TF_CONFIG environment variable is not valid JSON ({e}): fix or unset it.") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"The TF_CONFIG environment variable must hold a JSON object, got {text!r}.")
    return parsed


def _masters_from_tf_config(tf_config: dict):
    """(master, evaluation_master) the way the original RunConfig read them from TF_CONFIG.

    An evaluator task is not part of the training cluster: its master is local ('') and its
    evaluation master is ``eval_session_master``. Unlike the original, a multi-node ``cluster``
    without ``session_master`` does not turn this task's own grpc address into ``master``: tpu_nb's
    workers are driven by ``MultiWorker``, and ``master`` means "a TPU's address" here.
    """
    task_type = tf_config.get("task", {}).get("type")
    if task_type == "evaluator":
        return "", tf_config.get("eval_session_master", "")
    master = tf_config.get("session_master", "")
    # In a cluster the original ignored eval_session_master for non-evaluator tasks.
    evaluation_master = "" if tf_config.get("cluster") else tf_config.get("eval_session_master", "")
    return master, evaluation_master


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

    ``master`` defaults to ``''`` (no remote master) or TF_CONFIG's ``session_master``;
    ``evaluation_master`` defaults to ``master`` (for an evaluator task in TF_CONFIG: its
    ``eval_session_master``, else ``''``), as in the original.

    Example::

        config = RunConfig(model_dir='/tmp/mnist', save_checkpoints_steps=1000,
                           tpu_config=TPUConfig(iterations_per_loop=100))
        config.master, config.evaluation_master   # ('', '') without TF_CONFIG
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
    # Which of master / evaluation_master the caller gave (replace() re-derives the others).
    _given_masters: tuple = dataclasses.field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.tpu_config is None:
            object.__setattr__(self, "tpu_config", TPUConfig())
        self._resolve_masters()
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
            check_positive_int("RunConfig.save_checkpoints_steps", self.save_checkpoints_steps)
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

    def _resolve_masters(self):
        given = tuple(n for n in ("master", "evaluation_master") if getattr(self, n) is not None)
        for name in given:
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"RunConfig.{name} must be an address string such as 'grpc://10.0.0.2:8470' "
                                f"('' for none), got {type(getattr(self, name)).__name__}.")
        object.__setattr__(self, "_given_masters", given)
        tf_config = read_tf_config()
        tf_master, tf_eval_master = _masters_from_tf_config(tf_config)
        if self.master is None:
            object.__setattr__(self, "master", tf_master)
        if self.evaluation_master is None:
            evaluator = tf_config.get("task", {}).get("type") == "evaluator"
            # An evaluator's cluster manager chose its eval master (possibly ''): respect it.
            object.__setattr__(self, "evaluation_master",
                               tf_eval_master if tf_eval_master or evaluator else self.master)

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
        for name in ("master", "evaluation_master"):
            # A defaulted master is derived again, so evaluation_master keeps following a replaced master.
            if name not in changes and name not in self._given_masters:
                changes[name] = None
        return dataclasses.replace(self, **changes)


def check_estimator_config(config, use_tpu: bool) -> RunConfig:
    """Validates ``TPUEstimator(config=...)``; returns it (a default ``RunConfig`` for None).

    Refuses what is not a ``tpu_nb.RunConfig`` (``NotARunConfigError``) and, with ``use_tpu=True``,
    model parallelism (``ModelParallelismError``): tpu_nb runs every replica on one core, so
    ``num_cores_per_replica > 1`` or ``input_partition_dims`` would otherwise silently run
    data-parallel with a different model layout than asked.

    >>> check_estimator_config(None, use_tpu=False).master
    ''
    """
    if config is None:
        return RunConfig()
    if not isinstance(config, RunConfig):
        kind = f"{type(config).__module__}.{type(config).__name__}"
        raise NotARunConfigError(
            f"`config` must be provided with type `tpu_config.RunConfig`: TPUEstimator needs a tpu_nb.RunConfig, "
            f"got {kind}. Build it with tpu_nb.RunConfig(tpu_config=tpu_nb.TPUConfig(...), ...) "
            "(tf.estimator.RunConfig and tf.compat.v1.estimator.tpu.RunConfig are not accepted)."
        )
    if use_tpu:
        tpu_config = config.tpu_config
        cores = tpu_config.num_cores_per_replica
        if (cores is not None and cores > 1) or tpu_config.input_partition_dims is not None:
            asked = (f"num_cores_per_replica={cores}" if cores is not None and cores > 1 else
                     f"input_partition_dims={tpu_config.input_partition_dims!r}")
            raise ModelParallelismError(
                f"TPUConfig({asked}) asks for model parallelism (one replica spread over several cores), which "
                "tpu_nb does not support. Drop num_cores_per_replica and input_partition_dims (or set "
                "num_cores_per_replica=1) to run data-parallel, one replica per core, or pass use_tpu=False."
            )
    return config
