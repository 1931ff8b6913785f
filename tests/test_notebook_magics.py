"""The %tpu_* magics in an IPython InteractiveShell: train, evaluate, predict, export, stop, resume, interrupt."""

import os
import signal
import time

import pytest

pytest.importorskip("IPython")
pytest.importorskip("anywidget")

from IPython.core.interactiveshell import InteractiveShell

import model_zoo
import tpu_nb
from tpu_nb.reporting import events
from tpu_nb.notebook import magics


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "tpu_nb")
    shell.user_ns.update(train_fn=model_zoo.train_input_fn, eval_fn=model_zoo.eval_input_fn,
                         predict_fn=model_zoo.predict_input_fn)
    yield shell
    shell.run_line_magic("unload_ext", "tpu_nb")


@pytest.fixture
def est(ip, tmp_path):
    estimator = model_zoo.estimator(tmp_path / "model", iterations_per_loop=10)
    ip.user_ns["est"] = estimator
    return estimator


def test_train_evaluate_predict_in_the_shell(ip, est):
    result = ip.run_cell("%tpu_train est train_fn --steps 60 -o run")
    assert result.success
    run = ip.user_ns["run"]
    assert run.state == "done" and run.global_step == 60
    assert model_zoo.checkpoint_step(est.model_dir) == 60
    history = run.history
    assert history.step.max() == 60 and history.loss.notna().sum() == 6  # one loss per loop of 10
    assert {"wall_time", "loss", "steps_per_sec", "examples_per_sec"} <= set(history.columns)

    evaluation = ip.run_line_magic("tpu_evaluate", "est eval_fn")
    assert evaluation.state == "done" and evaluation.result["global_step"] == 60
    # The evaluation is overlaid on the training run's history (and its dashboard).
    assert run.history.set_index("step").eval_loss[60] == pytest.approx(evaluation.result["loss"])

    predictions = ip.run_line_magic("tpu_predict", "est predict_fn").result
    assert len(predictions) == 100  # one row per example
    assert list(predictions.columns) == ["class_ids", "logits_0", "logits_1", "logits_2"]
    assert (predictions.class_ids == predictions[["logits_0", "logits_1", "logits_2"]].to_numpy().argmax(1)).all()


def test_unknown_names_and_wrong_types_are_one_line_errors(ip, est, capsys):
    for line, message in [
        ("%tpu_train nope train_fn --steps 3", "name 'nope' is not defined"),
        ("%tpu_train train_fn train_fn --steps 3", "'train_fn' is a function, not a tpu_nb.TPUEstimator"),
        ("%tpu_train est est.model_dir --steps 3", "not a function"),
        ("%tpu_train est train_fn", "exactly one of --steps N or --max-steps N"),
        ("%tpu_evaluate est missing_fn", "name 'missing_fn' is not defined"),
    ]:
        capsys.readouterr()
        result = ip.run_cell(line)
        out, err = capsys.readouterr()
        assert not result.success
        assert message in out + err
        assert "Traceback" not in out + err


def test_typos_get_the_close_name_suggested(ip, est, capsys):
    ip.user_ns["estimator"] = est
    result = ip.run_cell("%tpu_train etimator train_fn --steps 3")
    out, err = capsys.readouterr()
    assert not result.success
    assert "name 'etimator' is not defined in the notebook. Did you mean 'estimator'?" in out + err
    result = ip.run_cell("%tpu_train est.modle_dir train_fn --steps 3")
    out, err = capsys.readouterr()
    assert "has no attribute 'modle_dir'. Did you mean 'model_dir'?" in out + err
    result = ip.run_cell("%tpu_train zzzz train_fn --steps 3")
    assert "Did you mean" not in "".join(capsys.readouterr())


