"""Training-loop contract of the unsharded path (use_tpu=False): loop schedule seen
by hooks, checkpointing, resume, warm start, scaffold_fn, host_call,
CrossShardOptimizer on CPU, model_fn signatures and the batch sizes handed to
input_fn / model_fn."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import tpu_nb
from conftest import (
    StepRecorder,
    checkpoint_steps,
    find_variable,
    make_eval_input_fn,
    make_model_fn,
    make_predict_input_fn,
    make_train_input_fn,
)

pytestmark = pytest.mark.slow

# Small slices keep graph building, not data, the dominant cost.
N_TRAIN = 256


def _estimator(model_dir, ipl=4, model_fn=None, config_kwargs=None, **kwargs):
    config = tpu_nb.RunConfig(
        tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl), **(config_kwargs or {})
    )
    kwargs.setdefault("train_batch_size", 16)
    kwargs.setdefault("eval_batch_size", 16)
    kwargs.setdefault("predict_batch_size", 16)
    return tpu_nb.TPUEstimator(
        model_fn=model_fn or make_model_fn(),
        model_dir=model_dir,
        config=config,
        use_tpu=False,
        **kwargs,
    )


@pytest.fixture
def train_input_fn(mnist_data):
    return make_train_input_fn(mnist_data.train_x[:N_TRAIN], mnist_data.train_y[:N_TRAIN])


def _train(est, input_fn, **kwargs):
    hook = StepRecorder()
    est.train(input_fn, hooks=[hook], **kwargs)
    return hook.steps


# --------------------------------------------------------------------------- loop schedule


def test_loop_schedule_steps_and_resume(tmp_model_dir, train_input_fn, tmp_path):
    """ipl=4: train(steps=10) -> 4, 8, 10; from a checkpoint at 3: 7, 11, 13;
    max_steps at or below the checkpointed step skips training."""
    est = _estimator(tmp_model_dir)
    assert _train(est, train_input_fn, steps=10) == [4, 8, 10]
    assert est.latest_checkpoint().endswith("model.ckpt-10")

    other = _estimator(str(tmp_path / "from3"))
    assert _train(other, train_input_fn, steps=3) == [3]
    assert _train(other, train_input_fn, steps=10) == [7, 11, 13]
    assert int(other.get_variable_value("global_step")) == 13

    # max_steps already reached (equal, then below): no training, no new checkpoint.
    before = other.latest_checkpoint()
    assert _train(other, train_input_fn, max_steps=13) == []
    assert _train(other, train_input_fn, max_steps=5) == []
    assert other.latest_checkpoint() == before
    assert int(other.get_variable_value("global_step")) == 13


def test_loop_schedule_max_steps_from_checkpoint(tmp_model_dir, train_input_fn):
    """ipl=4, checkpoint at 3, max_steps=10 -> 7, 10."""
    est = _estimator(tmp_model_dir)
    assert _train(est, train_input_fn, steps=3) == [3]
    assert _train(est, train_input_fn, max_steps=10) == [7, 10]
    assert int(est.get_variable_value("global_step")) == 10


def test_train_without_steps_runs_until_input_ends(tmp_model_dir, mnist_data):
    """Unsharded training needs neither steps nor max_steps: it stops at the end of
    the input (5 batches of 16 here), even in the middle of a loop of 4."""
    input_fn = make_train_input_fn(
        mnist_data.train_x[:80], mnist_data.train_y[:80], shuffle=False, repeat=False
    )
    est = _estimator(tmp_model_dir)
    est.train(input_fn)
    assert int(est.get_variable_value("global_step")) == 5
    assert est.latest_checkpoint().endswith("model.ckpt-5")


# --------------------------------------------------------------------------- checkpoints


def test_keep_checkpoint_max(tmp_model_dir, train_input_fn):
    est = _estimator(
        tmp_model_dir, config_kwargs=dict(save_checkpoints_steps=4, keep_checkpoint_max=2)
    )
    est.train(train_input_fn, steps=16)
    assert checkpoint_steps(tmp_model_dir) == {12, 16}
    state = tf.train.get_checkpoint_state(tmp_model_dir)
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["12", "16"]


def test_save_checkpoints_steps_rounded_to_loop_boundaries(tmp_model_dir, train_input_fn):
    """ipl=4, save_checkpoints_steps=6, 20 steps: a checkpoint can only be written
    where a loop ends; the first is due after step 6, so at the loop ending at 8
    (not at 4); the final step is always checkpointed."""
    est = _estimator(
        tmp_model_dir, config_kwargs=dict(save_checkpoints_steps=6, keep_checkpoint_max=20)
    )
    steps = _train(est, train_input_fn, steps=20)
    assert steps == [4, 8, 12, 16, 20]
    saved = checkpoint_steps(tmp_model_dir)
    assert 20 in saved and 8 in saved
    assert 4 not in saved
    assert saved <= {0, 8, 12, 16, 20}
    # Not every loop end: the interval is honoured (at most one of 12 / 16 beside 8).
    assert len(saved & {12, 16}) == 1


def test_resume_from_model_dir_restores_variables_and_step(tmp_model_dir, train_input_fn):
    first = _estimator(tmp_model_dir)
    assert _train(first, train_input_fn, steps=6) == [4, 6]
    kernel_name = find_variable(first, "hidden/kernel")
    saved_kernel = first.get_variable_value(kernel_name)

    class RestoreProbe(tf.compat.v1.train.SessionRunHook):
        def begin(self):
            self._var = [
                v for v in tf.compat.v1.global_variables() if v.op.name == kernel_name
            ][0]
            self.value = None

        def after_create_session(self, session, coord):
            self.value = session.run(self._var)

    probe = RestoreProbe()
    recorder = StepRecorder()
    second = _estimator(tmp_model_dir)  # a new estimator object on the same model_dir
    second.train(train_input_fn, steps=4, hooks=[probe, recorder])
    np.testing.assert_array_equal(probe.value, saved_kernel)
    assert recorder.steps == [10]
    assert second.latest_checkpoint().endswith("model.ckpt-10")
    assert not np.allclose(second.get_variable_value(kernel_name), saved_kernel)


def test_warm_start_from_another_model_dir(tmp_model_dir, train_input_fn, tmp_path):
    source = _estimator(tmp_model_dir)
    source.train(train_input_fn, steps=8)

    # learning_rate=0: one training step leaves the warm-started values unchanged.
    target = _estimator(
        str(tmp_path / "warm"),
        model_fn=make_model_fn(learning_rate=0.0),
        warm_start_from=tmp_model_dir,
    )
    target.train(train_input_fn, steps=1)
    for name in ("hidden/kernel", "hidden/bias", "logits/kernel", "logits/bias"):
        np.testing.assert_allclose(
            target.get_variable_value(find_variable(target, name)),
            source.get_variable_value(find_variable(source, name)),
            rtol=0,
            atol=1e-7,
        )
    # Warm start copies the model's variables, it is not a resume: a fresh global step.
    assert int(target.get_variable_value("global_step")) == 1


def test_scaffold_fn_initializes_from_checkpoint(tmp_model_dir, train_input_fn, tmp_path):
    source = _estimator(tmp_model_dir)
    source.train(train_input_fn, steps=8)
    source_ckpt = source.latest_checkpoint()
    called = []

    def scaffold_fn():
        # tf_keras layers do not create variables through tf.compat.v1.get_variable,
        # so the assignment map names the variable objects themselves.
        model_vars = {
            v.op.name: v
            for v in tf.compat.v1.global_variables()
            if v.op.name.split("/")[0] in ("hidden", "logits") and "Adam" not in v.op.name
        }
        called.append(sorted(model_vars))
        tf.compat.v1.train.init_from_checkpoint(source_ckpt, model_vars)
        return tf.compat.v1.train.Scaffold()

    target = _estimator(
        str(tmp_path / "scaffold"),
        model_fn=make_model_fn(learning_rate=0.0, scaffold_fn=scaffold_fn),
    )
    target.train(train_input_fn, steps=1)
    assert called and len(called[0]) == 4, called
    for name in ("hidden/kernel", "logits/bias"):
        np.testing.assert_allclose(
            target.get_variable_value(find_variable(target, name)),
            source.get_variable_value(find_variable(source, name)),
            rtol=0,
            atol=1e-7,
        )


def test_scaffold_fn_init_fn_runs_on_fresh_session(tmp_model_dir, train_input_fn):
    def scaffold_fn():
        bias = [v for v in tf.compat.v1.global_variables() if v.op.name.endswith("logits/bias")]
        assign = bias[0].assign(tf.fill([10], 0.5))

        def init_fn(scaffold, session):
            session.run(assign)

        return tf.compat.v1.train.Scaffold(init_fn=init_fn)

    est = _estimator(tmp_model_dir, model_fn=make_model_fn(learning_rate=0.0, scaffold_fn=scaffold_fn))
    est.train(train_input_fn, steps=1)
    np.testing.assert_allclose(est.get_variable_value(find_variable(est, "logits/bias")), 0.5)


# --------------------------------------------------------------------------- host_call


def _events(model_dir, tag):
    """(step, value) of every summary with `tag` in model_dir's own event files."""
    found = []
    for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    if value.HasField("tensor"):
                        v = float(tf.make_ndarray(value.tensor))
                    else:
                        v = value.simple_value
                    found.append((event.step, v))
    return sorted(found)


