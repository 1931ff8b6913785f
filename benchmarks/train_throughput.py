"""Training throughput: tpu_nb.TPUEstimator vs Keras 3 fit vs a hand-written TF1 loop.

What is compared
----------------
The same model and data are trained three ways in one process:

* model: MLP 784-256-10 (relu), softmax cross-entropy on integer labels,
  Adam (learning rate 1e-3), batch 128;
* data: a fixed random float32 dataset of 4096 x 784 with int32 labels in
  [0, 10), generated from a fixed seed with stateless random ops (so every
  method sees identical numbers and no large constant is embedded in the
  graphs), then ``.repeat().batch(128, drop_remainder=True)``.

1. **tpu_nb** -- ``TPUEstimator(use_tpu=False)`` with
   ``TPUConfig(iterations_per_loop=IPL)``; the model_fn uses ``tf_keras``
   Dense layers and ``tf.compat.v1.train.AdamOptimizer``.  A SessionRunHook
   records a timestamp and the global step at every loop boundary
   (``after_run``).  Reported:

   - steady steps/s: global-step delta / time between the first and the last
     loop boundary (the first loop, which includes graph building and session
     creation, is excluded);
   - whole-call steps/s: all steps / wall time of the ``train()`` call;
   - first loop: time from calling ``train()`` to the end of the first loop;
   - time to first step: a separate ``train(steps=1)`` on a fresh model_dir,
     from calling ``train()`` to the first ``after_run``.  TensorFlow,
     tf_keras and tpu_nb are imported before any timer starts.

   Checkpointing is pushed out of the way (``save_checkpoints_steps`` huge),
   so the numbers measure the training loop, not disk writes.

2. **keras** -- Keras 3 ``model.fit`` with ``steps_per_execution=IPL`` and
   ``jit_compile=False``; a callback timestamps every execution; steady
   steps/s excludes the first execution.

3. **handloop** -- a hand-written TF1 graph: ``tf.Graph()``,
   ``tf.compat.v1.data.make_initializable_iterator``, and a ``tf.while_loop``
   that runs IPL training steps (model built inside the loop body with
   tf_keras layers + ``AdamOptimizer.minimize`` incrementing a global step)
   per ``Session.run``; steady steps/s excludes the first run.

4. **tpu_nb_numpy** / **keras_numpy** -- the most common notebook input:
   ``Dataset.from_tensor_slices((x, y))`` over numpy arrays (8192 x 784
   float32, int32 labels), so in graph mode the arrays are graph constants.
   tpu_nb runs with its default checkpointing and summaries (what a user gets);
   reported are whole-call figures: ``train()`` wall time (steps/s), time to
   the first step of a ``train(steps=1)`` on a fresh model_dir, and the size
   of model_dir afterwards.  Keras 3 ``fit`` gets the same arrays the same way.
   ``--no-numpy`` skips them.

Each repeat runs all methods (in a rotating order, to spread machine
load over them evenly); the table reports the median over repeats.  Targets:
tpu_nb steady steps/s >= 1.0x Keras fit and >= 0.95x the hand loop, and
time to first step <= 1 s (also with the numpy-array input, whose whole-call
steps/s should reach Keras fit's and whose model_dir should stay near the
model's size, 2.4 MB per checkpoint).

How to run (from the repository root)::

    python benchmarks/train_throughput.py                # ipl 100, 3000 steps, 3 repeats
    python benchmarks/train_throughput.py --ipl 50 --steps 2000 --repeats 5

The exit status is 0 whether or not the targets are met; it is 1 only when
a method fails with an exception (the traceback is printed).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Make `import tpu_nb` work when run as `python benchmarks/train_throughput.py`
# from a source checkout (the script's own folder is what lands on sys.path).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

absl_logging.set_verbosity(absl_logging.ERROR)
tf.get_logger().setLevel("ERROR")
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)

import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (Keras 2, graph-mode safe)

N_EXAMPLES = 4096
N_FEATURES = 784
N_HIDDEN = 256
N_CLASSES = 10
BATCH = 128
LEARNING_RATE = 1e-3
DATA_SEED = (20240, 7)
LABEL_SEED = (20240, 8)

# Results keys.
STEADY = "steady_steps_per_s"
MEDLOOP = "median_loop_steps_per_s"
WHOLE = "whole_steps_per_s"
FIRST_LOOP = "first_loop_s"
FIRST_STEP = "first_step_s"
MODEL_DIR_MB = "model_dir_mb"

N_NUMPY = 8192
_NUMPY_ARRAYS = []


def make_dataset(batch_size=BATCH):
    """The shared synthetic dataset (works eagerly and inside a tf.Graph)."""
    features = tf.random.stateless_uniform(
        [N_EXAMPLES, N_FEATURES], seed=DATA_SEED, dtype=tf.float32)
    labels = tf.random.stateless_uniform(
        [N_EXAMPLES], seed=LABEL_SEED, minval=0, maxval=N_CLASSES,
        dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    return ds.repeat().batch(batch_size, drop_remainder=True)


def tf1_model_loss(features, labels):
    """The MLP in graph mode with tf_keras layers; returns the mean loss."""
    hidden = tf_keras.layers.Dense(N_HIDDEN, activation="relu")(features)
    logits = tf_keras.layers.Dense(N_CLASSES)(hidden)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))


def _steady_rate(steps, times):
    """Steps/s between the first and last boundary (first interval excluded)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (steps[-1] - steps[0]) / (times[-1] - times[0])


