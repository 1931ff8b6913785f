"""Letting the Stop button reach a run that keeps the kernel busy (a foreground ``%tpu_train``).

While a cell runs, the kernel's main thread handles no widget messages, so a
plain ``on_msg`` handler would see the click only after training ended.
ipykernel >= 7 reads every incoming comm message first in its shell-channel
thread, where it asks the comm ``_reply_subshell_for(data, default)`` which
subshell should handle it. Wrapping that method on our widget's comm lets us
notice a Stop (or resync) request there, at once, and set a thread-safe flag;
routing is left unchanged. On kernels without that hook this installs nothing
and the button acts when the kernel is next idle (Ctrl-C / interrupt still work).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict

_log = logging.getLogger("tpu_nb")


def install(widget, handlers: Dict[str, Callable[[], None]]) -> bool:
    """Calls ``handlers[type]()`` from the shell-channel thread for custom messages ``{'type': ...}``.

    Returns True if the kernel offers the hook. Handlers must be quick and thread-safe.
    """
    comm = getattr(widget, "comm", None)
    original = getattr(comm, "_reply_subshell_for", None)
    if comm is None or not callable(original):
        return False

    def route(data, default):
        try:
            content = data.get("content") if isinstance(data, dict) and data.get("method") == "custom" else None
            handler = handlers.get(content.get("type")) if isinstance(content, dict) else None
            if handler is not None:
                handler()
        except Exception:  # never break the kernel's message routing
            _log.debug("tpu_nb fast stop handler failed", exc_info=True)
        return original(data, default)

    comm._reply_subshell_for = route
    return True
