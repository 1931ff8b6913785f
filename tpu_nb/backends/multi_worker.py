"""Several worker processes in lock step: MultiWorkerMirroredStrategy, one replica per worker.

Every worker builds the same graph and runs the same session runs against
its own ``tf.distribute.Server``; per-replica values for the host are
all-gathered so each worker's host sees every worker's rows. A peer that stops
answering becomes a WorkerLostError within ``operation_timeout_secs``.
"""

from __future__ import annotations

import tensorflow as tf

from . import worker_runtime as runtime
from .sharded import install_mirrored_load
from .base import SessionSetup
from .replicated import Replicated

# Session errors that mean a peer is gone (or the collective it was in was cancelled because of it).
_LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                     tf.errors.CancelledError, tf.errors.InternalError)


class MultiWorker(Replicated):
    """One replica per worker process; worker 0 is the chief."""

    def make_strategy(self):
        install_mirrored_load()
        return runtime.make_strategy()

    def gather_in_replica(self, tensors):
        # Across workers, the host needs every worker's rows: all-gather them in replica context.
        ctx = tf.distribute.get_replica_context()
        return [ctx.all_gather(t, axis=0) for t in tensors]

    def gather_to_host(self, strategy, value, only_first=False):
        # Already all-gathered in the replica: this worker's one local copy holds every row.
        return strategy.experimental_local_results(value)[0]

    def build_barrier(self, strategy):
        # Run by every worker after its last loop, so no worker exits while a peer still needs it.
        ones = strategy.extended.call_for_each_replica(
            lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.ones([])))
        return strategy.experimental_local_results(ones)[0]

    def session(self, user_config, built=None):
        target, config = runtime.session_target_and_config(self.topology, built.strategy, user_config)
        # No automatic session re-creation: a lost peer must end the run, not retry it.
        return SessionSetup(target, config, singular=True)

    def translate_error(self, error, model_dir):
        if isinstance(error, _LOST_PEER_ERRORS):
            return runtime.lost_peer_error(error, self.topology, model_dir)
        return None