def test_host_call_with_scalars_runs_every_step(tmp_model_dir, train_input_fn):
    model_dir = tmp_model_dir

    def host_call(loss, global_step):
        def host_fn(step, loss_value):
            with tf.summary.create_file_writer(model_dir, max_queue=100).as_default():
                with tf.summary.record_if(True):
                    tf.summary.scalar("host_call_loss", loss_value, step=step)
                    return tf.compat.v1.summary.all_v2_summary_ops()

        # Scalars are fine unsharded.
        return (host_fn, [global_step, loss])

    est = _estimator(model_dir, model_fn=make_model_fn(host_call=host_call))
    recorder = StepRecorder()
    est.train(train_input_fn, steps=8, hooks=[recorder])

    # Loops are not broken up into one session run per step by the host call.
    assert recorder.steps == [4, 8]
    events = _events(model_dir, "host_call_loss")
    steps = [s for s, _ in events]
    assert len(events) == 8, events
    assert len(set(steps)) == 8 and max(steps) - min(steps) == 7, steps
    values = np.array([v for _, v in events])
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    # Per-step losses, not one value repeated.
    assert len(set(values.round(6))) > 1


def test_host_call_dict_tensors_passed_as_keywords(tmp_model_dir, train_input_fn):
    ran = []

    def record(step, loss_value):
        ran.append((int(step), float(loss_value)))
        return np.int64(step)

    def host_call(loss, global_step):
        def host_fn(loss_value, step):
            return tf.compat.v1.py_func(record, [step, loss_value], tf.int64)

        # Dict order differs from the argument order: passed by keyword.
        return (host_fn, {"step": global_step, "loss_value": loss})

    est = _estimator(tmp_model_dir, model_fn=make_model_fn(host_call=host_call))
    est.train(train_input_fn, steps=8)
    assert len(ran) == 8, ran
    steps = [s for s, _ in ran]
    assert len(set(steps)) == 8 and max(steps) - min(steps) == 7, steps
    assert all(np.isfinite(l) and l > 0 for _, l in ran)


