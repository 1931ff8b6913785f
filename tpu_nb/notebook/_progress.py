"""Progress, speed and ETA of a training run, from its loop events.

The first loop also pays for graph building and compilation, so speeds and the
ETA are measured from the end of the first loop on. Times come from the
events (``LoopFinished.wall_time``), not from a clock read here, so replaying
events reproduces the same numbers.
"""

from __future__ import annotations

from typing import Optional


class Progress:
    """Tracks step, steps/s, examples/s and ETA; ``as_dict()`` is what the dashboard shows."""

    def __init__(self):
        self.start_step: Optional[int] = None
        self.target_step: Optional[int] = None
        self.step: Optional[int] = None
        self.batch_size: Optional[int] = None
        self.started_at: Optional[float] = None
        self.last_time: Optional[float] = None
        self._first_loop_end = None  # (wall time, step) after the first loop
        self._last_examples_per_sec = None

    def run_started(self, start_step: int, target_step: Optional[int], batch_size: Optional[int], now: float):
        self.start_step = self.step = start_step
        self.target_step = target_step
        self.batch_size = batch_size
        self.started_at = self.last_time = now

    def loop_finished(self, step: int, wall_time: float, examples_per_sec: Optional[float]):
        if self._first_loop_end is None:
            self._first_loop_end = (wall_time, step)
        self.step = step
        self.last_time = wall_time
        self._last_examples_per_sec = examples_per_sec

    @property
    def steps_per_sec(self) -> Optional[float]:
        """Average since the first loop ended (None until a second loop finished)."""
        if self._first_loop_end is None or self.last_time is None:
            return None
        t0, s0 = self._first_loop_end
        if self.step is None or self.step <= s0 or self.last_time <= t0:
            return None
        return (self.step - s0) / (self.last_time - t0)

    @property
    def examples_per_sec(self) -> Optional[float]:
        rate = self.steps_per_sec
        if rate is not None and self.batch_size:
            return rate * self.batch_size
        return self._last_examples_per_sec if rate is not None else None

    @property
    def eta_seconds(self) -> Optional[float]:
        rate = self.steps_per_sec
        if rate is None or rate <= 0 or self.target_step is None or self.step is None:
            return None
        return max(0.0, (self.target_step - self.step) / rate)

    @property
    def fraction(self) -> Optional[float]:
        """``step / target_step``: counted from step 0, as the step is shown ("step 1,200 / 5,000"),
        also for a resumed run (which starts part-way along)."""
        from .view import step_fraction

        return step_fraction(self.step, self.target_step)

    def as_dict(self) -> dict:
        elapsed = None
        if self.started_at is not None and self.last_time is not None:
            elapsed = self.last_time - self.started_at
        return {
            "step": self.step,
            "start_step": self.start_step,
            "target_step": self.target_step,
            "fraction": self.fraction,
            "steps_per_sec": self.steps_per_sec,
            "examples_per_sec": self.examples_per_sec,
            "eta_seconds": self.eta_seconds,
            "elapsed_seconds": elapsed,
        }
