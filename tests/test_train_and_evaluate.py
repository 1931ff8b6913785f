"""train_and_evaluate with TrainSpec / EvalSpec and the exporters, with the original's semantics.

A tiny linear classifier trains to max_steps=6 saving a checkpoint every 2 steps: the original evaluates
the checkpoints at 2, 4 and 6 (not the one written before the first step), runs the exporters after each
evaluation and returns the last evaluation's metrics.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb
from tpu_nb.estimator.exporters import BestExporter, Exporter, FinalExporter, LatestExporter
from tpu_nb.estimator.train_eval import EvalSpec, TrainSpec, _run_evaluator, train_and_evaluate

FEATURES = 4


def _data():
    rng = np.random.RandomState(3)
    x = rng.normal(size=(64, FEATURES)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _model_fn(features, labels, mode, params):
    w = tf.compat.v1.get_variable("w", [FEATURES, 2], initializer=tf.compat.v1.zeros_initializer())
    logits = tf.matmul(features["x"], w)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={"logits": logits})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step(), var_list=[w])
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _input_fn(params):
    x, y = _data()
    return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(params["batch_size"],
                                                                             drop_remainder=True)


def _receiver_fn():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    return tpu_nb.ServingInputReceiver({"x": x}, {"x": x})


def _estimator(model_dir):
    config = tpu_nb.RunConfig(model_dir=str(model_dir), save_checkpoints_steps=2,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=1))
    return tpu_nb.TPUEstimator(_model_fn, config=config, use_tpu=False, train_batch_size=16, eval_batch_size=16)


def _evaluated_steps(model_dir, name="eval"):
    steps = []
    for path in glob.glob(os.path.join(str(model_dir), name, "events.out.tfevents.*")):
        steps += [e.step for e in tf.compat.v1.train.summary_iterator(path)
                  if e.HasField("summary") and any(v.tag == "loss" for v in e.summary.value)]
    return sorted(steps)


def _exports(model_dir, name):
    return sorted(os.listdir(os.path.join(str(model_dir), "export", name)))


def test_evaluates_every_new_checkpoint_and_runs_the_exporters(tmp_path):
    exporters = [LatestExporter("latest", _receiver_fn, exports_to_keep=2), FinalExporter("final", _receiver_fn),
                 BestExporter("best", _receiver_fn,
                              compare_fn=lambda best_eval_result, current_eval_result:
                              current_eval_result["global_step"] == 4)]
    metrics, exports = train_and_evaluate(
        _estimator(tmp_path), TrainSpec(_input_fn, max_steps=6),
        EvalSpec(_input_fn, steps=2, throttle_secs=0, exporters=exporters))
    assert _evaluated_steps(tmp_path) == [2, 4, 6]  # not the checkpoint written before the first step
    assert metrics["global_step"] == 6 and set(metrics) == {"loss", "global_step"}
    assert len(_exports(tmp_path, "latest")) == 2  # exports_to_keep: the newest 2 of 3
    assert len(_exports(tmp_path, "final")) == 1  # only after the evaluation at max_steps
    assert len(_exports(tmp_path, "best")) == 2  # the first evaluation, then when compare_fn said better
    latest, final, best = exports
    assert os.path.basename(latest.decode()) == _exports(tmp_path, "latest")[-1]
    assert os.path.basename(final.decode()) == _exports(tmp_path, "final")[0]
    assert best is None  # the evaluation at 6 was not better
    assert os.path.isfile(os.path.join(latest.decode(), "saved_model.pb"))


def test_throttle_secs_skips_checkpoints_but_the_last_is_always_evaluated(tmp_path):
    metrics, exports = train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=6),
                                          EvalSpec(_input_fn, steps=1, name="held_out", throttle_secs=3600))
    assert _evaluated_steps(tmp_path, "eval_held_out") == [2, 6]  # first trained one, then the last
    assert metrics["global_step"] == 6 and exports == []


def test_best_exporter_exports_first_then_only_when_loss_is_smaller_across_restarts(tmp_path):
    def spec():
        return EvalSpec(_input_fn, steps=2, throttle_secs=0, exporters=BestExporter("best", _receiver_fn,
                                                                                    exports_to_keep=None))
    train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=4), spec())
    first_run = _exports(tmp_path, "best")
    assert len(first_run) == 2  # loss falls: step 2 (first export), step 4 (smaller)
    # A restarted job (new estimator, new exporter) continues; its first evaluation exports again, as the
    # original's did, and later ones compare with the best so far.
    metrics, (best,) = train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=8), spec())
    assert _evaluated_steps(tmp_path) == [2, 4, 6, 8]
    assert len(_exports(tmp_path, "best")) == 4 and best is not None and metrics["global_step"] == 8


def test_evaluator_task_evaluates_the_chiefs_checkpoints_until_max_steps(tmp_path, monkeypatch):
    _estimator(tmp_path).train(_input_fn, max_steps=4)  # what the chief wrote
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, '
                                    '"task": {"type": "evaluator", "index": 0}}')
    sleeps = []
    metrics, (final,) = train_and_evaluate(
        _estimator(tmp_path), TrainSpec(_input_fn, max_steps=4),
        EvalSpec(_input_fn, steps=1, start_delay_secs=0, exporters=FinalExporter("final", _receiver_fn)))
    assert metrics["global_step"] == 4 and final is not None
    assert _evaluated_steps(tmp_path) == [4]
    # Before the final checkpoint exists it waits throttle_secs between evaluations.
    est = _estimator(tmp_path)
    monkeypatch.setattr(est, "latest_checkpoint", lambda: None)
    with pytest.raises(RuntimeError, match="stop"):
        def sleep(secs):
            sleeps.append(secs)
            if len(sleeps) == 3:
                raise RuntimeError("stop")
        _run_evaluator(est, TrainSpec(_input_fn, max_steps=8), EvalSpec(_input_fn, start_delay_secs=5,
                                                                       throttle_secs=30), sleep=sleep)
    assert sleeps[0] == 5 and 29 <= sleeps[1] <= 30


@pytest.mark.parametrize("make,error,message", [
    (lambda: TrainSpec(_input_fn, max_steps=0), ValueError, "max_steps > 0"),
    (lambda: TrainSpec("not callable"), TypeError, "input_fn` must be callable"),
    (lambda: TrainSpec(_input_fn, hooks=[object()]), TypeError, "SessionRunHook"),
    (lambda: EvalSpec(_input_fn, steps=-1), ValueError, "steps > 0"),
    (lambda: EvalSpec(_input_fn, throttle_secs=-1), ValueError, "throttle_secs >= 0"),
    (lambda: EvalSpec(_input_fn, name=3), TypeError, "`name` must be string"),
    (lambda: EvalSpec(_input_fn, exporters=[LatestExporter("a", _receiver_fn), FinalExporter("a", _receiver_fn)]),
     ValueError, "unique names"),
    (lambda: EvalSpec(_input_fn, exporters=["latest"]), TypeError, "must be an Exporter"),
    (lambda: LatestExporter("a", _receiver_fn, exports_to_keep=0), ValueError, "exports_to_keep"),
    (lambda: LatestExporter("a", None), ValueError, "serving_input_receiver_fn"),
    (lambda: BestExporter("b", _receiver_fn, compare_fn=lambda a, b: True), ValueError, "best_eval_result"),
    (lambda: train_and_evaluate("estimator", TrainSpec(_input_fn), EvalSpec(_input_fn)), TypeError, "estimator"),
])
def test_mistakes_in_the_specs_name_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_custom_exporter_gets_the_evaluation(tmp_path):
    seen = []

    class Recorder(Exporter):
        name = "recorder"

        def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
            seen.append((os.path.basename(export_path), eval_result["global_step"], is_the_final_export))
            return checkpoint_path

    train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=4),
                       EvalSpec(_input_fn, steps=1, throttle_secs=0, exporters=Recorder()))
    assert seen == [("recorder", 2, False), ("recorder", 4, True)]


def test_a_parameter_server_task_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}')
    with pytest.raises(ValueError, match="no parameter servers"):
        train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=2), EvalSpec(_input_fn))


def test_chief_task_only_trains_and_leaves_evaluation_to_the_evaluator(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["localhost:2222"]}, "task": {"type": "chief", "index": 0}}')
    metrics, exports = train_and_evaluate(_estimator(tmp_path), TrainSpec(_input_fn, max_steps=4),
                                          EvalSpec(_input_fn, steps=1, throttle_secs=0,
                                                   exporters=FinalExporter("final", _receiver_fn)))
    assert (metrics, exports) == (None, [])
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-4")
    assert _evaluated_steps(tmp_path) == [] and not os.path.exists(os.path.join(str(tmp_path), "export"))
