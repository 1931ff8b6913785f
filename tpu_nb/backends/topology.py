"""Where a run executes: one device, N simulated TPU shards, or a real TPU.

``SimulatedTPU`` gives TPU batch semantics on logical CPU devices (or on
GPUs when there are enough), so TPU code can be debugged on a laptop. The
``TPU_NB_SIMULATE`` environment variable turns any ``use_tpu=True``
program into a simulated run without code changes: ``8`` (8 cores, 1
host) or ``8x2`` (8 cores over 2 hosts).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
from typing import Optional, Tuple

import tensorflow as tf

SIMULATE_ENV = "TPU_NB_SIMULATE"
# This process as a device-name prefix: simulated hosts all live in task 0.
_LOCAL_TASK = "/replica:0/task:0"


@dataclasses.dataclass(frozen=True)
class SimulatedTPU:
    """A simulated TPU: ``num_cores`` shards over ``num_hosts`` hosts, each host with its own input pipeline.

    Example::

        config = RunConfig(cluster=SimulatedTPU(num_cores=8, num_hosts=2), model_dir='/tmp/m')
    """

    num_cores: int = 8
    num_hosts: int = 1
    use_gpus: Optional[bool] = None  # None: GPUs when at least num_cores are visible, else CPUs

    def __post_init__(self):
        for name in ("num_cores", "num_hosts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"SimulatedTPU.{name} must be a positive int, got {value!r}.")
        if self.num_cores % self.num_hosts:
            raise ValueError(
                f"SimulatedTPU: {self.num_cores} cores cannot be split evenly over {self.num_hosts} hosts; "
                "use a num_cores that is a multiple of num_hosts."
            )


def simulated_from_env() -> Optional[SimulatedTPU]:
    """The ``TPU_NB_SIMULATE`` request, if any (``'8'`` or ``'8x2'``)."""
    value = os.environ.get(SIMULATE_ENV, "").strip()
    if not value or value == "0":
        return None
    match = re.fullmatch(r"([1-9][0-9]*)(?:x([1-9][0-9]*))?", value)
    if not match:
        raise ValueError(
            f"{SIMULATE_ENV}={value!r} is not valid: use the number of cores, optionally with hosts, "
            f"e.g. {SIMULATE_ENV}=8 or {SIMULATE_ENV}=8x2."
        )
    return SimulatedTPU(int(match.group(1)), int(match.group(2) or 1))


@dataclasses.dataclass(frozen=True)
class Topology:
    """The resolved layout of a run, as plain data; each backend's constructor below fills it in.

    ``host_devices``: the device each host's input pipeline runs on (full form, one per host);
    ``local_host_ids``: the hosts whose input pipelines and replicas live in this process;
    ``logical_cpus``: CPU devices the session must create (simulated shards on CPUs), 0 for none.
    """

    kind: str  # a label: 'single', 'simulated', 'multi_worker'; backends decide, nothing branches on it
    num_replicas: int
    num_hosts: int
    devices: Tuple[str, ...]  # this process's devices
    device_type: str  # 'CPU', 'GPU' or 'TPU'
    description: str  # one line for logs and the dashboard
    host_devices: Tuple[str, ...]
    local_host_ids: Tuple[int, ...]
    task_index: int = 0  # this process's host (multi-worker: its worker index)
    operation_timeout_secs: Optional[float] = None
    logical_cpus: int = 0

    @property
    def local_hosts(self) -> Tuple[int, ...]:
        """The hosts whose input pipelines and replicas live in this process."""
        return self.local_host_ids

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0

    @property
    def replicas_per_host(self) -> int:
        return self.num_replicas // self.num_hosts

    def host_device(self, host: int) -> str:
        """The device a host's input pipeline runs on (the first device of its group), in full form.

        Full form (``/replica:0/task:0/device:CPU:0``) because input_fns see it through
        ``params['context'].current_input_fn_deployment()``, and the original gave that form.
        """
        return self.host_devices[host]

    def replica_host(self, replica: int) -> Tuple[str, int]:
        """``(host device, ordinal on that host)`` of a replica, with the host device as the original wrote it
        for ``device_for_replica`` (no ``/replica:0`` component: ``/task:0/device:CPU:0``)."""
        if isinstance(replica, bool) or not isinstance(replica, numbers.Integral) or not 0 <= replica < self.num_replicas:
            raise ValueError(f"replica_id must be an int in [0, {self.num_replicas}), got {replica!r}: this run has "
                             f"{self.num_replicas} replicas.")
        host, ordinal = divmod(int(replica), self.replicas_per_host)
        return self.host_device(host).replace("/replica:0", "", 1), ordinal

    def session_config(self, user_config=None):
        """A ConfigProto giving this topology's devices (logical CPUs need device_count, not global state)."""
        config = tf.compat.v1.ConfigProto()
        if user_config is not None:
            config.CopyFrom(user_config)
        if self.logical_cpus:
            config.device_count["CPU"] = max(self.logical_cpus, config.device_count.get("CPU", 0))
            _trim_grappler_for_logical_cpus(config.graph_options.rewrite_options)
        config.allow_soft_placement = True
        return config


