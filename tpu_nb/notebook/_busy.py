"""Keeping front ends' kernel indicator on "Busy" while a foreground run holds the kernel.

Why it went "Idle": JupyterLab >= 4.4 (and Notebook 7) send comm messages over kernel
subshells. When the dashboard's comm appears, the front end asks for a subshell on the
control channel (``create_subshell_request``), and every comm message it later sends is
handled in that subshell's thread, concurrently with the running cell. ipykernel publishes
"busy" then "idle" for each of those requests, and the front end applies any "idle" to the
whole kernel: the indicator said Idle for the rest of the run although the cell still ran.
(Without the dashboard there is no comm, hence no subshell, and the indicator stayed Busy.)

The subshells are what keep Stop responsive, so they stay. Instead, while a foreground run
holds the main thread, an "idle" published for any other request is followed at once by a
"busy" for the running cell's request: front ends show Busy again within the same
message batch. Outside a Jupyter kernel (scripts, nbclient-less tests) this does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, List, Optional

_lock = threading.Lock()
_running: List[Any] = []  # the execute_request parents of foreground runs, innermost last


def _kernel() -> Optional[Any]:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def _msg_id(parent) -> Optional[str]:
    return (parent or {}).get("header", {}).get("msg_id") if isinstance(parent, dict) else None


def _install(kernel) -> bool:
    """Wraps ``kernel._publish_status`` once; False when this kernel has no such method."""
    original = getattr(kernel, "_publish_status", None)
    if not callable(original):
        return False
    if getattr(original, "_tpu_nb_keeps_busy", False):
        return True

    def publish_status(status, channel, parent=None, *args, **kwargs):
        original(status, channel, parent, *args, **kwargs)
        if status != "idle":
            return
        with _lock:
            running = _running[-1] if _running else None
        if running is None:
            return
        ended = parent if parent is not None else kernel.get_parent(channel)
        if _msg_id(ended) != _msg_id(running):  # another request's idle: the cell is still running
            original("busy", "shell", running)

    publish_status._tpu_nb_keeps_busy = True
    kernel._publish_status = publish_status
    return True


@contextlib.contextmanager
def kept_busy():
    """Within the block, front ends keep showing the kernel Busy (see the module docstring).

    For work on the kernel's main thread only: a background run leaves the kernel idle, truly.
    """
    kernel = _kernel()
    if kernel is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        parent = kernel.get_parent("shell")
    except Exception:  # an ipykernel without per-channel parents: nothing to keep
        parent = None
    if not _msg_id(parent) or not _install(kernel):
        yield
        return
    with _lock:
        _running.append(parent)
    # An idle may already have gone out since the cell began (the dashboard's comm opens just
    # before the run starts, and the front end asks for its subshell then): say Busy again now.
    kernel._publish_status("busy", "shell", parent)
    try:
        yield
    finally:
        with _lock:
            _running.remove(parent)
