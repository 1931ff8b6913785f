"""Short tracebacks for errors a user causes: the user's frames and tpu_nb's message.

A mistake in a model_fn, an input_fn or a magic's arguments surfaces deep inside tpu_nb
(magics -> runs -> handles -> estimator -> training -> ...), so the traceback showed
dozens of tpu_nb lines before the user's own. As Keras does for its own frames, the
traceback a notebook shows leaves out tpu_nb's internal frames (and IPython's magic
dispatch around them): what remains is the cell, the user's functions and the error's
message, plus a note that says how many frames were hidden. Errors whose traceback never
enters tpu_nb are shown exactly as before.

``TPU_NB_TRACEBACK=full`` (read at each error) shows every frame, for debugging tpu_nb itself.

``%load_ext tpu_nb`` installs this in the IPython shell (``install(shell)``).
"""

from __future__ import annotations

import os
import sysconfig
import traceback
import types
from typing import Optional, Tuple

#: Set to "full" to see tpu_nb's internal frames too.
ENV_VAR = "TPU_NB_TRACEBACK"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_LIBRARY_DIRS = tuple(sorted({os.path.abspath(path) + os.sep for key, path in sysconfig.get_paths().items()
                               if key in ("stdlib", "platstdlib", "purelib", "platlib")}))
_IPYTHON_DISPATCH = tuple(os.sep + os.path.join("IPython", "core", name)
                          for name in ("magic.py", "interactiveshell.py", "magic_arguments.py"))


def showing_all() -> bool:
    """True when ``TPU_NB_TRACEBACK`` asks for every frame."""
    return os.environ.get(ENV_VAR, "").strip().lower() in ("full", "all", "1", "true")


def _is_tpu_nb(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _is_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_DIRS) or filename.startswith("<frozen ")


def _is_dispatch(filename: str) -> bool:
    return filename.startswith("<decorator-gen-") or filename.endswith(_IPYTHON_DISPATCH)


def filter_traceback(tb: Optional[types.TracebackType]) -> Tuple[Optional[types.TracebackType], int]:
    """``tb`` without tpu_nb's frames, the library frames they call before the user's code
    is reached again, and IPython's magic dispatch; and how many frames were left out.

    The first frame (where the shell ran the cell) always stays. Returns ``(tb, 0)``
    unchanged when no frame belongs to tpu_nb.
    """
    frames = list(traceback.walk_tb(tb))
    if not any(_is_tpu_nb(frame.f_code.co_filename) for frame, _ in frames[1:]):
        return tb, 0
    kept, inside = [frames[0]], False
    for frame, line in frames[1:]:
        filename = frame.f_code.co_filename
        if _is_tpu_nb(filename):
            inside = True  # library frames tpu_nb calls (TensorFlow building its loops) go too
        elif _is_dispatch(filename) or (inside and _is_library(filename)):
            pass
        else:
            kept.append((frame, line))
            inside = False  # the user's code: what it calls is shown
    rebuilt = None
    for frame, line in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, frame, frame.f_lasti, line)
    return rebuilt, len(frames) - len(kept)


def _note(hidden: int) -> str:
    return f"({hidden} traceback frames inside tpu_nb left out; %env {ENV_VAR}=full shows them)"


def show_filtered(shell, etype, value, tb, tb_offset=None):
    """An IPython custom exception handler: shows ``value`` with tpu_nb's frames filtered."""
    hidden = 0
    if not showing_all():
        tb, hidden = filter_traceback(tb)
    if hidden and hasattr(value, "add_note") and _note(hidden) not in getattr(value, "__notes__", []):
        value.add_note(_note(hidden))
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    return None


def install(shell) -> bool:
    """Makes ``shell`` (an IPython InteractiveShell) show filtered tracebacks for Exceptions.

    Leaves a custom handler someone else installed in place (returns False then).
    """
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if current and not getattr(shell, "_tpu_nb_tracebacks", False):
        return False
    shell.set_custom_exc((Exception,), show_filtered)
    shell._tpu_nb_tracebacks = True
    return True


def uninstall(shell) -> None:
    """Undoes :func:`install` (``%unload_ext tpu_nb``)."""
    if shell is not None and getattr(shell, "_tpu_nb_tracebacks", False):
        shell.set_custom_exc((), None)
        shell._tpu_nb_tracebacks = False
