"""A real TPU, found through TensorFlow's cluster resolver.

Not executable yet: the TPU is resolved (a dead or silent address fails within
``connect_timeout_secs``, naming it) and the run stops with an error that says
how to run the same program on simulated shards instead.
"""

from __future__ import annotations


def refuse(found, what):
    """The error for ``what`` ('train', 'evaluate', 'predict') on the resolved TPU ``found``."""
    return RuntimeError(
        f"Found the TPU at {found.master or 'local'} ({found.num_cores} cores on {found.num_hosts} "
        f"host(s)), but this build of tpu_nb cannot execute {what}() on real TPU hardware yet. Run the "
        "same program on simulated shards (RunConfig(cluster=tpu_nb.SimulatedTPU("
        f"{found.num_cores}, {found.num_hosts})) or TPU_NB_SIMULATE={found.num_cores}x{found.num_hosts}), "
        "or pass use_tpu=False."
    )


def connect(address, timeout_secs, what):
    """Resolves the TPU at ``address`` and raises the not-yet-executable error for ``what``."""
    from ..tpu_connection import resolve_tpu

    # Fails within connect_timeout_secs with the address named, instead of TensorFlow's 5-minute hang.
    found = resolve_tpu(address, timeout_secs=timeout_secs)
    raise refuse(found, what)
