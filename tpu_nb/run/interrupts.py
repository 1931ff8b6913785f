"""Turning Ctrl-C into "stop at the next loop boundary".

A ``KeyboardInterrupt`` raised in the middle of a session run would leave
the run without a final checkpoint. While ``train()`` runs in the main
thread, SIGINT only sets a flag; the loop driver checks it at each loop
boundary, saves a checkpoint and re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import signal
import threading

_log = logging.getLogger("tpu_nb")


class StopRequest:
    """A thread-safe "please stop" flag with the reason it was raised."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = None
        self.from_interrupt = False

    def set(self, reason: str = "stop requested", from_interrupt: bool = False):
        if not self._event.is_set():
            self.reason = reason
            self.from_interrupt = from_interrupt
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class deferred_interrupts:
    """Context manager: SIGINT sets ``stop.set(...)`` instead of raising.

    A second Ctrl-C restores the previous handler's behaviour (raise at
    once), for a user who really wants out without a checkpoint.
    Outside the main thread it does nothing (signals only reach the main thread).

    Nor does it when SIGINT is ignored: a shell without job control (a script,
    ``sh -c``, some CI runners) starts background jobs (``&``) that way, so that
    Ctrl-C meant for the foreground program leaves them running. Python keeps the
    disposition it inherits, and so does train(): such a run ignores SIGINT as
    the program would without tpu_nb; ``request_stop()`` or SIGTERM still end it.
    """

    def __init__(self, stop: StopRequest):
        self.stop = stop
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.stop.is_set():
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        _log.warning("Interrupt received: stopping at the next loop boundary and saving a checkpoint "
                     "(interrupt again to abort without saving).")
        self.stop.set("interrupted", from_interrupt=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except ValueError:
                self._installed = False
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
        return False
