"""Rate limiting for the dashboard: at most one update per interval, whatever the event rate.

The engine publishes an event per loop (and a host_call event per step), which at
small ``iterations_per_loop`` is thousands per second. The dashboard asks the
throttle before doing any work beyond an O(1) append; anything not sent now is
sent with the next update, and the final state is always sent when the run ends.

Example::

    throttle = Throttle(per_second=4)
    if throttle.due():        # True at most 4 times per second
        send_update()
"""

from __future__ import annotations

import time
from typing import Callable

#: Messages per second from the dashboard and from the JupyterLab status comm. With the page open in a
#: browser on the training machine each message costs it a repaint: four a second measured +3.7% on
#: training, two +2.1% (benchmarks/dashboard_overhead.py).
UPDATES_PER_SECOND = 2.0


class Throttle:
    """``due()`` is True when at least ``1 / per_second`` seconds passed since it last was."""

    def __init__(self, per_second: float = UPDATES_PER_SECOND, clock: Callable[[], float] = time.monotonic):
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}.")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._last = None

    def due(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        """Makes the next ``due()`` True (e.g. to show a state change at once)."""
        self._last = None