# --------------------------------------------------------------------------- optimizer


def test_cross_shard_optimizer_trains_like_wrapped_optimizer_on_cpu(tmp_path, train_input_fn, mnist_data):
    plain = _estimator(str(tmp_path / "plain"), model_fn=make_model_fn(), ipl=5)
    cross = _estimator(str(tmp_path / "cross"), model_fn=make_model_fn(cross_shard=True), ipl=5)
    input_fn = make_train_input_fn(
        mnist_data.train_x[:N_TRAIN], mnist_data.train_y[:N_TRAIN], shuffle=False
    )
    plain.train(input_fn, steps=15)
    cross.train(input_fn, steps=15)
    assert int(cross.get_variable_value("global_step")) == 15
    for name in ("hidden/kernel", "logits/kernel", "logits/bias"):
        np.testing.assert_allclose(
            cross.get_variable_value(find_variable(cross, name)),
            plain.get_variable_value(find_variable(plain, name)),
            rtol=1e-5,
            atol=1e-6,
        )
    # And it did learn something.
    results = cross.evaluate(
        make_eval_input_fn(mnist_data.eval_x[:256], mnist_data.eval_y[:256]), steps=None
    )
    assert results["loss"] < np.log(10)


# --------------------------------------------------------------------------- model_fn / params


# A model_fn without params ("minimal") is refused, as the original: tests/test_model_fn_checks.py.
@pytest.mark.parametrize("signature", ["params"])
def test_model_fn_with_fewer_arguments(signature, tmp_model_dir, train_input_fn, mnist_data):
    est = _estimator(tmp_model_dir, model_fn=make_model_fn(signature=signature))
    est.train(train_input_fn, steps=2)
    assert int(est.get_variable_value("global_step")) == 2
    results = est.evaluate(
        make_eval_input_fn(mnist_data.eval_x[:32], mnist_data.eval_y[:32]), steps=1
    )
    assert int(results["global_step"]) == 2 and "accuracy" in results
    preds = list(est.predict(make_predict_input_fn(mnist_data.eval_x[:20])))
    assert [int(p["index"]) for p in preds] == list(range(20))


def test_unsharded_batch_sizes_and_params(tmp_model_dir, mnist_data):
    """input_fn and model_fn get the global batch sizes unmodified; user params and
    use_tpu=False are passed to model_fn."""
    model_calls, input_calls = [], []
    est = _estimator(
        tmp_model_dir,
        model_fn=make_model_fn(calls=model_calls),
        params={"hello": "world"},
        train_batch_size=24,
        eval_batch_size=12,
        predict_batch_size=8,
    )
    est.train(
        make_train_input_fn(mnist_data.train_x[:96], mnist_data.train_y[:96], calls=input_calls),
        steps=2,
    )
    est.evaluate(
        make_eval_input_fn(mnist_data.eval_x[:24], mnist_data.eval_y[:24], calls=input_calls),
        steps=1,
    )
    preds = list(est.predict(make_predict_input_fn(mnist_data.eval_x[:10], calls=input_calls)))
    assert len(preds) == 10

    assert input_calls == [("train", 24), ("eval", 12), ("predict", 8)]
    by_mode = {mode: params for mode, params in model_calls}
    assert set(by_mode) == {tpu_nb.ModeKeys.TRAIN, tpu_nb.ModeKeys.EVAL, tpu_nb.ModeKeys.PREDICT}
    assert by_mode[tpu_nb.ModeKeys.TRAIN]["batch_size"] == 24
    assert by_mode[tpu_nb.ModeKeys.EVAL]["batch_size"] == 12
    assert by_mode[tpu_nb.ModeKeys.PREDICT]["batch_size"] == 8
    for params in by_mode.values():
        assert params["hello"] == "world"
        assert params["use_tpu"] is False