def _median_loop_rate(steps, times):
    """Steps/s of the median loop after the first (robust to load spikes)."""
    rates = [(s1 - s0) / (t1 - t0)
             for s0, s1, t0, t1 in zip(steps, steps[1:], times, times[1:])
             if t1 > t0]
    return statistics.median(rates) if rates else float("nan")


def _rates(steps, times):
    return {STEADY: _steady_rate(steps, times),
            MEDLOOP: _median_loop_rate(steps, times)}


# --------------------------------------------------------------------------
# 1. tpu_nb TPUEstimator
# --------------------------------------------------------------------------

def _import_tpu_nb():
    import tpu_nb  # noqa: F401
    from tpu_nb import (ModeKeys, RunConfig, TPUConfig, TPUEstimator,  # noqa: F401
                        TPUEstimatorSpec)
    return tpu_nb


class _LoopBoundaryTimer(tf.compat.v1.train.SessionRunHook):
    """Timestamps each loop boundary and reads the global step there."""

    def __init__(self):
        self.times = []
        self.steps = []
        self._global_step = None

    def begin(self):
        self._global_step = tf.compat.v1.train.get_global_step()

    def after_run(self, run_context, run_values):
        now = time.perf_counter()
        self.times.append(now)
        if self._global_step is not None:
            # A separate read of the variable only: it does not re-run the loop.
            self.steps.append(int(run_context.session.run(self._global_step)))


def _tpu_nb_model_fn(features, labels, mode, params):
    from tpu_nb import ModeKeys, TPUEstimatorSpec
    loss = tf1_model_loss(features, labels)
    train_op = None
    if mode == ModeKeys.TRAIN:
        optimizer = tf.compat.v1.train.AdamOptimizer(LEARNING_RATE)
        train_op = optimizer.minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
    return TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _tpu_nb_input_fn(params):
    return make_dataset(params["batch_size"])


def _make_estimator(model_dir, ipl):
    from tpu_nb import RunConfig, TPUConfig, TPUEstimator
    config = RunConfig(
        model_dir=model_dir,
        save_checkpoints_steps=10 ** 9,
        tpu_config=TPUConfig(iterations_per_loop=ipl))
    return TPUEstimator(
        model_fn=_tpu_nb_model_fn, config=config, use_tpu=False,
        train_batch_size=BATCH)


def run_tpu_nb(ipl, total_steps):
    """Trains with tpu_nb; returns the result dict (see module docstring)."""
    result = {}
    work = tempfile.mkdtemp(prefix="tpu_nb_bench_")
    try:
        # (a) Time to first step, on a fresh model_dir.
        est = _make_estimator(os.path.join(work, "first_step"), ipl)
        hook = _LoopBoundaryTimer()
        t_call = time.perf_counter()
        est.train(_tpu_nb_input_fn, steps=1, hooks=[hook])
        if not hook.times:
            raise RuntimeError("tpu_nb: the hook's after_run was never called")
        result[FIRST_STEP] = hook.times[0] - t_call
        if hook.steps and hook.steps[-1] != 1:
            result.setdefault("problems", []).append(
                "train(steps=1) ended at global step %d" % hook.steps[-1])

        # (b) Throughput run.
        est = _make_estimator(os.path.join(work, "throughput"), ipl)
        hook = _LoopBoundaryTimer()
        t_call = time.perf_counter()
        est.train(_tpu_nb_input_fn, steps=total_steps, hooks=[hook])
        t_end = time.perf_counter()
        if not hook.times:
            raise RuntimeError("tpu_nb: the hook's after_run was never called")
        if not hook.steps:  # no global step visible to hooks: assume ipl/loop
            result.setdefault("problems", []).append(
                "hooks see no global step; assuming %d steps per loop" % ipl)
            hook.steps = [ipl * (i + 1) for i in range(len(hook.times))]
        result[FIRST_LOOP] = hook.times[0] - t_call
        result[WHOLE] = total_steps / (t_end - t_call)
        result.update(_rates(hook.steps, hook.times))
        result["loops"] = len(hook.times)
        if hook.steps and hook.steps[-1] != total_steps:
            result.setdefault("problems", []).append(
                "train(steps=%d) ended at global step %d"
                % (total_steps, hook.steps[-1]))
        if len(hook.steps) >= 2:
            deltas = sorted(set(b - a for a, b in zip(hook.steps, hook.steps[1:])))
            if deltas != [ipl]:
                result.setdefault("problems", []).append(
                    "steps per loop %s, expected %d" % (deltas, ipl))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# --------------------------------------------------------------------------
