"""Quiet notebook outputs: TensorFlow's C++ lines kept out of cells (and kept for failures),
tpu_nb's messages as plain output, and a lab comm that headless front ends never see.

The end-to-end check (every example notebook executed by nbclient has no stderr output and nbclient
logs no comm warning) is in test_notebooks.py; these pin down each piece without a kernel.
"""

import contextlib
import io
import logging
import os
import sys

import pytest

from tpu_nb.reporting import cell_logging, native_output


def _write_fd2(text):
    os.write(2, text.encode())


@pytest.fixture
def fresh_log(tmp_path, monkeypatch):
    path = tmp_path / "tensorflow.log"
    monkeypatch.setattr(native_output, "log_path", lambda: str(path))
    monkeypatch.delenv("TPU_NB_TF_LOGS", raising=False)
    return path


def test_native_lines_go_to_the_log_file_not_descriptor_2(fresh_log, capfd):
    with native_output.kept_out_of_cells(enabled=True):
        _write_fd2("I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
        with native_output.kept_out_of_cells(enabled=True):  # nested (a run inside a run): one redirection
            _write_fd2("E0000 cuda_platform.cc:52] failed call to cuInit\n")
        _write_fd2("after the inner block\n")
    _write_fd2("after both blocks\n")
    err = capfd.readouterr().err
    assert "cuInit" not in err and "cuda drivers" not in err and "after both blocks" in err
    logged = fresh_log.read_text()
    assert "Could not find cuda drivers" in logged and "failed call to cuInit" in logged
    assert "after the inner block" in logged  # the inner block's end did not undo the outer redirection
    assert "after both blocks" not in logged  # ... and the outer block's end did


def test_descriptor_2_is_restored_after_the_block(fresh_log, capfd):
    with native_output.kept_out_of_cells(enabled=True):
        _write_fd2("inside\n")
    _write_fd2("outside\n")
    err = capfd.readouterr().err
    assert "outside" in err and "inside" not in err


def test_a_failure_carries_the_runtimes_error_lines_and_where_the_rest_are(fresh_log):
    with pytest.raises(RuntimeError) as raised:
        with native_output.kept_out_of_cells(enabled=True):
            _write_fd2("I0000 something ordinary\n")
            _write_fd2("E0000 00:00:17.9 123 op_kernel.cc:1] OOM when allocating tensor\n")
            raise RuntimeError("session failed")
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    if sys.version_info >= (3, 11):
        assert "OOM when allocating tensor" in notes and str(fresh_log) in notes
        assert "something ordinary" not in notes  # only error lines are quoted
    assert str(raised.value) == "session failed"  # the error itself is unchanged


def test_tpu_nb_tf_logs_leaves_descriptor_2_alone(fresh_log, capfd, monkeypatch):
    monkeypatch.setenv("TPU_NB_TF_LOGS", "1")
    with native_output.kept_out_of_cells(enabled=True):
        _write_fd2("shown as it comes\n")
    assert "shown as it comes" in capfd.readouterr().err
    assert not fresh_log.exists()


def test_outside_a_kernel_nothing_is_redirected(fresh_log, capfd):
    assert not native_output.in_jupyter_kernel()  # pytest is not a kernel
    with native_output.kept_out_of_cells():
        _write_fd2("a terminal user sees this\n")
    assert "a terminal user sees this" in capfd.readouterr().err


@pytest.fixture
def cell_handler(monkeypatch):
    """The cell handler on the tpu_nb logger, as in a kernel."""
    monkeypatch.setattr(cell_logging, "in_jupyter_kernel", lambda: True)
    logger = logging.getLogger("tpu_nb")
    saved = logger.handlers[:]
    try:
        assert cell_logging.install()
        assert not cell_logging.install()  # once per logger
        yield logger
    finally:
        logger.handlers[:] = saved


@contextlib.contextmanager
def unconfigured_logging():
    """No handler on the root logger, as in a fresh kernel (pytest adds its own for each test's call
    phase, so this runs inside the test, not as a fixture)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:] = saved


def test_tpu_nb_messages_are_plain_output_in_a_kernel(cell_handler, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with unconfigured_logging():
        cell_handler.warning("Training stopped at step %d (%s); checkpoint saved.", 1440, "Stop button")
        cell_handler.error("Could not save the checkpoint")
    assert out.getvalue() == "tpu_nb: Training stopped at step 1440 (Stop button); checkpoint saved.\n"
    assert err.getvalue() == "tpu_nb: Could not save the checkpoint\n"  # errors stay red


def test_the_cell_handler_stands_aside_once_the_user_configures_logging(cell_handler, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    users = logging.StreamHandler(io.StringIO())
    with unconfigured_logging() as root:
        root.addHandler(users)
        cell_handler.warning("Training stopped at step 3.")
    assert out.getvalue() == ""  # printed once, by the user's handler
    assert "Training stopped at step 3." in users.stream.getvalue()


def test_lab_bridge_sends_nothing_until_a_front_end_says_hello():
    from tpu_nb.notebook import lab_bridge

    class Comm:
        def __init__(self, on_message):
            self.sent = []

        def send(self, data):
            self.sent.append(data)

    bridge = lab_bridge.LabBridge(comm_factory=Comm, wait_for_hello=True)
    try:
        bridge.send_now()
        assert bridge.comm.sent == []  # nobody may be listening (a headless run)
        bridge.handle({"type": "hello", "nonce": "1"})
        assert [m["type"] for m in bridge.comm.sent] == ["status"]  # the whole state, at once
    finally:
        bridge.close()