def test_a_typo_suggests_the_users_estimator_not_the_imported_class(ip, est, capsys):
    from tpu_nb import TPUEstimator

    ip.user_ns.update(TPUEstimator=TPUEstimator, est=est)  # `from tpu_nb import TPUEstimator` and `est = ...`
    ip.user_ns.pop("estimator", None)
    result = ip.run_cell("%tpu_train etimator train_fn --steps 3")
    out, err = capsys.readouterr()
    assert not result.success
    # Whatever other estimators earlier cells made: `est` is named, the class never is.
    assert "name 'etimator' is not defined in the notebook." in out + err and "'est'" in out + err
    assert "'TPUEstimator'" not in out + err


def _broken_model_fn(features, labels, mode, params):
    raise ValueError("the user's model_fn is broken")


def _broken_run(ip, tmp_path, capsys):
    ip.user_ns["broken"] = model_zoo.estimator(tmp_path / "broken", iterations_per_loop=10,
                                               fn=_broken_model_fn)
    result = ip.run_cell("%tpu_train broken train_fn --steps 3 --no-dashboard")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, ValueError)
    return out + err


def test_a_user_error_shows_the_users_frames_not_tpu_nbs(ip, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TPU_NB_TRACEBACK", raising=False)
    shown = _broken_run(ip, tmp_path, capsys)
    assert "_broken_model_fn" in shown and "the user's model_fn is broken" in shown
    assert "tpu_nb/" not in shown.replace("tpu_nb/notebook/tracebacks", "")  # no tpu_nb frame
    assert "TPU_NB_TRACEBACK=full" in shown  # the note says how to see everything

    monkeypatch.setenv("TPU_NB_TRACEBACK", "full")
    shown = _broken_run(ip, tmp_path, capsys)
    assert "_broken_model_fn" in shown and "tpu_nb/notebook/magics.py" in shown and "tpu_nb/estimator/tpu_estimator.py" in shown


def test_magics_document_their_arguments(ip):
    doc = ip.find_line_magic("tpu_train").__doc__
    for option in ("--steps", "--max-steps", "--hooks", "--background", "-o"):
        assert option in doc
    assert "--checkpoint" in ip.find_line_magic("tpu_evaluate").__doc__


def test_background_run_stops_on_request_and_the_same_command_resumes(ip, est):
    ip.run_cell("%tpu_train est train_fn --steps 400 --background -o bg")
    run = ip.user_ns["bg"]
    deadline = time.monotonic() + 60
    while (run.global_step or 0) < 30 and not run.finished:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    run.stop()  # what the Stop button does
    run.wait(timeout=60)
    stopped = run.stopped_step
    assert run.state == f"stopped at step {stopped}" and 30 <= stopped < 400
    assert model_zoo.checkpoint_step(est.model_dir) == stopped  # stopped with a checkpoint

    again = ip.run_line_magic("tpu_train", "est train_fn --steps 400")
    assert again.state == "done"
    assert again.global_step == 400  # resumed to the first run's target, not 400 more
    assert model_zoo.checkpoint_step(est.model_dir) == 400
    assert again.history.step.min() > stopped


def test_interrupt_stops_at_a_loop_boundary_with_a_checkpoint_and_resumes(ip, est, capsys, sigint_handler):
    sigint_handler(signal.default_int_handler)  # a kernel's; the suite may have started with SIGINT ignored
    interrupted = []

    def interrupt_once(event):
        if isinstance(event, tpu_nb.events.LoopFinished) and not interrupted:
            interrupted.append(event.global_step)
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C / the kernel's interrupt does

    with tpu_nb.events.subscribed(interrupt_once):
        result = ip.run_cell("%tpu_train est train_fn --steps 500 -o run")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, magics.TrainingInterrupted)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # so Jupyter cancels the queued cells
    run = ip.user_ns["run"]
    assert run.state.startswith("stopped at step ")
    assert run.stopped_step < 500
    assert model_zoo.checkpoint_step(est.model_dir) == run.stopped_step
    assert f"training stopped at step {run.stopped_step}; checkpoint saved" in out + err
    assert "Traceback" not in out + err

    resumed = ip.run_line_magic("tpu_train", "est train_fn --steps 500")
    assert resumed.global_step == 500 and model_zoo.checkpoint_step(est.model_dir) == 500


