"""Refuse, before the session starts, a graph whose session will not fit in memory.

Simulated shards replicate the whole model graph once per shard, and TensorFlow's session then
holds copies of that graph: measured on an EfficientNet-B0 model_fn (1 and 2 shards) and a small
conv net (1 to 8 shards), creating the session and running the first loop took 1.5x to 2.7x the
memory that building the graph in Python took, before any activations. A run that cannot fit
would otherwise push the machine into swap or get the notebook kernel killed, losing everything
in it; refusing after the graph is built (nothing has run, no checkpoint is touched) costs only
the build time. Linux only (``/proc``); elsewhere the check is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

#: Session start-up needs at least this multiple of the memory the graph build took (the low end of
#: what was measured, so the check refuses only runs that cannot fit).
SESSION_FACTOR = 1.5

#: ``TPU_NB_MEMORY_CHECK=0`` skips the check (for a machine whose /proc reports memory wrongly).
ENV_VAR = "TPU_NB_MEMORY_CHECK"


class InsufficientMemoryError(MemoryError):
    """The model's session would not fit in this machine's available memory."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a graph build took, what its session is expected to need, and what the machine has."""

    build_bytes: int
    session_bytes: int
    available_bytes: int

    @property
    def fits(self) -> bool:
        return self.session_bytes <= self.available_bytes


def estimate(build_bytes: int, available_bytes: int, factor: float = SESSION_FACTOR) -> MemoryEstimate:
    """The session's expected need from the memory its graph build took (pure arithmetic).

    >>> estimate(2 * 2**30, 2 * 2**30).fits
    False
    """
    build_bytes = max(0, int(build_bytes))
    return MemoryEstimate(build_bytes, int(build_bytes * factor), int(available_bytes))


def resident_bytes() -> Optional[int]:
    """This process's resident memory, or None where /proc is not available."""
    return _proc_kb("/proc/self/status", "VmRSS")


def available_bytes() -> Optional[int]:
    """Memory the kernel says new allocations can get without swapping, or None if unknown."""
    return _proc_kb("/proc/meminfo", "MemAvailable")


class BuildMeter:
    """Measures the memory a graph build takes; ``check`` refuses a session that will not fit.

    Example::

        meter = BuildMeter()
        graph = build_graph()
        meter.check("training on 8 simulated shards", num_replicas=8)
    """

    def __init__(self):
        self._before = resident_bytes()

    def check(self, what: str, num_replicas: int = 1) -> Optional[MemoryEstimate]:
        if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
            return None
        after, available = resident_bytes(), available_bytes()
        if self._before is None or after is None or available is None:
            return None
        result = estimate(after - self._before, available)
        if not result.fits:
            raise InsufficientMemoryError(_message(result, what, num_replicas))
        return result


def _message(result: MemoryEstimate, what: str, num_replicas: int) -> str:
    fixes = []
    if num_replicas > 1:
        fewer = max(1, num_replicas // 2)
        fixes.append(f"fewer simulated shards (SimulatedTPU(num_cores={fewer}) needs about half: every shard "
                     "holds a copy of the model's graph)")
        fixes.append("use_tpu=False for one device")
    fixes.append("a smaller model, or a machine with more memory")
    return (
        f"Not enough memory for {what}: building the model's graph took {_gb(result.build_bytes)}, starting its "
        f"session needs about {_gb(result.session_bytes)} more, and this machine has {_gb(result.available_bytes)} "
        f"available. Nothing has run and no checkpoint was touched. Use {', or '.join(fixes)}. "
        f"Set {ENV_VAR}=0 to try anyway."
    )


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def _proc_kb(path: str, field: str) -> Optional[int]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
