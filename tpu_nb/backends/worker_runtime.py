"""Several workers through TensorFlow's own runtime: MultiWorkerMirroredStrategy in graph mode.

Each process runs a ``tf.distribute.Server`` for its task (started once per
process, with the strategy's collective settings), and its sessions connect
to it. Every worker builds the same graph and runs the same sequence of
session runs; collectives keep them in lock step. ``operation_timeout_in_ms``
turns a lost peer into an error instead of a hang.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from .replica_updates import apply_means_of_replica_gradients

_log = logging.getLogger("tpu_nb")
_servers = {}


class WorkerLostError(RuntimeError):
    """A peer worker stopped responding during a multi-worker run."""


def make_strategy():
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    return apply_means_of_replica_gradients(strategy)  # a TPU core's gradients, their mean applied


def session_target_and_config(topology, strategy, user_config=None):
    """(target, ConfigProto) for this worker; starts its server on first use."""
    config = tf.compat.v1.ConfigProto()
    if user_config is not None:
        config.CopyFrom(user_config)
    config.operation_timeout_in_ms = int(topology.operation_timeout_secs * 1000)
    config = strategy.update_config_proto(config)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    key = (str(resolver.cluster_spec().as_dict()), resolver.task_id)
    server = _servers.get(key)
    if server is None:
        # The server must carry the collective settings (group leader) or collectives never meet.
        server = tf.distribute.Server(resolver.cluster_spec(), job_name="worker", task_index=resolver.task_id,
                                      config=config, start=True)
        _servers[key] = server
        _log.info("Started worker %d's server at %s.", resolver.task_id, server.target)
    return server.target, config


def lost_peer_error(error, topology, model_dir):
    return WorkerLostError(
        f"Worker {topology.task_index} of {topology.num_replicas}: a peer worker stopped responding "
        f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). The run stopped; the last checkpoint in "
        f"{model_dir} is intact. Restart every worker with the same TF_CONFIG to resume from it, or raise "
        "MultiWorker(operation_timeout_secs=...) if the peers are just slow."
    )