def _trim_grappler_for_logical_cpus(rewrite):
    """Trims Grappler's work on logical CPUs, in every setting the user left at its default.

    The layout and memory passes serve accelerators (NCHW layouts, swapping or recomputing to fit device
    memory); on logical CPUs they changed no node of a published conv net's 8-shard training graph, yet
    took seconds of the session's start, which N shards make N times longer. Grappler's second round of
    passes (its default is two) took about a third of its time on that graph and removed 3% of its
    nodes, duplicates the first round's constant folding had made; steps were as fast without it.
    """
    if rewrite.layout_optimizer == rewrite.DEFAULT:
        rewrite.layout_optimizer = rewrite.OFF
    if rewrite.memory_optimization == rewrite.DEFAULT_MEM_OPT:
        rewrite.memory_optimization = rewrite.NO_MEM_OPT
    if rewrite.meta_optimizer_iterations == rewrite.DEFAULT_NUM_ITERS:
        rewrite.meta_optimizer_iterations = rewrite.ONE


def single_device() -> Topology:
    """This machine's first GPU, or its CPU."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    device_type = "GPU" if gpu else "CPU"
    return Topology("single", 1, 1, (f"/device:{device_type}:0",), device_type, device_type,
                    host_devices=(_LOCAL_TASK + "/device:CPU:0",), local_host_ids=(0,))


def simulated(sim: SimulatedTPU) -> Topology:
    """``sim``'s shards on this process's GPUs (when there are enough, or asked for) or logical CPUs."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    use_gpus = sim.use_gpus if sim.use_gpus is not None else gpus >= sim.num_cores
    if use_gpus and gpus < sim.num_cores:
        raise ValueError(f"SimulatedTPU(use_gpus=True) needs {sim.num_cores} GPUs, but {gpus} are visible.")
    device_type = "GPU" if use_gpus else "CPU"
    devices = tuple(f"/device:{device_type}:{i}" for i in range(sim.num_cores))
    per_host = sim.num_cores // sim.num_hosts
    # A host's input pipeline: on GPUs the CPU feeding them; on CPUs the first device of the host's group.
    hosts = tuple(_LOCAL_TASK + ("/device:CPU:0" if use_gpus else devices[h * per_host]) for h in range(sim.num_hosts))
    plural = "s" if sim.num_hosts > 1 else ""
    description = (f"simulated TPU {sim.num_cores}x{sim.num_hosts} ({sim.num_cores} shards on {device_type}, "
                   f"{sim.num_hosts} host{plural})")
    return Topology("simulated", sim.num_cores, sim.num_hosts, devices, device_type, description,
                    host_devices=hosts, local_host_ids=tuple(range(sim.num_hosts)),
                    logical_cpus=0 if use_gpus else sim.num_cores)


@dataclasses.dataclass(frozen=True)
class MultiWorker:
    """Several worker processes, described by the ``TF_CONFIG`` environment variable, in lock step.

    Every worker runs the same program; worker 0 is the chief and writes
    checkpoints and summaries to ``model_dir`` (which all workers must be able
    to read). A peer that stops responding makes every other worker fail within
    ``operation_timeout_secs`` instead of hanging.

    Example::

        # on each machine, with TF_CONFIG={"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}
        config = RunConfig(cluster=MultiWorker(operation_timeout_secs=120), model_dir='/shared/model')
    """

    operation_timeout_secs: float = 300.0

    def __post_init__(self):
        if not isinstance(self.operation_timeout_secs, numbers.Real) or self.operation_timeout_secs <= 0:
            raise ValueError(f"MultiWorker.operation_timeout_secs must be positive, got {self.operation_timeout_secs!r}.")

    def cluster_resolver(self):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        spec = resolver.cluster_spec().as_dict()
        workers = spec.get("worker", [])
        if not workers or resolver.task_type != "worker" or resolver.task_id is None:
            raise ValueError(
                "MultiWorker needs TF_CONFIG with a 'worker' cluster and this process's task, e.g. "
                'TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                '"task": {"type": "worker", "index": 0}}\'.'
            )
        return resolver


def multi_worker(mw: MultiWorker) -> Topology:
    """One replica (and one host) per worker of TF_CONFIG's cluster; this process is its task."""
    resolver = mw.cluster_resolver()
    workers = len(resolver.cluster_spec().as_dict()["worker"])
    task = int(resolver.task_id)
    hosts = tuple(f"/job:worker/replica:0/task:{w}/device:CPU:0" for w in range(workers))
    return Topology("multi_worker", workers, workers, (hosts[task],), "CPU",
                    f"{workers} workers (this is worker {task})", host_devices=hosts, local_host_ids=(task,),
                    task_index=task, operation_timeout_secs=mw.operation_timeout_secs)
