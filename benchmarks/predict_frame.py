"""1,000,000 predictions into a DataFrame: predict_frame vs pd.DataFrame(list(estimator.predict(...))).

Both paths run the same estimator and checkpoint in one process, in interleaved rounds (so a
slow spell on a shared machine hits both alike), each timed from the predict call to the finished
DataFrame; the best of --repeat rounds counts, and medians are printed beside it. Peak memory is
measured in a separate run of each path with tracemalloc (Python objects and numpy buffers;
TensorFlow's own tensors are the same for both paths), since tracing slows the paths unequally.
The input is generated in the graph, so neither path holds it in Python memory.

    python benchmarks/predict_frame.py                        # 1,000,000 rows
    python benchmarks/predict_frame.py --per-example-input    # input batched from single examples
    python benchmarks/predict_frame.py --rows 200000 --batch 8192

Measured on the 2-core dev machine (TF 2.21 CPU, batch 4096), 2026-11-25: predict_frame 0.18-0.21 s
and 31 MiB peak, the dict-per-row path 1.73-1.78 s and 415 MiB: 8.4x-9.4x faster. With
--per-example-input both paths also pay about 0.22 s of tf.data batching: 4.2x-6.5x over this
session's runs (5.7x on a quiet machine). predict_frame's own conversion takes about 0.01 s; the
rest is the engine's predict, which both paths pay, so the ratio is bounded by it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

import tpu_nb  # noqa: E402
from tpu_nb.estimator.frames import predict_frame  # noqa: E402

FEATURES, CLASSES = 16, 4
FAST, SLOW = "predict_frame", "pd.DataFrame(list(estimator.predict(...)))"
ENGINE = "engine alone (batches, no DataFrame)"


def model_fn(features, labels, mode, params):
    w = tf.compat.v1.get_variable("w", [FEATURES, CLASSES], initializer=tf.compat.v1.glorot_uniform_initializer(seed=1))
    logits = tf.matmul(features["x"], w)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={
            "id": features["id"], "class_ids": tf.argmax(logits, 1), "probabilities": tf.nn.softmax(logits)})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def make_input_fn(rows, per_example=False):
    """In-graph input of ``rows`` examples, made a batch at a time (or, per_example, one at a time).

    Batch at a time is the default: ``Dataset.range(rows).batch(b)`` alone costs about 0.22 s per
    1,000,000 rows on the 2-core machine, two thirds of the engine's whole predict, and that is
    timing tf.data's element-wise batching, not the frame. ``--per-example-input`` keeps it.
    """
    def input_fn(params):
        batch = params["batch_size"]

        def examples(ids):
            x = tf.sin(tf.cast(ids, tf.float32)[:, None] * tf.range(1, FEATURES + 1, dtype=tf.float32))
            return {"x": x, "id": ids}

        if per_example:
            return tf.data.Dataset.range(rows).batch(batch).map(examples).prefetch(2)
        starts = tf.data.Dataset.range(0, rows, batch)
        return starts.map(lambda start: examples(tf.range(start, tf.minimum(start + batch, rows)))).prefetch(2)

    return input_fn


def train_input_fn(params):
    x = np.random.RandomState(0).randn(256, FEATURES).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices(({"x": x, "id": np.arange(256, dtype=np.int64)}, y)) \
        .repeat().batch(params["batch_size"], drop_remainder=True)


def _seconds(fn):
    """Seconds for one call of ``fn`` (its result is dropped before the next call)."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    del result
    return seconds


def _peak(fn):
    """Peak traced memory of one call, and its result (a separate, untimed run: tracing slows)."""
    gc.collect()
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096, help="predict_batch_size")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra/inter-op threads for both paths (0: TensorFlow's default)")
    parser.add_argument("--per-example-input", action="store_true",
                        help="build input batches from single examples (Dataset.range(n).batch(b)), as many "
                             "real input_fns do; tf.data's batching then dominates both paths")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved timed rounds (the best counts)")
    args = parser.parse_args()

    model_dir = tempfile.mkdtemp(prefix="tpu_nb_bench_frame_")
    session_config = None
    if args.threads:
        session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.threads,
                                                  inter_op_parallelism_threads=args.threads)
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=model_dir, session_config=session_config), use_tpu=False,
                              train_batch_size=32, predict_batch_size=args.batch)
    est.train(train_input_fn, steps=1)
    input_fn = make_input_fn(args.rows, args.per_example_input)
    print(f"{args.rows:,} predictions (id, class_ids, probabilities[{CLASSES}]), predict_batch_size={args.batch}, "
          f"input {'per example' if args.per_example_input else 'a batch at a time'}, "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")

    # Warm-up (graph building, thread pools) so neither path pays for being first.
    predict_frame(est, make_input_fn(args.batch * 2, args.per_example_input))

    paths = {
        FAST: lambda: predict_frame(est, input_fn),
        SLOW: lambda: pd.DataFrame(list(est.predict(input_fn))),
        # For reading the numbers: what predict costs with no conversion at all (both paths pay it).
        ENGINE: lambda: list(est.predict(input_fn, yield_single_examples=False)),
    }
    # Interleaved rounds: on a shared machine a slow minute then hits every path alike.
    times = {label: [] for label in paths}
    for _ in range(args.repeat):
        for label, fn in paths.items():
            times[label].append(_seconds(fn))
    fast, fast_peak = _peak(paths[FAST])
    slow, slow_peak = _peak(paths[SLOW])
    peaks = {FAST: (fast_peak, fast), SLOW: (slow_peak, slow)}
    for label, seconds in times.items():
        line = f"{label:<44} best {min(seconds):5.2f} s  median {np.median(seconds):5.2f} s"
        if label in peaks:
            peak, frame = peaks[label]
            line += f"   peak {peak / 2**20:6.1f} MiB   {len(frame):,} rows x {frame.shape[1]} cols"
        print(line, flush=True)
    best_ratio = min(times[SLOW]) / min(times[FAST])
    median_ratio = np.median(times[SLOW]) / np.median(times[FAST])
    assert fast["id"].tolist() == slow["id"].tolist()
    np.testing.assert_array_equal(fast["class_ids"].to_numpy(), slow["class_ids"].to_numpy())
    print(f"predict_frame is {best_ratio:.1f}x faster (best of {args.repeat} each; {median_ratio:.1f}x by medians) "
          f"and peaks at {fast_peak / slow_peak:.2f}x the memory (target: >= 5x faster)")


if __name__ == "__main__":
    main()
