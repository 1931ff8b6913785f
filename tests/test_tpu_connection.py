"""resolve_tpu answers within its time bound whatever the address, and says what to fix.

Only 127.0.0.1 is used: the fake "TPUs" are sockets and TensorFlow servers in this process.
Time bounds are deliberately generous (the point is minutes vs seconds, not precision).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import collections
import dataclasses
import socket
import threading
import time

import pytest
import tensorflow as tf

from tpu_nb.backends.tpu_connection import TPUConnectionError, TPUTopology, _topology, resolve_tpu


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_listener():
    """A TCP server on 127.0.0.1 that accepts connections and never says anything (not gRPC)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except socket.timeout:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"grpc://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def test_closed_port_fails_fast_naming_the_address():
    address = f"grpc://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(TPUConnectionError) as info:
        resolve_tpu(address, timeout_secs=30)
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert address in message
    assert "nothing accepts connections" in message
    assert "READY" in message


def test_listener_that_never_speaks_grpc_times_out_at_the_bound(silent_listener):
    address, accepted = silent_listener
    start = time.monotonic()
    with pytest.raises(TPUConnectionError) as info:
        resolve_tpu(address, timeout_secs=3)
    elapsed = time.monotonic() - start
    assert 2 < elapsed < 15, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert address in message
    assert "3 s" in message and "timeout_secs" in message
    assert "zone" in message and "READY" in message
    # The probe's connection sits in the listen backlog until the accept thread is scheduled,
    # which on a loaded 2-core CI machine can lag the error; give it a moment.
    deadline = time.monotonic() + 10
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert accepted, "the TCP probe should have reached the listener"


def test_tensorflow_server_without_tpus_is_not_a_tpu():
    port = _free_port()
    # A Cloud TPU worker's server runs under its own job name; the client names it 'worker'
    # in the cluster it sends (as TPUClusterResolver does), so mirror that here.
    server = tf.distribute.Server({"tpu_worker": [f"127.0.0.1:{port}"]}, job_name="tpu_worker", task_index=0)
    del server  # TensorFlow servers cannot be stopped; it idles in this process
    address = f"grpc://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(TPUConnectionError) as info:
        resolve_tpu(address, timeout_secs=20)
    assert time.monotonic() - start < 15
    assert address in str(info.value)
    assert "no TPU devices" in str(info.value)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("TPU")), reason="this machine has a TPU")
def test_local_without_tpu_explains_the_alternatives():
    start = time.monotonic()
    with pytest.raises(TPUConnectionError) as info:
        resolve_tpu("local", timeout_secs=20)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "No local TPU devices were found" in message
    assert "use_tpu=False" in message
    assert "simulated" in message


def test_tpu_name_that_cannot_be_looked_up_fails_within_the_bound():
    # No Cloud TPU API or metadata server is reachable here: whatever TensorFlow's
    # client does about that, the answer must come within the bound.
    start = time.monotonic()
    with pytest.raises(TPUConnectionError) as info:
        resolve_tpu("no-such-tpu", zone="us-central1-b", project="no-such-project", timeout_secs=5)
    assert time.monotonic() - start < 15
    assert "'no-such-tpu'" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tpu": ""},
        {"tpu": "   "},
        {"tpu": "grpc://127.0.0.1"},
        {"tpu": "grpc://127.0.0.1:notaport"},
        {"tpu": "http://127.0.0.1:8470"},
        {"tpu": "local", "timeout_secs": -1},
        {"tpu": "local", "timeout_secs": 0},
        {"tpu": "local", "timeout_secs": float("inf")},
        {"tpu": "my-tpu", "zone": ""},
    ],
)
def test_bad_arguments_are_value_errors(kwargs):
    start = time.monotonic()
    with pytest.raises(ValueError):
        resolve_tpu(**kwargs)
    assert time.monotonic() - start < 1  # checked before any connection attempt


def test_no_tpu_given_and_none_in_the_environment(monkeypatch):
    for var in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="TPU_NAME"):
        resolve_tpu()


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError):
        resolve_tpu(8470)
    with pytest.raises(TypeError):
        resolve_tpu("local", timeout_secs="30")


_Device = collections.namedtuple("_Device", "name device_type")


def test_topology_from_a_two_host_device_list():
    devices = [_Device(f"/job:worker/replica:0/task:{t}/device:CPU:0", "CPU") for t in range(2)]
    devices += [_Device(f"/job:worker/replica:0/task:{t}/device:TPU:{c}", "TPU") for t in range(2) for c in range(4)]
    devices += [_Device(f"/job:worker/replica:0/task:{t}/device:TPU_SYSTEM:0", "TPU_SYSTEM") for t in range(2)]
    topology = _topology("grpc://10.0.0.2:8470", devices, "grpc://10.0.0.2:8470", "2.20.0")
    assert topology == TPUTopology(
        master="grpc://10.0.0.2:8470", num_hosts=2, num_cores=8, num_cores_per_host=4,
        device_kinds=("CPU", "TPU", "TPU_SYSTEM"), tf_version="2.20.0", job_name="worker",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.num_cores = 16
