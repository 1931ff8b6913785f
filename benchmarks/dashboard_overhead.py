"""Does the live dashboard slow training? Steps/s with and without it, measured two ways in one process.

What is compared
----------------
The same TPUEstimator training (MLP 64-128-10, batch 32, SGD, data from a fixed
seed: ~0.2 ms per step, a deliberately hard case for a per-loop observer) with
the notebook layer attached (``tpu_nb.notebook.train(...)``: run handle,
history, live widget, updates; plus the JupyterLab extension's status comm that
``%load_ext tpu_nb`` opens) and without it (plain ``estimator.train(...)``).
The dashboard runs inside an IPython ``InteractiveShell`` (as in a notebook);
its comm messages are serialized to JSON as a kernel would (there is no browser
to send them to). Two schedules:

* ``loops``: ``iterations_per_loop=10``, so the engine publishes a LoopFinished
  event every 10 steps (hundreds per second);
* ``host_call``: ``iterations_per_loop=100`` and a ``host_call`` of three
  scalars every step (published to subscribers once per loop, by column).

Two measurements per schedule:

1. *Interleaved blocks* (the overhead number): one long training with the
   notebook layer attached for alternate blocks of ~50 ms and detached for the
   others (its event subscriptions taken off the bus and put back). Each attached
   block's duration is divided by the mean of its two neighbours', which
   cancels the machine's drift; the mean of those ratios over a thousand or
   more blocks, with its standard error, is the slowdown. Updates to the view are
   triggered only from attached blocks, on a clock that runs only in them (so
   at the rate of a run attached throughout), and take about a millisecond in
   the dashboard's thread, so their cost lands in those blocks too (the
   extension's small status messages, sent by its own ticker thread, are the
   exception: their cost is spread over both kinds of block; it is in the CPU
   shares below). On a shared 2-core VM,
   whole runs of the same training differ by 5-10% from one to the next, so
   comparing whole runs cannot resolve a 1% target; the blocks can.
2. *Whole runs*: repeated runs with and without the dashboard, alternating,
   reporting median steps/s (first to last loop boundary, so graph building
   and compilation are left out) and the whole ``train()`` call, which includes
   the dashboard's one-off final PNG rendering.

Also reported: the CPU time the notebook layer spends, in the training thread
(event handling: O(1) queue appends, the throttle checks, the small status
messages of the extension's comm) and in other threads (the dashboard's
updates, at most 2/s, and the extension's delayed status messages), which
overlap the loop, as shares of the training time, measured in the whole runs
(the interleaved run is not instrumented; the cost of reading the thread clock
is calibrated and subtracted).

With a real browser (on by default; needs /usr/bin/chromium and Playwright):
JupyterLab on 127.0.0.1 and headless Chromium on this same machine (as on a
laptop), the notebook open in it. Its kernel first runs the ``loops`` training
once for ``--browser-seconds`` with the notebook layer attached in alternate
~1 s blocks (the overhead number, target <= 3%: the same ratio of neighbouring
blocks as above; the blocks are longer because the page draws an update some
milliseconds after it is sent), then whole runs alternating with and without
the dashboard (these include each run's start-up). The page records every
animation frame (target p95 < 50 ms) and Chromium's main-thread time (tasks,
script, layout, style) in each arm. The browser competes with training
for this machine's cores, which is what a laptop user gets.

How to run (from the repository root)::

    python benchmarks/dashboard_overhead.py                          # ~10 minutes, s.e. ~0.25%
    python benchmarks/dashboard_overhead.py --seconds 30 --repeats 2 # quicker, s.e. ~0.6%
    python benchmarks/dashboard_overhead.py --browser-only           # the real-browser figures alone
"""

import argparse
import contextlib
import io
import json
import math
import os
import pathlib
import re
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf
import tf_keras

import tpu_nb
from tpu_nb.reporting import events
from tpu_nb import notebook
from tpu_nb.notebook.lab_bridge import LabBridge

SCHEDULES = {"loops": 10, "host_call": 100}  # iterations_per_loop
BLOCK_SECONDS = 0.05
# With a browser, an update's cost lands in the page some milliseconds after it is sent: blocks long
# enough that this spill into the next block is small.
BROWSER_BLOCK_SECONDS = 1.0


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


