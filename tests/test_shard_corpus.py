"""TF1-era model_fn idioms give the same numbers on one device and on N simulated shards.

Each idiom is a model_fn as published TPUEstimator programs write them (graph collections, slim arg scopes,
regularizers, slim-style BatchNorm through UPDATE_OPS, EMA restored by scaffold_fn, ...). It is trained for a few
steps on one device and on 2 and 8 shards at the same global batch, then evaluated and used to predict;
loss, every variable, the eval metrics and the predictions must agree to float32 tolerance, as they would
between one TPU core and a whole TPU. Where they cannot (dropout draws other masks), the test says so and
checks what must still hold.

The data are a block of 8 distinct examples repeated: every shard's part of a batch (a multiple of 8 rows)
then holds the same examples, so BatchNorm's per-shard batch statistics equal the one-device ones, as they
would on a TPU fed the same way.
"""

import functools
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb

BLOCK = 8
BATCH = 64
STEPS = 6
LR = 0.1
KEYS = tf.compat.v1.GraphKeys


def _block():
    rng = np.random.RandomState(7)
    x = rng.randn(BLOCK, 6, 6, 1).astype(np.float32)
    y = np.arange(BLOCK, dtype=np.int32) % 3
    return x, y


def _dataset(rows):
    x, y = _block()
    reps = -(-rows // BLOCK)
    return tf.data.Dataset.from_tensor_slices((np.tile(x, (reps, 1, 1, 1))[:rows], np.tile(y, reps)[:rows]))


def train_input_fn(params):
    return _dataset(BATCH).repeat().batch(params["batch_size"], drop_remainder=True)


def eval_input_fn(params):
    return _dataset(2 * BATCH).batch(params["batch_size"])


def short_eval_input_fn(params):
    return _dataset(BATCH + 24).batch(params["batch_size"])  # a short, padded last batch on shards


def predict_input_fn(params):
    return _dataset(BATCH + 8).map(lambda x, y: x).batch(params["batch_size"])


def _init(seed):
    return tf.compat.v1.initializers.glorot_uniform(seed=seed)


def _train_op(loss, tf_cross_shard=True):
    opt = tf.compat.v1.train.GradientDescentOptimizer(LR)
    if tf_cross_shard:
        opt = tf.compat.v1.tpu.CrossShardOptimizer(opt)  # TensorFlow's own class, as published programs use it
    with tf.control_dependencies(tf.compat.v1.get_collection(KEYS.UPDATE_OPS)):
        return opt.minimize(loss, global_step=tf.compat.v1.train.get_global_step())


def _accuracy(labels, logits):
    return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}


def _spec(mode, logits, labels, loss, train_op=None, metrics=None, scaffold_fn=None):
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits})
    if mode == tpu_nb.ModeKeys.TRAIN:
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=_train_op(loss) if train_op is None else train_op)
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=metrics or (_accuracy, [labels, logits]),
                                   scaffold_fn=scaffold_fn)


def _dense(x, units, name, **kwargs):
    with tf.compat.v1.variable_scope(name):
        w = tf.compat.v1.get_variable("kernel", [x.shape[-1], units], initializer=_init(len(name)), **kwargs)
        b = tf.compat.v1.get_variable("bias", [units], initializer=tf.compat.v1.zeros_initializer())
        return tf.matmul(x, w) + b


def _flat(features):
    return tf.reshape(features, [-1, 36])


# --------------------------------------------------------------------------- the idioms


def total_loss(features, labels, mode, params):
    """tf.compat.v1.losses into the LOSSES collection, a get_variable regularizer, get_total_loss()."""
    reg = lambda w: 0.01 * tf.reduce_sum(tf.square(w))  # noqa: E731
    logits = _dense(tf.nn.relu(_dense(_flat(features), 8, "hidden", regularizer=reg)), 3, "out", regularizer=reg)
    if mode != tpu_nb.ModeKeys.PREDICT:
        tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    loss = tf.compat.v1.losses.get_total_loss() if mode != tpu_nb.ModeKeys.PREDICT else None
    return _spec(mode, logits, labels, loss)


