"""Backends: where a run executes, behind one interface (``base.Backend``), one module each.

=================  ==========================================================
``one_device``     this machine's CPU or first GPU, no replicas
``simulated``      N simulated TPU shards on local CPUs/GPUs (``SimulatedTPU``)
``multi_worker``   one replica per worker process (``MultiWorker``, TF_CONFIG)
``tpu``            a real TPU through TF's TPU runtime: train/evaluate/predict; verified here on fake
                   topologies and a fake chip, not yet on TPU hardware
=================  ==========================================================

``select_backend`` is the one place that reads the RunConfig to choose.

Also here, because only backends use them: ``sharded`` (one step built per replica under a
MirroredStrategy) and ``replica_collections``, ``replica_updates`` (optimizers apply the mean of the
replicas' own gradients), ``cross_shard`` (CrossShardOptimizer), ``host_calls``
and ``eval_step``, ``topology`` and ``tpu_connection`` (what a run is placed on), ``worker_runtime``
(TensorFlow's servers for several workers) and ``xla_check`` (what would not compile for a TPU).

May import ``inputs``, ``graph``, ``contract`` and ``reporting``; never ``run`` or above.
"""

from __future__ import annotations

from .base import Backend, EvalGraph, PredictGraph, SessionSetup, TrainGraph

__all__ = ["Backend", "EvalGraph", "PredictGraph", "SessionSetup", "TrainGraph", "one_device_backend",
           "select_backend"]


def one_device_backend() -> Backend:
    """This machine's CPU or first GPU."""
    from .topology import single_device
    from .one_device import OneDevice

    return OneDevice(single_device())


def select_backend(est, what: str) -> Backend:
    """The backend ``what`` ('train', 'evaluate', 'predict') of ``est`` runs on; a clear error when none fits."""
    from .topology import MultiWorker as MultiWorkerCluster
    from .topology import SimulatedTPU, multi_worker, simulated, simulated_from_env

    cfg = est.config
    if isinstance(cfg.cluster, MultiWorkerCluster):
        # Workers train in lock step; evaluation and prediction run on each worker's own device.
        if what != "train":
            return one_device_backend()
        from .multi_worker import MultiWorker

        return MultiWorker(multi_worker(cfg.cluster))
    if not est.use_tpu or (what == "evaluate" and not est._eval_on_tpu):  # noqa: SLF001
        return one_device_backend()
    sim = cfg.cluster if isinstance(cfg.cluster, SimulatedTPU) else simulated_from_env()
    # evaluate() talks to evaluation_master (defaults to master); '' means "no remote master".
    master = cfg.evaluation_master if what == "evaluate" else cfg.master
    if sim is not None:
        from .simulated import Simulated

        backend = Simulated(simulated(sim))
    elif cfg.cluster is not None or master:
        from . import tpu

        backend = tpu.connect(cfg.cluster if cfg.cluster is not None else master,
                              cfg.tpu_config.connect_timeout_secs, what, job_name=cfg.tpu_config.tpu_job_name)
    else:
        raise RuntimeError(
            f"{what}() with use_tpu=True needs a TPU, but RunConfig names none (no cluster= or master=) "
            "and no simulation was asked for. Either pass use_tpu=False to run on this machine's CPU/GPU, "
            "or simulate TPU shards: RunConfig(cluster=tpu_nb.SimulatedTPU(num_cores=8)) or set "
            "TPU_NB_SIMULATE=8 in the environment."
        )
    num_shards = cfg.tpu_config.num_shards
    topology = backend.topology
    if num_shards is not None and num_shards != topology.num_replicas:
        raise ValueError(f"TPUConfig.num_shards is not set correctly: num_shards={num_shards} does not match the "
                         f"{topology.num_replicas} shards of {backend.description}: drop num_shards or make "
                         "them equal.")
    return backend
