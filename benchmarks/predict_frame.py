"""1,000,000 predictions into a DataFrame: predict_frame vs pd.DataFrame(list(estimator.predict(...))).

Both paths run the same estimator and checkpoint in one process, one after the other, and each
is timed from the predict call to the finished DataFrame (best of --repeat runs, nothing else
running in the process). Peak memory is measured in a separate run of each path with tracemalloc
(Python objects and numpy buffers; TensorFlow's own tensors are the same for both paths), since
tracing or sampling while timing slows the paths unequally. The input is generated in the
graph (Dataset.range + a batched map), so neither path holds it in Python memory.

    python benchmarks/predict_frame.py              # 1,000,000 rows
    python benchmarks/predict_frame.py --rows 200000 --batch 8192

Measured on the 2-core dev machine (TF 2.21 CPU, batch 4096): predict_frame 0.36-0.39 s and
31 MiB peak; the dict-per-row path 1.9-2.0 s and 415 MiB: 4.8x-5.7x faster over four quiet runs,
2.8x-4.1x while other processes loaded the machine. predict_frame's own conversion takes about
0.01 s; the rest is the engine's predict (graph, session, 245 session runs), which both paths pay,
so the ratio is bounded by it.
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
from tpu_nb.frames import predict_frame  # noqa: E402

FEATURES, CLASSES = 16, 4


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


def make_input_fn(rows):
    def input_fn(params):
        def examples(ids):  # a whole batch at once: a per-example map would time tf.data, not the frame
            x = tf.sin(tf.cast(ids, tf.float32)[:, None] * tf.range(1, FEATURES + 1, dtype=tf.float32))
            return {"x": x, "id": ids}

        return tf.data.Dataset.range(rows).batch(params["batch_size"]).map(examples).prefetch(2)

    return input_fn


def train_input_fn(params):
    x = np.random.RandomState(0).randn(256, FEATURES).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices(({"x": x, "id": np.arange(256, dtype=np.int64)}, y)) \
        .repeat().batch(params["batch_size"], drop_remainder=True)


def _timed(fn):
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(label, fn, repeat):
    seconds = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        frame = fn()
        seconds.append(time.perf_counter() - start)
        if len(seconds) < repeat:
            del frame
    del frame
    gc.collect()
    tracemalloc.start()
    frame = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = min(seconds)
    print(f"{label:<44} {best:7.2f} s (best of {repeat})   peak {peak / 2**20:7.1f} MiB   "
          f"{len(frame):,} rows x {frame.shape[1]} cols", flush=True)
    return frame, best, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096, help="predict_batch_size")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra/inter-op threads for both paths (0: TensorFlow's default)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per path (the best counts)")
    args = parser.parse_args()

    model_dir = tempfile.mkdtemp(prefix="tpu_nb_bench_frame_")
    session_config = None
    if args.threads:
        session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.threads,
                                                  inter_op_parallelism_threads=args.threads)
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=model_dir, session_config=session_config), use_tpu=False,
                              train_batch_size=32, predict_batch_size=args.batch)
    est.train(train_input_fn, steps=1)
    input_fn = make_input_fn(args.rows)
    print(f"{args.rows:,} predictions (id, class_ids, probabilities[{CLASSES}]), predict_batch_size={args.batch}, "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")

    # Warm-up (graph building, thread pools) so neither path pays for being first.
    predict_frame(est, make_input_fn(args.batch * 2))

    fast, fast_s, fast_peak = measure("predict_frame", lambda: predict_frame(est, input_fn), args.repeat)
    slow, slow_s, slow_peak = measure("pd.DataFrame(list(estimator.predict(...)))",
                                      lambda: pd.DataFrame(list(est.predict(input_fn))), args.repeat)
    engine_s = min(_timed(lambda: list(est.predict(input_fn, yield_single_examples=False)))
                   for _ in range(args.repeat))
    # For reading the numbers: what predict costs with no conversion at all (both paths pay it).
    print(f"{'engine alone (batches, no DataFrame)':<44} {engine_s:7.2f} s (best of {args.repeat})")
    assert fast["id"].tolist() == slow["id"].tolist()
    np.testing.assert_array_equal(fast["class_ids"].to_numpy(), slow["class_ids"].to_numpy())
    print(f"predict_frame is {slow_s / fast_s:.1f}x faster and peaks at {fast_peak / slow_peak:.2f}x the memory "
          f"(target: >= 5x faster)")


if __name__ == "__main__":
    main()
