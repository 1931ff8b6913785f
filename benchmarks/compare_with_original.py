"""Runs the same TPUEstimator program on the original (TF 2.15 + tensorflow-estimator) and on tpu_nb.

The original needs its own interpreter (it does not import on TF >= 2.16)::

    python3 -m venv /tmp/orig && /tmp/orig/bin/pip install tensorflow-cpu==2.15.1 tensorflow-estimator==2.15.0
    python benchmarks/compare_with_original.py --original-python /tmp/orig/bin/python

Prints accuracy, loss, prediction count/order, export tag sets and training time side by side.
"""

import argparse
import json
import os
import subprocess
import sys

PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_program.py")


def run(python, impl):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if impl == "original":
        # The original's venv has no tf_keras: a shell that exported TF_USE_LEGACY_KERAS=1 (as tpu_nb advises
        # for Keras 2) would make its TensorFlow fail to import Keras.
        env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([python, PROGRAM, impl], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original-python", required=True, help="interpreter with TF 2.15 + tensorflow-estimator")
    args = parser.parse_args(argv)
    original = run(args.original_python, "original")
    ours = run(sys.executable, "tpu_nb")
    keys = ["tf", "global_step", "accuracy", "loss", "predictions", "in_order", "predict_accuracy", "export_tags", "train_s"]
    print(f"{'':18s}{'original':>28s}{'tpu_nb':>28s}")
    for key in keys:
        print(f"{key:18s}{str(original[key]):>28s}{str(ours[key]):>28s}")
    print(f"accuracy difference: {abs(original['accuracy'] - ours['accuracy']):.6f}")
    print(f"train time ratio (original / tpu_nb): {original['train_s'] / ours['train_s']:.2f}x")


if __name__ == "__main__":
    main()
