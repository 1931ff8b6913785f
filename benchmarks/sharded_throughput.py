"""Examples/s of the same MLP on 8 simulated TPU shards vs one device, in one process.

Model 784-256-10 (tf_keras, Adam 1e-3), global batch 128 (16 per shard on 8
shards), iterations_per_loop=100, synthetic data. Steady-state rate from the
engine's LoopFinished events, excluding the first loop (graph build and
warm-up). Simulated shards are for debugging TPU semantics on a laptop, not
for speed: on a 2-core machine they are expected to be slower than one
device; the number shows what the simulation costs.

    python benchmarks/sharded_throughput.py [--steps 1500] [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tf_keras

import tpu_nb

BATCH = 128
X = np.random.RandomState(0).randn(4096, 784).astype(np.float32)
Y = np.random.RandomState(1).randint(0, 10, 4096).astype(np.int32)


def model_fn(features, labels, mode, params):
    hidden = tf_keras.layers.Dense(256, activation="relu")(features)
    logits = tf_keras.layers.Dense(10)(hidden)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    optimizer = tpu_nb.CrossShardOptimizer(tf.compat.v1.train.AdamOptimizer(1e-3))
    train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def input_fn(params):
    return tf.data.Dataset.from_tensor_slices((X, Y)).repeat().batch(params["batch_size"], drop_remainder=True)


def measure(cluster, steps):
    config = tpu_nb.RunConfig(model_dir=tempfile.mkdtemp(), cluster=cluster, save_checkpoints_steps=10**9,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=100))
    est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=cluster is not None, train_batch_size=BATCH)
    loops = []
    with tpu_nb.events.subscribed(lambda e: isinstance(e, tpu_nb.events.LoopFinished) and loops.append(e)):
        est.train(input_fn, steps=steps)
    steady = loops[1:]
    return sum(e.steps for e in steady) * BATCH / sum(e.seconds for e in steady)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    one, eight = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        one.append(measure(None, args.steps))
        eight.append(measure(tpu_nb.SimulatedTPU(8), args.steps))
    a, b = statistics.median(one), statistics.median(eight)
    print(f"one device            {a:10.0f} examples/s")
    print(f"8 simulated shards    {b:10.0f} examples/s")
    print(f"ratio (8 shards / one device): {b / a:.2f}x  (median of {args.repeats}, {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
