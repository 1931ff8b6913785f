"""Predictions into a pandas DataFrame: one row per real input example, built from whole batches.

``predict_frame`` consumes ``estimator.predict(..., yield_single_examples=False)``
batch by batch and concatenates numpy arrays per prediction key, so a million
predictions never become a million dicts. Rows are the real input examples, in
input order: the engine already slices off its own padding (a short last batch
on TPU shards), and rows the user's pipeline marked as padding (a boolean
``is_padding`` prediction, or the key named by ``padding_key``) are dropped
together with that column.

How each prediction becomes columns:

* one value per example (shape ``[n]``) -> one column;
* a small fixed vector (``[n, k]``, ``k <= max_vector_width``) -> columns
  ``name_0 .. name_{k-1}`` (``vectors='columns'``) or one column of arrays
  (``vectors='array'``);
* anything larger, of higher rank, or ragged (the trailing shape changes from
  batch to batch) -> one column holding an array per row;
* bfloat16/float16 -> float32; bytes -> str with ``decode_bytes=True``.

Example::

    frame = predict_frame(est, predict_input_fn, index='example_id')
    for chunk in iter_predict_frames(est, predict_input_fn, chunk_rows=100_000):
        chunk.to_parquet(...)   # outputs that do not fit in memory

Engine-level: needs numpy and pandas only (no notebook imports).
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np
import pandas as pd

#: The prediction key a pipeline uses to mark padded rows (``True`` = padding), as in TPU examples.
DEFAULT_PADDING_KEY = "is_padding"
_SINGLE_KEY = "predictions"  # column name when model_fn returns one tensor, not a dict
_VECTOR_MODES = ("columns", "array")
_HALF_FLOATS = ("bfloat16", "float16")


def predict_frame(estimator, input_fn, predict_keys=None, *, checkpoint_path=None, hooks=None,
                  padding_key: Optional[str] = None, vectors: str = "columns", max_vector_width: int = 16,
                  decode_bytes: bool = False, index: Optional[str] = None,
                  max_rows: Optional[int] = None) -> pd.DataFrame:
    """Predicts with ``estimator`` and returns a DataFrame with exactly one row per real input example.

    Args:
      estimator, input_fn, predict_keys, checkpoint_path, hooks: as ``estimator.predict``.
      padding_key: the boolean prediction marking padded rows (dropped with the column). Default:
        ``'is_padding'`` when the predictions have it; naming a key they lack is an error.
      vectors: ``'columns'`` (``name_0..name_k``) or ``'array'`` (one column of arrays) for
        ``[n, k]`` outputs with ``k <= max_vector_width``; wider outputs are always array cells.
      decode_bytes: decode bytes outputs (UTF-8) to str.
      index: a prediction key (e.g. an id passed through from the features) to use as the index;
        default a RangeIndex of input positions.
      max_rows: stop after this many rows (the rest of the input is not predicted).

    Example::

        df = predict_frame(est, predict_input_fn, vectors='array', max_rows=10_000)
        df.head()
    """
    options = _Options(padding_key, vectors, max_vector_width, decode_bytes, index)
    _check_rows("max_rows", max_rows)
    batches = estimator.predict(input_fn, predict_keys=predict_keys, hooks=hooks,
                                checkpoint_path=checkpoint_path, yield_single_examples=False)
    frames = list(_frames(batches, options, chunk_rows=None, max_rows=max_rows))
    if not frames:
        return _empty_frame(options)
    return frames[0]


def iter_predict_frames(estimator, input_fn, predict_keys=None, *, chunk_rows: int = 100_000,
                        checkpoint_path=None, hooks=None, padding_key: Optional[str] = None,
                        vectors: str = "columns", max_vector_width: int = 16, decode_bytes: bool = False,
                        index: Optional[str] = None, max_rows: Optional[int] = None) -> Iterator[pd.DataFrame]:
    """Like :func:`predict_frame`, but yields DataFrames of at most ``chunk_rows`` rows as they fill.

    Only about one chunk (plus one batch) is held in memory; the default RangeIndex continues
    across chunks, so concatenating the chunks gives ``predict_frame``'s result.

    Example::

        for chunk in iter_predict_frames(est, predict_input_fn, chunk_rows=50_000):
            chunk.to_csv('preds.csv', mode='a', header=chunk.index[0] == 0)
    """
    options = _Options(padding_key, vectors, max_vector_width, decode_bytes, index)
    _check_rows("chunk_rows", chunk_rows, required=True)
    _check_rows("max_rows", max_rows)
    batches = estimator.predict(input_fn, predict_keys=predict_keys, hooks=hooks,
                                checkpoint_path=checkpoint_path, yield_single_examples=False)
    return _frames(batches, options, chunk_rows=chunk_rows, max_rows=max_rows)


def batches_to_frame(batches: Iterable, *, padding_key: Optional[str] = None, vectors: str = "columns",
                     max_vector_width: int = 16, decode_bytes: bool = False, index: Optional[str] = None,
                     max_rows: Optional[int] = None) -> pd.DataFrame:
    """The conversion alone: batches (dicts of arrays, or arrays) -> DataFrame, same rules as predict_frame.

    >>> batches_to_frame([{'p': np.array([[.2, .8], [.6, .4]]), 'is_padding': np.array([False, True])}])
       p_0  p_1
    0  0.2  0.8
    """
    options = _Options(padding_key, vectors, max_vector_width, decode_bytes, index)
    _check_rows("max_rows", max_rows)
    frames = list(_frames(iter(batches), options, chunk_rows=None, max_rows=max_rows))
    return frames[0] if frames else _empty_frame(options)


# --------------------------------------------------------------------------- options


class _Options:
    def __init__(self, padding_key, vectors, max_vector_width, decode_bytes, index):
        if vectors not in _VECTOR_MODES:
            raise ValueError(f"vectors must be 'columns' or 'array', got {vectors!r}.")
        if isinstance(max_vector_width, bool) or not isinstance(max_vector_width, (int, np.integer)) \
                or max_vector_width < 0:
            raise ValueError(f"max_vector_width must be an int >= 0, got {max_vector_width!r}.")
        for name, value in (("padding_key", padding_key), ("index", index)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a prediction key (str) or None, got {value!r}.")
        self.padding_key = padding_key
        self.padding_required = padding_key is not None  # a named key must exist; the default may not
        self.vectors = vectors
        self.max_vector_width = int(max_vector_width)
        self.decode_bytes = bool(decode_bytes)
        self.index = index


def _check_rows(name, value, required=False):
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (1 if required else 0):
        raise ValueError(f"{name} must be a positive int{'' if required else ' or None'}, got {value!r}.")


# --------------------------------------------------------------------------- batches -> rows


def _as_batch_dict(batch) -> Dict[str, object]:
    if isinstance(batch, dict):
        return batch
    return {_SINGLE_KEY: batch}


def _ragged_rows(value) -> Optional[List[np.ndarray]]:
    """Rows of a RaggedTensorValue (duck-typed: numpy-only module), else None."""
    splits = getattr(value, "row_splits", None)
    flat = getattr(value, "flat_values", None)
    if splits is None or flat is None or getattr(value, "ragged_rank", 1) != 1:
        return None
    splits = np.asarray(splits)
    return np.split(np.asarray(flat), splits[1:-1])


def _batch_arrays(batch, options: _Options, batch_number: int):
    """(columns, real-row mask or None, row count) of one batch; checks every key has the batch dim."""
    batch = _as_batch_dict(batch)
    arrays: Dict[str, object] = {}
    for key, value in batch.items():
        rows = _ragged_rows(value)
        if rows is not None:
            arrays[key] = rows  # a list of per-row arrays (ragged)
            continue
        arr = np.asarray(value)
        if arr.ndim == 0:
            raise ValueError(
                f"Prediction {key!r} has no batch dimension (a scalar per batch), so it cannot be one value "
                "per example. Give it a leading batch dimension in model_fn, or leave it out with predict_keys."
            )
        arrays[key] = arr
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Batch {batch_number}: predictions have different batch sizes {lengths}; every "
                         "prediction needs the batch as its first dimension.")
    n = next(iter(lengths.values()), 0)
    key = options.padding_key or DEFAULT_PADDING_KEY
    if key not in arrays:
        if options.padding_required:
            raise ValueError(f"padding_key={key!r} is not a prediction key; available keys: {sorted(arrays)}. "
                             "Return the padding mask from model_fn's predictions, or drop padding_key.")
        return arrays, None, n
    mask = np.asarray(arrays.pop(key))
    if mask.ndim != 1:
        raise ValueError(f"The padding mask {key!r} must have one value per example (shape [batch]), "
                         f"got shape {mask.shape}.")
    return arrays, ~mask.astype(bool), n


class _Pending:
    """Real rows received but not yet emitted, kept as per-key lists of batch arrays."""

    def __init__(self):
        self.parts: Dict[str, list] = {}
        self.rows = 0

    def add(self, arrays: Dict[str, object], keep: Optional[np.ndarray]) -> None:
        if self.parts and set(arrays) != set(self.parts):
            raise ValueError(f"The prediction keys changed between batches: {sorted(self.parts)} then "
                             f"{sorted(arrays)}.")
        count = None
        for key, value in arrays.items():
            if keep is not None:
                value = value[keep] if isinstance(value, np.ndarray) else [v for v, k in zip(value, keep) if k]
            self.parts.setdefault(key, []).append(value)
            count = len(value)
        self.rows += count or 0

    def take(self, n: int) -> Dict[str, list]:
        """The first ``n`` pending rows (per key, a list of pieces); the rest stay pending."""
        out: Dict[str, list] = {}
        for key, pieces in self.parts.items():
            taken, rest, need = [], [], n
            for piece in pieces:
                if need >= len(piece):
                    taken.append(piece)
                    need -= len(piece)
                elif need > 0:
                    taken.append(piece[:need])
                    rest.append(piece[need:])
                    need = 0
                else:
                    rest.append(piece)
            out[key] = taken
            self.parts[key] = rest
        self.rows -= n
        return out


def _frames(batches, options: _Options, chunk_rows: Optional[int], max_rows: Optional[int]):
    """Yields DataFrames (one, or chunks of ``chunk_rows``) from the batch stream."""
    pending = _Pending()
    emitted = 0
    keys: Optional[List[str]] = None
    try:
        for number, batch in enumerate(batches):
            arrays, keep, _ = _batch_arrays(batch, options, number)
            if keys is None:
                keys = list(arrays)
            pending.add(arrays, keep)
            if max_rows is not None and emitted + pending.rows >= max_rows:
                break  # closing the generator ends the predict session: the rest is never computed
            while chunk_rows is not None and pending.rows >= chunk_rows:
                yield _to_frame(pending.take(chunk_rows), options, emitted)
                emitted += chunk_rows
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    remaining = pending.rows if max_rows is None else min(pending.rows, max_rows - emitted)
    while remaining > 0:
        n = remaining if chunk_rows is None else min(chunk_rows, remaining)
        yield _to_frame(pending.take(n), options, emitted)
        emitted += n
        remaining -= n
    if emitted == 0 and keys is not None and chunk_rows is None:
        yield _to_frame({key: [] for key in keys}, options, 0)


# --------------------------------------------------------------------------- rows -> columns


def _join(pieces: list):
    """One array from a key's pieces; a list of per-row arrays when trailing shapes differ (ragged)."""
    arrays = [p for p in pieces if isinstance(p, np.ndarray)]
    if len(arrays) == len(pieces) and pieces:
        if len({p.shape[1:] for p in arrays}) == 1 and len({p.dtype for p in arrays}) == 1:
            return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if len({p.shape[1:] for p in arrays}) == 1:
            return np.concatenate(arrays)  # numpy promotes, e.g. bytes of different widths
    rows: list = []
    for p in pieces:
        rows.extend(list(p))
    return rows


