"""TPU semantics on simulated shards: the batch table, mean gradients, gathering, padding, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import CLASSES, FEATURES, checkpoint_step, make_data, train_input_fn

IPC = tpu_nb.InputPipelineConfig


def _estimator(tmp_path, fn, cores=8, hosts=1, ipl=4, batch=16, eval_batch=16, predict_batch=16, params=None, **tpu):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(cores, hosts),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl, **tpu))
    return tpu_nb.TPUEstimator(fn, config=config, params=params, train_batch_size=batch, eval_batch_size=eval_batch,
                               predict_batch_size=predict_batch)


def _linear_model_fn(features, labels, mode, params):
    x = features["x"] if isinstance(features, dict) else features
    logits = tf_keras.layers.Dense(CLASSES, name="logits",
                                   kernel_initializer=tf_keras.initializers.GlorotUniform(seed=1))(x)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"index": tf.identity(features["index"]),
                                                          "class_ids": tf.argmax(logits, 1)})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    opt = tf.compat.v1.train.GradientDescentOptimizer(0.1)
    if params.get("cross_shard"):
        opt = tpu_nb.CrossShardOptimizer(opt)
    train_op = opt.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    metrics = (lambda labels, x_sum: {"label_mean": tf.compat.v1.metrics.mean(labels),
                                      "count": tf.compat.v1.metrics.mean(tf.ones_like(x_sum), weights=None),
                                      "x_sum_mean": tf.compat.v1.metrics.mean(x_sum)},
               [labels, tf.reduce_sum(x, 1)])
    host_call = (lambda x: [], [x]) if params.get("host_call") else None
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, eval_metrics=metrics, host_call=host_call)


# ---------------------------------------------------------------- the batch table


def _recording(record):
    def input_fn(params):
        ctx = params["context"]
        record.setdefault("input", []).append((params["batch_size"], ctx.current_input_fn_deployment()))
        x, y = make_data(256)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
        return ds.batch(params["batch_size"], drop_remainder=True)

    def model_fn(features, labels, mode, params):
        record.setdefault("model", []).append((params["batch_size"], params["use_tpu"], "context" in params))
        return _linear_model_fn(features, labels, mode, {})

    return input_fn, model_fn


@pytest.mark.parametrize("hosts", [1, 2])
@pytest.mark.parametrize(
    "mode,calls,input_batch",
    [(IPC.PER_SHARD_V1, "R", "G/R"), (IPC.PER_HOST_V1, "H", "G/H"), (IPC.PER_HOST_V2, "H", "G/R"),
     (IPC.BROADCAST, 1, "G")],
)
def test_training_batch_table(tmp_path, hosts, mode, calls, input_batch):
    record = {}
    input_fn, model_fn = _recording(record)
    est = _estimator(tmp_path, model_fn, hosts=hosts, batch=64, per_host_input_for_training=mode)
    est.train(input_fn, steps=2)
    sizes = {"R": 8, "H": hosts, "G/R": 8, "G/H": 64 // hosts, "G": 64}
    calls, input_batch = sizes.get(calls, calls), sizes[input_batch]
    assert [b for b, _ in record["input"]] == [input_batch] * calls
    model_batch = 64 if mode == IPC.BROADCAST else 8
    assert record["model"] == [(model_batch, True, True)] * 8  # model_fn once per shard
    deployments = [d for _, d in record["input"]]
    assert [d[1:] for d in deployments] == {
        IPC.PER_SHARD_V1: [(i, 8, 1) for i in range(8)],
        IPC.PER_HOST_V1: [(h, hosts, 8 // hosts) for h in range(hosts)],
        IPC.PER_HOST_V2: [(h, hosts, 8 // hosts) for h in range(hosts)],
        IPC.BROADCAST: [(0, 1, 8)],
    }[mode]
    # Each host's input pipeline sits on that host's first device.
    if mode in (IPC.PER_HOST_V1, IPC.PER_HOST_V2):
        assert [d[0] for d in deployments] == [f"/replica:0/task:0/device:CPU:{h * 8 // hosts}" for h in range(hosts)]


@pytest.mark.parametrize("sliced", [False, True])
def test_eval_batch_table(tmp_path, sliced):
    record = {}
    input_fn, model_fn = _recording(record)
    kwargs = {"eval_training_input_configuration": IPC.SLICED} if sliced else {}
    est = _estimator(tmp_path, model_fn, hosts=2, eval_batch=64, **kwargs)
    est.train(input_fn, steps=1)
    record.clear()
    est.evaluate(input_fn, steps=1)
    cpu = "/replica:0/task:0/device:CPU:"  # the original's full form
    expected_input = [(64, (cpu + "0", 0, 1, 8))] if sliced else [
        (32, (cpu + "0", 0, 2, 4)), (32, (cpu + "4", 1, 2, 4))]
    assert record["input"] == expected_input
    assert [b for b, _, _ in record["model"]] == [8] * 8


def test_indivisible_batch_names_the_fix(tmp_path):
    est = _estimator(tmp_path, _linear_model_fn, batch=60)
    with pytest.raises(ValueError, match="batch size 60 is not divisible by the 8 shards.*56 or 64"):
        est.train(train_input_fn, steps=1)
    assert checkpoint_step(tmp_path) is None


def test_dynamic_batch_shape_names_drop_remainder(tmp_path):
    def input_fn(params):
        x, y = make_data(256)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"])

    with pytest.raises(ValueError, match="drop_remainder=True"):
        _estimator(tmp_path, _linear_model_fn, params={}).train(input_fn, steps=1)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("cross_shard", [False, True])
def test_one_and_eight_shards_give_the_same_weights(tmp_path, cross_shard):
    params = {"cross_shard": cross_shard}
    single = tpu_nb.TPUEstimator(_linear_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path / "one")),
                                 params=params, use_tpu=False, train_batch_size=16)
    single.train(train_input_fn, steps=10)
    sharded = _estimator(tmp_path / "eight", _linear_model_fn, params=params)
    sharded.train(train_input_fn, steps=10)
    np.testing.assert_allclose(sharded.get_variable_value("logits/kernel"),
                               single.get_variable_value("logits/kernel"), atol=1e-5)
    assert checkpoint_step(tmp_path / "eight") == 10


def test_cross_replica_sum_in_user_code(tmp_path):
    def model_fn(features, labels, mode, params):
        spec = _linear_model_fn(features, labels, mode, {})
        total = tf.compat.v1.tpu.cross_replica_sum(tf.reshape(tf.cast(tf.shape(features)[0], tf.float32), [1]))
        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op, host_call=(lambda t: [], [total]))

    seen = []
    with tpu_nb.events.subscribed(lambda e: isinstance(e, tpu_nb.events.HostCallBatch) and seen.extend(e.records())):
        _estimator(tmp_path, model_fn).train(train_input_fn, steps=2)
    # Every shard sums its 2 rows over all 8 shards: 16, gathered from each of the 8 shards.
    assert [list(e.values["t"]) for e in seen] == [[16.0] * 8] * 2


# ---------------------------------------------------------------- host_call and eval_metrics


@pytest.mark.parametrize("hosts", [1, 2])
def test_host_call_sees_the_global_batch_in_replica_order(tmp_path, hosts):
    x, y = make_data(256)
    seen = []
    with tpu_nb.events.subscribed(lambda e: isinstance(e, tpu_nb.events.HostCallBatch) and seen.extend(e.records())):
        _estimator(tmp_path, _linear_model_fn, hosts=hosts, params={"host_call": True}).train(train_input_fn, steps=5)
    assert [e.global_step for e in seen] == [1, 2, 3, 4, 5]
    per_host = 16 // hosts
    for i, event in enumerate(seen):
        # Each host runs its own copy of input_fn (no sharding in it), so each contributes the same rows.
        expected = np.concatenate([x[i * per_host:(i + 1) * per_host]] * hosts)
        np.testing.assert_array_equal(event.values["x"], expected)


def test_scalar_in_sharded_host_call_is_refused(tmp_path):
    def model_fn(features, labels, mode, params):
        spec = _linear_model_fn(features, labels, mode, {})
        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op,
                                       host_call=(lambda loss: [], [spec.loss]))

    with pytest.raises(ValueError, match=r"is a scalar.*tf.reshape\(t, \[1\]\)"):
        _estimator(tmp_path, model_fn).train(train_input_fn, steps=1)


def test_v1_summary_in_sharded_host_call_is_refused(tmp_path):
    def model_fn(features, labels, mode, params):
        spec = _linear_model_fn(features, labels, mode, {})

        def host_fn(loss):
            return [tf.compat.v1.summary.scalar("loss", tf.reduce_mean(loss))]

        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op,
                                       host_call=(host_fn, [tf.reshape(spec.loss, [1])]))

    with pytest.raises(ValueError, match="tf.summary \\(v2\\)"):
        _estimator(tmp_path, model_fn).train(train_input_fn, steps=1)


def _eval_input_fn(n):
    x, y = make_data(n, seed=1)

    def input_fn(params):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch_size"])

    return input_fn, x, y


@pytest.mark.parametrize("hosts", [1, 2])
def test_eval_metrics_over_exactly_the_input_with_padding_masked(tmp_path, hosts):
    est = _estimator(tmp_path, _linear_model_fn, hosts=hosts, params={})
    est.train(train_input_fn, steps=2)
    input_fn, x, y = _eval_input_fn(100)  # 100 = 6 batches of 16 + 4: the last is padded
    result = est.evaluate(input_fn)
    assert result["count"] == pytest.approx(1.0)
    assert result["label_mean"] == pytest.approx(y.mean(), rel=1e-6)
    assert result["x_sum_mean"] == pytest.approx(x.sum(1).mean(), rel=1e-5)
    assert result["global_step"] == 2


def test_estimator_spec_in_sharded_eval_is_refused(tmp_path):
    def model_fn(features, labels, mode, params):
        spec = _linear_model_fn(features, labels, mode, {})
        return tpu_nb.EstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op)

    est = _estimator(tmp_path, model_fn)
    est.train(train_input_fn, steps=1)
    with pytest.raises(RuntimeError, match="must have type`TPUEstimatorSpec`.*Return a TPUEstimatorSpec"):
        est.evaluate(_eval_input_fn(32)[0])


# ---------------------------------------------------------------- predict


def test_1003_predictions_in_order_at_batch_64(tmp_path):
    x, _ = make_data(1003, seed=2)

    def input_fn(params):
        return tf.data.Dataset.from_tensor_slices({"x": x, "index": np.arange(1003)}).batch(params["batch_size"])

    est = _estimator(tmp_path, _linear_model_fn, predict_batch=64, params={})
    est.train(train_input_fn, steps=1)
    preds = list(est.predict(input_fn))
    assert [int(p["index"]) for p in preds] == list(range(1003))
    batches = list(est.predict(input_fn, yield_single_examples=False))
    assert [len(b["index"]) for b in batches] == [64] * 15 + [43]
    # Sharded predictions equal the same model's predictions on one device.
    single = tpu_nb.TPUEstimator(_linear_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)),
                                 use_tpu=False, predict_batch_size=64)
    np.testing.assert_array_equal([p["class_ids"] for p in preds], [p["class_ids"] for p in single.predict(input_fn)])


# ---------------------------------------------------------------- choosing the backend


def test_use_tpu_without_tpu_or_simulation_names_both_options(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)
    est = tpu_nb.TPUEstimator(_linear_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)), train_batch_size=16)
    with pytest.raises(RuntimeError, match=r"use_tpu=False.*SimulatedTPU.*TPU_NB_SIMULATE"):
        est.train(train_input_fn, steps=1)


def test_environment_variable_turns_a_tpu_program_into_a_simulated_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TPU_NB_SIMULATE", "4x2")
    started = []
    est = tpu_nb.TPUEstimator(_linear_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path)),
                              params={}, train_batch_size=16)
    with tpu_nb.events.subscribed(lambda e: isinstance(e, tpu_nb.events.RunStarted) and started.append(e)):
        est.train(train_input_fn, steps=2)
    assert (started[0].num_shards, started[0].num_hosts, started[0].per_shard_batch_size) == (4, 2, 4)
    assert "simulated TPU 4x2" in started[0].backend


def test_sharded_training_needs_steps_and_batch_size(tmp_path):
    with pytest.raises(ValueError, match="needs steps or max_steps"):
        _estimator(tmp_path, _linear_model_fn).train(train_input_fn)
    # As the original, use_tpu=True needs train_batch_size already in the constructor.
    with pytest.raises(ValueError, match="`train_batch_size` cannot be `None` when use_tpu=True"):
        tpu_nb.TPUEstimator(_linear_model_fn, config=tpu_nb.RunConfig(model_dir=str(tmp_path),
                                                                      cluster=tpu_nb.SimulatedTPU(8)))


def test_num_shards_must_match(tmp_path):
    with pytest.raises(ValueError, match="num_shards=4 does not match the 8 shards"):
        _estimator(tmp_path, _linear_model_fn, num_shards=4).train(train_input_fn, steps=1)


def test_dead_tpu_address_fails_fast_naming_it(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master=f"grpc://127.0.0.1:{port}",
                              tpu_config=tpu_nb.TPUConfig(connect_timeout_secs=5))
    est = tpu_nb.TPUEstimator(_linear_model_fn, config=config, train_batch_size=16)
    started = time.monotonic()
    with pytest.raises(tpu_nb.TPUConnectionError, match=f"127.0.0.1:{port}"):
        est.train(train_input_fn, steps=1)
    assert time.monotonic() - started < 20


def test_check_tpu_compatibility_from_the_estimator(tmp_path):
    def model_fn(features, labels, mode, params):
        spec = _linear_model_fn(features, labels, mode, {})
        odd = tf.numpy_function(lambda a: a * 2, [spec.loss], tf.float32, name="numpy_double")
        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss + 0 * tf.reshape(odd, []), train_op=spec.train_op)

    report = _estimator(tmp_path, model_fn).check_tpu_compatibility(train_input_fn)
    assert not report.ok
    assert any("numpy_double" in name for name, _ in report.unsupported_ops)
    assert _estimator(tmp_path / "ok", _linear_model_fn, params={}).check_tpu_compatibility(train_input_fn).ok
    assert checkpoint_step(tmp_path) is None


def test_sharded_eval_with_steps_runs_exactly_those_batches(tmp_path):
    est = _estimator(tmp_path, _linear_model_fn, ipl=4, params={})
    est.train(train_input_fn, steps=1)
    input_fn, x, y = _eval_input_fn(100)
    for steps in (2, 5):  # inside one loop of 4, and across two loops
        result = est.evaluate(input_fn, steps=steps)
        assert result["label_mean"] == pytest.approx(y[:16 * steps].mean(), rel=1e-6)


def test_per_host_v1_splits_along_batch_axis(tmp_path):
    seen = []

    def input_fn(params):
        x, y = make_data(256)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(params["batch_size"], drop_remainder=True)
        return ds.map(lambda f, l: (tf.transpose(f), l))  # features are [FEATURES, batch]

    def model_fn(features, labels, mode, params):
        seen.append(features.shape.as_list())
        return _linear_model_fn(tf.transpose(features), labels, mode, {})

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=tpu_nb.SimulatedTPU(8),
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    est = tpu_nb.TPUEstimator(model_fn, config=config, train_batch_size=16, batch_axis=(1, 0))
    est.train(input_fn, steps=2)
    assert seen == [[FEATURES, 2]] * 8
