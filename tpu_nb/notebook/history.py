"""The run history: every loop, host_call scalar and eval result of one run, kept compactly.

Each series lives in preallocated numpy arrays that double when full, so an
append is O(1) amortized and a 1M-step run of a few scalars costs tens of MB,
not a list of Python dicts. Appends come from the training thread and reads
from the notebook's thread, so both take one short lock.

Example::

    history = RunHistory()
    history.add_loop(step=100, wall_time=time.time(), loss=0.5, steps_per_sec=900.0, examples_per_sec=None)
    history.add_scalars(100, {"learning_rate": 0.01})
    history.to_frame()        # columns: step, wall_time, loss, ..., learning_rate
    history.series("loss")    # (steps, values) numpy arrays

On shards, each host_call argument arrives with one entry per shard (the
original TPUEstimator's outfeed contract). With ``num_shards`` set, an argument
of one number per shard becomes one point per step: the shards' common value
when they agree (the global step, a learning rate), else their mean, and the
series is then noted ``"mean of N shards"`` (``notes``) so that charts say so.
"""

from __future__ import annotations

import collections
import threading
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

#: Loop-level columns recorded at every loop boundary (the wall time and throughput of each loop).
LOOP_COLUMNS = ("wall_time", "loss", "steps_per_sec", "examples_per_sec")
EVAL_PREFIX = "eval/"
HOST_PREFIX = "host/"
#: host_call argument names that, holding the global step, are taken for it from their first value on.
STEP_ARGUMENT_NAMES = frozenset({"global_step", "gs", "step", "steps", "global_steps"})
_NAN = float("nan")


class _Series:
    """One growing (step, value) series; ``capacity`` doubles when full."""

    __slots__ = ("steps", "values", "n")

    def __init__(self, capacity: int = 256):
        self.steps = np.empty(capacity, np.int64)
        self.values = np.empty(capacity, np.float64)
        self.n = 0

    def extend(self, steps: np.ndarray, values: np.ndarray) -> None:
        n, k = self.n, len(steps)
        if n + k > len(self.steps):
            grow = max(n, k)
            self.steps = np.concatenate([self.steps, np.empty(grow, np.int64)])
            self.values = np.concatenate([self.values, np.empty(grow, np.float64)])
        self.steps[n:n + k] = steps
        self.values[n:n + k] = values
        self.n = n + k

    def append(self, step: int, value: float) -> None:
        n = self.n
        if n == len(self.steps):
            # Doubling keeps appends O(1) amortized; the old arrays stay valid for readers holding them.
            self.steps = np.concatenate([self.steps, np.empty(n, np.int64)])
            self.values = np.concatenate([self.values, np.empty(n, np.float64)])
        self.steps[n] = step
        self.values[n] = value
        self.n = n + 1

    def view(self) -> Tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], self.values[: self.n]

    @property
    def nbytes(self) -> int:
        return self.steps.nbytes + self.values.nbytes


def _across_shards(matrix: np.ndarray) -> Tuple[np.ndarray, bool]:
    """One value per row of ``matrix`` (steps x shards) and whether any row's shards differ.

    A row whose shards agree keeps that exact value (a mean of equal float64s may be off by an
    ulp, and a global step should read as an integer); a row that differs, or holds a NaN, gets
    the mean, so a NaN on any shard shows. NaN compares false, so it alone never marks a series
    as a mean.
    """
    # Shards first and contiguous: each reduction is then a few vectorised passes over whole rows
    # of steps, about twice as fast as reducing along the short last axis.
    shards = np.ascontiguousarray(matrix.T, dtype=np.float64)
    high, low = np.maximum.reduce(shards), np.minimum.reduce(shards)
    values = np.where(high == low, shards[0], np.add.reduce(shards) / len(shards))
    return values, bool((high > low).any())


def _as_scalar(value) -> Optional[float]:
    """A float for a numeric scalar (or 1-element array); None for anything else (images, vectors)."""
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return float(value)
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.size == 1 and arr.dtype.kind in "fiu":  # the common case, kept cheap: it runs once per step
        return float(arr.reshape(()))
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        return None
    return float(arr.reshape(()))


