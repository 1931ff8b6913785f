"""The CNN TPUEstimator program on the original (TF 2.15) and on tpu_nb (TF 2.21), side by side.

The program is ``tests/foreign_programs/cnn_tpu_classifier.py`` (a TF1-style Cloud TPU
CNN: conv-pool-conv-pool-dense, Momentum with a decaying learning rate, an EMA of the
weights, a host_call writing tf.summary v2 scalars every step, checkpoints every 100
steps). The original runs the same file with only its import line rewritten to
``tensorflow.compat.v1.estimator(.tpu)`` (a temporary copy; nothing is committed twice),
in its own interpreter: TF 2.15 + tensorflow-estimator 2.15, found as tests/test_matches_original.py
does (``--original-python`` or ``TPU_NB_ORIGINAL_PYTHON``)::

    python3 -m venv /tmp/orig && /tmp/orig/bin/pip install tensorflow-cpu==2.15.1 tensorflow-estimator==2.15.0
    python benchmarks/cnn_vs_original.py --original-python /tmp/orig/bin/python

Both run with ``use_tpu=False`` on one CPU device. Note the original's CPU path runs
ONE step per ``Session.run`` (iterations_per_loop only applies on a TPU), while tpu_nb
runs ``iterations_per_loop`` steps in a ``tf.while_loop`` per ``Session.run``.

Every measurement is a fresh process (TensorFlow settings such as oneDNN and control flow
v1/v2 are per process). Repetitions are interleaved (each round runs every configuration,
in a rotating order) and the tables print the median and the [min-max] spread.

Headline (the whole program: train 200 steps, evaluate):
  process wall s, train() wall s, steady steps/s (after the first loop boundary), time from
  ``train()`` to the first step (for tpu_nb: the first loop boundary less the loop's other
  steps at the steady rate), evaluate() wall s.

Attribution (train only; ``--no-attribution`` skips it): tpu_nb with iterations_per_loop 1
and 50, control flow v2 for the loop (with resource variables, which while_v2 needs), oneDNN off, grappler off, and a hand-written graph
of the same model (model_fn's train_op, no estimator, no hooks, no host_call) as the floor,
both as a ``tf.while_loop`` of 20 steps and one step per ``Session.run``, on TF 2.21 and on
TF 2.15 -- the floor on both versions separates TensorFlow from tpu_nb.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(REPO, "tests", "foreign_programs", "cnn_tpu_classifier.py")
OURS_IMPORT = "from tpu_nb import ModeKeys, RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec"
ORIGINAL_IMPORT = ("from tensorflow.compat.v1.estimator.tpu import RunConfig, TPUConfig, TPUEstimator, TPUEstimatorSpec; "
                   "from tensorflow.compat.v1.estimator import ModeKeys")


def program_source(impl):
    with open(PROGRAM) as f:
        source = f.read()
    if OURS_IMPORT not in source:
        raise RuntimeError(f"{PROGRAM}: its import line changed; expected {OURS_IMPORT!r}")
    if impl == "original":
        source = source.replace(OURS_IMPORT, ORIGINAL_IMPORT, 1)
    return source


# ---------------------------------------------------------------------------------------------
# Child: one measurement in this process (runs under either interpreter; imports tpu_nb only
# for impl=tpu_nb).
# ---------------------------------------------------------------------------------------------

def child(opts):
    t_start = time.perf_counter()
    if opts.impl == "tpu_nb":
        sys.path.insert(0, REPO)
    else:
        # The program asks for tf_keras (TF >= 2.16 needs it for tf.compat.v1.layers); TF 2.15's own Keras 2
        # is what the original's users had.
        os.environ["TF_USE_LEGACY_KERAS"] = "0"
    model_dir = tempfile.mkdtemp(prefix="cnn_bench_")
    sys.argv = [PROGRAM, "--model_dir", model_dir, "--train_steps", str(opts.steps),
                "--iterations_per_loop", str(opts.ipl)]
    ns = {"__name__": "cnn_program", "__file__": PROGRAM}
    exec(compile(program_source(opts.impl), PROGRAM, "exec"), ns)  # noqa: S102 - our own test program
    import tensorflow as tf

    if opts.cf == "v2":  # while_v2 needs resource variables (TF1 behaviour's RefVariables are v1-only)
        tf.compat.v1.enable_control_flow_v2()
        tf.compat.v1.enable_resource_variables()
    elif opts.cf == "v1":
        tf.compat.v1.disable_control_flow_v2()
    session_config = None
    if opts.grappler_off:
        session_config = tf.compat.v1.ConfigProto()
        session_config.graph_options.rewrite_options.disable_meta_optimizer = True
    t_imported = time.perf_counter()
    out = {"impl": opts.impl, "tf": tf.__version__, "import_s": t_imported - t_start}
    if opts.what == "floor":
        out.update(floor(ns, tf, opts, session_config))
        print("RESULT " + json.dumps(out), flush=True)
        return

    marks = {}

    class Timing(tf.compat.v1.train.SessionRunHook):
        def __init__(self):
            self.points = []

        def begin(self):
            self.gs = tf.compat.v1.train.get_global_step()

        def before_run(self, run_context):
            return tf.compat.v1.train.SessionRunArgs(self.gs)

        def after_run(self, run_context, run_values):
            self.points.append((time.perf_counter(), int(run_values.results)))

    base = ns["TPUEstimator"]

    def timed_estimator(*args, **kwargs):
        # Instance attributes: the original's Estimator refuses subclasses that override train/evaluate.
        est = base(*args, **kwargs)
        train, evaluate = est.train, est.evaluate

        def timed_train(input_fn, hooks=None, **kw):
            timing = Timing()
            t0 = time.perf_counter()
            try:
                return train(input_fn, hooks=list(hooks or []) + [timing], **kw)
            finally:
                marks["train"] = (t0, time.perf_counter(), timing.points)

        def timed_evaluate(*a, **kw):
            if opts.what == "train":
                return {}
            t0 = time.perf_counter()
            try:
                return evaluate(*a, **kw)
            finally:
                marks["evaluate_s"] = time.perf_counter() - t0

        est.train, est.evaluate = timed_train, timed_evaluate
        return est

    ns["TPUEstimator"] = timed_estimator
    if session_config is not None:
        run_config = ns["RunConfig"]
        ns["RunConfig"] = lambda **kw: run_config(session_config=session_config, **kw)
    ns["main"]()
    t0, t1, points = marks["train"]
    out["train_s"] = t1 - t0
    out["evaluate_s"] = marks.get("evaluate_s")
    if opts.impl == "original":  # one step per run; its hook's global-step read may race the increment
        points = [(t, i + 1) for i, (t, _) in enumerate(points)]
    out.update(rates(t0, points))
    out["process_s"] = time.perf_counter() - t_start
    print("RESULT " + json.dumps(out), flush=True)


def rates(t0, points):
    """Steady steps/s after the first boundary; time to the first step (estimated within a loop)."""
    (t_first, s_first), (t_last, s_last) = points[0], points[-1]
    steady = (s_last - s_first) / (t_last - t_first) if t_last > t_first else float("nan")
    return {"steady_steps_per_s": steady, "first_step_s": (t_first - t0) - max(s_first - 1, 0) / steady,
            "first_boundary_s": t_first - t0, "steps": s_last}


def floor(ns, tf, opts, session_config):
    """The model_fn's train_op in a plain graph: a tf.while_loop of ipl steps, or one step per run."""
    t0 = time.perf_counter()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(7)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        dataset = ns["train_input_fn"]({"batch_size": 128})
        iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        params = {"batch_size": 128}

        def step():
            images, labels = iterator.get_next()
            spec = ns["model_fn"](images, labels, ns["ModeKeys"].TRAIN, params)
            return spec.loss, spec.train_op

        if opts.ipl > 1:
            iterations = tf.compat.v1.placeholder(tf.int32, [])

            def body(i, _):
                loss, train_op = step()
                with tf.control_dependencies([train_op]):
                    return i + 1, tf.identity(loss)

            fetch = tf.while_loop(lambda i, _: i < iterations, body, [tf.constant(0), tf.constant(0.0)],
                                  parallel_iterations=1)
            feed = {iterations: opts.ipl}
            per_run = opts.ipl
        else:
            loss, train_op = step()
            fetch, feed, per_run = [loss, train_op], None, 1
        init = [tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer(),
                iterator.initializer]
    with tf.compat.v1.Session(graph=graph, config=session_config) as session:
        session.run(init)
        done, points = 0, []
        while done < opts.steps:
            session.run(fetch, feed)
            done += per_run
            points.append((time.perf_counter(), done))
    return rates(t0, points)


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------

