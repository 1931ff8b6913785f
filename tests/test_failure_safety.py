"""Nothing is lost on failure: NaN loss, Ctrl-C, a second trainer, kill -9."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import checkpoint_step, estimator, train_input_fn

HERE = os.path.dirname(os.path.abspath(__file__))


class _StepRecorder(tf.compat.v1.train.SessionRunHook):
    def __init__(self, on_step=None):
        self.steps = []
        self.on_step = on_step

    def begin(self):
        self._gs = tf.compat.v1.train.get_global_step()

    def after_run(self, run_context, run_values):
        step = run_context.session.run(self._gs)
        self.steps.append(int(step))
        if self.on_step:
            self.on_step(step)


def test_nan_loss_names_the_step_and_keeps_last_good_checkpoint(tmp_path):
    est = estimator(tmp_path, iterations_per_loop=4, params={"nan_at_step": 7}, save_checkpoints_steps=4)
    with pytest.raises(tpu_nb.NanLossError, match=r"NaN at global step 7"):
        est.train(train_input_fn, steps=20)
    # Step 4 was checkpointed at its loop boundary; the poisoned state at step 7 was not saved.
    assert checkpoint_step(tmp_path) == 4
    # The latest checkpoint restores and holds finite weights.
    kernel = tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path)), "logits/kernel")
    assert (kernel == kernel).all()


def test_nan_loss_is_a_nan_loss_during_training_error(tmp_path):
    est = estimator(tmp_path, params={"nan_at_step": 1})
    with pytest.raises(tf.compat.v1.train.NanLossDuringTrainingError):
        est.train(train_input_fn, steps=4)
    assert checkpoint_step(tmp_path) == 0


def test_ctrl_c_stops_at_loop_boundary_with_checkpoint(tmp_path, sigint_handler):
    sigint_handler(signal.default_int_handler)  # as in an interactive session
    est = estimator(tmp_path, iterations_per_loop=4)
    recorder = _StepRecorder(on_step=lambda step: step == 8 and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt, match="step 8"):
        est.train(train_input_fn, steps=1000, hooks=[recorder])
    assert recorder.steps == [4, 8]
    assert checkpoint_step(tmp_path) == 8
    # The default SIGINT behaviour is back after train() returns.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # Running train() again resumes from the interrupted step.
    recorder = _StepRecorder()
    est.train(train_input_fn, steps=4, hooks=[recorder])
    assert recorder.steps == [12]


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path, sigint_handler):
    # How a shell without job control starts a background job ('python train.py &' in a script).
    sigint_handler(signal.SIG_IGN)
    est = estimator(tmp_path, iterations_per_loop=4)
    recorder = _StepRecorder(on_step=lambda step: step == 4 and os.kill(os.getpid(), signal.SIGINT))
    est.train(train_input_fn, steps=12, hooks=[recorder])
    assert recorder.steps == [4, 8, 12]
    assert checkpoint_step(tmp_path) == 12
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_request_stop_from_another_thread(tmp_path):
    est = estimator(tmp_path, iterations_per_loop=2)
    recorder = _StepRecorder(on_step=lambda step: step == 6 and est.request_stop("Stop button"))
    est.train(train_input_fn, steps=1000, hooks=[recorder])
    assert recorder.steps[-1] == 6
    assert checkpoint_step(tmp_path) == 6
    assert est.request_stop() is False  # nothing running any more


_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from tpu_nb.run.model_dir_lock import ModelDirLock
    lock = ModelDirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_second_trainer_refused_and_stale_lock_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        est = estimator(tmp_path)
        with pytest.raises(tpu_nb.ModelDirBusyError, match=rf"process {holder.pid} on"):
            est.train(train_input_fn, steps=4)
        assert checkpoint_step(tmp_path) is None  # refused before any work
    finally:
        holder.kill()  # like kill -9: the lock file stays behind
        holder.wait()
    assert os.path.exists(os.path.join(tmp_path, ".tpu_nb_train.lock"))
    est.train(train_input_fn, steps=4)
    assert checkpoint_step(tmp_path) == 4


_TRAIN_FOREVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from model_zoo import estimator, train_input_fn
    est = estimator(sys.argv[1], iterations_per_loop=1, save_checkpoints_steps=1, keep_checkpoint_max=2)
    print("start", flush=True)
    est.train(train_input_fn, steps=100000)
    """
)


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_restorable_checkpoint(tmp_path):
    # Checkpoints are written every step, so kills land inside saves as well as between them. The first kill
    # waits for a first checkpoint (a loaded machine may take seconds to get there); later ones need none.
    for i, delay in enumerate([0.3, 0.6, 0.9, 1.2]):
        proc = subprocess.Popen([sys.executable, "-c", _TRAIN_FOREVER, str(tmp_path), HERE],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "start"
        deadline = time.monotonic() + 120
        while tf.train.latest_checkpoint(str(tmp_path)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        path = tf.train.latest_checkpoint(str(tmp_path))
        assert path is not None, f"no checkpoint after kill #{i}"
        reader = tf.train.load_checkpoint(path)
        for name in ("global_step", "logits/kernel", "logits/bias"):
            reader.get_tensor(name)  # raises if the checkpoint is torn
    # And training resumes from it.
    before = checkpoint_step(tmp_path)
    estimator(tmp_path, iterations_per_loop=1).train(train_input_fn, steps=2)
    assert checkpoint_step(tmp_path) == before + 2
