"""Programs written for the original, run unchanged through ``python -m tpu_nb run`` and compared.

* tests/foreign_programs/train_and_evaluate_program.py calls ``tf_estimator.train_and_evaluate`` with the
  three exporters; with TPU_NB_ORIGINAL_PYTHON (a python with TF 2.15 + tensorflow-estimator) it also runs
  on the original, and both must evaluate the same checkpoints, keep the same exports and give the same
  metrics.
* With TPU_NB_TENSORFLOW_TPU pointing at a clone of tensorflow/tpu, its published MNIST program
  (models/official/mnist/mnist_tpu.py, byte-for-byte) trains, evaluates and predicts on synthetic
  TFRecords, on one device and on 8 simulated shards.
"""

import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TRAIN_AND_EVALUATE = os.path.join(HERE, "foreign_programs", "train_and_evaluate_program.py")
ORIGINAL = os.environ.get("TPU_NB_ORIGINAL_PYTHON")
TENSORFLOW_TPU = os.environ.get("TPU_NB_TENSORFLOW_TPU")

pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    for name in ("TPU_NB_SIMULATE", "TF_USE_LEGACY_KERAS", "TF_CONFIG"):
        env.pop(name, None)
    return env


def _run(command, timeout=600):
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _tpu_nb_run(*args):
    return _run([sys.executable, "-m", "tpu_nb", "run", *args])


def test_train_and_evaluate_program_runs_unchanged_and_matches_the_original(tmp_path):
    ours = json.loads(_tpu_nb_run(TRAIN_AND_EVALUATE, str(tmp_path / "ours")).stdout.splitlines()[-1])
    # save_checkpoints_steps=4, max_steps=12: the checkpoints at 4, 8 and 12 are evaluated.
    assert ours["evaluated_steps"] == [4, 8, 12]
    assert ours["kept"] == {"latest": 2, "best": 2, "final": 1}
    assert ours["exported"] == [True, False, True]
    assert ours["metrics"]["global_step"] == 12 and ours["metrics"]["accuracy"] > 0.9
    if not ORIGINAL:
        pytest.skip("set TPU_NB_ORIGINAL_PYTHON to compare with TF 2.15 + tensorflow-estimator")
    original = json.loads(_run([ORIGINAL, TRAIN_AND_EVALUATE, str(tmp_path / "original")]).stdout.splitlines()[-1])
    assert ours["evaluated_steps"] == original["evaluated_steps"]
    assert ours["kept"] == original["kept"] and ours["exported"] == original["exported"]
    for key, value in original["metrics"].items():
        assert ours["metrics"][key] == pytest.approx(value, rel=1e-4), key


def _mnist_records(data_dir):
    # The benchmark's writer (benchmarks/published_vs_original.py), with fewer training examples.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    try:
        from published_vs_original import mnist_records
    finally:
        sys.path.pop(0)
    mnist_records(data_dir, train=256)


@pytest.mark.skipif(not TENSORFLOW_TPU, reason="set TPU_NB_TENSORFLOW_TPU to a clone of tensorflow/tpu")
@pytest.mark.parametrize("simulate", [None, "8x1"])
def test_published_mnist_program_runs_unchanged(tmp_path, simulate):
    program = os.path.join(TENSORFLOW_TPU, "models", "official", "mnist", "mnist_tpu.py")
    _mnist_records(str(tmp_path))
    # --tpu=local: the program builds a TPUClusterResolver, which needs a TPU name off Cloud TPU VMs.
    flags = [program, "--tpu=local", f"--data_dir={tmp_path}", f"--model_dir={tmp_path / 'model'}",
             "--batch_size=16", "--train_steps=20", "--eval_steps=4", "--iterations=10"]
    if simulate:
        done = _tpu_nb_run("--simulate", simulate, *flags)
    else:
        done = _tpu_nb_run(*flags, "--use_tpu=False")
    log = done.stderr
    assert re.search(r"Saving dict for global step 20: accuracy = [0-9.]+, global_step = 20, loss = [0-9.]+", log)
    assert len(re.findall(r'Prediction is "\d" \(', log)) == 10
    assert ("simulated TPU 8x1" in log) == bool(simulate)