def run_one(python, args, onednn=None, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    cmd = [python, os.path.abspath(__file__), "--child"] + args
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = wall
    return out


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    return f"{m:.2f} [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else f"{m:.2f}"


def rounds(configs, repeats, runner):
    results = {name: [] for name, _ in configs}
    for r in range(repeats):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for name, spec in order:
            res = runner(spec)
            results[name].append(res)
            print(f"  round {r + 1}: {name}: {res.get('steady_steps_per_s', float('nan')):.2f} steps/s, "
                  f"wall {res['wall_s']:.1f} s", flush=True)
    return results


def table(results, columns):
    names = list(results)
    width = max(len(n) for n in names) + 2
    print(f"{'':{width}s}" + "".join(f"{c:>24s}" for c, _ in columns))
    for name in names:
        cells = [med([r.get(key) for r in results[name]]) for _, key in columns]
        print(f"{name:{width}s}" + "".join(f"{c:>24s}" for c in cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original-python", default=os.environ.get("TPU_NB_ORIGINAL_PYTHON"),
                        help="interpreter with TF 2.15 + tensorflow-estimator 2.15 (or TPU_NB_ORIGINAL_PYTHON)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attribution-repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--attribution-steps", type=int, default=100)
    parser.add_argument("--no-attribution", action="store_true")
    parser.add_argument("--no-headline", action="store_true")
    # child options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="tpu_nb", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="program", help=argparse.SUPPRESS)
    parser.add_argument("--ipl", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--cf", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--grappler-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.steps = args.steps
        return child(args)
    if not args.original_python:
        parser.error("pass --original-python or set TPU_NB_ORIGINAL_PYTHON")
    pythons = {"original": args.original_python, "tpu_nb": sys.executable}

    def runner(spec):
        impl, extra, onednn = spec
        return run_one(pythons[impl], ["--impl", impl] + extra, onednn)

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if not args.no_headline:
        steps = ["--steps", str(args.steps)]
        print(f"\nThe program (train {args.steps} steps, evaluate), {args.repeats} interleaved rounds:")
        head = rounds([("original (TF 2.15, 1 step/run)", ("original", steps, None)),
                       ("tpu_nb (TF 2.21, ipl 20)", ("tpu_nb", steps, None))], args.repeats, runner)
        print("\nmedian [min-max]")
        table(head, [("process s", "wall_s"), ("train() s", "train_s"), ("steady steps/s", "steady_steps_per_s"),
                     ("train() to 1st step s", "first_step_s"), ("evaluate() s", "evaluate_s")])
    if not args.no_attribution:
        steps = ["--steps", str(args.attribution_steps), "--what", "train"]
        floor_steps = ["--steps", str(args.attribution_steps), "--what", "floor"]
        configs = [
            ("original TF 2.15", ("original", steps, None)),
            ("original TF 2.15, oneDNN off", ("original", steps, "0")),
            ("tpu_nb ipl 20", ("tpu_nb", steps, None)),
            ("tpu_nb ipl 1", ("tpu_nb", steps + ["--ipl", "1"], None)),
            ("tpu_nb ipl 50", ("tpu_nb", steps + ["--ipl", "50"], None)),
            ("tpu_nb ipl 20, cf v2 + resource vars", ("tpu_nb", steps + ["--cf", "v2"], None)),
            ("tpu_nb ipl 20, oneDNN off", ("tpu_nb", steps, "0")),
            ("tpu_nb ipl 20, grappler off", ("tpu_nb", steps + ["--grappler-off"], None)),
            ("floor TF 2.21 loop 20", ("tpu_nb", floor_steps, None)),
            ("floor TF 2.21 1 step/run", ("tpu_nb", floor_steps + ["--ipl", "1"], None)),
            ("floor TF 2.15 loop 20", ("original", floor_steps, None)),
            ("floor TF 2.15 1 step/run", ("original", floor_steps + ["--ipl", "1"], None)),
        ]
        print(f"\nAttribution (train {args.attribution_steps} steps only), {args.attribution_repeats} "
              "interleaved rounds:")
        attr = rounds(configs, args.attribution_repeats, runner)
        print("\nmedian [min-max]")
        table(attr, [("steady steps/s", "steady_steps_per_s"), ("train() s", "train_s"),
                     ("1st step s", "first_step_s"), ("process s", "wall_s")])
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (the machine is shared: figures are indicative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