def scope_regularizer(features, labels, mode, params):
    """A variable_scope's default regularizer and get_regularization_loss(), optimizer without cross-shard."""
    with tf.compat.v1.variable_scope("net", regularizer=lambda w: 0.02 * tf.reduce_sum(tf.abs(w))):
        logits = _dense(tf.nn.tanh(_dense(_flat(features), 8, "hidden")), 3, "out")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    loss = (tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            + tf.compat.v1.losses.get_regularization_loss())
    train_op = _train_op(loss, tf_cross_shard=False) if mode == tpu_nb.ModeKeys.TRAIN else None
    return _spec(mode, logits, labels, loss, train_op)


def _slim_batch_norm(x, training, decay=0.5):
    # What tf_slim's batch_norm builds: moving statistics as model variables, their updates in UPDATE_OPS.
    with tf.compat.v1.variable_scope("BatchNorm"):
        channels = x.shape[-1]
        beta = tf.compat.v1.get_variable("beta", [channels], initializer=tf.compat.v1.zeros_initializer())
        mean_var = tf.compat.v1.get_variable("moving_mean", [channels], trainable=False,
                                             initializer=tf.compat.v1.zeros_initializer(),
                                             collections=[KEYS.GLOBAL_VARIABLES, KEYS.MODEL_VARIABLES])
        var_var = tf.compat.v1.get_variable("moving_variance", [channels], trainable=False,
                                            initializer=tf.compat.v1.ones_initializer(),
                                            collections=[KEYS.GLOBAL_VARIABLES, KEYS.MODEL_VARIABLES])
        if training:
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            from tensorflow.python.training import moving_averages
            tf.compat.v1.add_to_collection(KEYS.UPDATE_OPS,
                                           moving_averages.assign_moving_average(mean_var, mean, decay, False))
            tf.compat.v1.add_to_collection(KEYS.UPDATE_OPS,
                                           moving_averages.assign_moving_average(var_var, variance, decay, False))
        else:
            mean, variance = mean_var, var_var
        return tf.nn.batch_normalization(x, mean, variance, beta, None, 1e-3)


def slim_style(features, labels, mode, params):
    """A slim-style network: scoped default regularizer, BatchNorm updates in UPDATE_OPS, get_total_loss()."""
    training = mode == tpu_nb.ModeKeys.TRAIN
    with tf.compat.v1.variable_scope("conv", regularizer=lambda w: 0.01 * tf.nn.l2_loss(w)):
        kernel = tf.compat.v1.get_variable("weights", [3, 3, 1, 4], initializer=_init(3))
        net = tf.nn.relu(_slim_batch_norm(tf.nn.conv2d(features, kernel, 1, "VALID"), training))
    logits = _dense(tf.reshape(net, [-1, 64]), 3, "logits")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    tf.compat.v1.losses.softmax_cross_entropy(tf.one_hot(labels, 3), logits)
    return _spec(mode, logits, labels, tf.compat.v1.losses.get_total_loss())


def keras_model(features, labels, mode, params):
    """A tf_keras functional Model with BatchNorm and kernel regularizers; its updates under UPDATE_OPS."""
    inputs = tf_keras.Input(tensor=features)
    h = tf_keras.layers.Conv2D(4, 3, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1),
                               kernel_regularizer=tf_keras.regularizers.l2(0.01))(inputs)
    # Not fused: the fused kernel scales the moving variance by n/(n-1) of its own batch, so N shards of
    # n/N rows would differ from one device (as TPU cores would).
    h = tf_keras.layers.BatchNormalization(momentum=0.5, fused=False)(h, training=mode == tpu_nb.ModeKeys.TRAIN)
    h = tf_keras.layers.Flatten()(tf_keras.layers.ReLU()(h))
    logits = tf_keras.layers.Dense(3, kernel_initializer=tf_keras.initializers.GlorotUniform(seed=2))(h)
    model = tf_keras.Model(inputs, logits)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    for update in model.updates:
        tf.compat.v1.add_to_collection(KEYS.UPDATE_OPS, update)
    loss = (tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            + tf.add_n(model.losses))
    return _spec(mode, logits, labels, loss)


