"""tpu_nb's log messages as plain output in a Jupyter cell, not a red stderr box.

With no handler configured, Python prints a logger's warnings to ``sys.stderr`` (``logging.lastResort``),
which a notebook shows in red, as if something had gone wrong. "Training stopped at step 1440 (Stop
button); checkpoint saved." is what the user asked for. In a kernel, tpu_nb's logger gets a handler
that writes such lines to the cell's plain output; errors still go to stderr. It stands aside as soon as
the user configures logging (a handler on the root logger), so nothing is printed twice.
"""

from __future__ import annotations

import logging
import sys

from .native_output import in_jupyter_kernel

_LOGGER = "tpu_nb"


class _CellHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the user's logging setup shows it, their way
            return
        try:
            stream = sys.stdout if record.levelno < logging.ERROR else sys.stderr
            stream.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def install() -> bool:
    """Adds the cell handler to the ``tpu_nb`` logger inside a Jupyter kernel (once); True if added.

    Example::

        import logging
        logging.getLogger("tpu_nb").setLevel(logging.INFO)  # also show each loop's loss line
    """
    if not in_jupyter_kernel():
        return False
    logger = logging.getLogger(_LOGGER)
    if any(isinstance(h, _CellHandler) for h in logger.handlers):
        return False
    handler = _CellHandler()
    handler.setFormatter(logging.Formatter("tpu_nb: %(message)s"))
    logger.addHandler(handler)
    return True
