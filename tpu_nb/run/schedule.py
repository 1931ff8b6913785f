"""Pure arithmetic for how many steps each ``Session.run`` executes.

TPUEstimator runs ``iterations_per_loop`` steps per session run, cut short by
the last loop so that training stops exactly at the target step. Hooks,
checkpoints and summaries only happen at these loop boundaries.
"""

from __future__ import annotations

import numbers
from typing import List, Optional


def check_step_arg(name: str, value) -> Optional[int]:
    """Validates a ``steps``/``max_steps`` argument and returns it as an int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be int (a whole number), got {value!r} ({type(value).__name__}). "
            f"Pass a whole number of steps, e.g. {name}={int(value) if isinstance(value, numbers.Real) else 1000}."
        )
    if value <= 0:
        # "Must specify steps > 0" is the original's wording, which callers match on.
        raise ValueError(f"Must specify {name} > 0, given: {value}: {name} must be positive. Pass a positive "
                         "number of steps, or None.")
    return int(value)


def target_step(start_step: int, steps: Optional[int], max_steps: Optional[int]) -> Optional[int]:
    """The global step training stops at (None: until the input ends).

    ``steps`` counts from ``start_step`` (the checkpointed step); ``max_steps``
    is absolute. Passing both is an error, as in the original.
    """
    if steps is not None and max_steps is not None:
        raise ValueError(
            "Can not provide both steps and max_steps. Use steps to train N more "
            "steps from the checkpoint, or max_steps to train up to an absolute step."
        )
    if steps is not None:
        return start_step + steps
    return max_steps


def next_loop_size(current_step: int, target: Optional[int], iterations_per_loop: int) -> int:
    """Steps the next session run executes: ``min(iterations_per_loop, remaining)``."""
    if iterations_per_loop <= 0:
        raise ValueError(f"iterations_per_loop must be positive, got {iterations_per_loop}")
    if target is None:
        return iterations_per_loop
    return max(0, min(iterations_per_loop, target - current_step))


def loop_boundaries(start_step: int, target: int, iterations_per_loop: int) -> List[int]:
    """Global step after each loop when training from ``start_step`` to ``target``.

    >>> loop_boundaries(0, 10, 4)
    [4, 8, 10]
    >>> loop_boundaries(3, 13, 4)
    [7, 11, 13]
    """
    out = []
    step = start_step
    while True:
        k = next_loop_size(step, target, iterations_per_loop)
        if k == 0:
            return out
        step += k
        out.append(step)


class TimedLoopSizer:
    """Chooses loop sizes that fill a wall-time budget per loop (``'30s'``).

    The first loop runs a single step because it also pays for graph
    compilation; later loops are sized from the measured time per step of the
    previous loop, growing at most ``max_growth`` times per loop so one slow
    or fast outlier cannot produce an absurd loop.
    """

    def __init__(self, budget_secs: float, max_growth: float = 10.0, max_steps_per_loop: int = 1_000_000):
        if budget_secs <= 0:
            raise ValueError(f"time budget per loop must be positive, got {budget_secs}")
        self.budget_secs = float(budget_secs)
        self.max_growth = max_growth
        self.max_steps_per_loop = max_steps_per_loop
        self._size = 1

    @property
    def size(self) -> int:
        return self._size

    def observe(self, steps: int, seconds: float) -> int:
        """Records that ``steps`` took ``seconds``; returns the next loop size."""
        if steps <= 0:
            return self._size
        per_step = max(seconds, 1e-9) / steps
        ideal = self.budget_secs / per_step
        grown = min(ideal, steps * self.max_growth)
        self._size = int(max(1, min(grown, self.max_steps_per_loop)))
        return self._size
