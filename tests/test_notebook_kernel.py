"""The dashboard in a real kernel: nbclient keeps the final widget state and static picture; Stop reaches
a foreground run that keeps the kernel busy and ends its cell as an interrupt does."""

import pathlib
import signal
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("anywidget")

TESTS = pathlib.Path(__file__).parent
SETUP = f"""
import sys
sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]
import model_zoo
est = model_zoo.estimator({{model_dir!r}}, iterations_per_loop=10)
train_fn, eval_fn = model_zoo.train_input_fn, model_zoo.eval_input_fn
"""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# What a kernel runs first. A kernel is a fresh process: TPU_NB_TEST_BEHAVIOR does not reach it.
BEHAVIORS = {"tf2": "", "tf1": "import tensorflow as tf\ntf.compat.v1.disable_v2_behavior()\nassert not tf.executing_eagerly()\n"}


@pytest.mark.slow
def test_executed_notebook_keeps_widget_view_png_and_html_of_the_finished_run(tmp_path):
    cells = [SETUP.format(model_dir=str(tmp_path / "model")), "%load_ext tpu_nb",
             "%tpu_train est train_fn --steps 300 -o run", "%tpu_evaluate est eval_fn -o ev",
             "print(run.state, run.global_step)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for o in nb.cells[2].outputs if o.output_type == "display_data"]
    assert len(outputs) == 2  # the live view and its static picture, each updated in place
    data, picture = outputs[0].data, outputs[1].data
    assert WIDGET_MIME in data
    # The static picture, filled after the final update: a PNG, also as an <img> in its HTML.
    assert picture["image/png"] and "data:image/png;base64," in picture["text/html"]
    assert "eval loss" in picture["text/html"]
    assert "done" in picture["text/html"] and "300 / 300" in picture["text/html"]
    # The summary table once per export: under the picture, not again as the view's fallback.
    assert "tpu-nb-summary" not in data["text/html"] and data["text/plain"].startswith("tpu_nb train: done")
    assert "done 300" in "".join(o.get("text", "") for o in nb.cells[4].outputs)

    # nbclient saves widget state (not custom messages): the final snapshot must be in it.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    snapshot = state[data[WIDGET_MIME]["model_id"]]["state"]["snapshot"]
    assert snapshot["status"]["state"] == "done" and snapshot["status"]["step"] == 300
    assert len(snapshot["series"]["loss"][0]) == 30


def _wait_reply(client, msg_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = client.get_shell_msg(timeout=1)
        except Exception:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    return None


def _dump_kernel_threads(manager) -> str:
    """Has the kernel print every thread's stack (faulthandler, registered by DIAGNOSE) to its stderr,
    which pytest shows under the failure: where a silent kernel was."""
    manager.signal_kernel(signal.SIGUSR1)
    time.sleep(3)
    return "the kernel's thread stacks are in the captured stderr below"


# Registered in the kernel before the run, so a silent kernel can say where it is.
DIAGNOSE = "import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n"


@pytest.mark.slow
@pytest.mark.parametrize("behavior", sorted(BEHAVIORS))
def test_stop_button_ends_a_foreground_run_while_the_kernel_is_busy(tmp_path, behavior):
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        setup = client.execute(DIAGNOSE + BEHAVIORS[behavior] + SETUP.format(model_dir=str(tmp_path / "model")) + "\nget_ipython().run_line_magic('load_ext', 'tpu_nb')")
        assert _wait_reply(client, setup, 120)["content"]["status"] == "ok"

        target = 2_000_000  # hours at this model's speed: only Stop can end it within the test
        run = client.execute(f"%tpu_train est train_fn --steps {target} -o run")
        queued = client.execute("queued_cell_ran = True")  # Run All queues the next cell behind the run
        comm_id, step = None, 0
        # Generous: CI builds this graph while two TensorFlow installs unpack beside it on 2 cores.
        deadline = time.monotonic() + 300
        while step < 50:  # the dashboard is open and training is under way
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                msg = client.get_iopub_msg(timeout=remaining)
            except Exception:
                pytest.fail(f"no dashboard update reached step 50 in 300 s (last step {step}, "
                            f"dashboard {'open' if comm_id else 'not open'}); where the kernel was:\n"
                            + _dump_kernel_threads(manager))
            content = msg["content"]
            if msg["msg_type"] == "comm_open" and "Dashboard" in str(content["data"].get("state", {}).get("_anywidget_id")):
                comm_id = content["comm_id"]
            elif msg["msg_type"] == "comm_msg" and content["comm_id"] == comm_id:
                custom = content["data"].get("content") or {}
                step = (custom.get("status") or {}).get("step") or step
        # The click: the browser's model.send({type: "stop"}) arrives as this comm message.
        stop = client.session.msg("comm_msg", {"comm_id": comm_id,
                                               "data": {"method": "custom", "content": {"type": "stop"}}})
        client.shell_channel.send(stop)
        reply = _wait_reply(client, run, 60)
        if reply is None:
            manager.interrupt_kernel()
            pytest.fail("Stop did not end the foreground run")
        # Stop ends the cell as Ctrl-C does: an error with the same one-line message, so the queued
        # cell is not run (Run All stops here too).
        assert reply["content"]["status"] == "error"
        assert _wait_reply(client, queued, 60)["content"]["status"] == "aborted"

        check = client.execute("print(run.state, run.stopped_step, model_zoo.checkpoint_step(est.model_dir), "
                               "'queued_cell_ran' in globals())")
        text, error = "", None
        while True:
            msg = client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == run and msg["msg_type"] == "error":
                error = msg["content"]
            if msg["parent_header"].get("msg_id") == check and msg["msg_type"] == "stream":
                text += msg["content"]["text"]
            if (msg["parent_header"].get("msg_id") == check and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        state_step, checkpoint, queued_ran = text.split()[-3:]
        assert text.startswith("stopped at step ")
        assert state_step == checkpoint and 50 <= int(checkpoint) < target
        assert queued_ran == "False"
        assert error is not None and error["traceback"] == [
            f"KeyboardInterrupt: training stopped at step {checkpoint}; checkpoint saved. "
            "Run the same command to resume."]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
