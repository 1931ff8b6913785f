"""TensorFlow's C++ lines kept out of notebook cells, and kept where a failure can find them.

ipykernel copies whatever the process writes to file descriptor 2 into the running cell as a red
stderr box, so the lines TensorFlow's C++ runtime prints when it loads ("Could not find cuda
drivers", "failed call to cuInit"), creates a session or optimizes a graph land in every cell that
trains. ``TF_CPP_MIN_LOG_LEVEL`` does not reach the ones printed before absl logging starts, and
it must be set before TensorFlow loads. So inside a Jupyter kernel, from ``import tpu_nb`` (or
``%load_ext tpu_nb``) on, descriptor 2 points at a log file of this process (:func:`log_path`), with
wurlitzer doing the redirection, and TensorFlow's Python logger writes there too
(:func:`keep_out_of_cells_from_now`). For the whole session, not only while tpu_nb works: TensorFlow
also prints when the user's own cells touch it (the first ``tf.constant`` in a notebook that imported
TensorFlow first says "failed call to cuInit" on a CUDA build without a GPU). Python's own
``sys.stderr`` (tracebacks, warnings) is the kernel's stream object, not descriptor 2, so it still
reaches the cell. A file rather than a pipe: a fatal C++ error that kills the kernel still leaves its
last words there. When tpu_nb's work fails, its error carries the runtime's error lines and the
file's path as a note.

Outside a kernel (scripts, terminals) nothing changes: a terminal shows those lines where its user
expects them. ``TPU_NB_TF_LOGS=1`` turns the redirection off everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Iterator, List, Optional

try:  # not on Windows (it needs fcntl); there the lines stay in the cell
    import wurlitzer
except ImportError:  # pragma: no cover - platform dependent
    wurlitzer = None

#: absl's error and fatal lines ("E0000 00:00:1796.. 5921 file.cc:52] ...") and CHECK failures.
_ERROR_LINE = re.compile(r"^(?:[EF]\d{4} |.*Check failed)")
#: How many of the runtime's error lines an exception's note quotes.
NOTE_LINES = 5

_lock = threading.Lock()
_depth = 0
_redirect = None
_file = None
#: True once :func:`keep_out_of_cells_from_now` holds the redirection for the rest of the process.
_held_for_good = False


def log_path() -> str:
    """Where this process's TensorFlow runtime lines go while they are kept out of the cells."""
    return os.path.join(tempfile.gettempdir(), f"tpu_nb-{os.getpid()}-tensorflow.log")


def tf_logs_shown() -> bool:
    """True when ``TPU_NB_TF_LOGS`` asks for TensorFlow's own output as it comes."""
    return os.environ.get("TPU_NB_TF_LOGS", "") not in ("", "0")


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (where descriptor 2 ends up in the cell's output)."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return False
    try:
        shell = ipython_module.get_ipython()
    except Exception:  # a half-initialised IPython: behave as outside a kernel
        return False
    return getattr(shell, "kernel", None) is not None


@contextlib.contextmanager
def kept_out_of_cells(enabled: Optional[bool] = None) -> Iterator[None]:
    """Sends descriptor 2 to :func:`log_path` while the block runs (``enabled=None``: in a Jupyter
    kernel only). Nested and concurrent blocks share one redirection, undone when the last ends.

    Example::

        with kept_out_of_cells():
            session.run(train_op)
    """
    if enabled is None:
        enabled = in_jupyter_kernel()
    if not enabled or tf_logs_shown() or wurlitzer is None:
        yield
        return
    start = _enter()
    if start is None:  # no descriptor 2 to redirect (pythonw, a closed stderr)
        yield
        return
    error = None
    try:
        yield
    except BaseException as exc:  # noqa: B902 - noted and re-raised unchanged
        error = exc
        raise
    finally:
        _exit()
        if error is not None and not isinstance(error, KeyboardInterrupt):
            _add_note(error, error_lines_since(start))


def error_lines_since(offset: int) -> List[str]:
    """The runtime's error lines written to :func:`log_path` after byte ``offset``."""
    try:
        with open(log_path(), "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if _ERROR_LINE.match(line)]


def _enter() -> Optional[int]:
    """Starts the shared redirection if none runs; returns the log's size when this block began."""
    global _depth, _redirect, _file
    with _lock:
        if _depth == 0:
            try:
                _file = open(log_path(), "ab")
                _redirect = wurlitzer.pipes(stdout=None, stderr=_file)
                _redirect.__enter__()
            except (OSError, AttributeError, ValueError):
                if _file is not None:
                    _file.close()
                _file = _redirect = None
                return None
        _depth += 1
        return os.fstat(_file.fileno()).st_size


def _exit() -> None:
    global _depth, _redirect, _file
    with _lock:
        _depth -= 1
        if _depth == 0:
            try:
                _redirect.__exit__(None, None, None)
            finally:
                _file.close()
                _file = _redirect = None


def _add_note(error: BaseException, lines: List[str]) -> None:
    if not lines:
        return
    quoted = "\n".join("    " + line for line in lines[-NOTE_LINES:])
    note = (f"TensorFlow's runtime reported (all its lines are in {log_path()}; "
            f"TPU_NB_TF_LOGS=1 shows them in the cell):\n{quoted}")
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)


class _ToLogFile(logging.Filter):
    """A filter on TensorFlow's Python logger that writes each record to :func:`log_path` and drops
    it, so "WARNING:tensorflow:From ..." never reaches a cell (a logger-level filter also stops the
    record before any handler, the user's included, and before it propagates)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            line = f"{record.levelname}:{record.name}:{record.getMessage()}\n"
            with open(log_path(), "a", encoding="utf-8") as f:
                f.write(line)
        except Exception:  # noqa: BLE001 - logging must never break the user's cell
            pass
        return False


_TF_LOGGER_FILTER = _ToLogFile()


def keep_out_of_cells_from_now() -> bool:
    """In a Jupyter kernel, sends descriptor 2 and TensorFlow's Python log records to :func:`log_path`
    for the rest of the process (``import tpu_nb`` calls this first); True if it did.

    Whatever was imported before, no TensorFlow line printed after this reaches a cell; the start-up
    lines that an earlier ``import tensorflow`` printed are already in that cell. Does nothing outside a
    kernel or with ``TPU_NB_TF_LOGS=1``.
    """
    global _held_for_good
    if not in_jupyter_kernel() or tf_logs_shown() or wurlitzer is None:
        return False
    with _lock:
        if _held_for_good:
            return True
    if _enter() is None:  # no descriptor 2 to redirect
        return False
    with _lock:
        _held_for_good = True
    tf_logger = logging.getLogger("tensorflow")
    if _TF_LOGGER_FILTER not in tf_logger.filters:
        tf_logger.addFilter(_TF_LOGGER_FILTER)
    return True


def import_tensorflow() -> None:
    """Imports TensorFlow with its load-time lines kept out of the cell (in a kernel).

    In a kernel it also lists the physical devices, which is when a CUDA build of TensorFlow on a
    machine without a GPU says "failed call to cuInit"; listing them leaves logical devices
    configurable, so simulated shards can still be set up afterwards. Then (or at once, when the
    notebook imported TensorFlow first) the redirection stays for good: :func:`keep_out_of_cells_from_now`.
    """
    if not in_jupyter_kernel():
        return
    if "tensorflow" in sys.modules:
        keep_out_of_cells_from_now()
        return
    with kept_out_of_cells():
        import tensorflow

        tensorflow.config.list_physical_devices()
    keep_out_of_cells_from_now()
