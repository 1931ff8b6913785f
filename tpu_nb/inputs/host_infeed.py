"""Feeding the device loop from tensors an ``input_fn`` returned (not a Dataset).

Old-style input_fns return ``(features, labels)`` or a features dict, often from
``make_one_shot_iterator(dataset).get_next()``. Such tensors are loop-invariant:
read inside a ``tf.while_loop`` they would give every step of a loop the same
batch. As the original's infeed thread did, a host thread evaluates them once per
step and enqueues the values into a small queue; the device loop dequeues one
element per step. The loop keeps ``iterations_per_loop`` steps per session run,
and at most a few batches wait in memory.

When the tensors raise ``OutOfRangeError`` (the input ended), the queues are
closed: the loop's next dequeue ends the session run with ``OutOfRangeError``,
which the training loop treats as the end of the input.
"""

from __future__ import annotations

import contextlib
import threading
from typing import List, Optional

import tensorflow as tf

_BATCHES_AHEAD = 2  # per dequeue of a step: enough to overlap host input with device work
_JOIN_GRACE_SECS = 10.0  # the last enqueue's session run returns right after the loop took its element


def check_static_tensors(structure, what: str, role: str):
    """Shapes of returned tensors must be fully defined on shards (as on a TPU's infeed)."""
    if structure is None:
        return
    for i, t in enumerate(tf.nest.flatten(structure)):
        t = tf.convert_to_tensor(t)
        if not t.shape.is_fully_defined():
            raise ValueError(
                f"{what}: {role} tensor #{i} ({t.name}) must have static shape, got {t.shape}. On shards every "
                "step's shapes are fixed, as on a TPU: batch with drop_remainder=True "
                "(dataset.batch(params['batch_size'], drop_remainder=True)) or tf.ensure_shape the tensor."
            )


class _Source:
    """One input_fn invocation's tensors and the queue between them and the loop."""

    def __init__(self, structure, device: Optional[str], calls_per_step: int, index: int):
        self.structure = structure
        flat = [tf.convert_to_tensor(t) for t in tf.nest.flatten(structure)]
        self.calls_per_step = calls_per_step
        with tf.init_scope(), tf.device(device):
            self.queue = tf.queue.FIFOQueue(
                _BATCHES_AHEAD * calls_per_step, [t.dtype for t in flat], shapes=[t.shape for t in flat],
                name=f"host_infeed_{index}",
            )
        with tf.device(device):
            self.enqueue = self.queue.enqueue(flat)
        self.close = self.queue.close(cancel_pending_enqueues=True)

    def dequeue(self):
        values = self.queue.dequeue()
        if not isinstance(values, (list, tuple)):
            values = [values]
        return tf.nest.pack_sequence_as(self.structure, list(values))


class HostInfeed:
    """The host side of tensor inputs: ``add()`` sources, ``dequeue(i)`` in the loop, ``feed()`` around a run.

    Example::

        infeed = HostInfeed()
        source = infeed.add((features, labels), device='/device:CPU:0')
        ...   # inside the loop body: features, labels = infeed.dequeue(source)
        feeding, ran = infeed.start(session, steps=k), None
        try:
            ran = session.run(loop, {iterations: k})
        finally:
            feeding.finish(ran)
    """

    def __init__(self):
        self.sources: List[_Source] = []
        self._dequeued = []

    def add(self, structure, device: Optional[str] = None, calls_per_step: int = 1) -> int:
        self.sources.append(_Source(structure, device, calls_per_step, len(self.sources)))
        return len(self.sources) - 1

    def dequeue(self, index: int):
        values = self.sources[index].dequeue()
        self._dequeued.extend(tf.nest.flatten(values))
        return values

    def take_dequeues(self) -> list:
        """The dequeues built since the last call: the loop body depends on them, so every step consumes
        its element even when model_fn ignores some inputs (else the feeding thread would wait forever)."""
        taken, self._dequeued = self._dequeued, []
        return taken

    def start(self, session, steps: int) -> "_Feeding":
        """Starts a host thread enqueueing ``steps`` steps of input; call ``finish()`` after the loop's run."""
        return _Feeding(self, session, steps)


@contextlib.contextmanager
def feeding(infeed: Optional[HostInfeed], session, steps: int):
    """Feeds ``steps`` steps of host input while the ``with`` body runs the device loop.

    The body sets ``.ran`` to the steps the loop completed; left None (the run failed, or the input
    ended) the queues are closed so no enqueue stays blocked. Does nothing for ``infeed=None``.

    Example::

        with feeding(infeed, session, k) as feed:
            feed.ran = int(session.run(loop_counter, {iterations: k}))
    """
    feed = infeed.start(session, steps) if infeed is not None else _NoFeeding()
    try:
        yield feed
    finally:
        feed.finish(feed.ran)


class _NoFeeding:
    ran: Optional[int] = None

    def finish(self, steps_ran):
        pass


class _Feeding:
    """One loop's worth of host input, enqueued by a thread while the device loop runs."""

    ran: Optional[int] = None  # set by the caller once the loop's run returned

    def __init__(self, infeed: HostInfeed, session, steps: int):
        self.infeed = infeed
        self.session = session
        self.steps = steps
        self.error: Optional[BaseException] = None
        self.input_ended = False
        self._thread = threading.Thread(target=self._run, name="tpu_nb-host-infeed", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for _ in range(self.steps):
                for source in self.infeed.sources:
                    for _ in range(source.calls_per_step):
                        self.session.run(source.enqueue)
        except tf.errors.OutOfRangeError:
            self.input_ended = True
            self._close()
        except tf.errors.CancelledError:
            pass  # the loop ended early (NaN loss, an error) and closed the queues
        except BaseException as error:  # noqa: BLE001 - re-raised by finish() in the training thread
            self.error = error
            self._close()

    def _close(self):
        for source in self.infeed.sources:
            try:
                self.session.run(source.close)
            except tf.errors.OpError:
                pass

    def finish(self, steps_ran: Optional[int]):
        """Waits for the thread; ``steps_ran`` None (the run failed) or short releases a blocked enqueue.

        Re-raises an error the input tensors raised (other than the end of the input).
        """
        if steps_ran is None or steps_ran < self.steps:
            self._close()
        self._thread.join(timeout=_JOIN_GRACE_SECS)
        if self._thread.is_alive():  # blocked on a full queue nobody reads: never hang the training thread
            self._close()
            self._thread.join()
        if self.error is not None:
            raise self.error
