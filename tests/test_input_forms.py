"""What input_fn may return on shards, as the original TPUEstimator allowed it.

Tensors instead of a Dataset (``make_one_shot_iterator(ds).get_next()``), in every input mode, with
iterations_per_loop steps per session run; and, in PER_HOST_V2 / PER_SHARD_V1 / BROADCAST, features whose
axis 0 is not the batch (a transposed, flattened TPU layout). Each run on 8 shards is compared with the
same program on one device.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb

IPC = tpu_nb.InputPipelineConfig
BATCH = 64
FEATURES = 8


def _data(n=512):
    rng = np.random.RandomState(0)
    x = rng.randn(n, FEATURES).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _dataset(batch, layout="rows"):
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)
    if layout == "flat_transposed":  # [batch, F] -> [F, batch] -> [F * batch]: axis 0 is not the batch
        ds = ds.map(lambda a, b: (tf.reshape(tf.transpose(a), [-1]), b))
    return ds


def _input_fn(form, layout="rows"):
    def input_fn(params):
        ds = _dataset(params["batch_size"], layout)
        if form == "tensors":
            return tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        if form == "features_dict":
            features, labels = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
            return {"x": features, "y": labels}
        return ds

    return input_fn


def _model_fn(layout="rows", labels_in_features=False):
    def model_fn(features, labels, mode, params):
        if labels_in_features:
            features, labels = features["x"], features["y"]
        if layout == "flat_transposed":
            features = tf.transpose(tf.reshape(features, [FEATURES, params["batch_size"]]))
        logits = tf_keras.layers.Dense(2, name="dense", kernel_initializer="zeros")(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.5))
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        if mode == tpu_nb.ModeKeys.EVAL:
            metric_fn = lambda labels, logits: {  # noqa: E731
                "accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}
            return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


class _LoopEnds(tf.compat.v1.train.SessionRunHook):
    def begin(self):
        self.steps = []
        self._step = tf.compat.v1.train.get_global_step()

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._step)

    def after_run(self, run_context, run_values):
        self.steps.append(int(run_values.results))


def _estimator(tmp_path, name, shards, mode=IPC.PER_HOST_V1, model_fn=None, ipl=4):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / name), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl, per_host_input_for_training=mode))
    return tpu_nb.TPUEstimator(model_fn or _model_fn(), config=config, use_tpu=bool(shards),
                               train_batch_size=BATCH, eval_batch_size=BATCH, predict_batch_size=BATCH)


def _trained_kernel(est, input_fn, steps=10, hooks=None):
    est.train(input_fn, steps=steps, hooks=hooks)
    return est.get_variable_value("dense/kernel")


@pytest.mark.parametrize("mode", [IPC.PER_HOST_V1, IPC.PER_HOST_V2])
def test_tensors_from_input_fn_on_shards_train_as_on_one_device(tmp_path, mode):
    one = _trained_kernel(_estimator(tmp_path, "one", None), _input_fn("dataset"))
    hook = _LoopEnds()
    eight = _trained_kernel(_estimator(tmp_path, "eight", 8, mode), _input_fn("tensors"), hooks=[hook])
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-6)
    assert hook.steps == [4, 8, 10]  # iterations_per_loop steps per session run, not one


def test_features_dict_from_input_fn_without_labels_on_shards(tmp_path):
    model_fn = _model_fn(labels_in_features=True)
    one = _trained_kernel(_estimator(tmp_path, "one", None, model_fn=model_fn), _input_fn("features_dict"))
    eight = _trained_kernel(_estimator(tmp_path, "eight", 8, model_fn=model_fn), _input_fn("features_dict"))
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", [IPC.PER_SHARD_V1, IPC.BROADCAST])
def test_tensors_are_accepted_in_every_input_mode(tmp_path, mode):
    # Every shard reads the same stream in these modes here, so compare with one device at the shard batch.
    est = _estimator(tmp_path, "eight", 8, mode)
    kernel = _trained_kernel(est, _input_fn("tensors"), steps=6)
    assert np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 1e-3
    assert est.get_variable_value("global_step") == 6


def test_tensors_with_an_unknown_batch_dimension_are_refused_naming_the_fix(tmp_path):
    def input_fn(params):
        x, y = _data()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"])  # no drop_remainder
        return tf.compat.v1.data.make_one_shot_iterator(ds).get_next()

    with pytest.raises(ValueError, match=r"features.*must have static shape.*drop_remainder=True"):
        _estimator(tmp_path, "eight", 8).train(input_fn, steps=1)


def test_tensors_for_predict_on_shards_are_refused_as_the_original(tmp_path):
    est = _estimator(tmp_path, "eight", 8)
    est.train(_input_fn("dataset"), steps=1)
    with pytest.raises(TypeError, match="must return `Dataset`"):
        next(est.predict(lambda params: tf.compat.v1.data.make_one_shot_iterator(
            _dataset(params["batch_size"]).map(lambda x, y: x)).get_next()))


def test_evaluate_with_tensors_on_shards_needs_steps_and_then_matches_one_device(tmp_path):
    one = _estimator(tmp_path, "one", None)
    one.train(_input_fn("dataset"), steps=4)
    eight = _estimator(tmp_path, "eight", 8)
    eight.train(_input_fn("dataset"), steps=4)
    with pytest.raises(ValueError, match="pass evaluate\\(steps=N\\)"):
        eight.evaluate(_input_fn("tensors"))
    a = one.evaluate(_input_fn("dataset"), steps=3)
    b = eight.evaluate(_input_fn("tensors"), steps=3)
    assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-6)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


@pytest.mark.parametrize("mode", [IPC.PER_HOST_V2, IPC.PER_SHARD_V1])
def test_transposed_flattened_batches_are_accepted_where_each_element_goes_to_one_shard(tmp_path, mode):
    layout = "flat_transposed"
    est = _estimator(tmp_path, "eight", 8, mode, model_fn=_model_fn(layout))
    kernel = _trained_kernel(est, _input_fn("dataset", layout), steps=6)
    if mode == IPC.PER_HOST_V2:  # one host: consecutive shard batches make the one-device batch
        one = _trained_kernel(_estimator(tmp_path, "one", None), _input_fn("dataset"), steps=6)
        np.testing.assert_allclose(kernel, one, rtol=1e-4, atol=1e-6)
    else:
        assert np.abs(kernel).max() > 1e-3


def test_transposed_layout_in_per_host_v1_is_refused_naming_the_batch_axis(tmp_path):
    est = _estimator(tmp_path, "eight", 8, IPC.PER_HOST_V1, model_fn=_model_fn("flat_transposed"))
    with pytest.raises(ValueError, match="batch_axis|PER_HOST_V2"):
        est.train(_input_fn("dataset", "flat_transposed"), steps=1)


def test_evaluate_pads_only_an_input_that_really_ends_short(tmp_path):
    # A static odd layout is evaluated as it comes (no padding along axis 0); an input without
    # drop_remainder is padded at its end and the padded rows are masked out of the metric.
    layout = "flat_transposed"
    est = _estimator(tmp_path, "eight", 8, IPC.PER_HOST_V2, model_fn=_model_fn(layout))
    est.train(_input_fn("dataset", layout), steps=4)

    def static_eval(params):
        x, y = _data(256)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"], drop_remainder=True)
        return ds.map(lambda a, b: (tf.reshape(tf.transpose(a), [-1]), b))

    result = est.evaluate(static_eval)
    assert result["accuracy"] > 0.5

    plain = _estimator(tmp_path, "plain", 8, IPC.PER_HOST_V2)
    plain.train(_input_fn("dataset"), steps=4)
    one = _estimator(tmp_path, "plain", None)

    def short_eval(params):
        x, y = _data(100)  # 100 = 12 full batches of 8 per shard + a short one
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])

    assert plain.evaluate(short_eval)["accuracy"] == pytest.approx(one.evaluate(short_eval)["accuracy"], abs=1e-6)
