"""Simulated TPU shards: N replicas on this machine's logical CPUs (or GPUs), one MirroredStrategy."""

from __future__ import annotations

from .sharded import make_mirrored_strategy
from .replicated import Replicated
from .tpu_semantics import refuse_chief_hooks


class Simulated(Replicated):
    """TPU batch semantics on local devices: per-shard batches, per-host input pipelines, gathered outputs."""

    def make_strategy(self):
        return make_mirrored_strategy(self.topology.devices)

    def check_chief_hooks(self, spec):
        refuse_chief_hooks(self.description, spec)