# 2. Keras 3 model.fit
# --------------------------------------------------------------------------

class _ExecutionTimer(keras.callbacks.Callback):
    """Timestamps every execution (one on_train_batch_end per execution)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
        self.steps.append(batch)


def _keras_mlp(ipl):
    """The benchmark's MLP in Keras 3, compiled to run ``ipl`` steps per execution."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((N_FEATURES,)),
        keras.layers.Dense(N_HIDDEN, activation="relu"),
        keras.layers.Dense(N_CLASSES),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=ipl, jit_compile=False)
    return model


def run_keras(ipl, total_steps):
    model = _keras_mlp(ipl)
    timer = _ExecutionTimer()
    t_call = time.perf_counter()
    model.fit(make_dataset(BATCH), epochs=1, steps_per_epoch=total_steps,
              verbose=0, shuffle=False, callbacks=[timer])
    t_end = time.perf_counter()
    result = {
        FIRST_LOOP: timer.times[0] - t_call,
        WHOLE: total_steps / (t_end - t_call),
        **_rates(timer.steps, timer.times),
        "loops": len(timer.times),
    }
    if len(timer.steps) >= 2:
        deltas = sorted(set(b - a for a, b in zip(timer.steps, timer.steps[1:])))
        if deltas != [ipl]:
            result["problems"] = ["steps per execution %s, expected %d"
                                  % (deltas, ipl)]
    return result


# --------------------------------------------------------------------------
# 3. Hand-written TF1 graph loop
# --------------------------------------------------------------------------

