"""Simulated TPU shards: N replicas on this machine's logical CPUs (or GPUs), one MirroredStrategy."""

from __future__ import annotations

from tensorflow.core.protobuf import rewriter_config_pb2

from .base import SessionSetup
from .sharded import make_mirrored_strategy
from .replicated import Replicated
from .tpu_semantics import refuse_chief_hooks


class Simulated(Replicated):
    """TPU batch semantics on local devices: per-shard batches, per-host input pipelines, gathered outputs."""

    def make_strategy(self):
        return make_mirrored_strategy(self.topology.devices)

    def check_chief_hooks(self, spec):
        refuse_chief_hooks(self.description, spec)

    def session(self, user_config, built=None):
        return SessionSetup("", light_graph_rewrites(self.topology.session_config(user_config), user_config))


#: Grappler passes turned off for simulated shards. The remapper stays: it fuses ops into the faster CPU
#: kernels (a convolution or batch norm with its activation) that every step runs.
_DROPPED_REWRITES = ("constant_folding", "layout_optimizer", "arithmetic_optimization", "dependency_optimization",
                     "loop_optimization", "common_subgraph_elimination", "shape_optimization",
                     "implementation_selector")


def light_graph_rewrites(config, user_config=None):
    """``config`` with only Grappler's remapper, in one pass, unless the user's session_config chose the rewrites.

    Grappler rewrites the graph again for every new set of fetches (the variables' initialisation, each
    checkpoint, each loop), at a cost that grows with the graph, which N simulated shards multiply by N.
    For tensorflow/tpu's ResNet-18 on 8 shards (image 64, global batch 128, 30 steps;
    ``benchmarks/shard_cost.py``) the full set cost 8 of 111 CPU seconds; without the remapper's fused
    kernels each step took 9% longer. The passes dropped here do not change what the graph computes.
    """
    if user_config is not None and user_config.graph_options.HasField("rewrite_options"):
        return config
    rewrites = config.graph_options.rewrite_options
    rewrites.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    for name in _DROPPED_REWRITES:
        setattr(rewrites, name, rewriter_config_pb2.RewriterConfig.OFF)
    rewrites.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    return config