def ema_scaffold(features, labels, mode, params):
    """An ExponentialMovingAverage of the weights, restored for evaluation by scaffold_fn."""
    logits = _dense(tf.nn.relu(_dense(_flat(features), 8, "hidden")), 3, "out")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    ema = tf.compat.v1.train.ExponentialMovingAverage(0.5)
    if mode == tpu_nb.ModeKeys.TRAIN:
        with tf.control_dependencies([_train_op(loss)]):
            train_op = ema.apply(tf.compat.v1.trainable_variables())
        return _spec(mode, logits, labels, loss, train_op)

    def scaffold_fn():
        return tf.compat.v1.train.Scaffold(saver=tf.compat.v1.train.Saver(ema.variables_to_restore()))

    return _spec(mode, logits, labels, loss, scaffold_fn=scaffold_fn)


def summaries_in_model_fn(features, labels, mode, params):
    """v1 summaries in model_fn (TensorFlow builds them in the first replica only; the TPU wrote none either)."""
    logits = _dense(_flat(features), 3, "out")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    tf.compat.v1.summary.scalar("loss", loss)
    tf.compat.v1.summary.histogram("logits", logits)
    return _spec(mode, logits, labels, loss)


def user_collection(features, labels, mode, params):
    """A collection of the program's own: each replica's model_fn reads back only its own entries."""
    logits = _dense(_flat(features), 3, "out")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    tf.compat.v1.add_to_collection("my_losses", ce)
    tf.compat.v1.add_to_collection("my_losses", 0.1 * tf.reduce_mean(tf.square(logits)))
    return _spec(mode, logits, labels, tf.add_n(tf.compat.v1.get_collection("my_losses")))


def nonbatch_eval_metrics(features, labels, mode, params):
    """eval_metrics tensors that do not carry the batch: a learning rate tiled to its own row count."""
    logits = _dense(_flat(features), 3, "out")
    if mode == tpu_nb.ModeKeys.PREDICT:
        return _spec(mode, logits, labels, None)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    step = tf.cast(tf.compat.v1.train.get_global_step(), tf.float32)
    lr = tf.compat.v1.train.exponential_decay(LR, step, 2, 0.5)
    per_replica_rows = tf.tile(tf.reshape(lr, [1]), [4])

    def metric_fn(labels, logits, lr):
        return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1)),
                "lr": tf.compat.v1.metrics.mean(lr)}

    return _spec(mode, logits, labels, loss, metrics=(metric_fn, [labels, logits, per_replica_rows]))


IDIOMS = {f.__name__: f for f in (total_loss, scope_regularizer, slim_style, keras_model, ema_scaffold,
                                  summaries_in_model_fn, user_collection, nonbatch_eval_metrics)}


# --------------------------------------------------------------------------- running them


_model_dirs = []


@pytest.fixture(scope="module", autouse=True)
def _model_dir_base(tmp_path_factory):
    # run() is cached across this module's tests; its model_dirs live in pytest's temporary tree.
    _model_dirs.append(tmp_path_factory.mktemp("corpus"))
    yield
    run.cache_clear()
    _model_dirs.clear()


@functools.lru_cache(maxsize=None)
def run(idiom, shards, eval_fn=eval_input_fn):
    """Trains STEPS steps, evaluates and predicts; returns (variables, eval results, predictions)."""
    model_fn = IDIOMS[idiom]
    model_dir = tempfile.mkdtemp(prefix=f"{idiom}-{shards}-", dir=_model_dirs[-1])
    config = dict(model_dir=model_dir, tf_random_seed=1,
                  tpu_config=tpu_nb.TPUConfig(iterations_per_loop=3))
    if shards:
        config["cluster"] = tpu_nb.SimulatedTPU(num_cores=shards, num_hosts=1)
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(**config), use_tpu=bool(shards),
                              train_batch_size=BATCH, eval_batch_size=BATCH, predict_batch_size=BATCH)
    est.train(train_input_fn, max_steps=STEPS)
    variables = {name: est.get_variable_value(name) for name in est.get_variable_names()}
    results = est.evaluate(eval_fn, steps=None)
    predictions = np.stack([p["logits"] for p in est.predict(predict_input_fn)])
    return variables, results, predictions


