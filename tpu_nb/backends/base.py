"""The interface every backend implements, and the plain values backends hand back.

A backend is where a run executes: one device, simulated shards, several
workers, a TPU. training.py, evaluation.py and prediction.py ask their backend
to build the device side and to say how to open a session; they never look at
which backend it is.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Dict, Optional

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class SessionSetup:
    """How to open a session for a run: ``target`` (``''`` in process), ``config`` (a ConfigProto or None).

    ``singular``: no automatic session re-creation, so a lost peer ends the run instead of retrying it.
    """

    target: str
    config: Optional[tf.compat.v1.ConfigProto]
    singular: bool = False


@dataclasses.dataclass(frozen=True)
class TrainGraph:
    """The device side of a ``train()`` graph, as a backend built it.

    ``loop``: (steps run, last loss, first step with a non-finite loss or -1), run with ``iterations``
    fed; ``step_after``: the global step after the loop; ``host_call``: a HostCallQueue or None;
    ``model_fn_batch``: the batch one model_fn call sees; ``layout``: how the batch is split, for the log;
    ``barrier``: an op every worker runs after its last loop (None where there is no peer to wait for);
    ``strategy``: the distribution strategy (None on one device).
    """

    global_step: Any
    input: Any
    loop: Any
    step_after: Any
    spec: Any
    host_call: Any
    model_fn_batch: Optional[int]
    layout: str
    barrier: Any = None
    strategy: Any = None


@dataclasses.dataclass(frozen=True)
class EvalGraph:
    """The device side of an ``evaluate()`` graph.

    ``loss`` and ``metrics`` hold (value, update) pairs read when the input ends; ``run(session, steps)``
    runs the evaluation steps in a MonitoredSession and returns how many had real examples.
    """

    global_step: Any
    initializer: Any
    spec: Any
    loss: Any
    metrics: Dict[str, Any]
    run: Callable[[Any, Optional[int]], int]


@dataclasses.dataclass(frozen=True)
class PredictGraph:
    """The device side of a ``predict()`` graph: ``predictions`` is fetched once per batch.

    ``loopable``: the input can be read more than once; ``empty_batch_ends``: a batch with no rows is the
    stopping signal (every shard past the end of its input), not a batch to yield.
    ``run_batch(run, session)``: for a backend whose batch is more than one fetch (host threads beside
    the run, a signal fetched with it), one batch's predictions, or None once the input has ended;
    ``run(fetches)`` runs in the prediction session (through its hooks, if any) and ``session`` is the
    raw session, for host threads. None: each batch is ``run(predictions)``.
    """

    spec: Any
    predictions: Any
    initializer: Any
    loopable: bool
    empty_batch_ends: bool
    run_batch: Optional[Callable[[Callable[[Any], Any], Any], Any]] = None


class Backend(abc.ABC):
    """Where a run executes. One subclass per backend, each in its own module under ``tpu_nb/backends``.

    Example::

        backend = select_backend(estimator, "train")
        print(backend.description)          # '8 workers (this is worker 2)', 'CPU', ...
        built = backend.build_train(estimator, input_fn, iterations)
    """

    def __init__(self, topology):
        self.topology = topology

    @property
    def description(self) -> str:
        """One line for logs and the dashboard."""
        return self.topology.description

    # -- arguments ------------------------------------------------------------
    def check_train_args(self, est, steps, max_steps) -> None:
        """Raises for ``train()`` arguments this backend cannot run (before any work)."""

    def check_chief_hooks(self, spec) -> None:
        """Raises when an EstimatorSpec's ``training_chief_hooks`` cannot run here."""

    # -- building -------------------------------------------------------------
    @abc.abstractmethod
    def build_train(self, est, input_fn, iterations) -> TrainGraph:
        """Builds the device loop of ``iterations`` training steps over this backend's replicas."""

    @abc.abstractmethod
    def build_eval(self, est, input_fn, steps, iterations_per_loop) -> EvalGraph:
        """Builds evaluation: the model on every replica, metrics updated on the host."""

    @abc.abstractmethod
    def build_predict(self, est, input_fn, select) -> PredictGraph:
        """Builds prediction; ``select(predictions)`` applies predict_keys to the host-side predictions."""

    def check_host_call_graph(self, graph) -> None:
        """Raises when what a host_call built cannot run on this backend's host."""

    # -- sessions -------------------------------------------------------------
    def session(self, user_config, built: Optional[TrainGraph] = None) -> SessionSetup:
        """The session target and config (``user_config``: RunConfig.session_config)."""
        return SessionSetup("", user_config)

    def startup(self) -> None:
        """Work before the first session (a TPU system's initialisation)."""

    def shutdown(self) -> None:
        """Work after the last session (a TPU system's shutdown)."""

    def translate_error(self, error, model_dir) -> Optional[BaseException]:
        """A clearer error for a session failure this backend understands, or None to re-raise it as is."""
        return None
