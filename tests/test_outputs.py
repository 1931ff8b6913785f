"""What lands on disk: TensorBoard scalars, every-n host calls, and the TPU export metagraph."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from model_zoo import FEATURES, estimator, make_data, model_fn, train_input_fn


def _scalars(directory):
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                else:
                    number = float(tf.make_ndarray(value.tensor))
                values.setdefault(value.tag, []).append((event.step, number))
    return values


def test_loss_and_steps_per_sec_written_for_tensorboard(tmp_path):
    estimator(tmp_path, iterations_per_loop=5, save_summary_steps=10).train(train_input_fn, steps=30)
    scalars = _scalars(str(tmp_path))
    assert [step for step, _ in scalars["loss"]] == [5, 15, 25, 30]
    assert all(np.isfinite(v) for _, v in scalars["loss"])
    assert scalars["global_step/sec"] and all(v > 0 for _, v in scalars["global_step/sec"])


def test_host_call_every_n_steps_writes_v2_summaries(tmp_path):
    logdir = str(tmp_path / "host")

    def fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        step = tf.compat.v1.train.get_global_step()

        def host_fn(gs, loss):
            # One row per shard: every shard saw the same step.
            with tf.summary.create_file_writer(logdir).as_default():
                tf.summary.scalar("host_loss", tf.reduce_mean(loss), step=gs[0])
                return tf.compat.v1.summary.all_v2_summary_ops()

        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op,
                                       host_call=(host_fn, [tf.reshape(step, [1]), tf.reshape(spec.loss, [1])]))

    tpu_config = tpu_nb.TPUConfig(iterations_per_loop=4, experimental_host_call_every_n_steps=3)
    est = tpu_nb.TPUEstimator(fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path / "shards"), tpu_config=tpu_config,
                                                          cluster=tpu_nb.SimulatedTPU(num_cores=2)),
                              train_batch_size=16)
    est.train(train_input_fn, steps=12)
    steps = [step for step, _ in _scalars(logdir)["host_loss"]]
    # As the original's outfeed: iterations 0 and 3 of each loop of 4 (steps 1-4, 5-8, 9-12), so global
    # steps 1, 4, 5, 8, 9, 12. A global-step read inside model_fn has no fixed order against that step's
    # update in graph mode, so it shows the step's start or end value.
    assert len(steps) == 6
    assert all(s in (n - 1, n) for s, n in zip(steps, [1, 4, 5, 8, 9, 12]))


def test_host_call_runs_every_step_on_one_device_whatever_every_n_says(tmp_path):
    # The original applied experimental_host_call_every_n_steps to the TPU outfeed only.
    seen = []

    def fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        step = tf.compat.v1.train.get_global_step()
        host_fn = lambda gs: [tf.compat.v1.py_func(lambda v: seen.append(int(v)) or 0, [gs], tf.int64)]  # noqa: E731
        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op, host_call=(host_fn, [step]))

    config = dict(tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4, experimental_host_call_every_n_steps=3))
    est = tpu_nb.TPUEstimator(fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path), **config), use_tpu=False,
                              train_batch_size=16)
    est.train(train_input_fn, steps=8)
    assert len(seen) == 8


def test_export_tpu_metagraph_holds_tpu_rewrite_and_cpu_one_does_not(tmp_path):
    est = estimator(tmp_path)
    est.train(train_input_fn, steps=4)

    def serving_input_receiver_fn():
        x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
        return tpu_nb.TensorServingInputReceiver(x, {"x": x})

    path = est.export_saved_model(str(tmp_path / "export"), serving_input_receiver_fn).decode()
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops = {tuple(sorted(m.meta_info_def.tags)): {n.op for n in m.graph_def.node} for m in saved.meta_graphs}
    assert set(ops) == {("serve",), ("serve", "tpu")}
    assert "TPUReplicateMetadata" in ops[("serve", "tpu")]
    assert not any(op.startswith("TPU") for op in ops[("serve",)])

    # The serve metagraph also loads through the TF1 loader and serves predictions equal to predict().
    x, _ = make_data(100, seed=1)
    expected = np.array([p["class_ids"] for p in est.predict(lambda params: tf.data.Dataset.from_tensor_slices(x).batch(16))])
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        got = sess.run(sig.outputs["class_ids"].name, {sig.inputs["x"].name: x})
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shards", [None, 2])
def test_host_call_summaries_are_written_during_evaluation_too(tmp_path, shards):
    # The original ran host_call on every evaluation step; a host_call that opens its own tf.summary
    # writer needs it initialized and flushed in the evaluation session as well.
    logdir = str(tmp_path / "host_eval")

    def fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        step = tf.reshape(tf.compat.v1.train.get_global_step(), [1])

        def host_fn(gs, loss):
            suffix = ".train" if mode == tpu_nb.ModeKeys.TRAIN else ".eval"
            with tf.summary.create_file_writer(logdir, filename_suffix=suffix).as_default():
                tf.summary.scalar(f"host_loss_{mode}", tf.reduce_mean(loss), step=gs[0])
                return tf.compat.v1.summary.all_v2_summary_ops()

        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op,
                                       host_call=(host_fn, [step, tf.reshape(spec.loss, [1])]))

    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    est = tpu_nb.TPUEstimator(fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path / "m"), cluster=cluster),
                              use_tpu=bool(shards), train_batch_size=16, eval_batch_size=16)
    est.train(train_input_fn, steps=2)
    est.evaluate(train_input_fn, steps=3)
    assert len(_scalars(logdir)["host_loss_eval"]) == 3