def _assert_same(reference, other, what):
    np.testing.assert_allclose(other, reference, rtol=2e-4, atol=2e-5, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("shards", [2, 8])
@pytest.mark.parametrize("idiom", sorted(IDIOMS))
def test_idiom_gives_one_device_numbers_on_shards(idiom, shards):
    ref_vars, ref_eval, ref_pred = run(idiom, 0)
    vars_, results, pred = run(idiom, shards)
    assert results["global_step"] == ref_eval["global_step"] == STEPS
    # The checkpoint holds the same names as one device's (as the TPU's one trace named them): no shard's
    # own copy or scope leaks into it.
    assert sorted(vars_) == sorted(ref_vars)
    for name, value in ref_vars.items():
        _assert_same(value, vars_[name], f"{idiom}: variable {name} after {STEPS} steps on {shards} shards")
    for key in ref_eval:
        _assert_same(ref_eval[key], results[key], f"{idiom}: eval {key} on {shards} shards")
    assert pred.shape == ref_pred.shape == (BATCH + 8, 3)
    _assert_same(ref_pred, pred, f"{idiom}: predictions on {shards} shards")


def test_get_total_loss_evaluates_the_same_on_one_device_and_eight_shards():
    # The probe of the bug: replica k's get_total_loss() used to sum the losses of replicas 0..k (4.5x).
    ref = run("total_loss", 0)[1]
    ours = run("total_loss", 8)[1]
    assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-4)


def test_eval_metrics_tensor_without_the_batch_passes_unmasked_with_a_padded_last_batch():
    # 88 rows on 8 shards: the last batch is padded; the tiled learning rate keeps its own 4 rows per shard.
    ref = run("nonbatch_eval_metrics", 0, short_eval_input_fn)[1]
    ours = run("nonbatch_eval_metrics", 8, short_eval_input_fn)[1]
    assert ours["lr"] == pytest.approx(ref["lr"], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)


def test_each_replica_sees_only_its_own_collection_entries_and_the_engine_sees_all(tmp_path):
    seen = []

    def model_fn(features, labels, mode, params):
        logits = _dense(_flat(features), 3, "out")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        tf.compat.v1.add_to_collection("mine", loss)
        tf.compat.v1.losses.add_loss(loss)
        seen.append((len(tf.compat.v1.get_collection("mine")), len(tf.compat.v1.get_collection(KEYS.LOSSES)),
                     len(tf.compat.v1.trainable_variables()), tf.compat.v1.train.get_global_step() is not None))
        return _spec(mode, logits, labels, loss)

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(num_cores=4, num_hosts=1))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=BATCH)
    est.train(train_input_fn, steps=1)
    # Every replica: its own entry, and the one shared set of variables and global step.
    assert seen == [(1, 1, 2, True)] * 4


@pytest.mark.parametrize("shards", [0, 2])
def test_model_fn_runs_as_written_not_through_autograph(tmp_path, shards):
    # A Python `if` on a tensor is a graph-mode error when model_fn is called as written, as TPUEstimator
    # called it on a TPU and on a CPU. On shards it once became a tf.cond, silently: the strategy that runs
    # the replicas converted model_fn with AutoGraph.
    def model_fn(features, labels, mode, params):
        logits = _dense(_flat(features), 3, "out")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        if loss > 0:
            loss = loss * 2.0
        return _spec(mode, logits, labels, loss, _train_op(loss))

    config = dict(model_dir=str(tmp_path))
    if shards:
        config["cluster"] = tpu_nb.SimulatedTPU(num_cores=shards, num_hosts=1)
    est = tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(**config), use_tpu=bool(shards),
                              train_batch_size=BATCH)
    with pytest.raises(TypeError, match="as a Python `bool`"):
        est.train(train_input_fn, steps=1)


def test_dropout_trains_on_shards_and_one_checkpoint_predicts_the_same_everywhere(tmp_path):
    # Dropout draws other masks per shard (as each TPU core does), so trained weights cannot match one
    # device's; what must hold: training runs, and one checkpoint gives the same predictions on any backend.
    def model_fn(features, labels, mode, params):
        h = tf.nn.relu(_dense(_flat(features), 16, "hidden"))
        if mode == tpu_nb.ModeKeys.TRAIN:
            h = tf.nn.dropout(h, rate=0.5)
        logits = _dense(h, 3, "out")
        loss = None if mode == tpu_nb.ModeKeys.PREDICT else tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        return _spec(mode, logits, labels, loss)

    def estimator(shards):
        config = dict(model_dir=str(tmp_path), tf_random_seed=1)
        if shards:
            config["cluster"] = tpu_nb.SimulatedTPU(num_cores=shards, num_hosts=1)
        return tpu_nb.TPUEstimator(model_fn, config=tpu_nb.RunConfig(**config), use_tpu=bool(shards),
                                   train_batch_size=BATCH, eval_batch_size=BATCH, predict_batch_size=BATCH)

    estimator(8).train(train_input_fn, steps=4)
    on_shards = np.stack([p["logits"] for p in estimator(8).predict(predict_input_fn)])
    on_device = np.stack([p["logits"] for p in estimator(0).predict(predict_input_fn)])
    assert np.isfinite(on_shards).all()
    _assert_same(on_device, on_shards, "predictions from one checkpoint")


