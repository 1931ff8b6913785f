"""What the kernel sends the browser: status plus new points, downsampled and size-capped.

Two shapes share one encoding, ``{name: [steps, values]}`` with values rounded
to 5 significant digits (the chart cannot show more) and NaN/Inf as ``null``
(JSON has neither):

* a *snapshot*: every series downsampled to at most ``MAX_POINTS`` points (the
  widget's synced state at the start and end of a run);
* a *delta*: the points added since the last delta, at most ``max_bytes`` in all
  (a series with more new points than its share is downsampled; a series that
  does not fit waits for the next delta).
"""

from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .history import RunHistory

#: Series the kernel keeps but the browser does not get (speeds are shown as numbers, from status).
#: ``wall_time`` is sent but not charted: the hover read-out shows the wall time of a step.
NOT_CHARTED = frozenset({"steps_per_sec", "examples_per_sec"})
#: Series sent to 0.1 s instead of 5 significant digits (epoch seconds would lose minutes).
_ABSOLUTE = {"wall_time": 1}
#: Points per series the browser holds (it halves a series that grows past this).
MAX_POINTS = 2000
#: Steady-state budget: 12 KB per update, 48 KB/s even at 4 updates/s (the default is 2), under 50 KB/s.
DELTA_MAX_BYTES = 12_000
_MIN_POINTS_PER_SERIES = 4


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points keeping each bucket's min and max, so spikes stay visible.

    >>> s, v = downsample(np.arange(10_000), np.random.rand(10_000), 2000); len(s) <= 2000
    True
    """
    n = len(steps)
    if n <= max_points:
        return steps, values
    buckets = max(1, max_points // 2 - 1)
    width = -(-n // buckets)  # ceil: equal buckets, so one reshape does all of them at once
    padded = np.full(buckets * width, np.nan)
    padded[:n] = values
    grid = padded.reshape(buckets, width)
    # NaN (a failed loss, the padding) must not hide a bucket's real extremes.
    nan = np.isnan(grid)
    lo = np.argmin(np.where(nan, np.inf, grid), axis=1)
    hi = np.argmax(np.where(nan, -np.inf, grid), axis=1)
    base = np.arange(buckets) * width
    idx = np.concatenate([base + lo, base + hi, [0, n - 1]])  # first and latest points always shown
    idx = np.unique(idx[idx < n])
    if len(idx) > max_points:
        idx = np.concatenate([idx[: max_points - 1], idx[-1:]])
    return steps[idx], values[idx]


def encode(steps: np.ndarray, values: np.ndarray, decimals: Optional[int] = None) -> List[list]:
    """``[steps, values]`` as JSON-ready lists (values to 5 significant digits, or to ``decimals``
    decimal places; NaN/Inf -> None).

    >>> encode(np.array([1, 2]), np.array([0.123456789, np.nan]))
    [[1, 2], [0.12346, None]]
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    cleaned = np.where(finite, values, 0.0)
    out = (round_significant(cleaned) if decimals is None else np.round(cleaned, decimals)).tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            out[i] = None
    return [np.asarray(steps, np.int64).tolist(), out]


def round_significant(values: np.ndarray, digits: int = 5) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits, vectorized (finite input).

    Scaling by an exact power of ten (multiplying for small numbers, dividing for large ones)
    leaves the double nearest to the rounded decimal, so JSON writes it in at most ``digits``
    digits instead of a long tail.
    """
    magnitude = np.abs(values)
    exponent = np.zeros(values.shape, np.int64)
    nonzero = magnitude > 0
    exponent[nonzero] = np.floor(np.log10(magnitude[nonzero])).astype(np.int64) - (digits - 1)
    with np.errstate(over="ignore", invalid="ignore"):  # only in the branch np.where drops
        scale = np.power(10.0, np.abs(exponent))
        small = exponent < 0
        rounded = np.where(small, np.round(values * scale) / scale, np.round(values / scale) * scale)
    # Powers of ten are exact doubles only up to 10**22: beyond that, round through the decimal
    # string (rare: values past ~1e26 or below ~1e-18).
    far = np.flatnonzero(np.abs(exponent) > 22)
    for i in far.tolist():
        rounded[i] = float(f"{values[i]:.{digits}g}")
    return rounded


def snapshot(history: RunHistory, max_points: int = MAX_POINTS) -> Dict[str, List[list]]:
    """Every series of ``history`` with the earlier runs it continues (``RunHistory.continue_from``),
    each downsampled to ``max_points``."""
    out = {}
    for name in history.chart_names:
        if name in NOT_CHARTED:
            continue
        out[name] = encode(*downsample(*history.chart_series(name), max_points), _ABSOLUTE.get(name))
    return out


class DeltaCursor:
    """Remembers how much of each series the browser has; builds the next size-capped delta."""

    def __init__(self, max_bytes: int = DELTA_MAX_BYTES):
        self.max_bytes = max_bytes
        self._sent: Dict[str, int] = {}

    def mark_all_sent(self, history: RunHistory) -> None:
        """After a snapshot, the browser has everything."""
        self._sent = history.lengths()

    def next_delta(self, history: RunHistory, reserved_bytes: int = 0,
                   between: Optional[Callable[[], None]] = None) -> Dict[str, List[list]]:
        """New points per series, at most ``max_bytes - reserved_bytes`` of JSON in all.

        ``between()`` is called after each series (the dashboard's thread passes a GIL yield).
        """
        budget = self.max_bytes - reserved_bytes
        lengths = history.lengths()
        steps = history.step_series()  # a host_call's global_step argument: the points' step, not a chart
        fresh = [name for name, n in lengths.items()
                 if name not in NOT_CHARTED and name not in steps and n > self._sent.get(name, 0)]
        if not fresh:
            return {}
        per_series = max(_MIN_POINTS_PER_SERIES, budget // (24 * len(fresh)))  # ~24 bytes per point in JSON
        out: Dict[str, List[list]] = {}
        used = 2
        for name in fresh:
            start = self._sent.get(name, 0)
            steps, values = history.series(name, start)
            count = len(steps)
            steps, values = downsample(steps, values, per_series)
            # An upper bound instead of serializing to measure: the kernel serializes it once anyway.
            size = _json_bound(name, steps, values)
            if used + size > budget:
                continue  # sent with a later delta; its cursor does not move
            used += size
            out[name] = encode(steps, values, _ABSOLUTE.get(name))
            self._sent[name] = start + count
            if between is not None:
                between()
        return out


def _json_bound(name: str, steps: np.ndarray, values: np.ndarray) -> int:
    """Bytes that ``{name: encode(steps, values)}`` takes as compact JSON, at most."""
    n = len(steps)
    if not n:
        return len(json.dumps(name)) + 8
    step_bytes = len(str(int(np.abs(steps).max()))) + 2  # digits, a minus sign, a comma
    # After rounding to 5 digits a float prints in at most 12 characters ("-1.2345e-100"), except
    # from 1e5 to 1e16, where Python writes every digit ("-1234500000000000.0"); null is 4.
    magnitude = np.abs(values)
    value_bytes = 20 if np.any((magnitude >= 99999.5) & (magnitude < 1e16)) else 13
    return len(json.dumps(name)) + 8 + n * (step_bytes + value_bytes)


def json_size(message: Optional[dict]) -> int:
    """Bytes of ``message`` as compact JSON (what the comm carries, give or take the envelope)."""
    return len(json.dumps(message, separators=(",", ":"), allow_nan=True))
