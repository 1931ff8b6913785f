"""1,000,000 predictions into a DataFrame: predict_frame vs pd.DataFrame(list(estimator.predict(...))).

Both paths run the same estimator and checkpoint in one process, one after the other, and each
is timed from the predict call to the finished DataFrame. Peak memory is the process's resident
set size above its level at the start of that path, sampled every 5 ms by a thread (tracemalloc
would slow the dict-per-row path several-fold and skew the timing). The input is generated in the
graph (Dataset.range + a batched map), so neither path holds it in Python memory.

    python benchmarks/predict_frame.py              # 1,000,000 rows
    python benchmarks/predict_frame.py --rows 200000 --batch 8192
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time

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


def _rss_bytes():
    with open("/proc/self/statm") as f:  # Linux: resident pages are the second field
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Highest resident set size seen while active, sampled by a daemon thread."""

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def measure(label, fn):
    gc.collect()
    with _PeakRSS() as rss:
        start = time.perf_counter()
        frame = fn()
        seconds = time.perf_counter() - start
    peak = rss.peak - rss.base
    print(f"{label:<44} {seconds:8.2f} s   peak +{peak / 2**20:7.1f} MiB RSS   {len(frame):,} rows x {frame.shape[1]} cols",
          flush=True)
    return frame, seconds, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096, help="predict_batch_size")
    args = parser.parse_args()

    model_dir = tempfile.mkdtemp(prefix="tpu_nb_bench_frame_")
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(model_dir=model_dir), use_tpu=False,
                              train_batch_size=32, predict_batch_size=args.batch)
    est.train(train_input_fn, steps=1)
    input_fn = make_input_fn(args.rows)
    print(f"{args.rows:,} predictions (id, class_ids, probabilities[{CLASSES}]), predict_batch_size={args.batch}, "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")

    # Warm-up (graph building, thread pools) so neither path pays for being first.
    predict_frame(est, make_input_fn(args.batch * 2))

    fast, fast_s, fast_peak = measure("predict_frame", lambda: predict_frame(est, input_fn))
    slow, slow_s, slow_peak = measure("pd.DataFrame(list(estimator.predict(...)))",
                                      lambda: pd.DataFrame(list(est.predict(input_fn))))
    assert fast["id"].tolist() == slow["id"].tolist()
    np.testing.assert_array_equal(fast["class_ids"].to_numpy(), slow["class_ids"].to_numpy())
    print(f"predict_frame is {slow_s / fast_s:.1f}x faster and peaks at {fast_peak / slow_peak:.2f}x the memory "
          f"(target: >= 5x faster)")


if __name__ == "__main__":
    main()
