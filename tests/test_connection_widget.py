"""ConnectionWidget / connect(): backend choice, Connect button, topology shown, errors in the widget."""

import socket

import pytest
import tensorflow as tf

import tpu_nb
from model_zoo import model_fn, train_input_fn
from tpu_nb.notebook.connection_widget import ConnectionWidget, connect


def _click(widget, timeout=20):
    """What the browser's Connect button does: bump the counter; the kernel connects in a thread."""
    widget.connect_clicks += 1
    widget.wait(timeout)


def test_simulated_shards_show_the_topology_and_train(tmp_path):
    w = ConnectionWidget()
    w.backend, w.cores, w.hosts = "simulated", 4, 2
    _click(w)
    assert w.status == "connected", w.error
    assert w.info["cores"] == 4 and w.info["hosts"] == 2
    assert w.info["device_kinds"] == ["CPU"] and w.info["tf_version"] == tf.__version__
    assert "4 core(s)" in w._repr_mimebundle_()[0]["text/plain"]
    est = tpu_nb.TPUEstimator(model_fn, **w.estimator_kwargs(model_dir=str(tmp_path)),
                              train_batch_size=16, predict_batch_size=16)
    assert est.config.cluster == tpu_nb.SimulatedTPU(4, 2) and est.use_tpu
    est.train(train_input_fn, steps=1)
    assert est.latest_checkpoint().endswith("-1")


def test_cpu_backend_runs_unsharded(tmp_path):
    w = ConnectionWidget(backend="cpu")
    conn = w.connect()
    assert conn.use_tpu is False and conn.num_cores == 1 and "CPU" in w.info["device_kinds"]
    config = w.run_config(model_dir=str(tmp_path))
    assert isinstance(config, tpu_nb.RunConfig) and config.cluster is None


def test_auto_without_accelerators_is_cpu_or_the_simulation_env(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("TPU_NB_SIMULATE", raising=False)
    assert connect("auto").backend == "cpu"
    monkeypatch.setenv("TPU_NB_SIMULATE", "8x2")
    conn = connect("auto")
    assert (conn.backend, conn.num_cores, conn.num_hosts) == ("simulated", 8, 2)


def test_invalid_simulation_is_an_error_in_the_widget_not_an_exception():
    w = ConnectionWidget(backend="simulated", cores=8, hosts=3)
    _click(w)
    assert w.status == "error" and w.connection is None
    assert "cannot be split evenly over 3 hosts" in w.error
    with pytest.raises(RuntimeError, match="Not connected.*cannot be split"):
        w.run_config()


def test_dead_tpu_address_fails_within_the_timeout_in_the_widget():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = ConnectionWidget(backend="tpu", tpu=f"grpc://127.0.0.1:{port}", timeout_secs=5)
    _click(w, timeout=15)
    assert w.status == "error"
    assert w.error.startswith("TPUConnectionError") and f"127.0.0.1:{port}" in w.error


def test_no_local_tpu_is_explained():
    w = ConnectionWidget(backend="tpu", tpu="local", timeout_secs=10)
    _click(w, timeout=20)
    assert w.status == "error" and "No local TPU devices" in w.error and "use_tpu=False" in w.error


def test_gpu_without_gpus_names_the_fix():
    w = ConnectionWidget(backend="gpu", gpus=2)
    _click(w)
    if len(tf.config.list_physical_devices("GPU")) >= 2:
        assert w.status == "connected" and w.info["cores"] == 2
    else:
        assert w.status == "error" and "2 GPU(s) asked for" in w.error


def test_reconnect_replaces_the_previous_result():
    w = ConnectionWidget(backend="simulated", cores=2)
    _click(w)
    assert w.connection.num_cores == 2
    w.backend = "cpu"
    _click(w)
    assert w.connection.backend == "cpu" and w.info["cores"] == 1


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        connect("xla")


# ---------------------------------------------------------------- %tpu_connect


@pytest.fixture(scope="module")
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    from tpu_nb.notebook.magics_extra import ExtraMagics

    shell = InteractiveShell.instance()
    shell.register_magics(ExtraMagics)
    return shell


def test_tpu_connect_magic_stores_a_connection_the_estimator_takes(ip, tmp_path):
    from tpu_nb.notebook.magics_extra import current_connection

    widget = ip.run_line_magic("tpu_connect", "--backend simulated --cores 2 --hosts 2 -o conn")
    conn = ip.user_ns["conn"]
    assert widget.status == "connected" and conn is current_connection()
    assert (conn.num_cores, conn.num_hosts) == (2, 2)
    est = tpu_nb.TPUEstimator(model_fn, **conn.estimator_kwargs(model_dir=str(tmp_path)), train_batch_size=8)
    assert est.config.cluster == tpu_nb.SimulatedTPU(2, 2)


def test_tpu_connect_magic_errors_in_the_widget_or_as_a_usage_error(ip):
    from IPython.core.error import UsageError

    widget = ip.run_line_magic("tpu_connect", "--backend simulated --cores 3 --hosts 2")
    assert widget.status == "error" and "cannot be split evenly" in widget.error
    with pytest.raises(UsageError, match="cannot be split evenly"):
        ip.run_line_magic("tpu_connect", "--backend simulated --cores 3 --hosts 2 --no-widget")


def test_connect_in_the_widget_updates_the_output_variable_and_current_connection(ip):
    from tpu_nb.notebook.magics_extra import current_connection

    widget = ip.run_line_magic("tpu_connect", "--backend cpu -o conn")
    assert ip.user_ns["conn"].backend == "cpu" and current_connection() is ip.user_ns["conn"]
    # What the form does: choose simulated 8x1, press Connect (the connection runs in a thread).
    widget.backend, widget.cores, widget.hosts = "simulated", 8, 1
    widget.connect_clicks += 1
    widget.wait(timeout=60)
    conn = ip.user_ns["conn"]
    assert widget.status == "connected" and conn is widget.connection
    assert (conn.backend, conn.num_cores, conn.num_hosts) == ("simulated", 8, 1)
    assert current_connection() is conn

    widget.cores = 3  # a failed attempt leaves the last good connection in place
    widget.hosts = 2
    widget.connect_clicks += 1
    widget.wait(timeout=60)
    assert widget.status == "error" and ip.user_ns["conn"] is conn and current_connection() is conn


def test_connect_renames_the_backend_the_status_bar_shows(ip, monkeypatch):
    from tpu_nb.reporting import events
    from tpu_nb.notebook import lab_bridge

    class FakeComm:
        def __init__(self, on_message):
            self.sent = []

        def send(self, data):
            self.sent.append(data)

    bridge = lab_bridge.LabBridge(comm_factory=FakeComm)
    monkeypatch.setattr(lab_bridge, "_bridge", bridge)
    try:
        # The last run was on one CPU; then the user connects to 8 simulated shards from the form.
        events.publish(events.RunStarted(events.bus.new_run_id(), "train", "CPU", 1, 1, 16, 16, "/tmp/m", 0, 10, 10))
        assert bridge.status()["backend"] == "CPU"
        widget = ip.run_line_magic("tpu_connect", "--backend cpu")
        widget.backend, widget.cores, widget.hosts = "simulated", 8, 1
        widget.connect_clicks += 1
        widget.wait(timeout=60)
        assert widget.status == "connected"
        assert bridge.status()["backend"] == widget.connection.description
        assert "8" in bridge.status()["backend"]
        assert bridge.comm.sent[-1]["backend"] == widget.connection.description  # sent at once, not at the next run
    finally:
        bridge.close()
