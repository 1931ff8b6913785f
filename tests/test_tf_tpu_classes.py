"""TensorFlow's own TPU classes in user code, as real TPUEstimator programs use them.

``tf.compat.v1.tpu.CrossShardOptimizer`` and ``tf.compat.v1.tpu.cross_replica_sum`` inside a model_fn must
give on N simulated shards what they give on a TPU: for the same global batch, the one-device update
(reduction MEAN) or N times it (SUM: the per-shard mean gradients are summed). These tests run under TF2
behaviour and, in CI's second pass, under ``tf.compat.v1.disable_v2_behavior()`` (TPU_NB_TEST_BEHAVIOR=tf1).
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from tensorflow.python.tpu import tpu_optimizer

BATCH = 64


def _input_fn(params):
    rng = np.random.RandomState(0)
    x = rng.randn(512, 8).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)


def _model_fn(wrap, reduction=None, lr=0.5):
    def model_fn(features, labels, mode, params):
        # Zero initial weights: the trained kernel is then the update itself.
        logits = tf_keras.layers.Dense(2, name="dense", kernel_initializer="zeros")(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(lr)
        kwargs = {} if reduction is None else {"reduction": reduction}
        if wrap == "tf":
            optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer, **kwargs)
        elif wrap == "tf_module":  # the spelling of programs that import it from tensorflow.python
            optimizer = tpu_optimizer.CrossShardOptimizer(optimizer, **kwargs)
        elif wrap == "tpu_nb":
            optimizer = tpu_nb.CrossShardOptimizer(optimizer, **kwargs)
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


def _kernel_after(tmp_path, model_fn, shards, steps=1, name="run"):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    config = tpu_nb.RunConfig(model_dir=str(tmp_path / name), cluster=cluster,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, use_tpu=bool(shards), train_batch_size=BATCH)
    est.train(_input_fn, steps=steps)
    return est.get_variable_value("dense/kernel")


@pytest.mark.parametrize("wrap", ["tf", "tf_module", "tpu_nb", "none"])
def test_eight_shards_give_the_one_device_update(tmp_path, wrap):
    one = _kernel_after(tmp_path, _model_fn(wrap), None, name="one")
    eight = _kernel_after(tmp_path, _model_fn(wrap), 8, name="eight")
    assert np.abs(one).max() > 1e-3  # it trained
    np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-6)


def test_tf_optimizer_with_sum_reduction_sums_the_shards_mean_gradients(tmp_path):
    # SUM: each shard's gradient (of its own mean loss) is summed over shards, so 8 shards move 8x as far
    # on the first step as one device does on the same global batch, as on a TPU.
    reduction = tf.compat.v1.losses.Reduction.SUM
    one = _kernel_after(tmp_path, _model_fn("tf", reduction), None, name="one")
    eight = _kernel_after(tmp_path, _model_fn("tf", reduction), 8, name="eight")
    np.testing.assert_allclose(eight, 8.0 * one, rtol=1e-4, atol=1e-6)


def _gradients_model_fn(how, lr=0.5):
    """model_fn computing its gradients itself, then applying them (BERT's pattern, and a Keras optimizer's)."""

    def model_fn(features, labels, mode, params):
        logits = tf_keras.layers.Dense(2, name="dense", kernel_initializer="zeros")(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        tvars = tf.compat.v1.trainable_variables()
        grads = tf.gradients(loss, tvars)
        step = tf.compat.v1.train.get_global_step()
        if how == "keras optimizer":
            update = tf_keras.optimizers.legacy.SGD(lr).apply_gradients(zip(grads, tvars))
            train_op = tf.group(update, step.assign_add(1))
        else:
            optimizer = tf.compat.v1.train.GradientDescentOptimizer(lr)
            if how == "tf CrossShardOptimizer":
                optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
            elif how == "tpu_nb CrossShardOptimizer":
                optimizer = tpu_nb.CrossShardOptimizer(optimizer)
            train_op = optimizer.apply_gradients(zip(grads, tvars), global_step=step)
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)

    return model_fn


@pytest.mark.parametrize("how, times", [("tf CrossShardOptimizer", 8), ("tpu_nb CrossShardOptimizer", 8),
                                        ("plain optimizer", 1), ("keras optimizer", 1)])
def test_gradients_model_fn_computes_itself_give_the_tpu_update(tmp_path, how, times):
    # BERT's pattern: tf.gradients of each shard's own loss, then CrossShardOptimizer.apply_gradients, which
    # sums them over the shards. On a TPU the first step is then the sum of the 8 shards' mean gradients:
    # 8 times one device's step on the same global batch (tf.gradients never scales the loss). Without a
    # cross-shard sum the step is one device's. Both once came out 8 times too large on shards.
    one = _kernel_after(tmp_path, _gradients_model_fn(how), None, name="one")
    eight = _kernel_after(tmp_path, _gradients_model_fn(how), 8, name="eight")
    assert np.abs(one).max() > 1e-3  # it trained
    np.testing.assert_allclose(eight, times * one, rtol=1e-4, atol=1e-6)


def test_tf_optimizer_trains_the_same_over_several_loops(tmp_path):
    one = _kernel_after(tmp_path, _model_fn("tf"), None, steps=7, name="one")
    four = _kernel_after(tmp_path, _model_fn("tf"), 4, steps=7, name="four")
    np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)


def test_tf_optimizer_on_one_device_with_use_tpu_false_trains_like_the_plain_optimizer(tmp_path, caplog):
    # The original failed here (CrossReplicaSum has no CPU kernel); doing better is the point.
    wrapped = _kernel_after(tmp_path, _model_fn("tf"), None, steps=3, name="wrapped")
    plain = _kernel_after(tmp_path, _model_fn("none"), None, steps=3, name="plain")
    np.testing.assert_allclose(wrapped, plain, rtol=1e-6, atol=1e-7)


def test_no_shard_context_warning_reaches_the_user(tmp_path, caplog):
    # TF's class warns once per replica and build when no TPU shard context is set; tpu_nb sets one.
    import logging

    with caplog.at_level(logging.WARNING):
        _kernel_after(tmp_path, _model_fn("tf"), 4, name="four")
    assert "tpu_shard_context" not in caplog.text


@pytest.mark.parametrize("differentiate", ["tf.gradients", "GradientTape"])
def test_cross_replica_sum_in_model_fn_sums_over_shards_with_the_tpu_gradient(tmp_path, differentiate):
    # Each shard scales its loss by the global sum of a per-shard quantity. The forward value is the same on
    # every shard (the sum), and the gradient of cross_replica_sum is the cross-replica sum of the incoming
    # gradients, as TPU's op defines it, whether the graph's gradients or a tape's compute it.
    seen = []

    def model_fn(features, labels, mode, params):
        w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.ones_initializer())
        with tf.GradientTape() as tape:
            per_shard = tf.reshape(w * tf.cast(params["batch_size"], tf.float32), [1])
            total = tf.compat.v1.tpu.cross_replica_sum(per_shard)
            loss = total[0]
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.01)
        step = tf.compat.v1.train.get_global_step()
        if differentiate == "GradientTape":
            train_op = optimizer.apply_gradients(zip(tape.gradient(loss, [w]), [w]), global_step=step)
        else:
            train_op = optimizer.minimize(loss, global_step=step)
        host_fn = lambda t: [tf.compat.v1.py_func(lambda v: seen.append(v.tolist()) or 0, [t], tf.int64)]  # noqa: E731
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=(host_fn, [total]))

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=4),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=1))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=BATCH)
    est.train(_input_fn, steps=1)
    assert seen == [[64.0, 64.0, 64.0, 64.0]]  # every shard saw the global sum (4 shards x 16)
    # On a TPU each shard's loss is 64 w; the gradient of cross_replica_sum sums the 4 shards' incoming
    # gradients (1 each), so d(loss_i)/dw = 4 x 16 = 64 on every shard, and every shard applies that update.
    np.testing.assert_allclose(est.get_variable_value("w"), 1.0 - 0.01 * 64, rtol=1e-6)
