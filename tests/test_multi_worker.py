"""Two workers on 127.0.0.1 train in lock step, checkpoint, resume, and fail cleanly when one dies."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from free_ports import free_ports

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_job.py")
pytestmark = pytest.mark.slow


def _start(model_dir, steps, pause=0.0, ports=None):
    ports = ports or free_ports()
    return [subprocess.Popen([sys.executable, JOB, str(i), ports, str(model_dir), str(steps), str(pause)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=180):
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_workers_train_in_step_checkpoint_and_resume(tmp_path):
    first = _finish(_start(tmp_path, 20))
    for result in first:
        assert result["steps"] == [5, 10, 15, 20]
    np.testing.assert_allclose(first[0]["kernel"], first[1]["kernel"], atol=1e-6)  # replicas stayed in sync
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest.endswith("model.ckpt-20")  # only the chief writes model_dir
    np.testing.assert_allclose(tf.train.load_variable(latest, "logits/kernel"), first[0]["kernel"], atol=1e-6)

    second = _finish(_start(tmp_path, 10))
    for result in second:
        assert result["steps"] == [25, 30]  # both restored step 20 from the chief's checkpoint
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-30")


def test_killed_worker_ends_the_run_with_a_clear_error_not_a_hang(tmp_path):
    procs = _start(tmp_path, 100000, pause=0.05)
    chief, other = procs
    try:
        # Wait until training is under way, then kill worker 1 like a lost machine.
        for line in chief.stdout:
            if line.startswith("step 20"):
                break
        started = time.monotonic()
        other.send_signal(signal.SIGKILL)
        _, err = chief.communicate(timeout=90)
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert chief.returncode != 0
    assert "WorkerLostError" in err and "peer worker stopped responding" in err
    assert elapsed < 60  # operation_timeout_secs=10 bounds it; TensorFlow alone could hang for good
    # What was checkpointed before the loss still restores.
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest is not None
    tf.train.load_checkpoint(latest).get_tensor("logits/kernel")
