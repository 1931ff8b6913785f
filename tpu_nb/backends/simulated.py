"""Simulated TPU shards: N replicas on this machine's logical CPUs (or GPUs), one MirroredStrategy."""

from __future__ import annotations

from ..sharded import make_mirrored_strategy
from .replicated import Replicated


class Simulated(Replicated):
    """TPU batch semantics on local devices: per-shard batches, per-host input pipelines, gathered outputs."""

    def make_strategy(self):
        return make_mirrored_strategy(self.topology.devices)

    def check_chief_hooks(self, spec):
        if spec.training_chief_hooks:
            # The original's TPU training step refused them; its key phrase is kept for callers.
            raise ValueError(
                "training_chief_hooks returned by EstimatorSpec is not supported in TPUEstimator "
                f"(training on {self.description}): return them as training_hooks, or pass "
                "them to train(hooks=...).")