# --------------------------------------------------------------------------- the estimator against a plain session


def _relu_net(features, labels, mode, params):
    """A ReLU network in the style of the program whose network died in some tpu_nb runs."""
    h = tf.nn.relu(_dense(_flat(features), 32, "hidden1"))
    h = tf.nn.relu(_dense(h, 32, "hidden2"))
    logits = _dense(h, 3, "out")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    opt = tf.compat.v1.train.MomentumOptimizer(0.05, 0.9)
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss,
                                   train_op=opt.minimize(loss, global_step=tf.compat.v1.train.get_global_step()))


def _plain_session(model_dir, steps):
    """The same model_fn in a plain graph and session (no estimator), from a fixed seed; saves step 0."""
    x, y = _block()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(3)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        features = tf.constant(np.tile(x, (BATCH // BLOCK, 1, 1, 1)))
        labels = tf.constant(np.tile(y, BATCH // BLOCK))
        spec = _relu_net(features, labels, tpu_nb.ModeKeys.TRAIN, {})
        saver = tf.compat.v1.train.Saver()
        names = [v.op.name for v in tf.compat.v1.trainable_variables()]
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, f"{model_dir}/model.ckpt", global_step=0)
            initial = dict(zip(names, sess.run(tf.compat.v1.trainable_variables())))
            for _ in range(steps):
                sess.run(spec.train_op)
            trained = dict(zip(names, sess.run(tf.compat.v1.trainable_variables())))
    assert int(global_step.graph is graph)
    return initial, trained


@pytest.mark.parametrize("shards", [0, 8])
def test_estimator_steps_are_a_plain_sessions_steps_from_the_same_weights(tmp_path, shards):
    # Looking for why a ReLU network died in some tpu_nb runs and in none without it: from the same weights
    # the estimator's steps (one device, and 8 shards at the same global batch) are a plain session's.
    initial, trained = _plain_session(str(tmp_path), steps=STEPS)
    config = dict(model_dir=str(tmp_path), tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4))
    if shards:
        config["cluster"] = tpu_nb.SimulatedTPU(num_cores=shards, num_hosts=1)
    est = tpu_nb.TPUEstimator(_relu_net, config=tpu_nb.RunConfig(**config), use_tpu=bool(shards),
                              train_batch_size=BATCH)
    est.train(train_input_fn, steps=STEPS)
    for name, value in trained.items():
        assert not np.allclose(value, initial[name])  # the steps did move it
        _assert_same(value, est.get_variable_value(name), f"{name} after {STEPS} steps")


def test_estimator_initial_weights_have_a_plain_sessions_scale(tmp_path):
    # With a graph seed the estimator numbers model_fn's op seeds from a fixed base (the same weights on
    # every backend), so they are not the plain session's draws: the same distribution, other values.
    initial, _ = _plain_session(str(tmp_path / "plain"), steps=0)
    est = tpu_nb.TPUEstimator(_relu_net, config=tpu_nb.RunConfig(model_dir=str(tmp_path / "est"), tf_random_seed=3),
                              use_tpu=False, train_batch_size=BATCH)
    est.train(train_input_fn, steps=1)
    for name, value in initial.items():
        if name.endswith("kernel"):
            fan_in, fan_out = value.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))  # glorot_uniform's bound
            ours = tf.train.load_variable(str(tmp_path / "est" / "model.ckpt-0"), name)  # saved before step 1
            assert np.abs(ours).max() <= limit and np.abs(value).max() <= limit
            assert np.std(ours) == pytest.approx(np.std(value), rel=0.25)
