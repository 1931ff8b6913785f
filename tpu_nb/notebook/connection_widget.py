"""Connect a notebook to a backend: TPU, simulated TPU shards, GPU(s) or CPU, within a timeout.

``connect(...)`` resolves the topology and returns a :class:`Connection`, which
builds the ``RunConfig`` (and ``use_tpu``) that ``TPUEstimator`` and the magics
take directly. ``ConnectionWidget`` is the same with a form and a Connect button;
failures show in the widget as a message, never as a traceback.

Example::

    w = ConnectionWidget(backend="simulated", cores=8, hosts=2); w.connect()
    est = tpu_nb.TPUEstimator(model_fn, **w.connection.estimator_kwargs(model_dir="/tmp/m"),
                              train_batch_size=64)
"""

from __future__ import annotations

import dataclasses
import html
import importlib.resources
import os
import threading
from typing import Any, Optional, Tuple

import anywidget
import traitlets

BACKENDS = ("auto", "tpu", "simulated", "gpu", "cpu")


@dataclasses.dataclass(frozen=True)
class Connection:
    """A resolved backend: what it is, and the ``RunConfig`` / ``use_tpu`` that run on it.

    Example::

        conn = connect("simulated", cores=8, hosts=2)
        est = TPUEstimator(model_fn, config=conn.run_config(model_dir="/tmp/m"), use_tpu=conn.use_tpu)
    """

    backend: str  # 'tpu', 'simulated', 'gpu' or 'cpu' (auto resolves to one of these)
    num_cores: int  # shards (replicas) a global batch is split over
    num_hosts: int
    device_kinds: Tuple[str, ...]
    tf_version: str
    description: str
    use_tpu: bool
    cluster: Any = None  # RunConfig.cluster: a SimulatedTPU, 'local' (TPU VM) or None
    master: Optional[str] = None  # RunConfig.master: a TPU worker's grpc:// address

    @property
    def sharded(self) -> bool:
        return self.use_tpu

    def run_config(self, **kwargs):
        """A ``tpu_nb.RunConfig`` for this backend; ``kwargs`` are the other RunConfig fields."""
        from ..contract.config import RunConfig

        for name in ("cluster", "master"):
            if name in kwargs:
                raise ValueError(f"run_config() sets {name} from the connection; do not pass {name}=.")
        return RunConfig(cluster=self.cluster, master=self.master, **kwargs)

    def estimator_kwargs(self, **run_config_kwargs) -> dict:
        """``{'config': ..., 'use_tpu': ...}`` to splat into ``TPUEstimator(model_fn, ...)``."""
        return {"config": self.run_config(**run_config_kwargs), "use_tpu": self.use_tpu}

    def as_dict(self) -> dict:
        return {"backend": self.backend, "hosts": self.num_hosts, "cores": self.num_cores,
                "device_kinds": list(self.device_kinds), "tf_version": self.tf_version,
                "description": self.description, "use_tpu": self.use_tpu}


