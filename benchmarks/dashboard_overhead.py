"""Does the live dashboard slow training? Steps/s of one training with and without it, in one process.

What is compared
----------------
The same TPUEstimator training (MLP 64-128-10, batch 32, SGD, data from a fixed
seed) runs repeatedly with the dashboard (``tpu_nb.notebook.train(...)``: run
handle, history, live widget) and without it (plain ``estimator.train(...)``),
alternating (with/without, then without/with, ...) so
machine load drifts evenly over both arms. Two schedules are measured:

* ``loops``: ``iterations_per_loop=10``, so the engine publishes a LoopFinished
  event every 10 steps (hundreds per second);
* ``host_call``: ``iterations_per_loop=100`` and a ``host_call`` of three
  scalars every step (published to subscribers once per loop as a HostCallBatch).

The dashboard runs inside an IPython ``InteractiveShell`` (as in a notebook);
its comm messages are serialized to JSON as a kernel would (there is no browser
to send them to). Reported per schedule: the median over repeats of

* training steps/s: steps from the first to the last loop boundary divided by
  the time between them (graph building and the first loop's compilation are
  left out, as in ``train_throughput.py``); the overhead target (<= 1%) is
  about this number;
* whole-call seconds: the ``train()`` call, including the dashboard's one-off
  final PNG rendering;
* time in the dashboard: the CPU time spent inside the notebook layer's event
  handling (history appends, throttled widget updates; the cost of reading the
  thread clock itself is calibrated and subtracted) as a share of the
  training time. On a shared 2-core machine run-to-run noise in steps/s is
  several percent, far above the overhead, so this direct measurement is the
  sharper number.

How to run (from the repository root)::

    python benchmarks/dashboard_overhead.py                    # 20000 steps, 5 repeats
    python benchmarks/dashboard_overhead.py --steps 10000 --repeats 3
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf
import tf_keras

import tpu_nb
from tpu_nb import notebook


def input_fn(params):
    rng = np.random.RandomState(0)
    x = rng.randn(2048, 64).astype(np.float32)
    y = rng.randint(0, 10, 2048).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def make_model_fn(with_host_call):
    def model_fn(features, labels, mode, params):
        hidden = tf_keras.layers.Dense(128, activation="relu")(features)
        logits = tf_keras.layers.Dense(10)(hidden)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = tf.compat.v1.train.get_global_step()
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.05).minimize(loss, global_step=step)
        host_call = None
        if with_host_call:
            accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32))

            def host_fn(loss, accuracy, logit_norm):
                return []

            host_call = (host_fn, [tf.reshape(loss, [1]), tf.reshape(accuracy, [1]),
                                   tf.reshape(tf.norm(logits), [1])])
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)

    return model_fn


class LoopClock:
    """Times the span from the first to the last loop boundary of a run (both arms use it)."""

    def __init__(self):
        self.first = self.last = None

    def __call__(self, event):
        if isinstance(event, tpu_nb.events.LoopFinished):
            now = time.perf_counter()
            if self.first is None:
                self.first = (now, event.global_step)
            self.last = (now, event.global_step)

    def steps_per_sec(self):
        (t0, s0), (t1, s1) = self.first, self.last
        return (s1 - s0) / (t1 - t0)


def run_once(schedule, steps, with_dashboard):
    ipl = 10 if schedule == "loops" else 100
    config = tpu_nb.RunConfig(model_dir=tempfile.mkdtemp(prefix="dash_bench_"), save_checkpoints_steps=10**9,
                              save_summary_steps=0, log_step_count_steps=None,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl))
    est = tpu_nb.TPUEstimator(make_model_fn(schedule == "host_call"), config=config, use_tpu=False,
                              train_batch_size=32)
    clock = LoopClock()
    _Timed.spent = 0.0
    t0 = time.perf_counter()
    with tpu_nb.events.subscribed(clock), contextlib.redirect_stdout(io.StringIO()):
        if with_dashboard:
            handle = notebook.train(est, input_fn, steps=steps, dashboard=True)
            assert handle.state == "done", handle.state
        else:
            est.train(input_fn, steps=steps)
    whole = time.perf_counter() - t0
    share = _Timed.spent / (clock.last[0] - clock.first[0])
    return clock.steps_per_sec(), whole, share


class _Timed:
    """Wraps RunHandle._on_event (which runs the dashboard's listeners) to add up its time."""

    spent = 0.0
    original = None

    @classmethod
    def install(cls):
        from tpu_nb.notebook.handles import RunHandle

        cls.original = RunHandle._on_event

        def timed(self, event):
            # CPU time of this thread: wall time would also count tf.data's threads and other
            # processes taking the core away mid-call.
            t = time.thread_time()
            cls.original(self, event)
            cls.spent += time.thread_time() - t - cls.timer_cost

        cls.timer_cost = 0.0
        cls.timer_cost = cls._calibrate()  # reading the thread clock is a syscall: don't bill it
        RunHandle._on_event = timed

    @classmethod
    def _calibrate(cls, n=20000):
        spent = 0.0
        for _ in range(n):
            t = time.thread_time()
            spent += time.thread_time() - t
        return spent / n


def _serialize_like_a_kernel(self, data=None, metadata=None, buffers=None):
    json.dumps(data, default=str)  # what jupyter_client's session does before the socket


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schedules", nargs="+", default=["loops", "host_call"])
    args = parser.parse_args()

    from IPython.core.interactiveshell import InteractiveShell
    import comm

    InteractiveShell.instance()  # the dashboard displays through IPython, as in a notebook
    comm.DummyComm.send = _serialize_like_a_kernel
    _Timed.install()

    print(f"tpu_nb dashboard overhead: {args.steps} steps per run, {args.repeats} repeats, "
          f"TensorFlow {tf.__version__}")
    for schedule in args.schedules:
        run_once(schedule, 200, True)  # warm-up: imports, matplotlib fonts, first graph
        results = {True: [], False: []}
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            for with_dashboard in order:
                results[with_dashboard].append(run_once(schedule, args.steps, with_dashboard))
        med = {k: tuple(statistics.median(v[i] for v in runs) for i in range(3)) for k, runs in results.items()}
        slower = 100.0 * (1.0 - med[True][0] / med[False][0])
        print(f"\n[{schedule}]")
        print(f"  without dashboard: {med[False][0]:8.0f} steps/s   whole call {med[False][1]:6.2f} s")
        print(f"  with dashboard:    {med[True][0]:8.0f} steps/s   whole call {med[True][1]:6.2f} s")
        print(f"  training steps/s with the dashboard: {slower:+.2f}% slower (target <= 1%; noise is several %)")
        print(f"  CPU time inside the dashboard's event handling: {100 * med[True][2]:.3f}% of training time")
        print("  per repeat (steps/s, with / without): "
              + ", ".join(f"{a[0]:.0f}/{b[0]:.0f}" for a, b in zip(results[True], results[False])))


if __name__ == "__main__":
    main()
