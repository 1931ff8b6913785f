"""What 8 simulated shards cost against one device, for published conv nets, and where the time goes.

Runs tensorflow/tpu's ResNet-18 and EfficientNet-B0 networks (their own builders, from a checkout of
https://github.com/tensorflow/tpu given by --models-dir, never copied here) in a TPUEstimator model_fn
written the way their published ``model_fn``s are (BatchNorm updates under UPDATE_OPS, L2 weight decay
over ``tf.trainable_variables()``, TensorFlow's CrossShardOptimizer when use_tpu, momentum SGD) on
synthetic images, once on one device and once on 8 simulated shards at the same global batch, in one
process. For each it prints the CPU seconds of the whole ``train()`` call (all threads; steadier than
wall time on a shared machine) and of its phases:

* ``model_fn``: the calls of model_fn (8 on shards: one per replica), their own thread's CPU time;
* ``build``: building the graph, model_fn included (up to the session hooks' ``begin``);
* ``session+1st``: creating the session, initialising variables, the first checkpoint (which writes the
  graph as text and in binary), and the first device loop, in whose first run TensorFlow
  optimises (Grappler), partitions and places the graph;
* ``steps``: every later loop, and per step.

A last line gives a reference for a step: one device's step at the per-shard batch, times the number of
shards, which is what the shards' arithmetic costs done one shard after another. Simulated shards compute
each shard's batch apart, as the cores of a TPU do, so a step costs about this much whatever the engine
does around it. The rest of the gap is what grows with the graph: each shard traces model_fn and holds its
own copy of the model.

    python benchmarks/shard_cost.py --models-dir ~/src/tpu/models [--nets resnet18,efficientnet-b0]
        [--image 64] [--batch 32] [--steps 30] [--iterations 10]
"""

import argparse
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the published networks use tf.compat.v1.layers

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tpu_nb  # noqa: E402

CLASSES = 10


def resnet18(models_dir):
    sys.path.insert(0, os.path.join(models_dir, "official", "resnet"))
    import resnet_model

    def network(images, training):
        return resnet_model.resnet(resnet_depth=18, num_classes=CLASSES, data_format="channels_last")(
            inputs=images, is_training=training)

    return network


def efficientnet_b0(models_dir):
    sys.path.insert(0, os.path.join(models_dir, "official", "efficientnet"))
    import efficientnet_builder

    def network(images, training):
        logits, _ = efficientnet_builder.build_model(images, "efficientnet-b0", training,
                                                     override_params={"num_classes": CLASSES})
        return logits

    return network


NETS = {"resnet18": resnet18, "efficientnet-b0": efficientnet_b0}


class Clock:
    """CPU seconds of this process at the train() phases, and of the model_fn calls."""

    def __init__(self):
        self.marks = {}
        self.model_fn = 0.0
        self._lock = threading.Lock()

    def mark(self, name):
        self.marks.setdefault(name, time.process_time())

    def timed_model_fn(self, model_fn):
        def wrapped(features, labels, mode, params):
            start = time.thread_time()
            try:
                return model_fn(features, labels, mode, params)
            finally:
                with self._lock:
                    self.model_fn += time.thread_time() - start

        return wrapped


class _PhaseHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self, clock):
        self.clock = clock

    def begin(self):
        self.clock.mark("built")



def make_model_fn(network):
    def model_fn(features, labels, mode, params):
        training = mode == tpu_nb.ModeKeys.TRAIN
        logits = network(features, training)
        loss = tf.compat.v1.losses.softmax_cross_entropy(tf.one_hot(labels, CLASSES), logits)
        loss += 1e-4 * tf.add_n([tf.nn.l2_loss(v) for v in tf.compat.v1.trainable_variables()
                                 if "batch_normalization" not in v.name])
        optimizer = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9)
        if params["use_tpu"]:
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
        with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
            train_op = optimizer.minimize(loss, tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


def input_fn_for(image):
    def input_fn(params):
        rng = np.random.RandomState(0)
        x = rng.rand(64, image, image, 3).astype(np.float32)
        y = rng.randint(0, CLASSES, 64).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)

    return input_fn


def measure(network, shards, args):
    clock = Clock()
    config = dict(model_dir=tempfile.mkdtemp(prefix="shard-cost-"), save_checkpoints_steps=10**9,
                  tpu_config=tpu_nb.TPUConfig(iterations_per_loop=args.iterations))
    if shards:
        config["cluster"] = tpu_nb.SimulatedTPU(num_cores=shards, num_hosts=1)
    est = tpu_nb.TPUEstimator(clock.timed_model_fn(make_model_fn(network)), config=tpu_nb.RunConfig(**config),
                              use_tpu=bool(shards), train_batch_size=args.batch)
    loops = []

    def on_event(event):
        if isinstance(event, tpu_nb.events.LoopFinished):
            loops.append((time.process_time(), event.steps))

    clock.mark("start")
    with tpu_nb.events.subscribed(on_event):
        est.train(input_fn_for(args.image), steps=args.steps, hooks=[_PhaseHook(clock)])
    clock.mark("end")
    m = clock.marks
    first_loop_end = loops[0][0]
    later_steps = sum(steps for _, steps in loops[1:])
    return {
        "train()": m["end"] - m["start"],
        "model_fn": clock.model_fn,
        "build": m["built"] - m["start"],
        "session+1st": first_loop_end - m["built"],
        "steps": m["end"] - first_loop_end,
        "per step": (m["end"] - first_loop_end) / max(later_steps, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", required=True,
                        help="the models/ folder of a tensorflow/tpu checkout (holding official/resnet, ...)")
    parser.add_argument("--nets", default="resnet18,efficientnet-b0")
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="global batch (4 per shard on 8 shards)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10, help="iterations_per_loop")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.models_dir, "official")):
        parser.error(f"--models-dir {args.models_dir!r} has no official/ folder: pass the models/ folder of a "
                     "tensorflow/tpu checkout (git clone https://github.com/tensorflow/tpu).")
    if args.batch % args.shards:
        parser.error(f"--batch {args.batch} is not a multiple of --shards {args.shards}: each shard takes an "
                     "equal part of the global batch.")
    print(f"TensorFlow {tf.__version__}; image {args.image}, global batch {args.batch}, {args.steps} steps, "
          f"iterations_per_loop {args.iterations}; CPU seconds of this process")
    for name in args.nets.split(","):
        network = NETS[name](args.models_dir)
        one = measure(network, 0, args)
        many = measure(network, args.shards, args)
        per_shard = argparse.Namespace(**{**vars(args), "batch": args.batch // args.shards})
        reference = measure(network, 0, per_shard)["per step"] * args.shards
        print(f"\n{name:16s} {'one device':>11s} {f'{args.shards} shards':>10s} {'ratio':>6s}")
        for phase in one:
            ratio = many[phase] / one[phase] if one[phase] > 0 else float("nan")
            print(f"  {phase:14s} {one[phase]:11.2f} {many[phase]:10.2f} {ratio:6.1f}x")
        print(f"  reference step: one device at the per-shard batch {per_shard.batch}, x{args.shards}: "
              f"{reference:.2f} s ({reference / one['per step']:.1f}x one device's step)")


if __name__ == "__main__":
    main()