def connect(backend: str = "auto", tpu: Optional[str] = None, zone: Optional[str] = None,
            project: Optional[str] = None, cores: int = 8, hosts: int = 1, gpus: int = 1,
            timeout_secs: float = 30.0) -> Connection:
    """Resolves ``backend`` to a :class:`Connection`; raises with a message naming the fix.

    ``auto`` picks a TPU when one is named (``TPU_NAME``) or attached, else ``TPU_NB_SIMULATE``'s
    simulation, else a GPU, else the CPU. ``tpu`` is a Cloud TPU name, ``'local'`` or
    ``'grpc://host:port'``; the lookup gives up after ``timeout_secs`` (``TPUConnectionError``).
    ``gpus > 1`` runs TPU batch semantics with one shard per GPU.

    Example::

        connect("tpu", tpu="my-tpu", zone="us-central1-b", timeout_secs=20)
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        backend, tpu, sim = _auto_backend(tpu)
        if sim is not None:  # TPU_NB_SIMULATE's layout wins over the form's defaults
            cores, hosts = sim.num_cores, sim.num_hosts
    if backend == "tpu":
        return _connect_tpu(tpu, zone, project, timeout_secs)
    if backend == "simulated":
        return _connect_simulated(cores, hosts)
    if backend == "gpu":
        return _connect_gpu(gpus)
    return _single("cpu", "CPU")


def _auto_backend(tpu):
    import tensorflow as tf

    from ..backends.topology import simulated_from_env

    if tpu is not None or os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU"):
        return "tpu", (tpu if tpu is not None else (None if os.environ.get("TPU_NAME") else "local")), None
    sim = simulated_from_env()
    if sim is not None:
        return "simulated", None, sim
    return ("gpu" if tf.config.list_physical_devices("GPU") else "cpu"), None, None


def _connect_tpu(tpu, zone, project, timeout_secs) -> Connection:
    from ..backends.tpu_connection import resolve_tpu

    if isinstance(tpu, str):
        tpu = tpu.strip() or None  # an empty form field means "from TPU_NAME"
    found = resolve_tpu(tpu, zone=zone or None, project=project or None, timeout_secs=timeout_secs)
    local = found.master == ""
    return Connection("tpu", found.num_cores, found.num_hosts, found.device_kinds, found.tf_version,
                      f"TPU {found.num_cores} cores on {found.num_hosts} host(s) at "
                      f"{'this VM' if local else found.master}",
                      use_tpu=True, cluster="local" if local else None, master=None if local else found.master)


def _connect_simulated(cores, hosts) -> Connection:
    import tensorflow as tf

    from ..backends.topology import SimulatedTPU, simulated

    sim = SimulatedTPU(_as_int("cores", cores), _as_int("hosts", hosts))
    topology = simulated(sim)
    return Connection("simulated", topology.num_replicas, topology.num_hosts, (topology.device_type,),
                      tf.__version__, topology.description, use_tpu=True, cluster=sim)


def _connect_gpu(gpus) -> Connection:
    import tensorflow as tf

    from ..backends.topology import SimulatedTPU

    gpus = _as_int("gpus", gpus)
    visible = len(tf.config.list_physical_devices("GPU"))
    if visible < gpus:
        raise RuntimeError(f"{gpus} GPU(s) asked for, but TensorFlow sees {visible}. Choose the CPU backend, "
                           "or check the CUDA installation (`nvidia-smi`; the tensorflow[and-cuda] package).")
    if gpus == 1:
        return _single("gpu", "GPU")
    sim = SimulatedTPU(gpus, 1, use_gpus=True)
    return Connection("gpu", gpus, 1, ("CPU", "GPU"), tf.__version__, f"{gpus} GPUs as TPU shards (one per GPU)",
                      use_tpu=True, cluster=sim)


def _single(backend, device) -> Connection:
    import tensorflow as tf

    kinds = tuple(sorted({d.device_type for d in tf.config.list_physical_devices()}))
    return Connection(backend, 1, 1, kinds, tf.__version__, f"one {device} (use_tpu=False)", use_tpu=False)


def _as_int(name, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}.") from None
    if number != value and not isinstance(value, str):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    return number


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _esm_source() -> str:
    return importlib.resources.files(__package__).joinpath("connection_widget.js").read_text(encoding="utf-8")


class ConnectionWidget(anywidget.AnyWidget):
    """A form to choose and resolve a backend; ``.connection`` is the result once ``status == 'connected'``.

    The browser sets the form traits and bumps ``connect_clicks``; the connection then runs in a
    thread (a TPU lookup may take up to ``timeout_secs``), so the kernel stays responsive.

    Example::

        w = ConnectionWidget(); w            # choose a backend, press Connect
        est = TPUEstimator(model_fn, **w.connection.estimator_kwargs(), train_batch_size=64)
    """

    _esm = _esm_source()
    backend = traitlets.Unicode("auto").tag(sync=True)
    backends = traitlets.List(list(BACKENDS)).tag(sync=True)
    tpu = traitlets.Unicode("").tag(sync=True)
    zone = traitlets.Unicode("").tag(sync=True)
    project = traitlets.Unicode("").tag(sync=True)
    cores = traitlets.Int(8).tag(sync=True)
    hosts = traitlets.Int(1).tag(sync=True)
    gpus = traitlets.Int(1).tag(sync=True)
    timeout_secs = traitlets.Float(30.0).tag(sync=True)
    connect_clicks = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)  # idle, connecting, connected, error
    error = traitlets.Unicode("").tag(sync=True)
    info = traitlets.Dict().tag(sync=True)

    def __init__(self, **options):
        super().__init__(**options)
        self.connection: Optional[Connection] = None
        self._worker: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.observe(self._clicked, names="connect_clicks")

    def connect(self, block: bool = True) -> Optional[Connection]:
        """Resolves the chosen backend (in a thread when ``block=False``); errors go to ``.error``."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return None  # a second click while connecting: the running attempt answers
            self.status, self.error, self.info = "connecting", "", {}
            self.connection = None
            options = dict(backend=self.backend, tpu=self.tpu or None, zone=self.zone or None,
                           project=self.project or None, cores=self.cores, hosts=self.hosts, gpus=self.gpus,
                           timeout_secs=self.timeout_secs)
            self._worker = threading.Thread(target=self._resolve, args=(options,), name="tpu_nb-connect",
                                            daemon=True)
            self._worker.start()
        if block:
            self.wait()
        return self.connection

    def wait(self, timeout: Optional[float] = None) -> Optional[Connection]:
        """Waits for a running connection attempt; returns the connection (None on error)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return self.connection

    def run_config(self, **kwargs):
        """``self.connection.run_config(**kwargs)``; a clear error before a successful Connect."""
        return self._connected().run_config(**kwargs)

    def estimator_kwargs(self, **kwargs) -> dict:
        return self._connected().estimator_kwargs(**kwargs)

    def _connected(self) -> Connection:
        if self.connection is None:
            reason = f" (the last attempt failed: {self.error})" if self.error else ""
            raise RuntimeError(f"Not connected{reason}: choose a backend and press Connect, or call connect().")
        return self.connection

    def _clicked(self, change) -> None:
        self.connect(block=False)

    def _resolve(self, options) -> None:
        try:
            connection = connect(**options)
        except Exception as e:  # shown in the widget: a notebook user needs the message, not a traceback
            self.error, self.status = _describe_error(e), "error"
            return
        self.connection = connection
        self.info = connection.as_dict()
        self.status = "connected"

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"tpu_nb connection: {self._summary()}"
        data["text/html"] = f"<div class='tpu-nb-connection'><b>tpu_nb connection</b>: {html.escape(self._summary())}</div>"
        return data, metadata

    def _summary(self) -> str:
        if self.status == "connected" and self.info:
            i = self.info
            return (f"{i['description']} — {i['hosts']} host(s), {i['cores']} core(s), devices "
                    f"{', '.join(i['device_kinds'])}, TensorFlow {i['tf_version']}")
        if self.status == "error":
            return f"error: {self.error}"
        return f"{self.status} (backend {self.backend})"
