"""Acceptance scenario: an MNIST-style program written for the original TPUEstimator,
with only its imports changed, run on the unsharded path (use_tpu=False).

Train 300 steps (iterations_per_loop=50), evaluate with eval_metrics, predict 1003
examples with predict_batch_size=64, export a SavedModel and serve it.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tpu_nb
from conftest import (
    NUM_EVAL,
    make_eval_input_fn,
    make_model_fn,
    make_predict_input_fn,
    make_train_input_fn,
    numpy_forward,
    serving_input_receiver_fn,
)

pytestmark = pytest.mark.slow

TRAIN_STEPS = 300
TRAIN_BATCH = 32
EVAL_BATCH = 64
PREDICT_BATCH = 64


def _estimator(model_dir, model_fn=None, **kwargs):
    config = tpu_nb.RunConfig(
        save_checkpoints_steps=100,
        tpu_config=tpu_nb.TPUConfig(iterations_per_loop=50),
    )
    return tpu_nb.TPUEstimator(
        model_fn=model_fn or make_model_fn(),
        model_dir=model_dir,
        config=config,
        use_tpu=False,
        train_batch_size=TRAIN_BATCH,
        eval_batch_size=EVAL_BATCH,
        predict_batch_size=PREDICT_BATCH,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_data):
    """One estimator trained for 300 steps, shared by the tests of this module."""
    model_dir = str(tmp_path_factory.mktemp("mnist_model"))
    est = _estimator(model_dir)
    est.train(make_train_input_fn(mnist_data.train_x, mnist_data.train_y), max_steps=TRAIN_STEPS)
    return est


@pytest.fixture(scope="module")
def predictions(trained, mnist_data):
    return list(trained.predict(make_predict_input_fn(mnist_data.eval_x)))


def _tag_sets(export_dir):
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    return sorted(tuple(sorted(mg.meta_info_def.tags)) for mg in sm.meta_graphs)


def test_train_then_evaluate_reports_loss_step_and_high_accuracy(trained, mnist_data):
    assert trained.latest_checkpoint().endswith("model.ckpt-%d" % TRAIN_STEPS)
    assert int(trained.get_variable_value("global_step")) == TRAIN_STEPS

    results = trained.evaluate(make_eval_input_fn(mnist_data.eval_x, mnist_data.eval_y), steps=None)

    assert set(results) >= {"loss", "global_step", "accuracy"}
    assert int(results["global_step"]) == TRAIN_STEPS
    assert np.isfinite(results["loss"]) and results["loss"] < 0.5
    assert results["accuracy"] > 0.9

    # The reported accuracy is the accuracy over all 1003 eval examples of the
    # checkpointed model, as computed independently in numpy.
    probs = numpy_forward(trained, mnist_data.eval_x)
    expected = np.mean(np.argmax(probs, 1) == mnist_data.eval_y)
    assert results["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_eval_metrics_dict_form_and_evaluation_length(trained, mnist_data):
    """eval_metrics=(metric_fn, {'labels':..., 'logits':...}) passes keyword arguments;
    steps=None consumes the whole (uneven) input, steps=3 exactly 3 batches."""
    est = _estimator(
        trained.model_dir, model_fn=make_model_fn(metrics_form="dict", count_examples=True)
    )
    input_fn = make_eval_input_fn(mnist_data.eval_x, mnist_data.eval_y)

    full = est.evaluate(input_fn, steps=None)
    assert int(full["global_step"]) == TRAIN_STEPS
    assert full["examples"] == NUM_EVAL
    assert full["accuracy"] > 0.9

    three = est.evaluate(input_fn, steps=3)
    assert three["examples"] == 3 * EVAL_BATCH
    # Accuracy of the first three batches only, computed in numpy.
    n = 3 * EVAL_BATCH
    probs = numpy_forward(est, mnist_data.eval_x[:n])
    expected = np.mean(np.argmax(probs, 1) == mnist_data.eval_y[:n])
    assert three["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_without_eval_metrics_reports_only_loss_and_step(trained, mnist_data):
    est = _estimator(trained.model_dir, model_fn=make_model_fn(metrics_form=None))
    results = est.evaluate(make_eval_input_fn(mnist_data.eval_x, mnist_data.eval_y), steps=2)
    assert set(results) == {"loss", "global_step"}
    assert int(results["global_step"]) == TRAIN_STEPS
    # Loss of the first two batches (mean of the per-batch mean losses).
    probs = numpy_forward(est, mnist_data.eval_x[: 2 * EVAL_BATCH])
    y = mnist_data.eval_y[: 2 * EVAL_BATCH]
    per_example = -np.log(probs[np.arange(len(y)), y])
    expected = np.mean([per_example[:EVAL_BATCH].mean(), per_example[EVAL_BATCH:].mean()])
    assert results["loss"] == pytest.approx(expected, rel=1e-3, abs=1e-5)


def test_predict_gives_every_example_once_in_input_order(trained, predictions, mnist_data):
    assert len(predictions) == NUM_EVAL
    assert [int(p["index"]) for p in predictions] == list(range(NUM_EVAL))
    assert set(predictions[0]) == {"class_ids", "probabilities", "index"}

    probs = np.stack([p["probabilities"] for p in predictions])
    class_ids = np.array([p["class_ids"] for p in predictions])
    assert probs.shape == (NUM_EVAL, 10)

    expected = numpy_forward(trained, mnist_data.eval_x)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(class_ids, np.argmax(expected, 1))


def test_predict_batches_with_last_one_truncated(trained, predictions, mnist_data):
    batches = list(
        trained.predict(make_predict_input_fn(mnist_data.eval_x), yield_single_examples=False)
    )
    sizes = [len(b["index"]) for b in batches]
    assert sizes == [PREDICT_BATCH] * (NUM_EVAL // PREDICT_BATCH) + [NUM_EVAL % PREDICT_BATCH]
    for b in batches:
        assert len(b["probabilities"]) == len(b["class_ids"]) == len(b["index"])
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), np.arange(NUM_EVAL))
    np.testing.assert_allclose(
        np.concatenate([b["probabilities"] for b in batches]),
        np.stack([p["probabilities"] for p in predictions]),
        atol=1e-6,
    )


def test_predict_keys_selects_predictions(trained, mnist_data):
    out = list(
        trained.predict(make_predict_input_fn(mnist_data.eval_x[:70]), predict_keys=["class_ids"])
    )
    assert len(out) == 70
    assert all(set(p) == {"class_ids"} for p in out)


def test_export_saved_model_has_serve_and_tpu_metagraphs_and_serves(
    trained, predictions, mnist_data, tmp_path
):
    export_dir = trained.export_saved_model(str(tmp_path / "export"), serving_input_receiver_fn)
    export_dir = os.fsdecode(export_dir)
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    assert _tag_sets(export_dir) == [("serve",), ("serve", "tpu")]

    expected = np.stack([p["probabilities"] for p in predictions[:100]])
    expected_ids = np.array([p["class_ids"] for p in predictions[:100]])

    # TF2 loader (eager: not available after disable_v2_behavior()).
    if tf.executing_eagerly():
        loaded = tf.saved_model.load(export_dir, tags=["serve"])
        serve = loaded.signatures["serving_default"]
        out = serve(x=tf.constant(mnist_data.eval_x[:100]))
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(out["class_ids"].numpy(), expected_ids)

    # TF1 loader, in a graph of its own.
    with tf.Graph().as_default() as g, tf.compat.v1.Session(graph=g) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        sig = meta.signature_def["serving_default"]
        probs = sess.run(
            sig.outputs["probabilities"].name,
            {sig.inputs["x"].name: mnist_data.eval_x[:100]},
        )
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_export_to_tpu_false_exports_only_serve(trained, tmp_path):
    calls = []
    est = _estimator(trained.model_dir, model_fn=make_model_fn(calls=calls), export_to_tpu=False)
    export_dir = os.fsdecode(
        est.export_saved_model(str(tmp_path / "export_cpu"), serving_input_receiver_fn)
    )
    assert _tag_sets(export_dir) == [("serve",)]
    # model_fn is called in PREDICT mode without a batch size during export.
    assert calls and all(mode == tpu_nb.ModeKeys.PREDICT for mode, _ in calls)
    assert all("batch_size" not in params for _, params in calls)
