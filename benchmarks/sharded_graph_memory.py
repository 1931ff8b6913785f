"""Memory of building and starting a conv net on 1, 2, 4, 8 simulated shards, one subprocess each.

Building N replicas should cost about N times one replica's graph. For each shard count a fresh
process trains one step of a small EfficientNet-style conv net (stem conv, ``--blocks`` inverted-
residual blocks of depthwise conv + BatchNorm + 1x1 convs, global pool, dense; tf_keras layers,
TF's CrossShardOptimizer over Momentum) and prints peak resident memory (VmHWM) at each phase:

* ``built``: the graph is built (first hook ``begin()``), before any session;
* ``session``: the session is created and variables/input initialized;
* ``step``: after the first training loop (grappler and kernel creation for the N-replica loop);

plus the graph's serialized size (GraphDef with its function library) and the growth of each
phase over the 1-shard run, divided by N-1 (what one extra replica costs).

    python benchmarks/sharded_graph_memory.py [--shards 1 2 4 8] [--blocks 12] [--size 64]
    python benchmarks/sharded_graph_memory.py --model efficientnet_b0 --shards 1 2 4 --size 96 --compare

``--model efficientnet_b0`` trains tf_keras.applications' EfficientNet-B0 (5.3M weights, RMSProp,
updates under ``control_dependencies``) instead; ``--compare`` also measures, in the same run, the
reference with repeated control inputs not shared (what tpu_nb did before, see tpu_nb/graph/control_edges.py).

On the loaded 2-core CI machine (2026-12-02), EfficientNet-B0 at 96x96:

    shards  graph MB (ref)   peak MB after the first step (ref)
         1     6.4 (13.5)      1329 (1470)
         2    14.0 (38.4)      1830 (2287)
         4    28.5 (79.3)      2814 (3724)

Each extra replica costs 495-501 MB (reference 751-817 MB) and 7.4-7.6 MB of graph (reference
21.9-24.9 MB; the 1-shard graph is 6.4 MB), so N replicas cost about N times one. Of that, the
session's copies of the graph (placement, grappler) are about 30x the serialized graph, the Python
graph about 25x; tpu_nb/run/memory_guard.py refuses before the session when it cannot fit.

Earlier, the small conv net (6 blocks, 32x32): each extra replica cost 20 MB built, 53 MB with the
session, 64-70 MB after the first step, linear in shards (graph 0.8 MB per replica).
"""

import argparse
import json
import os
import subprocess
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _child(shards, blocks, size, model):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, _REPO_ROOT)
    import tempfile
    import time

    import tensorflow as tf
    import tf_keras

    import tpu_nb

    marks = {"imported": _status_kb("VmHWM")}
    layers = tf_keras.layers

    def effnet_model_fn(features, labels, mode, params):
        # The model the issue measured: the whole EfficientNet-B0 from tf_keras.applications (5.3M weights).
        net = tf_keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3), classes=10)
        logits = net(features, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.RMSPropOptimizer(0.01, momentum=0.9))
        with tf.control_dependencies(net.get_updates_for(features) + net.get_updates_for(None)):
            train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step(),
                                          var_list=net.trainable_variables)
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    def model_fn(features, labels, mode, params):
        if model == "efficientnet_b0":
            return effnet_model_fn(features, labels, mode, params)
        x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(features)
        x = tf.nn.relu6(layers.BatchNormalization()(x, training=True))
        channels = 32
        for i in range(blocks):
            out = 16 * (2 + i // 3)
            h = layers.Conv2D(channels * 4, 1, use_bias=False)(x)
            h = tf.nn.relu6(layers.BatchNormalization()(h, training=True))
            h = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
            h = tf.nn.relu6(layers.BatchNormalization()(h, training=True))
            h = layers.Conv2D(out, 1, use_bias=False)(h)
            h = layers.BatchNormalization()(h, training=True)
            x = x + h if out == channels else h
            channels = out
        x = tf.reduce_mean(x, axis=[1, 2])
        logits = layers.Dense(10)(x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.MomentumOptimizer(0.01, 0.9))
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    def input_fn(params):
        batch = params["batch_size"]
        images = tf.random.stateless_uniform([64, size, size, 3], seed=(1, 2))
        labels = tf.random.stateless_uniform([64], seed=(3, 4), maxval=10, dtype=tf.int32)
        return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch, drop_remainder=True)

    class Phases(tf.compat.v1.train.SessionRunHook):
        def begin(self):
            marks["built"] = _status_kb("VmHWM")
            marks["built_s"] = time.perf_counter() - t0
            graph = tf.compat.v1.get_default_graph()
            marks["graph_mb"] = graph.as_graph_def().ByteSize() / 1e6
            marks["ops"] = len(graph.get_operations())

        def after_create_session(self, session, coord):
            marks["session"] = _status_kb("VmHWM")

        def after_run(self, run_context, run_values):
            marks.setdefault("step", _status_kb("VmHWM"))
            marks.setdefault("step_s", time.perf_counter() - t0)

    config = tpu_nb.RunConfig(model_dir=tempfile.mkdtemp(), cluster=tpu_nb.SimulatedTPU(num_cores=shards),
                              save_checkpoints_steps=10**9, checkpoint_save_graph_def=False,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=1))
    est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=True, train_batch_size=2 * shards)
    t0 = time.perf_counter()
    est.train(input_fn, steps=1, hooks=[Phases()])
    marks["end"] = _status_kb("VmHWM")
    print(json.dumps(marks))