def make_estimator(schedule):
    config = tpu_nb.RunConfig(model_dir=tempfile.mkdtemp(prefix="dash_bench_"), save_checkpoints_steps=10**9,
                              save_summary_steps=0, log_step_count_steps=None,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=SCHEDULES[schedule]))
    return tpu_nb.TPUEstimator(make_model_fn(schedule == "host_call"), config=config, use_tpu=False,
                               train_batch_size=32)


class LoopTimes:
    """Records the time of every loop boundary (subscribed in both arms, before the run handle)."""

    def __init__(self, every=None, last_step=None):
        self.times, self.steps = [], []
        self.every = every  # flip the gate every this many loops (interleaved blocks), or never
        self.last_step = last_step

    def __call__(self, event):
        if isinstance(event, events.LoopFinished):
            self.times.append(time.perf_counter())
            self.steps.append(event.global_step)
            if self.every:
                # Block k spans boundaries k*every .. (k+1)*every. Everything handled in it (this
                # boundary's LoopFinished, the next loops' host_call batches and LoopFinished)
                # comes after this line, so set the block's state here: attached when k is even.
                attached = ((len(self.times) - 1) // self.every) % 2 == 0
                # After the last loop, attach for good: the run's end must reach the handle.
                _Gate.set(attached or event.global_step >= self.last_step)

    def steps_per_sec(self):
        return (self.steps[-1] - self.steps[0]) / (self.times[-1] - self.times[0])


class _Gate:
    """Attaches and detaches the notebook layer: when off, the event bus's subscribers are just the
    loop clock, so the run handle and the lab comm hear nothing (and nothing stands in their
    place: the attached blocks run exactly the production path).

    ``attached_time()`` is the dashboard's clock: it runs only while the gate is on, so the
    dashboard sends its 2 updates per attached second, as in a run attached throughout (on wall
    time it would send them all within the attached half of the blocks: twice the real cost).
    """

    on = True
    keep = None  # the subscriber that stays when detached (the loop clock)
    _all = None  # every subscriber, while detached
    _attached = _since = 0.0  # attached_time() was _attached at monotonic time _since

    @classmethod
    def reset(cls, keep=None):
        """Attached, with the clock at wall time (so a run never gated sees the wall clock)."""
        cls.set(True)
        cls.keep, cls._attached = keep, time.monotonic()
        cls._since = cls._attached

    @classmethod
    def set(cls, on):
        now = time.monotonic()
        if cls.on:
            cls._attached += now - cls._since
        if on != cls.on:
            # The bus copies its list on every change, so swapping whole lists is safe mid-run.
            if on:
                events.bus._subscribers = cls._all
            else:
                cls._all = events.bus._subscribers
                events.bus._subscribers = [s for s in cls._all if s is cls.keep]
        cls.on, cls._since = on, now

    @classmethod
    def attached_time(cls):
        return cls._attached + (time.monotonic() - cls._since if cls.on else 0.0)


class _Timed:
    """CPU time of the notebook layer: in the training thread (RunHandle._on_event, which runs the
    dashboard's listeners) and in the dashboard's update thread (_send_update)."""

    spent = 0.0
    sending = 0.0
    timer_cost = 0.0

    sends = 0
    _inside = threading.local()
    enabled = True  # False in the interleaved run: reading thread clocks costs time of its own

    @classmethod
    def reset(cls):
        cls.spent = cls.sending = 0.0
        cls.sends = 0

    @classmethod
    def install(cls):
        from tpu_nb.notebook.dashboard import Dashboard
        from tpu_nb.notebook.handles import RunHandle
        from tpu_nb.notebook.lab_bridge import LabBridge

        def timed(original, total, counts_sends=False, main_thread=True):
            """``original`` wrapped to add its CPU time to ``cls.<total>``. CPU time of this
            thread: wall time would also count tf.data's threads and other processes taking the
            core away mid-call."""

            def wrapper(self, *args):
                if not main_thread and threading.current_thread() is threading.main_thread():
                    return original(self, *args)
                if getattr(cls._inside, "timed", False):
                    # Called from a timed method (the dashboard's update sends the run's view to the
                    # lab bridge too): its time is in the caller's already.
                    return original(self, *args)
                cls._inside.timed = True
                t = time.thread_time()
                try:
                    return original(self, *args)
                finally:
                    setattr(cls, total, getattr(cls, total) + time.thread_time() - t - cls.timer_cost)
                    cls.sends += counts_sends
                    cls._inside.timed = False

            return wrapper

        wrappers = {(RunHandle, "_on_event"): timed(RunHandle._on_event, "spent"),
                    (Dashboard, "_send_update"): timed(Dashboard._send_update, "sending", counts_sends=True),
                    (LabBridge, "_on_event"): timed(LabBridge._on_event, "spent"),
                    # Inline sends are already inside the timed _on_event; count the ticker's only.
                    (LabBridge, "_send"): timed(LabBridge._send, "sending", main_thread=False)}
        patches = {key: (getattr(*key), wrapper) for key, wrapper in wrappers.items()}

        use_attached_clock()
        cls.timer_cost = cls._calibrate()  # reading the thread clock is a syscall: don't bill it
        cls._patches = patches
        cls.set_enabled(True)

    @classmethod
    def set_enabled(cls, enabled):
        """With the timers (whole runs) or with the original methods (the interleaved run)."""
        cls.enabled = enabled
        for (owner, name), (original, timed) in cls._patches.items():
            setattr(owner, name, timed if enabled else original)

    @staticmethod
    def _calibrate(n=20000):
        spent = 0.0
        for _ in range(n):
            t = time.thread_time()
            spent += time.thread_time() - t
        return spent / n


def train(schedule, steps, with_dashboard, gate_every=None):
    est = make_estimator(schedule)
    clock = LoopTimes(gate_every, steps)
    _Timed.reset()
    _Gate.reset(keep=clock)
    t0 = time.perf_counter()
    with events.subscribed(clock), contextlib.redirect_stdout(io.StringIO()):
        if with_dashboard:
            # What `%load_ext tpu_nb` adds in JupyterLab: the status bar and runs panel's comm.
            bridge = LabBridge()
            try:
                handle = notebook.train(est, input_fn, steps=steps, dashboard=True)
            finally:
                bridge.close()
            assert handle.state == "done", handle.state
        else:
            est.train(input_fn, steps=steps)
    _Gate.reset()
    return clock, time.perf_counter() - t0


def interleaved(schedule, seconds, rate):
    """One long run, notebook layer attached in alternate blocks; returns (slowdown %, s.e. %, blocks, loops per block)."""
    loop_seconds = SCHEDULES[schedule] / rate
    every = max(1, round(BLOCK_SECONDS / loop_seconds))
    steps = int(seconds * rate) // (2 * every * SCHEDULES[schedule]) * (2 * every * SCHEDULES[schedule])
    _Timed.set_enabled(False)
    try:
        clock, _ = train(schedule, steps, True, gate_every=every)
    finally:
        _Timed.set_enabled(True)
    slower, se, blocks = block_slowdown(clock.times, every)
    return slower, se, blocks, every


def block_slowdown(times, every):
    """Loop-boundary times of a gated run -> (slowdown %, its standard error %, attached blocks used).

    Block k spans boundaries k*every .. (k+1)*every and is attached when k is even; each attached
    block's duration is divided by the mean of its two neighbours' (drift cancels)."""
    t = np.asarray(times)
    durations = t[every::every] - t[:-every:every]
    first = 2 * max(1, len(durations) // 20)  # skip the warm-up; an attached (even) block
    ratios = [durations[k] / (0.5 * (durations[k - 1] + durations[k + 1]))
              for k in range(first, len(durations) - 1, 2)]
    mean = statistics.fmean(ratios)
    se = statistics.stdev(ratios) / math.sqrt(len(ratios))
    return 100 * (mean - 1), 100 * se, len(ratios)


def use_attached_clock():
    """Dashboards made from now on pace their updates by _Gate.attached_time (see _Gate)."""
    from tpu_nb.notebook.dashboard import Dashboard

    init = Dashboard.__init__

    def init_with_attached_clock(self, handle, **kwargs):
        kwargs.setdefault("clock", _Gate.attached_time)
        init(self, handle, **kwargs)

    Dashboard.__init__ = init_with_attached_clock


def _serialize_like_a_kernel(self, data=None, metadata=None, buffers=None):
    json.dumps(data, default=str)  # what jupyter_client's session does before the socket


# The notebook the browser runs: the benchmark's own model and input (this module, imported in the
# kernel), one cell per training run. bench_run records steps/s between the first and last loop
# boundaries and the run's wall-clock span, for the frame statistics.
_BROWSER_SETUP = """\
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, {bench_dir!r})
import dashboard_overhead as bench
from tpu_nb.reporting import events
from tpu_nb import notebook
%load_ext tpu_nb
results = []

def bench_run(dashboard):
    est = bench.make_estimator("loops")
    clock = bench.LoopTimes()
    started = time.time()
    with events.subscribed(clock):
        handle = notebook.train(est, bench.input_fn, steps={steps}, dashboard=dashboard)
    assert handle.state == "done", handle.state
    results.append(dict(dashboard=dashboard, steps_per_sec=clock.steps_per_sec(), start=started, end=time.time()))
    return None

bench_run(True)  # warm-up: imports, the first graph, the first widget view
bench.use_attached_clock()
interleaved = {{}}

def bench_interleaved(seconds, block_seconds):
    # One long run with the dashboard live, the notebook layer attached in alternate blocks.
    rate = results[0]["steps_per_sec"]
    every = max(1, round(block_seconds * rate / bench.SCHEDULES["loops"]))
    steps = max(40, int(seconds * rate) // (20 * every)) * (20 * every)
    clock = bench.LoopTimes(every, steps)
    bench._Gate.reset(keep=clock)
    started = time.time()
    try:
        with events.subscribed(clock):
            handle = notebook.train(bench.make_estimator("loops"), bench.input_fn, steps=steps, dashboard=True)
    finally:
        bench._Gate.reset()
    assert handle.state == "done", handle.state
    slower, se, blocks = bench.block_slowdown(clock.times, every)
    interleaved.update(slower=slower, se=se, blocks=blocks, start=started, end=time.time(),
                       block_seconds=(clock.times[-1] - clock.times[0]) * every / (len(clock.times) - 1))
"""


def _frame_stats(frames, windows):
    """Intervals between consecutive animation frames that end inside ``windows`` (ms): (p95, worst, n)."""
    frames = np.asarray(frames, np.float64)
    intervals, ends = np.diff(frames), frames[1:]
    inside = np.zeros(len(ends), bool)
    for start, end in windows:
        inside |= (ends >= start * 1000) & (ends <= end * 1000)
    picked = intervals[inside]
    if not len(picked):
        return float("nan"), float("nan"), 0
    return float(np.percentile(picked, 95)), float(picked.max()), int(len(picked))


def real_browser(steps, repeats, interleaved_seconds):
    """JupyterLab + headless Chromium on this machine: the interleaved-blocks slowdown (a run of
    ``interleaved_seconds``, 0 for none), (with, without) median steps/s of whole runs, frame p95/worst ms."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import nbformat
    from browser_support import CHROMIUM, KERNEL_READY, chromium_page, jupyter_server

    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"--browser needs {CHROMIUM} (apt-get install chromium) and playwright")
    root = pathlib.Path(tempfile.mkdtemp(prefix="dash_bench_browser_"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [_BROWSER_SETUP.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), steps=steps)]
    if interleaved_seconds:
        cells.append(f"bench_interleaved({interleaved_seconds}, {BROWSER_BLOCK_SECONDS})")
    for r in range(repeats):  # alternating, each arm first in every other pair
        for dashboard in ((True, False) if r % 2 == 0 else (False, True)):
            cells.append(f"bench_run({dashboard})")
    # The marker is in the output only.
    cells.append("print('BENCH' + '_DONE ' + json.dumps(dict(runs=results[1:], interleaved=interleaved)))")
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(root / "bench.ipynb"))
    with jupyter_server("lab", root, root / "lab.log") as (base, token), chromium_page((1400, 1000)) as page:
        page.goto(f"{base}/lab/tree/bench.ipynb?reset&token={token}")
        page.wait_for_function(KERNEL_READY, timeout=120_000)
        # Every animation frame's wall-clock time (ms since the epoch, as the kernel's time.time()).
        page.evaluate("""() => { window.benchFrames = [];
            const tick = () => { window.benchFrames.push(performance.timeOrigin + performance.now());
                                 requestAnimationFrame(tick); };
            requestAnimationFrame(tick); }""")
        page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        # textContent, not innerText: reading innerText lays the page out, a stall of its own.
        outputs = "[...document.querySelectorAll('.jp-OutputArea-output pre')].map((e) => e.textContent).join('\\n')"
        # Chromium's own account of the page's main thread (seconds spent on tasks, scripts, layout,
        # style), read once a second: where the browser's share of the machine goes.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        usage = []
        deadline = time.monotonic() + 60 + 3 * interleaved_seconds + 4 * repeats * steps / 500
        while True:
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            usage.append((time.time(), metrics))
            text = page.evaluate(f"() => {outputs}")
            if "BENCH_DONE {" in text:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the browser benchmark's notebook did not finish in time; see " + str(root / "lab.log"))
            time.sleep(1.0)
        frames = page.evaluate("() => window.benchFrames")
        charts = page.evaluate("() => document.querySelectorAll('.tpunb-chart').length")
    done = json.loads(re.search(r"BENCH_DONE (\{.*\})", text).group(1))
    runs, blocks = done["runs"], done["interleaved"]
    with_dash = [r["steps_per_sec"] for r in runs if r["dashboard"]]
    without = [r["steps_per_sec"] for r in runs if not r["dashboard"]]
    p95, worst, n = _frame_stats(frames, [(r["start"], r["end"]) for r in runs if r["dashboard"]])
    # The same page during the runs without a dashboard: what this machine's load alone does to frames.
    ref_p95, ref_worst, _ = _frame_stats(frames, [(r["start"], r["end"]) for r in runs if not r["dashboard"]])
    if blocks:
        blocks["p95"], blocks["worst"], blocks["frames"] = _frame_stats(frames, [(blocks["start"], blocks["end"])])
    return dict(with_dash=with_dash, without=without, p95=p95, worst=worst, frames=n, charts=charts,
                ref_p95=ref_p95, ref_worst=ref_worst, interleaved=blocks,
                page_with=_page_usage(usage, [(r["start"], r["end"]) for r in runs if r["dashboard"]]),
                page_without=_page_usage(usage, [(r["start"], r["end"]) for r in runs if not r["dashboard"]]))


_PAGE_METRICS = {"TaskDuration": "all tasks", "ScriptDuration": "script", "LayoutDuration": "layout",
                 "RecalcStyleDuration": "style"}


def _page_usage(usage, windows):
    """Shares of wall time the page's main thread spent (Chromium's Performance metrics) inside
    ``windows``, from the samples that fall within each window's first and last second."""
    spent = dict.fromkeys(_PAGE_METRICS, 0.0)
    wall = 0.0
    for start, end in windows:
        inside = [(t, m) for t, m in usage if start + 0.5 <= t <= end]
        if len(inside) < 2:
            continue
        (t0, first), (t1, last) = inside[0], inside[-1]
        wall += t1 - t0
        for name in spent:
            spent[name] += last.get(name, 0.0) - first.get(name, 0.0)
    return {name: (value / wall if wall else float("nan")) for name, value in spent.items()}


def print_browser(result, steps):
    with_rate, ref = statistics.median(result["with_dash"]), statistics.median(result["without"])
    blocks = result["interleaved"]
    print("\n[real browser]  JupyterLab + headless Chromium on this machine, the 'loops' schedule")
    if blocks:
        print(f"  interleaved, one run with the dashboard live and the page open: {blocks['slower']:+.2f}% slower "
              f"with the notebook layer attached (standard error {blocks['se']:.2f}%, {blocks['blocks']} attached "
              f"blocks of {blocks['block_seconds']:.2f} s; target <= 3%)")
        print(f"  page frames during that run: p95 {blocks['p95']:.1f} ms, worst {blocks['worst']:.1f} ms "
              f"({blocks['frames']} frames; target p95 < 50 ms)")
    print(f"  whole {steps}-step runs, alternating ({len(result['with_dash'])} per arm; {result['charts']} charts "
          "drawn); these include each run's start-up (a new dashboard view) and the machine's drift:")
    print(f"  without dashboard (reference, same session): {ref:6.0f} steps/s median "
          f"({steps / ref:.2f} s per {steps} steps)")
    print(f"  with dashboard, page open:                   {with_rate:6.0f} steps/s median "
          f"({steps / with_rate:.2f} s per {steps} steps)")
    print(f"  slowdown of whole runs with a real browser: {100 * (ref / with_rate - 1):+.2f}%")
    print("  per pair, steps/s with / without: "
          + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(result["with_dash"], result["without"])))
    print(f"  page frames while a dashboard was live: p95 {result['p95']:.1f} ms, worst {result['worst']:.1f} ms "
          f"({result['frames']} frames; target p95 < 50 ms)")
    print(f"  page frames during the runs without a dashboard (reference): p95 {result['ref_p95']:.1f} ms, "
          f"worst {result['ref_worst']:.1f} ms")
    for arm, usage in (("with dashboard", result["page_with"]), ("without", result["page_without"])):
        print(f"  page main thread, {arm:14}: " + ", ".join(
            f"{label} {100 * usage[name]:.1f}%" for name, label in _PAGE_METRICS.items()) + " of wall time")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150, help="length of the interleaved run per schedule")
    parser.add_argument("--steps", type=int, default=10000, help="steps of each whole run")
    parser.add_argument("--repeats", type=int, default=6, help="whole runs per arm")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--browser-steps", type=int, default=3000, help="steps of each run in the real browser")
    parser.add_argument("--browser-repeats", type=int, default=6, help="runs per arm in the real browser")
    parser.add_argument("--browser-seconds", type=float, default=120,
                        help="length of the interleaved run in the real browser (0: none)")
    parser.add_argument("--no-browser", action="store_true", help="skip the real-browser measurement")
    parser.add_argument("--browser-only", action="store_true", help="only the real-browser measurement")
    args = parser.parse_args()

    browser = None
    if not args.no_browser:
        # In a kernel of its own (JupyterLab's); this process only waits meanwhile.
        browser = real_browser(args.browser_steps, args.browser_repeats, args.browser_seconds)
        print_browser(browser, args.browser_steps)
        if args.browser_only:
            return

    from IPython.core.interactiveshell import InteractiveShell
    import comm

    InteractiveShell.instance()  # the dashboard displays through IPython, as in a notebook
    comm.DummyComm.send = _serialize_like_a_kernel
    _Timed.install()

    summary = {}
    print(f"\ntpu_nb dashboard overhead, TensorFlow {tf.__version__}: interleaved blocks over {args.seconds:.0f} s, "
          f"then {args.repeats} whole runs of {args.steps} steps per arm")
    for schedule in args.schedules:
        train(schedule, 200, True)  # warm-up: imports, matplotlib fonts, first graph
        results = {True: [], False: []}
        for r in range(args.repeats):
            for with_dashboard in ((True, False) if r % 2 == 0 else (False, True)):
                clock, whole = train(schedule, args.steps, with_dashboard)
                span = clock.times[-1] - clock.times[0]
                results[with_dashboard].append((clock.steps_per_sec(), whole, _Timed.spent / span,
                                                _Timed.sending / span, _Timed.sends / span))
        rate = statistics.median(v[0] for v in results[False])
        slower, se, blocks, every = interleaved(schedule, args.seconds, rate)
        summary[schedule] = (slower, se)
        med = {k: [statistics.median(v[i] for v in runs) for i in range(5)] for k, runs in results.items()}
        shares = med[True][2:]

        print(f"\n[{schedule}]  iterations_per_loop={SCHEDULES[schedule]}")
        print(f"  interleaved: {slower:+.2f}% slower with the notebook layer attached (standard error "
              f"{se:.2f}%, {blocks} attached blocks of {every} loops; target <= 1%)")
        print(f"  CPU time of the notebook layer, as a share of training time: {100 * shares[0]:.2f}% in the "
              f"training thread, {100 * shares[1]:.2f}% in the update threads "
              f"({shares[2]:.1f} dashboard updates per second; whole runs)")
        print(f"  whole runs, without dashboard: {med[False][0]:6.0f} steps/s   whole call {med[False][1]:5.2f} s")
        print(f"  whole runs, with dashboard:    {med[True][0]:6.0f} steps/s   whole call {med[True][1]:5.2f} s")
        print("  whole runs, steps/s with / without, per repeat: "
              + ", ".join(f"{a[0]:.0f}/{b[0]:.0f}" for a, b in zip(results[True], results[False])))


    print("\n[summary]  dashboard cost, both ways measured in this run")
    for schedule, (slower, se) in summary.items():
        print(f"  no browser ({schedule}, interleaved blocks): {slower:+.2f}% +- {se:.2f}% (target <= 1%)")
    if browser is not None:
        blocks = browser["interleaved"]
        if blocks:
            print(f"  real browser (loops, interleaved blocks, page open): {blocks['slower']:+.2f}% +- "
                  f"{blocks['se']:.2f}% (target <= 3%); frames p95 {blocks['p95']:.1f} ms, worst "
                  f"{blocks['worst']:.1f} ms (target p95 < 50 ms)")
        ref, with_rate = statistics.median(browser["without"]), statistics.median(browser["with_dash"])
        print(f"  real browser (loops, whole runs vs. the no-dashboard runs of the same session): "
              f"{100 * (ref / with_rate - 1):+.2f}%; frames p95 {browser['p95']:.1f} ms, "
              f"worst {browser['worst']:.1f} ms")


if __name__ == "__main__":
    main()
