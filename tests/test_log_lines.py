"""The original's log lines users' scripts look for, and the engine's loss summary tag in model_dir."""

import glob
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import eval_input_fn, model_fn, train_input_fn


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tpu_nb"]


def _estimator(model_dir, fn=model_fn, cluster=None):
    config = tpu_nb.RunConfig(model_dir=str(model_dir), cluster=cluster, save_summary_steps=1,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    return tpu_nb.TPUEstimator(fn, config=config, use_tpu=cluster is not None, train_batch_size=16,
                               eval_batch_size=16)


def test_train_logs_loss_for_final_step(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tpu_nb"):
        _estimator(tmp_path).train(train_input_fn, steps=3)
    lines = [m for m in _messages(caplog) if m.startswith("Loss for final step:")]
    assert len(lines) == 1, _messages(caplog)
    value = float(re.fullmatch(r"Loss for final step: (\S+)\.", lines[0]).group(1))
    assert np.isfinite(value) and value > 0


def test_evaluate_logs_saving_dict_for_global_step(tmp_path, caplog):
    est = _estimator(tmp_path)
    est.train(train_input_fn, steps=3)

    def metrics_model_fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        if mode != tpu_nb.ModeKeys.EVAL:
            return spec

        def metric_fn(labels, features):
            return {"mean_feature": tf.compat.v1.metrics.mean(features)}

        return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, eval_metrics=(metric_fn, [labels, features]))

    est = _estimator(tmp_path, fn=metrics_model_fn)
    with caplog.at_level(logging.INFO, logger="tpu_nb"):
        results = est.evaluate(eval_input_fn, steps=2)
    lines = [m for m in _messages(caplog) if m.startswith("Saving dict for global step")]
    assert len(lines) == 1, _messages(caplog)
    # The original's format: sorted 'key = value' pairs.
    assert re.fullmatch(r"Saving dict for global step 3: global_step = 3, loss = \S+, mean_feature = \S+",
                        lines[0]), lines[0]
    assert f"loss = {results['loss']}" in lines[0]


# --------------------------------------------------------------------------- loss tag


def _scalars(model_dir):
    """{tag: [(step, value)]} over model_dir's own event files (v1 simple values and v2 tensors)."""
    found = {}
    for path in glob.glob(os.path.join(str(model_dir), "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                v = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, v))
    return found


_HOST_LOSS = 1234.5  # a value the engine's own loss never takes


def _host_call_model_fn(features, labels, mode, params):
    spec = model_fn(features, labels, mode, params)
    if mode != tpu_nb.ModeKeys.TRAIN:
        return spec
    model_dir = params["model_dir"]

    def host_fn(step):
        with tf.summary.create_file_writer(model_dir).as_default():
            with tf.summary.record_if(True):
                tf.summary.scalar("loss", _HOST_LOSS, step=step[0])
                return tf.compat.v1.summary.all_v2_summary_ops()

    step = tf.reshape(tf.compat.v1.train.get_global_step(), [1])
    return tpu_nb.TPUEstimatorSpec(mode, loss=spec.loss, train_op=spec.train_op, host_call=(host_fn, [step]))


def _with_host_call(model_dir, cluster=None):
    config = tpu_nb.RunConfig(model_dir=str(model_dir), cluster=cluster, save_summary_steps=1,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2))
    return tpu_nb.TPUEstimator(_host_call_model_fn, config=config, params={"model_dir": str(model_dir)},
                               use_tpu=cluster is not None, train_batch_size=16)


def test_engine_loss_summary_is_tagged_loss(tmp_path):
    _estimator(tmp_path).train(train_input_fn, steps=4)
    scalars = _scalars(tmp_path)
    assert sorted({s for s, _ in scalars["loss"]}) == [2, 4]  # loop boundaries (the last may repeat)
    assert "loss_1" not in scalars


@pytest.mark.parametrize("cluster", [None, tpu_nb.SimulatedTPU(2)], ids=["one_device", "two_shards"])
def test_host_call_loss_keeps_its_tag(tmp_path, cluster):
    _with_host_call(tmp_path, cluster).train(train_input_fn, steps=4)
    scalars = _scalars(tmp_path)
    # The host_call's 'loss' holds only its own values; the engine's loss moved to 'loss_1', as the
    # original's tf.compat.v1.summary.scalar('loss') did when the name was taken.
    assert len(scalars["loss"]) == 4 and {v for _, v in scalars["loss"]} == {_HOST_LOSS}
    engine = sorted(scalars["loss_1"])
    assert sorted({s for s, _ in engine}) == [2, 4] and all(0 < v < 100 for _, v in engine)


def test_overlapping_quiet_blocks_restore_the_level_only_when_the_last_ends():
    # A background training run and an evaluation watcher overlap in a notebook: the first to finish
    # must not unmute TensorFlow under the other, and the level must come back after both.
    import logging

    from tensorflow.python.util import deprecation

    from tpu_nb.reporting.tf_logs import quiet_tf_logs

    logger = tf.get_logger()
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        first, second = quiet_tf_logs(), quiet_tf_logs()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # the first ends while the second still runs
        assert logger.level == logging.WARNING
        assert deprecation._PRINT_DEPRECATION_WARNINGS is False  # noqa: SLF001
        second.__exit__(None, None, None)
        assert logger.level == logging.INFO
        assert deprecation._PRINT_DEPRECATION_WARNINGS is True  # noqa: SLF001
    finally:
        logger.setLevel(before)