def run_handloop(ipl, total_steps):
    t_call = time.perf_counter()
    graph = tf.Graph()
    with graph.as_default():
        iterator = tf.compat.v1.data.make_initializable_iterator(
            make_dataset(BATCH))
        global_step = tf.compat.v1.train.get_or_create_global_step()

        def body(i, _):
            features, labels = iterator.get_next()
            loss = tf1_model_loss(features, labels)
            train_op = tf.compat.v1.train.AdamOptimizer(LEARNING_RATE).minimize(
                loss, global_step=global_step)
            with tf.control_dependencies([train_op]):
                return i + 1, tf.identity(loss)

        _, last_loss = tf.while_loop(
            lambda i, _: i < ipl, body, [tf.constant(0), tf.constant(0.0)])
        init = tf.compat.v1.global_variables_initializer()
    graph.finalize()

    times, steps = [], []
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run([init, iterator.initializer])
        for _ in range(total_steps // ipl):
            sess.run(last_loss)
            times.append(time.perf_counter())
            steps.append(int(sess.run(global_step)))
    t_end = time.perf_counter()
    result = {
        FIRST_LOOP: times[0] - t_call,
        WHOLE: total_steps / (t_end - t_call),
        **_rates(steps, times),
        "loops": len(times),
    }
    if steps[-1] != total_steps:
        result["problems"] = ["ended at global step %d, expected %d"
                              % (steps[-1], total_steps)]
    return result


# --------------------------------------------------------------------------
# 4. numpy arrays in from_tensor_slices (graph constants in graph mode)
# --------------------------------------------------------------------------

def numpy_arrays():
    """The 8192 x 784 numpy training set (made once per process)."""
    if not _NUMPY_ARRAYS:
        rng = np.random.RandomState(0)
        _NUMPY_ARRAYS.append(rng.rand(N_NUMPY, N_FEATURES).astype(np.float32))
        _NUMPY_ARRAYS.append(rng.randint(0, N_CLASSES, N_NUMPY).astype(np.int32))
    return _NUMPY_ARRAYS[0], _NUMPY_ARRAYS[1]


def _numpy_dataset(batch_size):
    x, y = numpy_arrays()
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(
        batch_size, drop_remainder=True)


def _tpu_nb_numpy_input_fn(params):
    return _numpy_dataset(params["batch_size"])


def _dir_mb(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files) / 1e6


def run_tpu_nb_numpy(ipl, total_steps):
    """tpu_nb with default checkpointing on the numpy-array input; whole-call figures."""
    from tpu_nb import RunConfig, TPUConfig, TPUEstimator
    result = {}
    work = tempfile.mkdtemp(prefix="tpu_nb_bench_np_")

    def make(name):
        config = RunConfig(model_dir=os.path.join(work, name),
                           tpu_config=TPUConfig(iterations_per_loop=ipl))
        return TPUEstimator(model_fn=_tpu_nb_model_fn, config=config,
                            use_tpu=False, train_batch_size=BATCH)

    try:
        hook = _LoopBoundaryTimer()
        t_call = time.perf_counter()
        make("first_step").train(_tpu_nb_numpy_input_fn, steps=1, hooks=[hook])
        result[FIRST_STEP] = hook.times[0] - t_call

        hook = _LoopBoundaryTimer()
        t_call = time.perf_counter()
        make("whole").train(_tpu_nb_numpy_input_fn, steps=total_steps,
                            hooks=[hook])
        t_end = time.perf_counter()
        result[FIRST_LOOP] = hook.times[0] - t_call
        result[WHOLE] = total_steps / (t_end - t_call)
        result.update(_rates(hook.steps, hook.times))
        result[MODEL_DIR_MB] = _dir_mb(os.path.join(work, "whole"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def run_keras_numpy(ipl, total_steps):
    """Keras 3 fit on the same numpy arrays through the same Dataset."""
    model = _keras_mlp(ipl)
    timer = _ExecutionTimer()
    t_call = time.perf_counter()
    model.fit(_numpy_dataset(BATCH), epochs=1, steps_per_epoch=total_steps,
              verbose=0, shuffle=False, callbacks=[timer])
    t_end = time.perf_counter()
    return {FIRST_LOOP: timer.times[0] - t_call,
            WHOLE: total_steps / (t_end - t_call),
            **_rates(timer.steps, timer.times)}


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

METHODS = [("tpu_nb", run_tpu_nb), ("keras", run_keras),
           ("handloop", run_handloop), ("tpu_nb_numpy", run_tpu_nb_numpy),
           ("keras_numpy", run_keras_numpy)]


def _median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def _fmt(value, spec):
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


def _numpy_checks(summary):
    """Target rows for the numpy-array input (none when it was skipped)."""
    tp, ke = summary.get("tpu_nb_numpy"), summary.get("keras_numpy")
    if tp is None:
        return []
    rows = [("numpy: tpu_nb time to first step",
             _fmt(tp[FIRST_STEP], ".3f") + " s", "<= 1 s",
             "yes" if tp[FIRST_STEP] <= 1.0 else "NO"),
            ("numpy: tpu_nb model_dir",
             _fmt(tp[MODEL_DIR_MB], ".1f") + " MB", "~2x2.4 MB", "(info)")]
    if ke is not None:
        ratio = tp[WHOLE] / ke[WHOLE]
        rows.append(("numpy: whole-call tpu_nb / keras", "%.3fx" % ratio,
                     ">= 1.00x", "yes" if ratio >= 1.0 else "NO"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ipl", type=int, default=100,
                        help="iterations per loop / steps per execution (100)")
    parser.add_argument("--steps", type=int, default=3000,
                        help="timed steps per method per repeat, after one "
                             "warm-up loop (3000; rounded up to a multiple "
                             "of --ipl)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats; the median is reported (3)")
    parser.add_argument("--no-numpy", action="store_true",
                        help="skip the numpy-array input methods")
    args = parser.parse_args(argv)
    if args.ipl < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--ipl, --steps and --repeats must be positive")

    ipl = args.ipl
    timed_loops = -(-args.steps // ipl)
    total_steps = ipl * (1 + timed_loops)  # one warm-up loop + timed loops

    methods = [m for m in METHODS
               if not (args.no_numpy and m[0].endswith("_numpy"))]
    try:
        _import_tpu_nb()
    except Exception:  # noqa: BLE001 - report and benchmark the rest
        print("tpu_nb is not importable; benchmarking the other methods only:")
        traceback.print_exc(limit=3)
        methods = [m for m in methods if not m[0].startswith("tpu_nb")]

    print("TensorFlow %s, Keras %s, tf_keras %s, %d CPU cores"
          % (tf.__version__, keras.__version__, tf_keras.__version__,
             os.cpu_count() or 0))
    print("MLP %d-%d-%d, batch %d, Adam %g; ipl %d; %d steps per run "
          "(1 warm-up loop + %d timed steps); %d repeats"
          % (N_FEATURES, N_HIDDEN, N_CLASSES, BATCH, LEARNING_RATE, ipl,
             total_steps, timed_loops * ipl, args.repeats))

    runs = {name: [] for name, _ in methods}
    failures = {}
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        order = methods[rep % len(methods):] + methods[:rep % len(methods)]
        for name, fn in order:
            if name in failures:
                continue
            try:
                res = fn(ipl, total_steps)
            except Exception:  # noqa: BLE001 - report, keep benchmarking
                failures[name] = traceback.format_exc()
                print("\n%s FAILED in repeat %d:\n%s" % (name, rep + 1,
                                                         failures[name]))
                continue
            runs[name].append(res)
            extra = ""
            if FIRST_STEP in res:
                extra = ", first step %.3f s" % res[FIRST_STEP]
            if MODEL_DIR_MB in res:
                extra += ", model_dir %.1f MB" % res[MODEL_DIR_MB]
            print("  repeat %d %-12s steady %6.1f st/s (median loop %6.1f), "
                  "whole call %6.1f st/s, first loop %.3f s%s"
                  % (rep + 1, name, res[STEADY], res[MEDLOOP], res[WHOLE],
                     res[FIRST_LOOP], extra))
            for problem in res.get("problems", []):
                print("    PROBLEM (%s): %s" % (name, problem))
    elapsed = time.perf_counter() - t_start

    summary = {}
    for name, results in runs.items():
        if results:
            summary[name] = {
                key: _median([r[key] for r in results if key in r])
                for key in (STEADY, MEDLOOP, WHOLE, FIRST_LOOP, FIRST_STEP,
                            MODEL_DIR_MB)}

    print("\nMedian of %d repeat(s):" % args.repeats)
    header = "%-13s %12s %16s %16s %13s" % (
        "method", "steady st/s", "median-loop st/s", "whole-call st/s",
        "first loop s")
    print(header)
    print("-" * len(header))
    for name, _ in METHODS:
        if name in summary:
            s = summary[name]
            print("%-13s %12s %16s %16s %13s" % (
                name, _fmt(s[STEADY], ".1f"), _fmt(s[MEDLOOP], ".1f"),
                _fmt(s[WHOLE], ".1f"), _fmt(s[FIRST_LOOP], ".3f")))
        else:
            print("%-13s %14s" % (name, "failed" if name in failures
                                  else "not run"))

    tp = summary.get("tpu_nb")
    if tp is not None:
        first_step = tp[FIRST_STEP]
        print("\ntpu_nb time to first step (train(steps=1), fresh model_dir): "
              "%s s (repeats: %s)"
              % (_fmt(first_step, ".3f"),
                 ", ".join("%.3f" % r[FIRST_STEP] for r in runs["tpu_nb"])))
        checks = []
        for other, target in (("keras", 1.0), ("handloop", 0.95)):
            if other in summary:
                ratio = tp[STEADY] / summary[other][STEADY]
                checks.append(("tpu_nb / %s steady steps/s" % other,
                               "%.3fx" % ratio, ">= %.2fx" % target,
                               "yes" if ratio >= target else "NO"))
                ratio = tp[MEDLOOP] / summary[other][MEDLOOP]
                checks.append(("  (same, median-loop steps/s)",
                               "%.3fx" % ratio, "", "(info)"))
        checks.append(("tpu_nb time to first step",
                       _fmt(first_step, ".3f") + " s", "<= 1 s",
                       "yes" if first_step <= 1.0 else "NO"))
        checks.extend(_numpy_checks(summary))
        print("\n%-32s %10s %10s  %s" % ("target", "value", "needed", "met"))
        for label, value, need, ok in checks:
            print("%-32s %10s %10s  %s" % (label, value, need, ok))
    print("\nTotal benchmark time %.1f s" % elapsed)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
