"""A distributed train_and_evaluate job as TF_CONFIG describes it: two workers train in lock step while
an evaluator task, a process of its own, evaluates and exports the chief's checkpoints as they come."""

import json
import os
import subprocess
import sys

import pytest

from free_ports import free_ports

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_and_evaluate_job.py")
pytestmark = pytest.mark.slow


def test_the_evaluator_task_evaluates_the_chiefs_checkpoints_while_the_workers_train(tmp_path):
    ports, max_steps = free_ports(), 15
    procs = {task: subprocess.Popen([sys.executable, JOB, task, ports, str(tmp_path), str(max_steps)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for task in ("evaluator", "worker:0", "worker:1")}
    results = {}
    try:
        for task, proc in procs.items():
            out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, f"{task} failed:\n{err[-3000:]}"
            results[task] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    evaluator = results["evaluator"]
    # Every checkpoint the chief wrote after step 0 was evaluated, the ones written mid-training among
    # them (the chief waited for each), and the evaluator stopped after the one at max_steps. The step-0
    # checkpoint is evaluated too when the evaluator polls before step 5 is written, as the original's did.
    assert [step for step in evaluator["evaluated_steps"] if step] == [5, 10, 15]
    assert evaluator["evaluated_steps"][0] in (0, 5)
    assert evaluator["metrics"]["global_step"] == max_steps and 0 <= evaluator["metrics"]["accuracy"] <= 1
    # LatestExporter ran after each evaluation and kept two exports.
    assert all(evaluator["exports"]) and len(os.listdir(tmp_path / "export" / "latest")) == 2
    # The workers only trained: in a TF_CONFIG job, evaluation is the evaluator's.
    for worker in ("worker:0", "worker:1"):
        assert results[worker]["metrics"] == {} and results[worker]["exports"] == []