class RunHistory:
    """Columnar store of one run's numbers; see the module docstring for an example.

    Series names: ``loss``, ``steps_per_sec``, ``examples_per_sec``, ``wall_time`` (one point per
    loop), ``host/<name>`` (host_call scalars, one point per host_call step) and ``eval/<name>``
    (one point per evaluation).
    """

    def __init__(self, num_shards: int = 1):
        self._lock = threading.Lock()
        self._series: Dict[str, _Series] = {}
        self._order: List[str] = []  # first-seen order, so columns and charts are stable
        #: Shards each host_call argument is concatenated over (the run handle sets it at the run's
        #: start, before any host_call value); 1 keeps one-device runs exactly as they were.
        self.num_shards = num_shards
        self._notes: Dict[str, str] = {}  # series name -> how its points were made from the shards
        # Host_call values arrive once per loop: the training thread only queues them (a deque
        # append is atomic and ~50 ns); they are converted in bulk at the loop's end or a read.
        self._queued = collections.deque()
        self._loops = collections.deque()  # (step, wall_time, loss, steps/s, examples/s) per loop
        self._earlier: Optional[Tuple["RunHistory", int]] = None  # see continue_from
        # host_call arguments that are the global step itself (see _is_step_column): kept in the
        # history (its column), never charted (the step of every point already). Decided once each.
        self._step_columns: set = set()
        self._value_columns: set = set()

    # -- earlier runs of the same model_dir (charts only) ------------------------------------------
    def continue_from(self, earlier: "RunHistory", through_step: int) -> None:
        """Charts of this run begin with ``earlier``'s points up to ``through_step`` (the checkpoint
        this run starts from): a resumed or continued run's chart shows the model_dir's whole history.

        Only :meth:`chart_names` and :meth:`chart_series` see them; ``series``, ``lengths`` and
        ``to_frame`` stay this run's own.
        """
        self._earlier = (earlier, int(through_step))

    @property
    def chart_names(self) -> List[str]:
        """Series names of this run and of the runs it continues (first-seen order)."""
        names = self._earlier[0].chart_names if self._earlier is not None else []
        steps = self.step_series()
        return names + [n for n in self.names if n not in names and n not in steps]

    def step_series(self) -> set:
        """The series of host_call arguments that hold the global step: recorded, never charted."""
        with self._lock:
            self._flush()  # the step columns are known once the queued values are read
            return {HOST_PREFIX + n for n in self._step_columns}

    def chart_series(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """Like :meth:`series`, preceded by the earlier runs' points up to the step this run began at."""
        steps, values = self.series(name)
        if self._earlier is None:
            return steps, values
        earlier, through = self._earlier
        old_steps, old_values = earlier.chart_series(name)
        keep = old_steps <= through
        if not keep.any():
            return steps, values
        return np.concatenate([old_steps[keep], steps]), np.concatenate([old_values[keep], values])

    # -- appends (training thread) ---------------------------------------------------------------
    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            # Loop-level series are long; evals are few. Start small and let doubling do the rest.
            series = self._series[name] = _Series(16 if name.startswith(EVAL_PREFIX) else 256)
            self._order.append(name)
        return series

    def queue_scalars(self, step: int, values: Mapping[str, object]) -> None:
        """Like :meth:`add_scalars` with the host_call prefix, but O(1): converted on the next flush."""
        self._queued.append(((step,), {name: (value,) for name, value in values.items()}))

    def queue_columns(self, steps, columns: Mapping[str, object]) -> None:
        """Queues one loop's host_call values in O(1): ``steps`` (one per host_call step) and, per
        name, the values of those steps stacked on the first axis (what ``HostCallBatch`` carries)."""
        self._queued.append((steps, columns))

    def _flush(self) -> None:
        """Moves queued loops and host_call values into their series (lock held): one numpy copy
        per column for loops and scalar host_call columns; anything else value by value, keeping
        only the scalars."""
        loops = self._loops
        count = len(loops)
        if count:
            table = np.array([loops.popleft() for _ in range(count)], np.float64)
            steps = table[:, 0].astype(np.int64)
            for i, name in enumerate(LOOP_COLUMNS, start=1):
                self._get(name).extend(steps, table[:, i])
        queue = self._queued
        shards = self.num_shards
        for _ in range(len(queue)):
            steps, columns = queue.popleft()
            count = len(steps)
            steps = np.asarray(steps, np.int64)
            for name, column in columns.items():
                if (isinstance(column, np.ndarray) and column.dtype.kind in "fiub"
                        and column.ndim >= 1 and len(column) == count):
                    width = column.size // count if count else 0
                    if width and name not in self._step_columns and name not in self._value_columns:
                        self._is_step_column(name, steps, column.reshape(count, width))
                    if width == 1:
                        self._get(HOST_PREFIX + name).extend(steps, column.reshape(count))
                    elif width == shards > 1:
                        values, differ = _across_shards(column.reshape(count, width))
                        self._extend_across_shards(HOST_PREFIX + name, steps, values, differ)
                    # Wider columns (more than one number per shard, or per step on one device) are
                    # arrays every step: no row of them is a chartable number.
                    continue
                for step, value in zip(steps.tolist(), column):  # ragged, object or per-step values
                    self._append_host_value(name, step, value)

    def _is_step_column(self, name: str, steps: np.ndarray, rows: np.ndarray) -> bool:
        """True if host_call argument ``name`` is the global step (``host_call=(fn, [tf.reshape(gs, [1]),
        loss])``, the usual summary pattern): whole numbers within one of the step the engine gives each
        point, on every shard (read before or after the increment).
        The engine's step is then that argument's value (up to that offset), and a chart of it would be
        a straight line.
        One step alone proves little: then only the usual names decide on it."""
        if name in self._value_columns:
            return False
        if rows.dtype.kind == "b" or not len(rows):
            return False
        values = rows.astype(np.float64)
        offsets = values - steps[:, None]
        # A shard whose read saw the step's own increment is one ahead of the others: still the step.
        step_like = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values))
                         and np.all(np.abs(offsets) <= 1))
        if step_like and (len(values) > 1 or name in STEP_ARGUMENT_NAMES):
            self._step_columns.add(name)
            return True
        if not step_like:
            self._value_columns.add(name)
        return False

    def _append_host_value(self, name: str, step: int, value) -> None:
        """One step's value of host_call argument ``name``, if it is a number (or one per shard)."""
        if name not in self._step_columns and name not in self._value_columns:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            if arr.dtype.kind in "fiu" and arr.size >= 1:
                self._is_step_column(name, np.asarray([step], np.int64), arr.reshape(1, arr.size))
        scalar = _as_scalar(value)
        if scalar is not None:
            self._get(HOST_PREFIX + name).append(step, scalar)
            return
        shards = self.num_shards
        if shards > 1:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
            if arr.size == shards and arr.dtype.kind in "fiub":
                values, differ = _across_shards(arr.reshape(1, shards))
                self._extend_across_shards(HOST_PREFIX + name, np.asarray([step], np.int64), values, differ)

    def _extend_across_shards(self, name: str, steps: np.ndarray, values: np.ndarray, differ: bool) -> None:
        self._get(name).extend(steps, values)
        if differ and name not in self._notes:
            # Kept for the whole series once any step differs: the points where the shards happened
            # to agree are that same mean, and a label that came and went would only confuse.
            self._notes[name] = f"mean of {self.num_shards} shards"

    def add_loop(self, step: int, wall_time: float, loss: Optional[float], steps_per_sec: Optional[float],
                 examples_per_sec: Optional[float]) -> None:
        """Records one finished loop (what ``events.LoopFinished`` carries); O(1), no lock taken.

        The tuple is queued and moved into the loop columns in bulk at the next read, so the
        training thread pays for one deque append per loop.
        """
        nan = _NAN
        self._loops.append((step, wall_time, nan if loss is None else loss,
                            nan if steps_per_sec is None else steps_per_sec,
                            nan if examples_per_sec is None else examples_per_sec))

    def add_scalars(self, step: int, values: Mapping[str, object], prefix: str = HOST_PREFIX) -> None:
        """Records the scalar entries of ``values`` at ``step`` (non-scalars are skipped; host_call
        values of one number per shard are combined as the module docstring says)."""
        with self._lock:
            if prefix == HOST_PREFIX:
                for name, value in values.items():
                    self._append_host_value(name, step, value)
                return
            for name, value in values.items():
                scalar = _as_scalar(value)
                if scalar is not None:
                    self._get(prefix + name).append(step, scalar)

    def add_eval(self, step: int, results: Mapping[str, object]) -> None:
        """Records an evaluation's results (``global_step`` itself is not a metric)."""
        self.add_scalars(step, {k: v for k, v in results.items() if k != "global_step"}, prefix=EVAL_PREFIX)

    # -- reads (any thread) ----------------------------------------------------------------------
    @property
    def names(self) -> List[str]:
        with self._lock:
            self._flush()
            return list(self._order)

    def __len__(self) -> int:
        """Number of loops recorded."""
        with self._lock:
            self._flush()
            series = self._series.get("loss")
            return 0 if series is None else series.n

    @property
    def notes(self) -> Dict[str, str]:
        """Series name -> a note on how its points were made (``"mean of 4 shards"``); only series
        that are not plain values have one."""
        with self._lock:
            self._flush()
            return dict(self._notes)

    def lengths(self) -> Dict[str, int]:
        """Points per series (used by the dashboard to find what is new)."""
        with self._lock:
            self._flush()
            return {name: self._series[name].n for name in self._order}

    def series(self, name: str, start: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Copies of (steps, values) of series ``name`` from point ``start`` on (empty if unknown)."""
        with self._lock:
            self._flush()
            series = self._series.get(name)
            if series is None:
                return np.empty(0, np.int64), np.empty(0, np.float64)
            steps, values = series.view()
            return steps[start:].copy(), values[start:].copy()

    def last(self, name: str) -> Optional[float]:
        """The latest value of series ``name`` (None before the first point)."""
        with self._lock:
            self._flush()
            series = self._series.get(name)
            if series is None or series.n == 0:
                return None
            return float(series.values[series.n - 1])

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (capacity included)."""
        with self._lock:
            self._flush()
            return sum(s.nbytes for s in self._series.values())

    def to_frame(self):
        """A DataFrame with one row per step that has any record: ``step``, the loop columns, then
        host_call scalars (by their own name) and eval results (``eval_<name>``). ``attrs["notes"]``
        maps a column to its note (``{"loss": "mean of 4 shards"}``), as ``notes`` does a series.

        Loop columns are set at loop ends and NaN on other rows; ``series(name)`` gives one series
        without gaps.
        """
        import pandas as pd

        with self._lock:
            self._flush()
            views = {name: self._series[name].view() for name in self._order}
            views = {name: (s.copy(), v.copy()) for name, (s, v) in views.items()}
            notes = dict(self._notes)
        if not views:
            return pd.DataFrame({"step": np.empty(0, np.int64)})
        all_steps = np.unique(np.concatenate([s for s, _ in views.values()]))
        columns = {"step": all_steps}
        for name in _column_order(views):
            steps, values = views[name]
            column = np.full(len(all_steps), np.nan)
            # A step logged twice (e.g. two evals at one step) keeps the later value, as a dict would.
            column[np.searchsorted(all_steps, steps)] = values
            columns[_column_name(name)] = column
        frame = pd.DataFrame(columns)
        frame.attrs["notes"] = {_column_name(name): note for name, note in notes.items()}
        return frame


def _column_order(views: Iterable[str]) -> List[str]:
    names = list(views)
    loop = [n for n in LOOP_COLUMNS if n in names]
    rest = [n for n in names if n not in LOOP_COLUMNS]
    return loop + [n for n in rest if n.startswith(HOST_PREFIX)] + [n for n in rest if n.startswith(EVAL_PREFIX)]


def _column_name(name: str) -> str:
    if name.startswith(HOST_PREFIX):
        short = name[len(HOST_PREFIX):]
        # host_calls often log "loss" too: keep both columns rather than overwrite the loop's.
        return "host_" + short if short in LOOP_COLUMNS or short == "step" or short.startswith("eval_") else short
    if name.startswith(EVAL_PREFIX):
        return "eval_" + name[len(EVAL_PREFIX):]
    return name
