"""Variables that common training code creates inside model_fn, on simulated shards.

ExponentialMovingAverage shadow variables (created under tf.init_scope), optimizer slots, BatchNorm
moving statistics, a tf_keras functional Model, and EMA weights restored for evaluation through
scaffold_fn: each must build, train and checkpoint on 8 shards as on one device.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb

BATCH = 32


def _data(n):
    rng = np.random.RandomState(0)
    x = rng.randn(n, 6, 6, 1).astype(np.float32)
    return x, (x[:, 0, 0, 0] + x[:, 1, 1, 0] > 0).astype(np.int32)


def _train_input_fn(params):
    x, y = _data(256)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def _eval_input_fn(params):
    # Whole batches: on shards the reported loss is weighted by real rows, on one device it is the mean of
    # batch means; with no short batch the two agree.
    x, y = _data(96)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])


def _net(features, training, batch_norm):
    init = lambda seed: tf_keras.initializers.GlorotUniform(seed=seed)  # noqa: E731 - the same weights everywhere
    h = tf_keras.layers.Conv2D(4, 3, name="conv", kernel_initializer=init(1))(features)
    if batch_norm:
        bn = tf_keras.layers.BatchNormalization(name="bn")
        h = bn(h, training=training)
        for update in bn.updates:
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
    h = tf_keras.layers.Flatten()(h)
    return tf_keras.layers.Dense(2, name="dense", kernel_initializer=init(2))(h)


def _ema_model_fn(batch_norm=False, restore_ema_for_eval=True):
    def model_fn(features, labels, mode, params):
        logits = _net(features, mode == tpu_nb.ModeKeys.TRAIN, batch_norm)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        ema = tf.compat.v1.train.ExponentialMovingAverage(0.5)
        if mode == tpu_nb.ModeKeys.TRAIN:
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.MomentumOptimizer(0.1, 0.9))
            with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
                train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
            with tf.control_dependencies([train_op]):
                train_op = ema.apply(tf.compat.v1.trainable_variables())
            return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

        def scaffold_fn():
            return tf.compat.v1.train.Scaffold(saver=tf.compat.v1.train.Saver(ema.variables_to_restore()))

        metric_fn = lambda labels, logits: {  # noqa: E731
            "accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]),
                                       scaffold_fn=scaffold_fn if restore_ema_for_eval else None)

    return model_fn


def _estimator(tmp_path, name, shards, model_fn):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / name), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=3))
    return tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=bool(shards), train_batch_size=BATCH,
                               eval_batch_size=BATCH)


def _variables(est):
    return {name: est.get_variable_value(name) for name in est.get_variable_names()}


def test_ema_and_momentum_slots_on_eight_shards_match_one_device(tmp_path):
    one = _estimator(tmp_path, "one", None, _ema_model_fn())
    eight = _estimator(tmp_path, "eight", 8, _ema_model_fn())
    one.train(_train_input_fn, steps=7)
    eight.train(_train_input_fn, steps=7)
    a, b = _variables(one), _variables(eight)
    assert set(a) == set(b)
    assert "dense/kernel/ExponentialMovingAverage" in a and "dense/kernel/Momentum" in a
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_ema_weights_restored_through_scaffold_fn_are_what_evaluation_uses(tmp_path):
    with_ema = _estimator(tmp_path, "m", 8, _ema_model_fn(restore_ema_for_eval=True))
    with_ema.train(_train_input_fn, steps=6)
    restored = with_ema.evaluate(_eval_input_fn)
    raw = _estimator(tmp_path, "m", 8, _ema_model_fn(restore_ema_for_eval=False)).evaluate(_eval_input_fn)
    one = _estimator(tmp_path, "m", None, _ema_model_fn(restore_ema_for_eval=True)).evaluate(_eval_input_fn)
    assert restored["loss"] != pytest.approx(raw["loss"], rel=1e-6)  # the shadow weights, not the raw ones
    assert restored["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert restored["accuracy"] == pytest.approx(one["accuracy"], abs=1e-6)


def test_batch_norm_moving_statistics_train_and_are_checkpointed_on_shards(tmp_path):
    # Per-shard batch statistics (as on a TPU without cross-replica BatchNorm): not the one-device numbers,
    # but the moving statistics must update and evaluation must use them.
    est = _estimator(tmp_path, "bn", 8, _ema_model_fn(batch_norm=True, restore_ema_for_eval=False))
    est.train(_train_input_fn, steps=6)
    mean, variance = est.get_variable_value("bn/moving_mean"), est.get_variable_value("bn/moving_variance")
    assert np.abs(mean).max() > 1e-4 and np.abs(variance - 1.0).max() > 1e-4
    assert 0.0 <= est.evaluate(_eval_input_fn)["accuracy"] <= 1.0


def test_tf_keras_functional_model_called_in_model_fn_on_shards(tmp_path):
    def model_fn(features, labels, mode, params):
        inputs = tf_keras.Input(shape=(6, 6, 1))
        hidden = tf_keras.layers.Flatten()(tf_keras.layers.Conv2D(
            4, 3, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(inputs))
        outputs = tf_keras.layers.Dense(2, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=2))(hidden)
        model = tf_keras.Model(inputs, outputs, name="net")
        logits = model(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.AdamOptimizer(0.01))
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step(),
                                      var_list=model.trainable_variables)
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    one = _estimator(tmp_path, "one", None, model_fn)
    eight = _estimator(tmp_path, "eight", 8, model_fn)
    one.train(_train_input_fn, steps=4)
    eight.train(_train_input_fn, steps=4)
    a, b = _variables(one), _variables(eight)
    assert set(a) == set(b) and any("Adam" in name for name in a)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=1e-5, err_msg=name)


def _host_call_counting_model_fn(seen):
    """A model_fn whose host_call appends the number of rows of each step it runs for to ``seen``."""

    def model_fn(features, labels, mode, params):
        logits = _net(features, False, False)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
        rows = tf.reshape(tf.cast(tf.shape(labels)[0], tf.int64), [1])
        host_fn = lambda n: [tf.compat.v1.py_func(lambda v: seen.append(int(v.sum())) or 0, [n], tf.int64)]  # noqa
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=(host_fn, [rows]))

    return model_fn


def test_host_call_runs_on_every_evaluation_step_on_shards_and_one_device(tmp_path):
    for shards in (None, 4):
        seen = []
        est = _estimator(tmp_path, f"host_call_{shards}", shards, _host_call_counting_model_fn(seen))
        est.train(_train_input_fn, steps=3)
        del seen[:]
        est.evaluate(_eval_input_fn, steps=3)
        assert seen == [BATCH, BATCH, BATCH], shards


def test_scaffold_from_scaffold_fn_is_the_one_finalized_and_its_ready_op_honoured(tmp_path):
    scaffolds = []

    def model_fn(features, labels, mode, params):
        spec = _ema_model_fn(restore_ema_for_eval=False)(features, labels, mode, params)

        def scaffold_fn():
            scaffolds.append(tf.compat.v1.train.Scaffold())
            return scaffolds[-1]

        return dataclasses.replace(spec, scaffold_fn=scaffold_fn)

    est = _estimator(tmp_path, "s", 4, model_fn)
    est.train(_train_input_fn, steps=2)
    assert scaffolds and scaffolds[-1].ready_op is not None and scaffolds[-1].saver is not None


@pytest.mark.parametrize("shards", [None, 4])
def test_an_uninitialised_variable_is_named_and_each_is_checked_once(tmp_path, shards):
    # A scaffold whose init_op skips a variable: the session's ready check refuses to train and names the
    # variable as model_fn called it, on shards as on one device. There it checks each mirrored variable
    # once, not once per shard.
    def model_fn(features, labels, mode, params):
        spec = _ema_model_fn(restore_ema_for_eval=False)(features, labels, mode, params)
        skip = [v for v in tf.compat.v1.global_variables() if v.op.name != "dense/kernel"]
        return dataclasses.replace(spec, scaffold_fn=lambda: tf.compat.v1.train.Scaffold(
            init_op=tf.compat.v1.variables_initializer(skip)))

    est = _estimator(tmp_path, "u", shards, model_fn)
    with pytest.raises(RuntimeError, match="dense/kernel") as raised:
        est.train(_train_input_fn, steps=1)
    assert "replica_" not in str(raised.value)


def test_ready_checks_on_shards_check_each_mirrored_variable_once():
    from tpu_nb.backends.sharded import make_mirrored_strategy, sharded_scope
    from tpu_nb.graph.walk import upstream_ops
    from tpu_nb.run.scaffolds import compact_ready_ops

    graph = tf.Graph()
    with graph.as_default():
        strategy = make_mirrored_strategy([f"/device:CPU:{i}" for i in range(4)])
        with sharded_scope(strategy):
            for name in ("a", "b", "c"):
                tf.compat.v1.get_variable(name, [2], initializer=tf.compat.v1.zeros_initializer())
        ready, ready_for_local_init = compact_ready_ops()
        init = tf.compat.v1.global_variables_initializer()
    for check in (ready, ready_for_local_init):
        checked = [op for op in upstream_ops(check) if op.type == "VarIsInitializedOp"]
        assert len(checked) == 3  # the defaults check all 12 copies
    config = tf.compat.v1.ConfigProto(device_count={"CPU": 4})
    with tf.compat.v1.Session(graph=graph, config=config) as sess:
        assert sorted(sess.run(ready).tolist()) == [b"a", b"b", b"c"]
        sess.run(init)
        assert sess.run(ready).tolist() == [] and sess.run(ready_for_local_init).tolist() == []


_KERAS_OP_LAYER_PROGRAM = """
import os, sys, tempfile
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_v2_behavior()
import tf_keras
import tpu_nb