def test_stop_ends_a_foreground_cell_as_an_interrupt_does(ip, est, capsys):
    stopped = []

    def press_stop(event):  # what the dashboard's Stop button does, from the shell-channel thread
        if isinstance(event, tpu_nb.events.LoopFinished) and not stopped:
            stopped.append(event.global_step)
            tpu_nb.notebook.latest_train_handle(est).stop("Stop button")

    with tpu_nb.events.subscribed(press_stop):
        result = ip.run_cell("%tpu_train est train_fn --steps 500 -o run")
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, magics.TrainingInterrupted)  # Run All stops at this cell
    run = ip.user_ns["run"]
    assert run.state == f"stopped at step {run.stopped_step}" and run.stopped_step < 500
    assert model_zoo.checkpoint_step(est.model_dir) == run.stopped_step
    # The same line as Ctrl-C.
    assert f"KeyboardInterrupt: training stopped at step {run.stopped_step}; checkpoint saved" in out + err
    assert "Traceback" not in out + err


def test_stop_ends_a_foreground_python_train_as_an_interrupt_too(est):
    from tpu_nb import notebook

    def press_stop(event):
        if isinstance(event, tpu_nb.events.LoopFinished):
            notebook.latest_train_handle(est).stop("Stop button")

    with tpu_nb.events.subscribed(press_stop), pytest.raises(KeyboardInterrupt) as raised:
        notebook.train(est, model_zoo.train_input_fn, steps=500, dashboard=False)
    run = raised.value.handle
    assert run is notebook.latest_train_handle(est) and run.state == f"stopped at step {run.stopped_step}"
    assert str(raised.value) == f"training stopped at step {run.stopped_step}; checkpoint saved. " \
                                "Run the same command to resume."


def test_plain_python_equivalents_return_handles(est, tmp_path):
    from tpu_nb import notebook

    run = notebook.train(est, model_zoo.train_input_fn, max_steps=20, dashboard=False)
    assert run.state == "done" and run.result is est
    assert notebook.train(est, model_zoo.train_input_fn, max_steps=20, dashboard=False).state == "done"
    failed = notebook.train(est, model_zoo.train_input_fn, steps=10, background=True, dashboard=False,
                            hooks=[object()])
    with pytest.raises(TypeError, match="SessionRunHook"):
        failed.wait(timeout=60)
    assert failed.state.startswith("failed: TypeError")


def test_export_magic_writes_a_saved_model(ip, est, tmp_path):
    def serving_input_receiver_fn():
        import tensorflow as tf

        x = tf.compat.v1.placeholder(tf.float32, [None, model_zoo.FEATURES], name="x")
        return tpu_nb.TensorServingInputReceiver(x, {"x": x})

    ip.user_ns["serving_fn"] = serving_input_receiver_fn
    ip.run_line_magic("tpu_train", "est train_fn --steps 10")
    ip.user_ns["export_base"] = str(tmp_path / "export")
    handle = ip.run_line_magic("tpu_export", f"est serving_fn {tmp_path / 'export'} -o exported")
    assert handle is None
    exported = ip.user_ns["exported"]
    assert exported.state == "done"
    assert os.path.exists(os.path.join(exported.result, "saved_model.pb"))


