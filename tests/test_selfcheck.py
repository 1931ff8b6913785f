"""``python -m tpu_nb.selfcheck``: passes on CPU and simulated shards, names every backend and check, fails loudly.

The end-to-end runs start the command in a fresh process, as a user would; the comparison and the
report are checked directly with results made to be wrong in the ways a broken backend would be.
"""

import copy
import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from tpu_nb.selfcheck import compare
from tpu_nb.selfcheck import model
from tpu_nb.selfcheck import worker
from tpu_nb.selfcheck import cli as selfcheck

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ("train loss", "trained weights", "eval metrics", "predictions", "export serve")


def _run_command(*args, timeout=600, tmpdir=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.pop("TPU_NAME", None)  # the self-check would try a TPU named there
    return subprocess.run([sys.executable, "-m", "tpu_nb.selfcheck", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _records(backend, values_by_phase, description="simulated TPU 8x2 (8 shards on CPU, 2 hosts)", shards=8,
             finished=True, failed=None):
    """Worker records for one backend, as _selfcheck_worker writes them."""
    records = [{"type": "backend_started", "backend": backend},
               {"type": "topology", "backend": backend, "description": description, "shards": shards, "hosts": 1}]
    for phase, values in values_by_phase.items():
        records.append({"type": "phase", "backend": backend, "phase": phase, "seconds": 0.5, "values": values})
    if failed:
        phase, error = failed
        records.append({"type": "phase_failed", "backend": backend, "phase": phase, "seconds": 0.1, "error": error})
    if finished:
        records.append({"type": "backend_finished", "backend": backend, "seconds": 2.0})
    return records


def _result(backend, values_by_phase, reference=None, **kwargs):
    interrupted = kwargs.pop("interrupted", False)
    records = _records(backend, values_by_phase, **kwargs)
    numpy_ref = model.reference()
    return selfcheck.backend_result(backend, records, reference if reference is not None else numpy_ref, numpy_ref,
                                    compare.FLOAT32, interrupted)


def _report(*results, timed_out=False):
    return selfcheck.Report({"tpu_nb": "0", "TensorFlow": "2"}, tuple(results), 1.0, 600.0, timed_out)


# --------------------------------------------------------------------------- the problem itself


def test_reference_predictions_have_clear_margins():
    # Class ids are compared exactly: no row may sit near a tie, or float rounding could flip it.
    ref = model.reference()
    for phase in ("predict", "export"):
        p = np.sort(np.asarray(ref[phase]["probabilities"]), axis=1)
        assert (p[:, -1] - p[:, -2]).min() > 0.05
    prob = model.problem()
    assert len(prob.predict_x) % model.GLOBAL_BATCH  # predict has a short last batch to pad
    assert len(prob.eval_x) % model.GLOBAL_BATCH == 0  # eval 'loss' (a mean over batches) is comparable
    assert ref["evaluate"]["accuracy"] > 0.8  # the model learns: a broken gradient shows


# --------------------------------------------------------------------------- comparisons and the report


def test_a_backend_equal_to_the_reference_passes_every_check():
    ref = model.reference()
    result = _result("shards", ref)
    assert result.status == "pass"
    assert [c.name for c in result.checks] == list(CHECKS)
    assert all(c.passed for c in result.checks)
    report = _report(result)
    assert report.exit_code == selfcheck.EXIT_OK
    text = report.text()
    assert "PASS (5 checks passed, 0 failed)" in text
    assert "[shards] simulated TPU 8x2" in text
    for name in CHECKS:
        assert name in text
    assert "tolerance |a-b| <= 1e-05 + 0.0001*|b|" in text


def test_a_broken_backend_fails_the_checks_it_breaks_with_the_numbers():
    # What real faults look like: one shard's gradient counted twice moves the weights; a dropped padding mask
    # changes the accuracy; rows come back out of order.
    good = model.reference()
    bad = copy.deepcopy(good)
    bad["train"]["weights"]["logits/kernel"] = (np.asarray(good["train"]["weights"]["logits/kernel"]) * 1.02).tolist()
    bad["evaluate"]["accuracy"] += 1.0 / model.EVAL_ROWS
    bad["predict"]["index"] = bad["predict"]["index"][::-1]
    bad["predict"]["probabilities"] = bad["predict"]["probabilities"][::-1]
    bad["predict"]["class_ids"] = bad["predict"]["class_ids"][::-1]
    result = _result("shards", bad, reference=good)
    by_name = {c.name: c for c in result.checks}
    assert result.status == "FAIL"
    assert by_name["train loss"].passed and by_name["export serve"].passed
    assert not by_name["trained weights"].passed
    assert "out of tolerance: logits/kernel" in by_name["trained weights"].detail
    assert not by_name["eval metrics"].passed and "accuracy 0.921875 vs 0.9140625" in by_name["eval metrics"].detail
    assert not by_name["predictions"].passed and "out of order" in by_name["predictions"].detail
    report = _report(_result("cpu", good), result)
    assert report.exit_code == selfcheck.EXIT_FAILED
    assert report.text().startswith("tpu_nb self-check: FAIL (7 checks passed, 3 failed)")
    data = report.as_dict()
    assert data["result"] == "FAIL" and data["counts"] == {"passed": 7, "failed": 3, "not run": 0}
    json.dumps(data)  # --json prints this


def test_missing_rows_and_a_raising_phase_fail():
    good = model.reference()
    short = copy.deepcopy(good)
    for key in ("index", "probabilities", "class_ids"):
        short["predict"][key] = short["predict"][key][:-4]  # the padded batch's real rows lost
    result = _result("shards", {"train": good["train"], "evaluate": good["evaluate"], "predict": short["predict"]},
                     reference=good, failed=("export", "ValueError: no serving signature"))
    by_name = {c.name: c for c in result.checks}
    assert "96 rows, expected 100" in by_name["predictions"].detail
    assert not by_name["export serve"].passed
    assert "export() raised ValueError: no serving signature" in by_name["export serve"].detail


def test_a_failed_train_leaves_the_rest_not_run():
    result = _result("shards", {}, failed=("train", "RuntimeError: boom"))
    assert [c.status for c in result.checks] == ["FAIL", "FAIL", "not run", "not run", "not run"]
    assert result.checks[2].detail == "train failed"


def test_a_time_out_is_its_own_exit_status():
    ref = model.reference()
    result = _result("shards", {"train": ref["train"]}, finished=False, interrupted=True)
    assert result.status == "timed out"
    assert [c.status for c in result.checks] == ["pass", "pass", "not run", "not run", "not run"]
    report = _report(_result("cpu", ref), result, timed_out=True)
    assert report.exit_code == selfcheck.EXIT_TIMED_OUT
    assert "TIMED OUT" in report.text() and "time limit" in report.text()


def test_a_worker_that_dies_silently_is_a_failure():
    numpy_ref = model.reference()
    result = selfcheck.backend_result("shards", [], {}, numpy_ref, compare.FLOAT32, False,
                                      "the worker process exited with status -11: Segmentation fault")
    assert result.status == "FAIL"
    assert result.checks[0].name == "worker" and "status -11" in result.checks[0].detail


def test_the_one_device_run_is_checked_against_numpy_and_the_others_against_it():
    ref = model.reference()
    assert "(numpy float64)" in _result("cpu", ref).checks[0].detail
    cpu_values = copy.deepcopy(ref)
    assert "(cpu)" in _result("shards", ref, reference=cpu_values).checks[0].detail


def test_tolerance_arithmetic():
    tol = compare.Tolerance(rtol=1e-4, atol=1e-5)
    assert compare.close([1.0, 2.0], [1.0 + 1e-5, 2.0], tol) == (True, pytest.approx(1e-5))
    assert compare.close([1.0], [1.001], tol)[0] is False
    assert compare.close([1.0, 2.0], [1.0], tol) == (False, float("inf"))  # shapes differ
    assert compare.close([float("nan")], [1.0], tol)[0] is False


def test_bad_arguments_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        selfcheck.parse_args(["--backends", "cpu,fpga"])
    assert e.value.code == selfcheck.EXIT_USAGE
    assert "fpga" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        selfcheck.parse_args(["--time-limit", "0"])
    options = selfcheck.parse_args(["--backends", "shards"])
    assert options.backends == {"cpu", "shards"}  # the reference always runs


def test_backends_that_cannot_run_are_skipped_unless_asked_for(monkeypatch):
    monkeypatch.setattr(selfcheck, "_gpu_absence", lambda: "no GPU device on this machine")
    groups, skipped = selfcheck._plan(selfcheck.parse_args(["--tpu", ""]))
    assert groups == [("cpu", ["cpu", "shards"])]
    assert skipped == {"gpu": "no GPU device on this machine", "gpu-shards": "no GPU device on this machine",
                       "tpu": "no TPU address given (--tpu ADDRESS, or $TPU_NAME)"}
    quiet = selfcheck.skipped_result("gpu", skipped["gpu"], asked_for=False)
    assert quiet.status == "skipped" and not quiet.checks
    assert _report(quiet).exit_code == selfcheck.EXIT_OK
    asked = selfcheck.skipped_result("gpu", skipped["gpu"], asked_for=True)
    assert asked.status == "FAIL" and "no GPU device" in asked.checks[0].detail
    assert _report(asked).exit_code == selfcheck.EXIT_FAILED
    assert "[gpu] one GPU: FAIL (no GPU device on this machine)" in _report(asked).text()


def test_gpu_backends_skip_themselves_where_tensorflow_sees_too_few_gpus(tmp_path):
    args = types.SimpleNamespace(tpu=None, tpu_timeout=30.0, model_dir=str(tmp_path))
    out = tmp_path / "out.jsonl"
    worker.run_backend("gpu", args, worker._Emitter(str(out)), gpus=0)
    worker.run_backend("gpu-shards", args, worker._Emitter(str(out)), gpus=1)
    reasons = [json.loads(line).get("reason") for line in out.read_text().splitlines()]
    assert "TensorFlow sees no GPU" in reasons and "needs 2 or more GPUs; TensorFlow sees 1" in reasons
    # Several GPUs as shards: as many as divide the global batch evenly, at most 8.
    assert [worker.gpu_shards(n) for n in (2, 3, 4, 6, 8, 16)] == [2, 2, 4, 4, 8, 8]
    assert all(model.GLOBAL_BATCH % worker.gpu_shards(n) == 0 for n in range(2, 17))


# --------------------------------------------------------------------------- the TPU backend's connection


def _tpu_worker_records(tmp_path, address, timeout):
    args = types.SimpleNamespace(tpu=address, tpu_timeout=timeout, model_dir=str(tmp_path))
    out = tmp_path / "out.jsonl"
    worker.run_backend("tpu", args, worker._Emitter(str(out)), gpus=0)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_a_dead_tpu_address_fails_the_connect_check_naming_it(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"grpc://127.0.0.1:{port}"
    records = _tpu_worker_records(tmp_path, address, timeout=10)
    failed = [r for r in records if r["type"] == "phase_failed"]
    assert failed and failed[0]["phase"] == "connect" and failed[0]["seconds"] < 10
    result = selfcheck.backend_result("tpu", records, {}, model.reference(), compare.TPU, False)
    assert result.status == "FAIL"
    assert result.checks[0].name == "connect" and address in result.checks[0].detail
    assert all(c.passed is None for c in result.checks[1:])


def test_a_silent_tpu_address_fails_within_the_timeout(tmp_path):
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        address = f"grpc://127.0.0.1:{server.getsockname()[1]}"
        records = _tpu_worker_records(tmp_path, address, timeout=3)
    failed = [r for r in records if r["type"] == "phase_failed"]
    assert failed[0]["phase"] == "connect" and failed[0]["seconds"] < 10
    assert address in failed[0]["error"] and "Timed out after 3 s" in failed[0]["error"]


# --------------------------------------------------------------------------- the command, end to end

# The command runs in a process of its own, which CI's TF1 pass (TPU_NB_TEST_BEHAVIOR) never reaches: there
# these runs would repeat the default pass's minutes unchanged.
_own_process = pytest.mark.skipif(os.environ.get("TPU_NB_TEST_BEHAVIOR", "tf2") != "tf2",
                                  reason="the self-check's own process is unaffected by TPU_NB_TEST_BEHAVIOR")


@_own_process
@pytest.mark.slow
def test_selfcheck_passes_on_cpu_and_simulated_shards(tmp_path):
    done = _run_command("--backends", "cpu,shards", "--json", tmpdir=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["result"] == "PASS"
    backends = {b["backend"]: b for b in report["backends"]}
    assert set(backends) == {"cpu", "shards"}
    assert backends["cpu"]["topology"] == "one device (CPU)"
    assert backends["shards"]["topology"].startswith("simulated TPU 8x2")
    for b in backends.values():
        assert [c["name"] for c in b["checks"]] == list(CHECKS)
        assert all(c["status"] == "pass" for c in b["checks"])
    assert report["environment"]["TensorFlow"] and report["environment"]["tpu_nb"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tpu_nb_selfcheck_")]  # model_dirs removed


@_own_process
@pytest.mark.slow
def test_selfcheck_exits_nonzero_when_a_check_fails():
    # Zero tolerance: float32 results cannot equal the float64 reference, so the checks must fail.
    done = _run_command("--backends", "cpu", "--rtol", "0", "--atol", "0")
    assert done.returncode == selfcheck.EXIT_FAILED, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith("tpu_nb self-check: FAIL")
    assert "[cpu] one device (CPU): FAIL" in done.stdout
    assert "FAIL    train loss" in done.stdout


@_own_process
def test_selfcheck_stops_at_the_time_limit():
    done = _run_command("--backends", "cpu", "--time-limit", "1", timeout=300)
    assert done.returncode == selfcheck.EXIT_TIMED_OUT, done.stdout + done.stderr[-3000:]
    assert "TIMED OUT" in done.stdout and "[cpu]" in done.stdout