def input_fn(params):
    x, y = np.zeros((64, 4), np.float32), np.zeros((64, 1), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)

def model_fn(features, labels, mode, params):
    # A TF op applied to Keras inputs inside a functional Model, called on constants.
    i1, i2 = tf_keras.Input(10), tf_keras.Input(10)
    model = tf_keras.Model([i1, i2], tf_keras.layers.Dense(1)(tf.concat([i1, i2], axis=1)))
    loss = tf.reduce_mean(model([tf.ones((5, 10)), tf.ones((5, 10))]))
    optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.5))
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                   train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))

shards = int(sys.argv[1])
config = tpu_nb.RunConfig(model_dir=tempfile.mkdtemp(), tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2),
                          cluster=tpu_nb.SimulatedTPU(num_cores=shards) if shards else None)
est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=bool(shards), train_batch_size=8)
est.train(input_fn, steps=4)
print("step", est.get_variable_value("global_step"))
"""


@pytest.mark.parametrize("shards", [0, 2])
def test_tf1_keras_op_layer_on_constants_does_not_deadlock(shards):
    # Under TF1 tf_keras evaluated such constants with a Session while control flow v1 held the graph's
    # lock for building the device loop: train() waited forever. Run apart, with a time limit, so a
    # regression fails instead of hanging the suite.
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _KERAS_OP_LAYER_PROGRAM, str(shards)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 4" in done.stdout


class _LoadAfterFirstLoop(tf.compat.v1.train.SessionRunHook):
    """As hooks written for the original do: ``variable.load(value, session)`` between device loops."""

    def begin(self):
        with tf.compat.v1.variable_scope("", reuse=True):
            self.bias = tf.compat.v1.get_variable("bias")
        self.loaded = False

    def after_run(self, run_context, run_values):
        if not self.loaded:
            self.bias.load([100.0], session=run_context.session)
            self.loaded = True


@pytest.mark.parametrize("shards", [0, 2])
def test_a_hook_loading_a_variable_changes_it_on_every_replica(tmp_path, shards):
    def model_fn(features, labels, mode, params):
        bias = tf.compat.v1.get_variable("bias", [1], initializer=tf.compat.v1.zeros_initializer())
        prediction = tf.reduce_sum(features, axis=[1, 2, 3]) * 0.0 + bias
        loss = tf.reduce_mean(tf.square(prediction))  # labels ignored: loss is bias**2 on every replica
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.0)
        if shards:
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                       train_op=optimizer.minimize(loss, tf.compat.v1.train.get_global_step()))

    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(
        model_dir=str(tmp_path), cluster=cluster, tpu_config=tpu_nb.TPUConfig(iterations_per_loop=1)),
        use_tpu=bool(shards), train_batch_size=BATCH)
    losses = []
    with tpu_nb.events.subscribed(lambda e: losses.append(e.loss) if isinstance(e, tpu_nb.events.LoopFinished) else None):
        est.train(_train_input_fn, steps=2, hooks=[_LoadAfterFirstLoop()])
    # Had one replica kept bias 0, the mean loss over replicas would be 5000.
    assert losses == pytest.approx([0.0, 10000.0])
    assert est.get_variable_value("bias") == pytest.approx([100.0])