def _normalize(arr: np.ndarray, decode_bytes: bool) -> np.ndarray:
    if arr.dtype.name in _HALF_FLOATS:
        return arr.astype(np.float32)  # pandas has no bfloat16, and float16 arithmetic surprises people
    if decode_bytes and (arr.dtype.kind == "S" or (arr.dtype == object and arr.size and isinstance(arr.flat[0], bytes))):
        return pd.Series(arr.reshape(-1)).str.decode("utf-8").to_numpy(dtype=object).reshape(arr.shape)
    return arr


def _cells(arr) -> np.ndarray:
    """An object array holding one array (a view of ``arr``'s row) per row."""
    out = np.empty(len(arr), dtype=object)
    out[:] = list(arr) if isinstance(arr, np.ndarray) else arr
    return out


def _columns(key: str, value, options: _Options, n: int) -> Dict[str, object]:
    if isinstance(value, list):  # ragged
        rows = [_normalize(np.asarray(r), options.decode_bytes) for r in value]
        return {key: _cells(rows) if rows else np.empty(0, dtype=object)}
    arr = _normalize(value, options.decode_bytes)
    if arr.ndim == 1:
        return {key: arr}
    if arr.ndim == 2 and arr.shape[1] <= options.max_vector_width and options.vectors == "columns":
        return {f"{key}_{j}": arr[:, j] for j in range(arr.shape[1])}
    return {key: _cells(arr) if n else np.empty(0, dtype=object)}


def _to_frame(taken: Dict[str, list], options: _Options, start: int) -> pd.DataFrame:
    n = None
    columns: Dict[str, object] = {}
    index_values = None
    for key, pieces in taken.items():
        value = _join(pieces) if pieces else np.empty(0)
        n = len(value)
        if key == options.index:
            index_values = _normalize(np.asarray(value), options.decode_bytes) if not isinstance(value, list) else value
            continue
        columns.update(_columns(key, value, options, n))
    if options.index is not None and index_values is None and taken:
        raise ValueError(f"index={options.index!r} is not a prediction key; available keys: {sorted(taken)}.")
    n = n or 0
    if index_values is not None:
        index = pd.Index(index_values, name=options.index)
    else:
        index = pd.RangeIndex(start, start + n)
    return pd.DataFrame(columns, index=index, copy=False)


def _empty_frame(options: _Options) -> pd.DataFrame:
    return pd.DataFrame(index=pd.RangeIndex(0) if options.index is None else pd.Index([], name=options.index))


__all__ = ["DEFAULT_PADDING_KEY", "batches_to_frame", "iter_predict_frames", "predict_frame"]
