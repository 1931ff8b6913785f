"""Finding a real TPU, with an upper bound on how long that may take.

TensorFlow's own path (``TPUClusterResolver`` + ``get_tpu_system_metadata`` or
``initialize_tpu_system``) pointed at a dead or wrong gRPC address blocks about
5 minutes per attempt (and the metadata query retries for up to a day); with no
TPU at all, ``TPUStrategy('local')`` dies with a bare ``IndexError``. Either is
a bad first minute in a notebook. ``resolve_tpu`` answers within
``timeout_secs`` whatever the address, and every failure says what to check.

It only lists the TPU system's devices (what TPUEstimator's metadata query did);
it does not initialise or reset the TPU system, so calling it is harmless for a
TPU that another process is using.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import socket
import threading
import time
from typing import Optional, Tuple

import tensorflow as tf

_LOCAL = "local"
_GRPC = "grpc://"
# What TPUClusterResolver(tpu=None) falls back on, in its order.
_TPU_NAME_ENV_VARS = ("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_NAME")
_TPU_CONFIG_ENV_VAR = "TPU_CONFIG"


class TPUConnectionError(RuntimeError):
    """No usable TPU was found at the requested place within the time allowed."""


@dataclasses.dataclass(frozen=True)
class TPUTopology:
    """What a resolved TPU system looks like.

    Attributes:
      master: the session target to build graphs against: ``'grpc://host:port'``,
        or ``''`` for TPU chips attached to this machine (``tpu='local'``).
      num_hosts: TPU hosts (workers), each with its own input pipeline.
      num_cores: TPU cores in total (the replica count for data parallelism).
      num_cores_per_host: TPU cores on each host.
      device_kinds: the device types the system reports, sorted, e.g. ``('CPU', 'TPU', 'TPU_SYSTEM')``.
      tf_version: the TensorFlow version of the TPU runtime when the Cloud TPU API reports one;
        otherwise this process's TensorFlow version (a TPU VM runs in this process, and a remote
        TPU worker must run the same version as its client).
      job_name: the TensorFlow job the TPU cores belong to, e.g. ``'worker'`` or ``'localhost'``.

    Example::

        topology = resolve_tpu('grpc://10.0.0.2:8470')
        print(topology.num_cores, 'cores on', topology.num_hosts, 'host(s)')
    """

    master: str
    num_hosts: int
    num_cores: int
    num_cores_per_host: int
    device_kinds: Tuple[str, ...]
    tf_version: str
    job_name: str


def resolve_tpu(tpu=None, zone: Optional[str] = None, project: Optional[str] = None,
                timeout_secs: float = 30.0) -> TPUTopology:
    """Finds the TPU system ``tpu`` names and describes it, or fails within ``timeout_secs``.

    Args:
      tpu: a Cloud TPU name, ``'local'`` (TPU chips attached to this VM),
        ``'grpc://host:port'`` (a TPU worker's address), a
        ``tf.distribute.cluster_resolver.TPUClusterResolver``, or None (use the
        ``TPU_NAME`` / ``KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS`` / ``TPU_CONFIG``
        environment variables, as TPUClusterResolver does).
      zone, project: where a TPU given by name lives (found from the GCE metadata
        server when omitted). Ignored for ``'local'`` and gRPC addresses.
      timeout_secs: the most seconds to spend, all steps included.

    Returns:
      A ``TPUTopology``.

    Raises:
      ValueError / TypeError: for malformed arguments (checked before any connection).
      TPUConnectionError: nothing listens at the address (at once), the TPU did not
        answer within ``timeout_secs``, or no TPU cores were found. The message names
        the address and what to check.

    Example::

        try:
            topology = resolve_tpu('my-tpu', zone='us-central1-b', project='my-proj', timeout_secs=60)
        except TPUConnectionError as e:
            print(e)   # names the TPU, the timeout and what to check
    """
    label = _check_tpu_arg(tpu, zone, project)
    timeout_secs = _check_timeout(timeout_secs)
    deadline = time.monotonic() + timeout_secs
    outcome = {}

    def work():
        try:
            outcome["topology"] = _resolve(tpu, zone, project, label, timeout_secs, deadline, outcome)
        except BaseException as e:  # handed to the caller's thread, which re-raises it
            outcome["error"] = e

    # Why a daemon thread and not a subprocess: the blocking calls (Cloud TPU API
    # lookups, the gRPC session) release the GIL, the worker builds everything in
    # its own tf.Graph and Session so abandoning it leaves no shared TensorFlow
    # state half-built, and its gRPC session carries the same deadline
    # (operation_timeout_in_ms), so an abandoned worker ends by itself shortly
    # after we give up rather than lingering. Being a daemon, it never holds up
    # interpreter exit. A subprocess would have to import TensorFlow first
    # (several seconds, eaten out of a budget that may be only a few seconds) and
    # could not use a TPUClusterResolver object the caller passed in.
    worker = threading.Thread(target=work, name="tpu_nb-resolve-tpu", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive() or not ("topology" in outcome or "error" in outcome):
        raise TPUConnectionError(_timeout_message(outcome.get("address", label), timeout_secs))
    if "error" in outcome:
        raise outcome["error"]
    return outcome["topology"]


# --------------------------------------------------------------------------- argument checks


def _check_tpu_arg(tpu, zone, project) -> str:
    """Validates ``tpu`` and returns how to name it in messages."""
    if isinstance(tpu, tf.distribute.cluster_resolver.TPUClusterResolver):
        if zone is not None or project is not None:
            raise ValueError("zone and project cannot be combined with a TPUClusterResolver: "
                             "pass them to the resolver, or pass the TPU name instead of a resolver.")
        return "the TPU of the given TPUClusterResolver"
    for name, value in (("zone", zone), ("project", project)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{name} must be a non-empty string or None, got {value!r}.")
    if tpu is None:
        for var in _TPU_NAME_ENV_VARS + (_TPU_CONFIG_ENV_VAR,):
            if os.environ.get(var):
                return f"the TPU named by ${var} ({os.environ[var]!r})"
        raise ValueError(
            "No TPU given: pass tpu='<TPU name>', tpu='local' (TPU attached to this VM) or "
            "tpu='grpc://host:port', or set the TPU_NAME environment variable."
        )
    if not isinstance(tpu, str):
        raise TypeError(
            "tpu must be a TPU name, 'local', 'grpc://host:port' or a TPUClusterResolver, "
            f"got {type(tpu).__name__}."
        )
    if not tpu.strip() or tpu != tpu.strip():
        raise ValueError(f"tpu must be a non-empty TPU name without surrounding spaces, got {tpu!r}.")
    if tpu.startswith(_GRPC):
        _split_host_port(tpu)  # raises ValueError for a malformed address
        return tpu
    if "://" in tpu:
        raise ValueError(f"tpu={tpu!r}: only grpc:// addresses are supported, e.g. 'grpc://10.0.0.2:8470'.")
    return tpu if tpu == _LOCAL else f"TPU {tpu!r}"


def _check_timeout(timeout_secs) -> float:
    if isinstance(timeout_secs, bool) or not isinstance(timeout_secs, numbers.Real):
        raise TypeError(f"timeout_secs must be a number of seconds, got {timeout_secs!r}.")
    timeout_secs = float(timeout_secs)
    if not math.isfinite(timeout_secs) or timeout_secs <= 0:
        raise ValueError(f"timeout_secs must be a positive, finite number of seconds, got {timeout_secs!r}.")
    return timeout_secs


def _split_host_port(address: str) -> Tuple[str, int]:
    rest = address[len(_GRPC):] if address.startswith(_GRPC) else address
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [ipv6]:port
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest or "," in rest:
        raise ValueError(f"{address!r} is not a TPU worker address: use 'grpc://host:port', e.g. 'grpc://10.0.0.2:8470'.")
    return host, int(port)


# --------------------------------------------------------------------------- resolution (worker thread)


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _fixes(timeout_secs: Optional[float] = None) -> str:
    """What to check; the timeout hint only where waiting longer could help."""
    text = ("Check the TPU name, zone and project, that the TPU is READY "
            "(`gcloud compute tpus describe NAME --zone ZONE`) and reachable from this machine")
    if timeout_secs is None:
        return text + "."
    return text + f", or raise timeout_secs (now {timeout_secs:g} s) if it is still starting."


def _reason(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)  # OpError.message has no graph traceback
    return text.strip().rstrip(".") or type(error).__name__


def _timeout_message(address: str, timeout_secs: float) -> str:
    return (
        f"Timed out after {timeout_secs:g} s (timeout_secs) waiting for {address} to report its TPU "
        "devices: something may accept connections there, but no TPU worker answered. " + _fixes(timeout_secs)
    )


def _resolve(tpu, zone, project, label, timeout_secs, deadline, progress) -> TPUTopology:
    resolver = tpu if isinstance(tpu, tf.distribute.cluster_resolver.TPUClusterResolver) else None
    if resolver is None:
        try:
            # For a TPU name this asks the GCE metadata server and the Cloud TPU API:
            # network calls with no timeout of their own, hence the worker thread.
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu, zone=zone, project=project)
        except Exception as e:
            raise TPUConnectionError(f"Could not look up {label}: {_reason(e)}. " + _fixes()) from e
    try:
        master = resolver.master()
        cluster_spec = resolver.cluster_spec()
    except Exception as e:
        raise TPUConnectionError(f"Could not find the address of {label}: {_reason(e)}. " + _fixes()) from e
    local = master == ""
    address = "tpu='local'" if local else master
    # Lets a timeout raised by the caller's thread name the resolved address, not just the TPU name.
    progress["address"] = address if label in (address, _LOCAL) else f"{label} at {address}"
    if not local:
        _probe_tcp(master, deadline, timeout_secs)
    devices = _list_devices(master, cluster_spec, address, deadline, timeout_secs)
    return _topology(master, devices, address, _runtime_version(resolver))


def _probe_tcp(master: str, deadline: float, timeout_secs: float) -> None:
    """Fails at once when nothing listens, instead of letting gRPC retry until the deadline."""
    host, port = _split_host_port(master)
    try:
        with socket.create_connection((host, port), timeout=max(0.05, _remaining(deadline))):
            pass
    except socket.timeout as e:
        raise TPUConnectionError(_timeout_message(master, timeout_secs)) from e
    except OSError as e:
        raise TPUConnectionError(
            f"No TPU at {master}: nothing accepts connections at {host}:{port} ({e.strerror or _reason(e)}). "
            + _fixes()
        ) from e


def _list_devices(master, cluster_spec, address, deadline, timeout_secs):
    cluster_def = cluster_spec.as_cluster_def() if cluster_spec and cluster_spec.jobs else None
    timeout_ms = max(1, int(_remaining(deadline) * 1000))
    # The gRPC session itself gives up at our deadline, so the worker thread finishes
    # on its own even when the caller has already stopped waiting for it.
    config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=timeout_ms, cluster_def=cluster_def)
    try:
        with tf.Graph().as_default(), tf.compat.v1.Session(master, config=config) as session:
            return session.list_devices()
    except tf.errors.DeadlineExceededError as e:
        raise TPUConnectionError(_timeout_message(address, timeout_secs)) from e
    except tf.errors.OpError as e:
        raise TPUConnectionError(
            f"{address} did not answer as a TensorFlow TPU worker: {_reason(e)}. " + _fixes()
        ) from e


def _runtime_version(resolver) -> str:
    """The TPU runtime's TensorFlow version from the Cloud TPU API, else this process's."""
    client = getattr(resolver, "_cloud_tpu_client", None)
    try:
        # Only ask the API: for bare gRPC addresses TensorFlow's client would instead
        # make an HTTP request to the TPU with no timeout.
        if client is not None and client.api_available():
            version = client.runtime_version()
            if version:
                return str(version)
    except Exception:  # the version is informative only; never fail resolution over it
        pass
    return tf.__version__


def _topology(master, devices, address, tf_version) -> TPUTopology:
    cores_by_host = {}
    job_name = ""
    kinds = set()
    for device in devices:
        spec = tf.DeviceSpec.from_string(device.name)
        kinds.add(spec.device_type or device.device_type)
        if spec.device_type == "TPU":
            cores_by_host.setdefault((spec.job, spec.replica, spec.task), []).append(spec.device_index)
            job_name = job_name or spec.job or ""
    if not cores_by_host:
        seen = ", ".join(sorted(kinds)) or "nothing"
        if master == "":
            raise TPUConnectionError(
                "No local TPU devices were found (tpu='local' means TPU chips attached to this machine; "
                f"TensorFlow sees only: {seen}). On a Cloud TPU VM, install the TPU build of TensorFlow "
                "(tensorflow-tpu) and check that no other process holds the TPU. Without a TPU, pass "
                "use_tpu=False to run the same code on CPU/GPU, or use simulated TPU shards on the CPU "
                "(e.g. TPU_NB_SIMULATE=8) to exercise the sharded code path."
            )
        raise TPUConnectionError(
            f"{address} answered but reports no TPU devices (it has: {seen}): it is a TensorFlow server, "
            "not a TPU worker. Check that the address is the TPU's (port 8470 on Cloud TPU nodes)."
        )
    per_host = {len(cores) for cores in cores_by_host.values()}
    if len(per_host) != 1:
        raise TPUConnectionError(
            f"{address} reports different TPU core counts per host ({sorted(per_host)}): the TPU system is "
            "not healthy. Restart the TPU (`gcloud compute tpus stop/start`) and try again."
        )
    num_cores = sum(len(cores) for cores in cores_by_host.values())
    return TPUTopology(
        master=master,
        num_hosts=len(cores_by_host),
        num_cores=num_cores,
        num_cores_per_host=per_host.pop(),
        device_kinds=tuple(sorted(kinds)),
        tf_version=tf_version,
        job_name=job_name,
    )