def test_predict_output_is_the_dataframe_and_evaluate_dashboard(ip, est):
    assert ip.run_cell("%tpu_train est train_fn --steps 20 --no-dashboard").success
    assert ip.run_cell("%tpu_predict est predict_fn --vectors array -o df").success
    frame = ip.user_ns["df"]
    assert len(frame) == 100 and list(frame.columns) == ["class_ids", "logits"]
    assert ip.run_cell("%tpu_evaluate est eval_fn --dashboard -o dash").success
    dashboard = ip.user_ns["dash"]
    assert list(dashboard.frame.step) == [0, 20]  # one row per checkpoint in model_dir
    shown = []
    ip.display_pub.publish = lambda data, *args, update=False, **kwargs: shown.append((data, update))
    try:
        result = ip.run_cell("%tpu_evaluate est eval_fn --dashboard --which latest")
    finally:
        del ip.display_pub.publish
    assert result.success and result.result is None  # no second copy as the cell's result
    # One display (later updated in place with the results), not two views of the dashboard.
    assert sum("application/vnd.jupyter.widget-view+json" in data for data, update in shown if not update) == 1
    assert ip.run_cell("%tpu_connect --backend cpu").success


class _PanelComm:
    """Stands for the JupyterLab extension's end of the tpu_nb comm: keeps what the kernel sends."""

    def __init__(self, on_message):
        self.sent = []

    def send(self, data):
        self.sent.append(data)


def test_the_runs_panel_lists_runs_by_name_and_a_run_that_failed_before_it_began(ip, est, tmp_path, capsys):
    from tpu_nb.notebook import lab_bridge

    bridge = lab_bridge.LabBridge(comm_factory=_PanelComm)
    try:
        assert ip.run_cell("%tpu_train est train_fn --steps 20 --no-dashboard -o first_run").success
        # A model_fn that raises while the graph is built: the engine never publishes RunStarted.
        _broken_run(ip, tmp_path, capsys)
        status = bridge.status()
        by_name = {run["name"]: run for run in status["runs"]}
        assert by_name["first_run · train"]["phase"] == "done"
        failed = [run for run in status["runs"] if run["phase"] == "failed"]
        assert len(failed) == 1
        assert failed[0]["state"] == "failed: ValueError: the user's model_fn is broken"
        assert failed[0]["model_dir"].endswith("broken") and failed[0]["mode"] == "train"
        # The status bar follows the latest run: the failure, not the "done" before it.
        assert status["active"] == failed[0]["id"]
        # ... and it is sent (within the throttle's interval), not only computed.
        deadline = time.monotonic() + 10
        while bridge.comm.sent[-1]["active"] != failed[0]["id"]:
            assert time.monotonic() < deadline, bridge.comm.sent[-1]
            time.sleep(0.02)
    finally:
        bridge.close()


def test_a_new_backend_is_not_paired_with_the_last_runs_rate(ip, est):
    from tpu_nb.notebook import lab_bridge

    bridge = lab_bridge.LabBridge(comm_factory=_PanelComm)
    try:
        assert ip.run_cell("%tpu_train est train_fn --steps 20 --no-dashboard").success
        assert bridge.status()["active"] is not None
        bridge.set_backend("simulated TPU 8x1 (8 shards on CPU, 1 host)")  # what %tpu_connect does
        status = bridge.status()
        assert status["active"] is None and status["backend"].startswith("simulated TPU 8x1")
        assert status["runs"][-1]["phase"] == "done"  # still listed in the panel, with its own backend
    finally:
        bridge.close()


def test_a_foreground_stop_reaches_the_runs_panel(ip, est):
    from tpu_nb.notebook import lab_bridge, runs

    bridge = lab_bridge.LabBridge(comm_factory=_PanelComm)
    try:
        def stop_at_first_loop(event):
            if isinstance(event, events.LoopFinished):
                runs.latest_train_handle(est).stop("Stop button")

        unsubscribe = events.subscribe(stop_at_first_loop)
        try:
            result = ip.run_cell("%tpu_train est train_fn --steps 200 --no-dashboard -o halted")
        finally:
            unsubscribe()
        assert not result.success  # a foreground stop ends the cell as Ctrl-C does
        handle = ip.user_ns["halted"]
        run = bridge.status()["runs"][-1]
        assert (run["name"], run["phase"], run["state"]) == ("halted · train", "stopped", handle.state)
    finally:
        bridge.close()
