"""predict() sets its session up two ways: a plain Session when nothing needs to wrap the runs, a
MonitoredSession when hooks or a user Scaffold do. Both must restore, initialise and stop alike."""

import logging

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import CLASSES, FEATURES, estimator, make_data, model_fn, predict_input_fn, train_input_fn


def _ones_model_fn(features, labels, mode, params):
    """Logits are x @ ones plus an offset; a table names the winning class (tables need initialising)."""
    w = tf.compat.v1.get_variable("w", [FEATURES, CLASSES], initializer=tf.compat.v1.ones_initializer())
    logits = tf.matmul(features, w)
    names = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant([0, 1, 2], tf.int64), tf.constant(["a", "b", "c"])), "?")
    offset = tf.compat.v1.get_local_variable("offset", initializer=tf.constant(0.0))
    scaffold_fn = None
    if params.get("offset"):
        def scaffold_fn():
            return tf.compat.v1.train.Scaffold(local_init_op=offset.assign(params["offset"]).op)
    ids = tf.argmax(logits, 1)
    return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits + offset, "name": names.lookup(ids)},
                                   scaffold_fn=scaffold_fn)


def _expected_logits(offset=0.0):
    x, _ = make_data(100, seed=1)
    return x @ np.ones([FEATURES, CLASSES], np.float32) + offset


def test_predict_without_a_checkpoint_warns_and_uses_initialized_variables(tmp_path, caplog):
    est = estimator(tmp_path / "fresh", fn=_ones_model_fn)
    with caplog.at_level(logging.WARNING, logger="tpu_nb"):
        out = list(est.predict(predict_input_fn))
    assert "Could not find a trained model" in caplog.text
    assert len(out) == 100
    # atol: some logits are near zero, where float32 sums in another order differ by ~1e-7.
    np.testing.assert_allclose(np.stack([p["logits"] for p in out]), _expected_logits(), rtol=1e-5, atol=1e-5)
    # The lookup table was initialised (every class is one of the three names, not the default).
    assert {p["name"] for p in out} <= {b"a", b"b", b"c"}


class _CountingHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self):
        self.runs = 0
        self.ended = False

    def before_run(self, run_context):
        self.runs += 1

    def end(self, session):
        self.ended = True


def test_predict_with_a_hook_runs_it_per_batch_and_gives_the_same_predictions(tmp_path):
    est = estimator(tmp_path / "hooked")
    est.train(train_input_fn, max_steps=8)
    plain = list(est.predict(predict_input_fn, yield_single_examples=False))
    hook = _CountingHook()
    hooked = list(est.predict(predict_input_fn, yield_single_examples=False, hooks=[hook]))
    assert [b["class_ids"].tolist() for b in hooked] == [b["class_ids"].tolist() for b in plain]
    assert len(plain) == 7  # 100 examples in batches of 16
    assert hook.runs >= 7 and hook.ended


def test_predict_runs_the_user_scaffolds_local_init_op(tmp_path):
    est = estimator(tmp_path / "scaffold", fn=_ones_model_fn, params={"offset": 5.0})
    out = list(est.predict(predict_input_fn, yield_single_examples=False))
    # atol: the smallest logit is 0.15, a sum of terms near 3 whose float32 rounding in another order is
    # ~1e-6, too much for rtol alone. A lost local_init_op shows as every logit 5.0 low.
    np.testing.assert_allclose(np.concatenate([b["logits"] for b in out]), _expected_logits(5.0), rtol=1e-5,
                               atol=1e-5)


def test_predict_from_a_checkpoint_missing_a_variable_names_it(tmp_path):
    est = estimator(tmp_path / "missing")
    est.train(train_input_fn, max_steps=4)

    def model_fn_with_extra(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        extra = tf.compat.v1.get_variable("extra_scale", [], initializer=tf.compat.v1.ones_initializer())
        return tpu_nb.TPUEstimatorSpec(mode, predictions=dict(spec.predictions,
                                                             scaled=spec.predictions["logits"] * extra))

    other = estimator(tmp_path / "missing", fn=model_fn_with_extra)
    with pytest.raises(tf.errors.NotFoundError, match="extra_scale"):
        list(other.predict(predict_input_fn))