def _measure(shards, args, unshared):
    command = [sys.executable, __file__, "--child", str(shards), "--blocks", str(args.blocks), "--size", str(args.size),
               "--model", args.model] + (["--unshared"] if unshared else [])
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        print(f"{shards} shards FAILED (exit {out.returncode}):\n{out.stderr[-3000:]}")
        return None
    return json.loads(lines[-1])


def _report(rows, label):
    print(f"\n{label}")
    print(f"{'shards':>6} {'ops':>7} {'graph MB':>9} {'imported':>9} {'built':>7} {'session':>8} {'step':>7} "
          f"{'built s':>8} {'step s':>7}")
    for shards, m in rows.items():
        print(f"{shards:>6} {m['ops']:>7} {m['graph_mb']:>9.1f} {m['imported'] / 1024:>9.0f} {m['built'] / 1024:>7.0f} "
              f"{m['session'] / 1024:>8.0f} {m['step'] / 1024:>7.0f} {m['built_s']:>8.1f} {m['step_s']:>7.1f}")
    if 1 in rows:
        base = rows[1]
        print("per extra replica (growth over 1 shard / (N-1)), MB:")
        for shards, m in rows.items():
            if shards == 1:
                continue
            per = {k: (m[k] - base[k]) / 1024 / (shards - 1) for k in ("built", "session", "step")}
            print(f"{shards:>6}: built {per['built']:.0f}, session {per['session']:.0f}, step {per['step']:.0f}, "
                  f"graph {(m['graph_mb'] - base['graph_mb']) / (shards - 1):.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--model", choices=["convnet", "efficientnet_b0"], default="convnet")
    parser.add_argument("--compare", action="store_true",
                        help="also measure the reference: control inputs not shared (tpu_nb before 2026-12-02)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unshared", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.unshared:
            sys.path.insert(0, _REPO_ROOT)
            import tpu_nb.run.training

            tpu_nb.run.training.share_control_inputs = lambda graph: 0
        _child(args.child, args.blocks, args.size, args.model)
        return
    what = "EfficientNet-B0" if args.model == "efficientnet_b0" else f"conv net, {args.blocks} blocks"
    print(f"{what}, {args.size}x{args.size} images, 2 per shard; peak RSS in MB")
    for unshared in ([False, True] if args.compare else [False]):
        rows = {}
        for shards in args.shards:
            row = _measure(shards, args, unshared)
            if row is not None:
                rows[shards] = row
        _report(rows, "reference: control inputs not shared" if unshared else "tpu_nb")


if __name__ == "__main__":
    main()
