"""One trainer per ``model_dir``: an advisory lock held for the length of ``train()``.

The lock is ``fcntl.flock`` on ``<model_dir>/.tpu_nb_train.lock``. The kernel
drops it when the owning process dies, even by ``kill -9``, so a lock file
left behind by a killed process is stale by construction and is simply taken
over; the file only carries who held it, for the error message.
"""

from __future__ import annotations

import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".tpu_nb_train.lock"


class ModelDirBusyError(RuntimeError):
    """Another live process is training into the same ``model_dir``."""


class ModelDirLock:
    """Exclusive training lock on a model directory (a context manager).

    Example::

        with ModelDirLock('/tmp/model'):
            ...  # train
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_NAME)
        self._fd = None
        self.took_over_stale = False

    def acquire(self) -> "ModelDirLock":
        if fcntl is None or "://" in self.model_dir:
            return self  # no local advisory locks: remote filesystems or Windows
        os.makedirs(self.model_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ModelDirBusyError(
                f"model_dir {self.model_dir!r} is already being trained by {holder}. Two trainers "
                "writing one model_dir corrupt each other's checkpoints: wait for that run to finish, "
                "stop it, or train into another model_dir."
            ) from None
        previous = _read_holder(fd, raw=True)
        self.took_over_stale = bool(previous)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _read_holder(fd, raw=False):
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        data = b""
    if raw:
        return data
    try:
        info = json.loads(data.decode())
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError):
        return "another process"
