"""The TPU backend running train() and evaluate() end to end against a fake chip.

No TPU is reachable here. TensorFlow's TPU system query answers with a fake topology (as in
test_tpu_graphs.py), the TPU is "resolved" by a stand-in for ``resolve_tpu``, and every session TensorFlow
opens (the training/evaluation MonitoredSession and the TPU system's own init/shutdown sessions) is a
``FakeChip`` session: it records each run, simulates what the TPU runtime does with the ops it is asked
to run (initialize/shutdown the system, the host enqueue loops, the replicated computation waiting for
every host's infeed, the outfeed dequeues waiting for computed steps, checkpoint save/restore as real
files holding the global step), and answers everything else with zeros.

What this checks is the orchestration around the graph (order of system init, loops, threads, shutdown,
errors, interrupts); what the chip computes is not checked here (only hardware can).
"""

import contextlib
import os
import signal
import threading
import time
import types
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.python.client import session as client_session
from tensorflow.python.training import session_manager

import tpu_nb
from tpu_nb.reporting import events
from tpu_nb.run import prediction
from model_zoo import CLASSES, FEATURES, eval_input_fn, train_input_fn
from test_tpu_graphs import PER_SHARD, _model_fn, fake_tpu, host_side_graph_def
from tpu_nb.backends import select_backend
from tpu_nb.backends import tpu_runtime
from tpu_nb.graph.walk import upstream_ops
from tpu_nb.backends.tpu_connection import TPUConnectionError, TPUTopology

MASTER = "grpc://10.0.0.2:8470"
WAIT_SECS = 20.0  # a fake wait longer than this is a hang in the code under test


class FakeChipError(tf.errors.InvalidArgumentError):
    def __init__(self, message):
        super().__init__(None, None, message)


class FakeChip:
    """Stands in for a TPU worker: sessions on it record their runs and simulate the TPU runtime's ops."""

    def __init__(self, hosts, eval_rows=None, fail_infeed_at=None, fail_outfeed_at=None, fail_compute=False,
                 loss=0.25, infeed_capacity=2, end_input_at=None, predict_rows=None):
        self.hosts = hosts
        # Prediction: each host's input, as the example ids it reads in order; the fake model predicts
        # every example's id (each prediction key holds it, broadcast to the key's shape).
        self.predict_rows = predict_rows
        self._host_copies = {}
        self._predict_graphs = {}
        self.end_input_at = end_input_at  # (host index, step of the second loop) where its input ends
        self.fail_compute = fail_compute  # the computation fails at once (a compile error, a lost core)
        self.infeed_capacity = infeed_capacity  # steps a host's enqueues may run ahead of the computation
        self.eval_rows = list(eval_rows or [])  # real rows of each evaluation step, in order; 0 afterwards
        self.fail_infeed_at = fail_infeed_at  # (host index, step of the run's first loop)
        self.fail_outfeed_at = fail_outfeed_at  # step within the first loop
        self.loss = loss
        self.calls = []
        self.cond = threading.Condition()
        self.step = 0
        self.iterations = 0
        self.loops = 0
        self.infed = {}
        self.computed = 0
        self.dequeued = 0
        self.eval_steps_dequeued = 0
        self.sessions = []
        self.system_devices = []  # where the TPU system's initialize and shutdown ops were placed
        self._upstream = {}

    def session(self, target="", graph=None, config=None):
        sess = FakeSession(self, target, graph if graph is not None else tf.compat.v1.get_default_graph(), config)
        self.sessions.append(sess)
        return sess

    def record(self, *call):
        with self.cond:
            self.calls.append(call)

    def kinds(self):
        return [c[0] for c in self.calls]

    # -- what the runtime does -------------------------------------------------
    def wait(self, sess, ready, what):
        deadline = time.monotonic() + WAIT_SECS
        while not ready():
            if sess.closed:
                raise tf.errors.CancelledError(None, None, f"Run call was cancelled ({what}: session closed)")
            if time.monotonic() > deadline:
                raise AssertionError(f"fake chip: {what} waited {WAIT_SECS} s")
            self.cond.wait(0.01)

    def enqueue_loop(self, sess, host):
        for i in range(self.iterations):
            time.sleep(0.001)
            if self.fail_infeed_at == (host, i) and self.loops == 0:
                self.record("infeed_error", host, i)
                raise FakeChipError(f"fake infeed failure on host {host} at step {i}")
            if self.end_input_at == (host, i) and self.loops == 1:
                raise tf.errors.OutOfRangeError(None, None, "End of sequence")
            with self.cond:
                # As a real infeed: an enqueue waits while the host's buffer is full.
                self.wait(sess, lambda: self.infed.get(host, 0) - self.computed < self.infeed_capacity,
                          f"room in host {host}'s infeed")
                self.infed[host] = self.infed.get(host, 0) + 1
                self.calls.append(("enqueue", host, i))
                self.cond.notify_all()

    def compute(self, sess, train):
        with self.cond:
            self.calls.append(("loop", self.iterations))
            if self.fail_compute == "unavailable" and self.loops == 1:
                raise tf.errors.UnavailableError(None, None, "Socket closed")
            if self.fail_compute is True:
                raise FakeChipError("fake TPU computation failure")
            for i in range(self.iterations):
                self.wait(sess, lambda: len(self.infed) == self.hosts and min(self.infed.values()) > i,
                          f"step {i} for infeed")
                if train:
                    self.step += 1
                self.computed += 1
                self.cond.notify_all()
            self.loops += 1

    def dequeue(self, sess):
        with self.cond:
            i = self.dequeued
            self.wait(sess, lambda: self.computed > i, f"outfeed of step {i}")
            if self.fail_outfeed_at == i and self.loops <= 1:
                self.calls.append(("outfeed_error", i))
                raise FakeChipError(f"fake host_call failure at step {i}")
            self.dequeued += 1
            self.calls.append(("dequeue", i))
            return i

    # -- prediction: one step per session run, counters running over the whole predict() -----------
    def is_predict_graph(self, graph):
        if graph not in self._predict_graphs:
            try:
                graph.get_operation_by_name("tpu_predict_loop/computed")
                self._predict_graphs[graph] = True
            except KeyError:
                self._predict_graphs[graph] = False
        return self._predict_graphs[graph]

    def predict_enqueue(self, sess, host):
        with self.cond:
            i = self.infed.get(host, 0)
            if self.fail_infeed_at == (host, i):
                self.calls.append(("infeed_error", host, i))
                raise FakeChipError(f"fake infeed failure on host {host} at step {i}")
            self.wait(sess, lambda: self.infed.get(host, 0) - self.computed < self.infeed_capacity,
                      f"room in host {host}'s infeed")
            self.infed[host] = i + 1
            self.calls.append(("enqueue", host, i))
            self.cond.notify_all()

    def predict_step(self, sess):
        with self.cond:
            i = self.computed
            self.calls.append(("predict_step", i))
            self.wait(sess, lambda: len(self.infed) == self.hosts and min(self.infed.values()) > i,
                      f"predict step {i} for infeed")
            self.computed += 1
            self.cond.notify_all()

    def outfeed_values(self, graph, step):
        """What each replica's outfeed holds after predict step ``step``: mask, stop, then the predictions."""
        dequeues = sorted((op for op in graph.get_operations() if op.type == "OutfeedDequeueTuple"),
                          key=lambda op: int(op.name.rsplit("_", 1)[-1]))
        hosts = [tf.DeviceSpec.from_string(op.device).task for op in dequeues]
        values = {}
        for replica, (op, host) in enumerate(zip(dequeues, hosts)):
            per_shard = op.outputs[0].shape.as_list()[0]
            host_batch = per_shard * hosts.count(host)
            j = hosts[:replica].count(host)  # this replica's shard of its host's batch
            host_rows = self.predict_rows[host][step * host_batch:(step + 1) * host_batch]
            ids = np.array(host_rows[j * per_shard:(j + 1) * per_shard], np.int64)
            values[op.outputs[0]] = np.arange(per_shard) < len(ids)
            values[op.outputs[1]] = np.full([per_shard], not host_rows)
            padded = np.concatenate([ids, np.zeros(per_shard - len(ids), np.int64)])
            for out in op.outputs[2:]:
                shape = out.shape.as_list()
                values[out] = np.broadcast_to(padded.reshape([-1] + [1] * (len(shape) - 1)), shape).astype(
                    out.dtype.as_numpy_dtype)
        return values

    def host_side(self, graph, tensors, step):
        """The fetched host-side tensors after the outfeed, run on this CPU with the replicas' outfeed fed in."""
        key = (graph, tuple(t.name for t in tensors))
        if key not in self._host_copies:
            sub = host_side_graph_def(graph, [t.op.name for t in tensors])
            copy = tf.Graph()
            with copy.as_default():
                placeholders = {op.name: [tf.compat.v1.placeholder(t.dtype, t.shape) for t in op.outputs]
                                for op in graph.get_operations() if op.type == "OutfeedDequeueTuple"}
                used = {i if ":" in i else f"{i}:0" for n in sub.node for i in n.input}
                input_map = {k: p for name, ps in placeholders.items() for k, p in
                             ((f"{name}:{i}", p) for i, p in enumerate(ps)) if k in used}
                copied = tf.compat.v1.import_graph_def(sub, input_map=input_map,
                                                       return_elements=[t.name for t in tensors], name="host")
            self._host_copies[key] = (copy, placeholders, copied)
        copy, placeholders, copied = self._host_copies[key]
        feed = {placeholders[t.op.name][t.value_index]: v for t, v in self.outfeed_values(graph, step).items()}
        with client_session.Session(graph=copy) as sess:  # the real class: a CPU session
            return dict(zip((t.name for t in tensors), sess.run(copied, feed)))

    def upstream_types(self, element):
        key = element.name
        if key not in self._upstream:
            self._upstream[key] = {op.type for op in upstream_ops(element)}
        return self._upstream[key]


def _write_checkpoint(path, step):
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.Variable(np.int64(step), name="global_step")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:  # the real class: not the patched attribute
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, path, write_meta_graph=False, write_state=False)


class FakeSession(client_session.SessionInterface):
    def __init__(self, chip, target, graph, config):
        self.chip, self.target, self._graph, self.config = chip, target, graph, config
        self.closed = False
        chip.record("session", target)

    graph = property(lambda self: self._graph)
    sess_str = property(lambda self: self.target)

    def close(self):
        with self.chip.cond:
            self.closed = True
            self.chip.cond.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def list_devices(self):
        return []

    def make_callable(self, fetches, *args, **kwargs):
        return lambda *feeds: self.run(fetches)

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        if self.closed:
            raise RuntimeError("Attempted to use a closed Session.")
        chip, graph = self.chip, self._graph
        feeds = {graph.as_graph_element(k) if isinstance(k, str) else k: v for k, v in (feed_dict or {}).items()}
        flat = []

        def collect(f):
            if isinstance(f, dict):
                return {k: collect(v) for k, v in f.items()}
            if isinstance(f, (list, tuple)):
                items = [collect(v) for v in f]
                return type(f)(*items) if hasattr(f, "_fields") else type(f)(items)
            if f is None:
                return None
            element = graph.as_graph_element(f)
            flat.append(element)
            return element

        structure = collect(fetches)
        ops = [e.op if isinstance(e, tf.Tensor) else e for e in flat]
        names = [op.name for op in ops]
        types = {op.type for op in ops}
        context = {}
        for op in ops:
            if op.type in ("ConfigureDistributedTPU", "ShutdownDistributedTPU"):
                chip.system_devices.append(op.device)
        if "ConfigureDistributedTPU" in types:
            chip.record("initialize", self.target)
        if "ShutdownDistributedTPU" in types:
            chip.record("shutdown", self.target)
        saving = [v for k, v in feeds.items() if k.op.name.split("/")[0].startswith("save")]
        if any(n.startswith("tpu_nb/AssignVariableOp") for n in names):
            with chip.cond:
                chip.iterations = int(next(iter(feeds.values())))
                chip.infed, chip.computed, chip.dequeued = {}, 0, 0
        predicting = chip.is_predict_graph(graph)
        for op in ops:
            if "infeed_loop" in op.name:  # a host's enqueue loop, placed on that host (its task)
                host = tf.DeviceSpec.from_string(op.device).task
                if predicting:
                    chip.predict_enqueue(self, host)
                else:
                    chip.enqueue_loop(self, host)
        if "tpu_predict_loop/computed" in names:
            chip.predict_step(self)
        if any(n.startswith(("tpu_loop/", "tpu_eval_loop/steps_ran")) for n in names):
            chip.compute(self, train=any(n.startswith("tpu_loop/") for n in names))
        if not any(n.startswith(("tpu_loop/", "tpu_eval_loop/")) for n in names) and any(
                "OutfeedDequeueTuple" in chip.upstream_types(e) for e in flat):
            context["outfeed_step"] = chip.dequeue(self)
            if predicting:
                after_outfeed = [e for e in flat if isinstance(e, tf.Tensor)
                                 and "OutfeedDequeueTuple" in chip.upstream_types(e)]
                context["host_side"] = chip.host_side(graph, after_outfeed, context["outfeed_step"])
        if saving:
            path = tf.compat.as_str(saving[0])
            if any(n.endswith("restore_all") for n in names):
                chip.step = int(tf.train.load_variable(path, "global_step"))
                chip.record("restore", chip.step)
            else:
                _write_checkpoint(path, chip.step)
                chip.record("save", chip.step)
                context["save_path"] = path
        return self._values(structure, context)

    def _values(self, structure, context):
        chip = self.chip
        if isinstance(structure, dict):
            return {k: self._values(v, context) for k, v in structure.items()}
        if isinstance(structure, (list, tuple)):
            items = [self._values(v, context) for v in structure]
            return type(structure)(*items) if hasattr(structure, "_fields") else type(structure)(items)
        if structure is None or isinstance(structure, tf.Operation):
            return None
        t = structure
        name = t.op.name
        if t.name in context.get("host_side", {}):
            return context["host_side"][t.name]
        if name in ("tpu_loop/steps_ran", "tpu_eval_loop/steps_ran"):
            return np.int32(chip.iterations)
        if name == "tpu_loop/last_loss":
            return np.float32(chip.loss)
        if name == "tpu_loop/bad_step":
            return np.int64(-1 if np.isfinite(chip.loss) else chip.step)
        if name == "tpu_loop/global_step_after" or (name.startswith("global_step") and t.dtype == tf.int64):
            return np.int64(chip.step)
        if name.endswith("real_rows"):
            with chip.cond:
                i = chip.eval_steps_dequeued
                chip.eval_steps_dequeued += 1
            return np.int64(chip.eval_rows[i] if i < len(chip.eval_rows) else 0)
        if "save_path" in context and t.dtype == tf.string:
            return tf.compat.as_bytes(context["save_path"])
        if t.dtype == tf.string:
            if t.shape.rank == 0:
                return b""
            return np.array([], dtype=object)  # report_uninitialized_variables: everything is ready
        shape = [d if d is not None else 0 for d in t.shape.as_list()] if t.shape.rank is not None else []
        return np.zeros(shape, t.dtype.as_numpy_dtype)


@contextlib.contextmanager
def fake_tpu_worker(cores, hosts, **chip_kwargs):
    """A resolved TPU at MASTER with a fake topology, every session on a FakeChip; yields the chip."""
    found = TPUTopology(master=MASTER, num_hosts=hosts, num_cores=cores, num_cores_per_host=cores // hosts,
                        device_kinds=("CPU", "TPU", "TPU_SYSTEM"), tf_version=tf.__version__, job_name="worker")
    chip = FakeChip(hosts, **chip_kwargs)
    with fake_tpu(cores, hosts), \
            mock.patch("tpu_nb.backends.tpu_connection.resolve_tpu", lambda address, timeout_secs: found), \
            mock.patch.object(session_manager, "session", types.SimpleNamespace(Session=chip.session)), \
            mock.patch.object(tpu_runtime, "new_session", lambda target, config=None, graph=None: chip.session(
                target, graph, config)), \
            mock.patch.object(prediction, "_new_session", lambda target, config: chip.session(target, None, config)), \
            mock.patch.object(tpu_runtime, "ERROR_GRACE_SECS", 0.2):
        yield chip


def _estimator(tmp_path, cores, iterations_per_loop=3, fn=None, **tpu_config):
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master=MASTER,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=iterations_per_loop, **tpu_config))
    return tpu_nb.TPUEstimator(fn or _model_fn(), config=config, train_batch_size=PER_SHARD * cores,
                               eval_batch_size=PER_SHARD * cores)


def _loops(calls):
    """The calls between each ('loop', k) and the next, as (k, calls) pairs."""
    out = []
    for call in calls:
        if call[0] == "loop":
            out.append((call[1], []))
        elif out:
            out[-1][1].append(call)
    return out


@pytest.mark.parametrize("cores,hosts", [(8, 1), (32, 4)])
def test_train_runs_iterations_per_loop_steps_per_session_run_with_host_threads(tmp_path, cores, hosts):
    batches = []
    with fake_tpu_worker(cores, hosts) as chip, events.subscribed(
            lambda e: batches.append(e) if isinstance(e, events.HostCallBatch) else None):
        backend = select_backend(_estimator(tmp_path, cores), "train")
        assert backend.description == f"TPU {cores}x{hosts} ({cores} cores, {hosts} host{'s' if hosts > 1 else ''}) " \
                                      f"at {MASTER}"
        _estimator(tmp_path, cores).train(train_input_fn, steps=7)
    # Each loop's host_call values reach the host (and the dashboards' events) with their global steps.
    assert [list(b.global_steps) for b in batches] == [[1, 2, 3], [4, 5, 6], [7]]
    assert batches[0].values["labels"].shape == (3, PER_SHARD * cores)  # every replica's rows, concatenated
    kinds = chip.kinds()
    # The system is initialised in its own session before the first loop and shut down after the last.
    assert kinds.index("initialize") < kinds.index("loop")
    assert kinds[-1] == "shutdown" and kinds.count("initialize") == kinds.count("shutdown") == 1
    assert [c for c in chip.calls if c[0] in ("initialize", "shutdown")] == [("initialize", MASTER),
                                                                             ("shutdown", MASTER)]
    assert chip.system_devices == ["/job:worker/device:TPU_SYSTEM:0"] * 2  # on the TPU job
    # The training session runs against the TPU's master, with isolated session state.
    training = [s for s in chip.sessions if any(c for c in chip.calls if c[0] == "loop")]
    assert {s.target for s in chip.sessions} == {MASTER}
    assert any(s.config is not None and s.config.isolate_session_state for s in training)
    # 7 steps at 3 per loop: loops of 3, 3 and 1 steps, each one session run of the TPU computation.
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [3, 3, 1]
    enqueues = [c for c in chip.calls if c[0] == "enqueue"]
    for host in range(hosts):  # one infeed thread per host: `iterations` enqueues of its shards per loop
        assert [i for _, h, i in enqueues if h == host] == [0, 1, 2, 0, 1, 2, 0]
    # The outfeed thread dequeues host_call values once per step, after the step was computed.
    assert kinds.count("dequeue") == 7
    for k, during in _loops(chip.calls):
        assert sum(c[0] == "dequeue" for c in during) <= k
    assert tf.train.load_variable(str(tmp_path), "global_step") == 7
    assert ("save", 7) in chip.calls


def test_training_resumes_from_the_checkpoint(tmp_path):
    with fake_tpu_worker(8, 1) as chip:
        _estimator(tmp_path, 8).train(train_input_fn, steps=3)
    with fake_tpu_worker(8, 1) as chip:
        _estimator(tmp_path, 8).train(train_input_fn, max_steps=5)
    assert ("restore", 3) in chip.calls
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [2]
    assert tf.train.load_variable(str(tmp_path), "global_step") == 5


def test_an_infeed_thread_error_ends_the_run_with_that_error(tmp_path):
    with fake_tpu_worker(32, 4, fail_infeed_at=(2, 1)) as chip:
        est = _estimator(tmp_path, 32)
        start = time.monotonic()
        with pytest.raises(tf.errors.InvalidArgumentError, match="fake infeed failure on host 2 at step 1"):
            est.train(train_input_fn, steps=6)
        elapsed = time.monotonic() - start
    # Not a hang: the computation waiting for host 2's infeed was cancelled by closing the session.
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert chip.kinds()[-1] == "shutdown"
    assert "initialize" in chip.kinds()


def test_an_outfeed_thread_error_ends_the_run_with_that_error(tmp_path):
    with fake_tpu_worker(8, 1, fail_outfeed_at=1) as chip:
        with pytest.raises(tf.errors.InvalidArgumentError, match="fake host_call failure at step 1"):
            _estimator(tmp_path, 8).train(train_input_fn, steps=6)
    assert chip.kinds()[-1] == "shutdown"


def test_a_failed_computation_ends_the_run_with_its_error_and_releases_the_infeed_threads(tmp_path):
    with fake_tpu_worker(32, 4, fail_compute=True, infeed_capacity=1) as chip:
        start = time.monotonic()
        with pytest.raises(tf.errors.InvalidArgumentError, match="fake TPU computation failure"):
            _estimator(tmp_path, 32, iterations_per_loop=5).train(train_input_fn, steps=5)
        elapsed = time.monotonic() - start
    # Each host's thread was waiting for room in its infeed; closing the session cancelled it.
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert sorted(h for c, h, i in (c for c in chip.calls if c[0] == "enqueue")) == [0, 1, 2, 3]
    assert chip.kinds()[-1] == "shutdown"


def test_ctrl_c_stops_at_a_loop_boundary_with_a_checkpoint(tmp_path, sigint_handler):
    sigint_handler(signal.default_int_handler)  # as in an interactive session: the suite may start with it ignored
    class InterruptAfterFirstLoop(tf.compat.v1.train.SessionRunHook):
        def __init__(self):
            self.runs = 0

        def after_run(self, run_context, run_values):
            self.runs += 1
            if self.runs == 1:
                os.kill(os.getpid(), signal.SIGINT)

    with fake_tpu_worker(8, 1) as chip:
        with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
            _estimator(tmp_path, 8).train(train_input_fn, steps=30, hooks=[InterruptAfterFirstLoop()])
    # The loop in flight when Ctrl-C came finished; the next one never started.
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [3]
    assert tf.train.load_variable(str(tmp_path), "global_step") == 3
    assert chip.kinds()[-1] == "shutdown"


def test_evaluate_runs_loops_until_a_step_without_real_rows(tmp_path):
    # 3 steps with real rows (the last one short), then the stopping signal in the second loop.
    with fake_tpu_worker(8, 1, eval_rows=[32, 32, 5]) as chip:
        results = _estimator(tmp_path, 8).evaluate(eval_input_fn)
    kinds = chip.kinds()
    assert kinds.index("initialize") < kinds.index("loop") and kinds[-1] == "shutdown"
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [3, 3]
    assert [i for _, h, i in (c for c in chip.calls if c[0] == "enqueue")] == [0, 1, 2, 0, 1, 2]
    # Every step's eval_metrics come out through the outfeed, the stopping loop's too (not left queued).
    assert kinds.count("dequeue") == 6
    assert set(results) == {"loss", "accuracy", "global_step"}


def test_evaluate_with_steps_runs_one_loop_of_that_many_steps(tmp_path):
    with fake_tpu_worker(8, 1, eval_rows=[32] * 10) as chip:
        _estimator(tmp_path, 8).evaluate(eval_input_fn, steps=5)
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [5]
    assert chip.kinds().count("dequeue") == 5


def test_tpu_job_name_and_initial_infeed_sleep_are_honoured(tmp_path):
    with fake_tpu_worker(8, 1) as chip:
        est = _estimator(tmp_path, 8, tpu_job_name="tpu_worker", initial_infeed_sleep_secs=0.5)
        assert select_backend(est, "train").topology.host_device(0) == "/job:tpu_worker/replica:0/task:0/device:CPU:0"
        start = time.monotonic()
        est.train(train_input_fn, steps=2)
        assert time.monotonic() - start >= 0.5
    assert chip.system_devices == ["/job:tpu_worker/device:TPU_SYSTEM:0"] * 2


def test_host_call_every_n_steps_is_refused_rather_than_ignored(tmp_path):
    from tpu_nb.backends.tpu import TPUNotSupportedError

    with fake_tpu_worker(8, 1):
        with pytest.raises(TPUNotSupportedError, match="experimental_host_call_every_n_steps=2"):
            _estimator(tmp_path, 8, experimental_host_call_every_n_steps=2).train(train_input_fn, steps=2)


# --------------------------------------------------------------------------- predict() on the fake chip

EXAMPLES = 13


def _host_rows(hosts, host_batch, n=EXAMPLES):
    """Each host's example ids when every global batch is split into contiguous per-host slices."""
    global_batch = host_batch * hosts
    return [[i for i in range(n) if (i % global_batch) // host_batch == h] for h in range(hosts)]


def _predict_input_fn(hosts):
    """Examples 0..12 (features: the id in every column), host k reading its slice of every global batch.

    The TPU backend calls input_fn once per host, in host order, without a host index in params: the
    call count stands for it here.
    """
    calls = []

    def input_fn(params):
        host = len(calls) % hosts
        calls.append(host)
        host_batch = params["batch_size"]
        ids = tf.data.Dataset.range(EXAMPLES).batch(host_batch * hosts)
        ids = ids.map(lambda batch: batch[host * host_batch:(host + 1) * host_batch]).unbatch()
        return ids.map(lambda i: tf.fill([FEATURES], tf.cast(i, tf.float32))).batch(host_batch)

    return input_fn


def _predictor(tmp_path, cores, per_shard=1, fn=None, **tpu_config):
    from test_tpu_predict_graph import _model_fn as predict_model_fn

    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master=MASTER, tpu_config=tpu_nb.TPUConfig(**tpu_config))
    return tpu_nb.TPUEstimator(fn or predict_model_fn(), config=config, train_batch_size=per_shard * cores,
                               predict_batch_size=per_shard * cores)


@pytest.mark.parametrize("cores,hosts", [(8, 1), (32, 4)])
@pytest.mark.parametrize("per_shard", [1, 4])
def test_predict_yields_every_example_in_input_order_without_padding(tmp_path, cores, hosts, per_shard):
    host_batch = per_shard * cores // hosts
    rows = _host_rows(hosts, host_batch)
    with fake_tpu_worker(cores, hosts, predict_rows=rows) as chip:
        out = list(_predictor(tmp_path, cores, per_shard).predict(_predict_input_fn(hosts)))
    assert [int(p["class_ids"]) for p in out] == list(range(EXAMPLES))
    assert [p["logits"].tolist() for p in out] == [[float(i)] * CLASSES for i in range(EXAMPLES)]
    kinds = chip.kinds()
    # The system is initialised before the first step and shut down after the last, on the TPU's master.
    assert kinds.index("initialize") < kinds.index("predict_step") and kinds[-1] == "shutdown"
    assert kinds.count("initialize") == kinds.count("shutdown") == 1
    assert {s.target for s in chip.sessions} == {MASTER}
    assert any(s.config is not None and s.config.isolate_session_state for s in chip.sessions)
    # One predict step per session run, each host enqueuing one batch for it; the stopping step ends it.
    batches = -(-EXAMPLES // (host_batch * hosts))
    assert [c[1] for c in chip.calls if c[0] == "predict_step"] == list(range(batches + 1))
    for host in range(hosts):
        assert [i for _, h, i in (c for c in chip.calls if c[0] == "enqueue") if h == host] == list(
            range(batches + 1))
    assert kinds.count("dequeue") == batches + 1


@pytest.mark.parametrize("cores,hosts", [(8, 1), (32, 4)])
def test_predict_batches_and_predict_keys(tmp_path, cores, hosts):
    rows = _host_rows(hosts, cores // hosts)
    with fake_tpu_worker(cores, hosts, predict_rows=rows):
        batches = list(_predictor(tmp_path, cores).predict(_predict_input_fn(hosts), predict_keys=["class_ids"],
                                                           yield_single_examples=False))
    assert all(set(b) == {"class_ids"} for b in batches)
    # Whole batches, the padding rows removed: 13 examples in global batches of `cores`.
    assert [b["class_ids"].tolist() for b in batches] == [list(range(i, min(i + cores, EXAMPLES)))
                                                          for i in range(0, EXAMPLES, cores)]
    with fake_tpu_worker(cores, hosts, predict_rows=rows):
        single = list(_predictor(tmp_path, cores).predict(_predict_input_fn(hosts), predict_keys="logits"))
    assert [p.keys() == {"logits"} for p in single] == [True] * EXAMPLES
    assert [p["logits"][0] for p in single] == list(range(EXAMPLES))


def test_predict_with_a_single_prediction_tensor(tmp_path):
    from test_tpu_predict_graph import _model_fn as predict_model_fn

    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)):
        out = list(_predictor(tmp_path, 8, fn=predict_model_fn(single=True)).predict(_predict_input_fn(1)))
    assert [p.tolist() for p in out] == [[float(i)] * CLASSES for i in range(EXAMPLES)]


def test_predict_with_hooks_runs_through_them_in_one_session_without_recreating_it(tmp_path):
    class Count(tf.compat.v1.train.SessionRunHook):
        runs = 0

        def after_run(self, run_context, run_values):
            Count.runs += 1

    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)) as chip:
        out = list(_predictor(tmp_path, 8).predict(_predict_input_fn(1), hooks=[Count()]))
    assert [int(p["class_ids"]) for p in out] == list(range(EXAMPLES))
    assert Count.runs == 3  # two batches and the stopping step, each one run through the hooks
    assert chip.kinds()[-1] == "shutdown"


@pytest.mark.parametrize("how", ["close", "break"])
def test_predict_shuts_the_tpu_down_when_the_caller_stops_early(tmp_path, how):
    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)) as chip:
        predictions = _predictor(tmp_path, 8).predict(_predict_input_fn(1))
        if how == "close":
            assert int(next(predictions)["class_ids"]) == 0
            predictions.close()
        else:
            for p in predictions:
                break
            del predictions, p
        kinds = chip.kinds()
    assert kinds.count("predict_step") == 1 and kinds[-1] == "shutdown"


def test_ctrl_c_during_predict_shuts_the_tpu_down(tmp_path, sigint_handler):
    sigint_handler(signal.default_int_handler)  # as in an interactive session: the suite may start with it ignored
    class InterruptAfterFirstBatch(tf.compat.v1.train.SessionRunHook):
        def after_run(self, run_context, run_values):
            os.kill(os.getpid(), signal.SIGINT)

    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)) as chip:
        with pytest.raises(KeyboardInterrupt):
            list(_predictor(tmp_path, 8).predict(_predict_input_fn(1), hooks=[InterruptAfterFirstBatch()]))
    assert chip.kinds()[-1] == "shutdown"


@pytest.mark.parametrize("hooks", [[], [tf.compat.v1.train.StepCounterHook(every_n_steps=1)]])
def test_an_infeed_thread_error_ends_predict_with_that_error(tmp_path, hooks):
    with fake_tpu_worker(32, 4, predict_rows=_host_rows(4, 8), fail_infeed_at=(2, 1)) as chip:
        start = time.monotonic()
        with pytest.raises(tf.errors.InvalidArgumentError, match="fake infeed failure on host 2 at step 1"):
            list(_predictor(tmp_path, 32).predict(_predict_input_fn(4), hooks=hooks))
    # Not a hang: the step waiting for host 2's infeed was cancelled by closing the session.
    assert time.monotonic() - start < 15
    assert chip.kinds()[-1] == "shutdown"


def test_tpu_embedding_config_is_refused_on_the_tpu_backend(tmp_path):
    from tpu_nb.backends.tpu import TPUNotSupportedError

    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)) as chip:
        config = tpu_nb.RunConfig(model_dir=str(tmp_path), master=MASTER)
        est = tpu_nb.TPUEstimator(_model_fn(), config=config, train_batch_size=32, predict_batch_size=8,
                                  embedding_config_spec=object())
        with pytest.raises(TPUNotSupportedError, match=r"TPU embedding \(embedding_config_spec\) is not supported"):
            est.train(train_input_fn, steps=1)
        with pytest.raises(TPUNotSupportedError, match="TPU embedding"):
            list(est.predict(_predict_input_fn(1)))
    assert "initialize" not in chip.kinds()  # refused before any work on the TPU


def test_tpu_embedding_ops_in_model_fn_are_refused(tmp_path):
    from tpu_nb.backends.tpu import TPUNotSupportedError, _refuse_tpu_embedding

    graph = tf.Graph()
    with graph.as_default():
        tf.raw_ops.TPUEmbeddingActivations(embedding_variable=tf.zeros([2, 2]), sliced_activations=tf.zeros([2, 2]),
                                           table_id=0, lookup_id=0)
    with pytest.raises(TPUNotSupportedError, match="TPU embedding ops .*TPUEmbeddingActivations"):
        _refuse_tpu_embedding(graph)


def test_model_parallelism_is_refused(tmp_path):
    with pytest.raises(Exception, match="model parallelism"):
        tpu_nb.TPUEstimator(_model_fn(), config=tpu_nb.RunConfig(
            model_dir=str(tmp_path), master=MASTER, tpu_config=tpu_nb.TPUConfig(num_cores_per_replica=2)),
            train_batch_size=64)


def test_a_dead_tpu_address_still_fails_within_the_timeout_naming_it(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"grpc://127.0.0.1:{port}"
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), master=address,
                              tpu_config=tpu_nb.TPUConfig(connect_timeout_secs=5))
    est = tpu_nb.TPUEstimator(_model_fn(), config=config, train_batch_size=32)
    start = time.monotonic()
    with pytest.raises(TPUConnectionError, match=address):
        est.train(train_input_fn, steps=1)
    assert time.monotonic() - start < 5


def test_an_eval_metrics_error_in_the_outfeed_thread_ends_evaluate_with_that_error(tmp_path):
    with fake_tpu_worker(8, 1, eval_rows=[32] * 10, fail_outfeed_at=1) as chip:
        with pytest.raises(tf.errors.InvalidArgumentError, match="fake host_call failure at step 1"):
            _estimator(tmp_path, 8).evaluate(eval_input_fn)
    assert chip.kinds()[-1] == "shutdown"


# --------------------------------------------------------------------------- the host threads on real sessions
#
# The fake chip above decides itself what a closed session does to a blocked run. Here the same
# LoopThreads run against real TensorFlow sessions (in process, and over gRPC as a TPU's master is
# reached), with host queues standing in for the chip's infeed and outfeed buffers.


def _stand_in_loop(fail_infeed_at=None, fail_computation=False):
    """(graph, driver parts, computation fetches, outfeed value): a host loop feeding a loop that feeds the host."""
    graph = tf.Graph()
    with graph.as_default():
        feed = tf.compat.v1.placeholder(tf.int32, [], name="iterations")
        iterations = tf.compat.v1.get_variable("iterations_per_loop", [], tf.int32, use_resource=True,
                                               initializer=tf.compat.v1.zeros_initializer(),
                                               collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
        assign = iterations.assign(feed, read_value=False)
        infeed = tf.queue.FIFOQueue(1, [tf.int32], shapes=[[]], name="stand_in_infeed")
        outfeed = tf.queue.FIFOQueue(1, [tf.int32], shapes=[[]], name="stand_in_outfeed")

        def enqueue(i):
            checks = [tf.debugging.assert_none_equal(i, fail_infeed_at, message="input pipeline failed")] \
                if fail_infeed_at is not None else []
            with tf.control_dependencies(checks):
                with tf.control_dependencies([infeed.enqueue(i * 10)]):
                    return i + 1

        host_loop = tf.while_loop(lambda i: i < iterations.read_value(), enqueue, [tf.constant(0)])

        def step(i, total):
            x = infeed.dequeue()
            checks = [tf.debugging.assert_equal(i, -1, message="computation failed")] if fail_computation else []
            with tf.control_dependencies(checks + [outfeed.enqueue(x + 1)]):
                return i + 1, total + x

        ran, total = tf.while_loop(lambda i, t: i < iterations.read_value(), step, [0, 0])
        init = tf.compat.v1.local_variables_initializer()
        outfeed_value = outfeed.dequeue()
    return graph, init, (host_loop, assign, feed), (ran, total), outfeed_value


@pytest.fixture(params=["in_process", "grpc"])
def real_target(request):
    if request.param == "in_process":
        return ""
    return tf.distribute.Server.create_local_server().target


def _driver(parts, outfeed_value, taken):
    host_loop, assign, feed = parts
    return tpu_runtime.TPUHostDriver([("/job:localhost/task:0/device:CPU:0", host_loop)], assign, feed,
                                     tpu_runtime.TPUOutfeed(lambda i: outfeed_value,
                                                            lambda i, value: taken.append(int(value))),
                                     error_grace_secs=0.2)


def test_host_threads_feed_and_drain_a_loop_on_a_real_session(real_target):
    from tpu_nb.inputs.host_infeed import feeding

    graph, init, parts, computation, outfeed_value = _stand_in_loop()
    taken = []
    driver = _driver(parts, outfeed_value, taken)
    with tf.compat.v1.Session(real_target, graph=graph) as sess:
        sess.run(init)
        for k in (3, 5):
            with feeding(driver, sess, k) as feed:
                ran, total = sess.run(computation)
                feed.ran = int(ran)
            assert ran == k and total == sum(10 * i for i in range(k))
    assert taken == [1, 11, 21, 1, 11, 21, 31, 41]  # every step's value, in step order


def test_a_host_thread_error_cancels_the_blocked_loop_on_a_real_session(real_target):
    from tpu_nb.inputs.host_infeed import feeding

    graph, init, parts, computation, outfeed_value = _stand_in_loop(fail_infeed_at=2)
    driver = _driver(parts, outfeed_value, [])
    sess = tf.compat.v1.Session(real_target, graph=graph)
    sess.run(init)
    start = time.monotonic()
    with pytest.raises(tf.errors.InvalidArgumentError, match="input pipeline failed"):
        with feeding(driver, sess, 5) as feed:
            feed.ran = int(sess.run(computation)[0])  # waits for step 2's input, until the session is closed
    assert time.monotonic() - start < 10


def test_a_failed_loop_releases_host_threads_waiting_on_a_real_session(real_target):
    from tpu_nb.inputs.host_infeed import feeding

    graph, init, parts, computation, outfeed_value = _stand_in_loop(fail_computation=True)
    driver = _driver(parts, outfeed_value, [])
    sess = tf.compat.v1.Session(real_target, graph=graph)
    sess.run(init)
    start = time.monotonic()
    # The computation's own error, not the cancellation of the host threads it leaves waiting.
    with pytest.raises(tf.errors.InvalidArgumentError, match="computation failed"):
        with feeding(driver, sess, 5) as feed:
            feed.ran = int(sess.run(computation)[0])
    assert time.monotonic() - start < 10


def test_an_evaluation_host_call_leaves_through_the_outfeed_with_eval_metrics(tmp_path):
    from test_tpu_graphs import _build, _node_defs
    from tpu_nb.backends.tpu_graph import build_tpu_eval_graph

    seen = []

    def fn(features, labels, mode, params):
        logits = tf_keras.layers.Dense(3)(features)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

        def metric_fn(labels, logits):
            return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}

        def host_fn(labels):
            seen.append(labels.shape.as_list())
            return [tf.reduce_sum(labels)]

        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]),
                                       host_call=(host_fn, [labels]))

    with fake_tpu(8, 1) as system:
        graph, built = _build(_estimator(tmp_path, 8, fn=fn), system, eval_input_fn, build_tpu_eval_graph)
    enqueue = [n for n in _node_defs(graph) if n.op == "OutfeedEnqueueTuple"]
    assert len(enqueue) == 1  # loss, mask, eval_metrics' labels and logits, host_call's labels
    assert list(enqueue[0].attr["dtypes"].list.type) == [
        tf.float32.as_datatype_enum, tf.bool.as_datatype_enum, tf.int32.as_datatype_enum,
        tf.float32.as_datatype_enum, tf.int32.as_datatype_enum]
    assert seen == [[PER_SHARD * 8]] and built.host_call_outputs is not None
    with fake_tpu_worker(8, 1, eval_rows=[32]) as chip:
        _estimator(tmp_path, 8, fn=fn).evaluate(eval_input_fn)
    assert chip.kinds().count("dequeue") == 3


def test_a_tpu_lost_mid_run_ends_it_with_a_clear_error_and_the_checkpoint_intact(tmp_path):
    from tpu_nb.backends.tpu import TPULostError

    with fake_tpu_worker(8, 1, fail_compute="unavailable") as chip:
        with pytest.raises(TPULostError, match=r"Lost the TPU at grpc://10.0.0.2:8470 during the run "
                                               r"\(UnavailableError: Socket closed\).*model.ckpt-0"):
            _estimator(tmp_path, 8).train(train_input_fn, steps=9)
    # One session: not re-created against a TPU system nobody initialised again.
    assert [c[1] for c in chip.calls if c[0] == "loop"] == [3, 3]
    assert chip.kinds()[-1] == "shutdown"
    assert tf.train.load_variable(str(tmp_path), "global_step") == 0


def test_a_training_input_that_ends_mid_loop_says_to_repeat_it(tmp_path):
    from tpu_nb.backends.tpu_runtime import InputEndedOnTPU

    with fake_tpu_worker(32, 4, end_input_at=(3, 1)) as chip:
        with pytest.raises(InputEndedOnTPU, match=r"input of /job:worker/task:3/device:CPU:0 ended in the "
                                                  r"middle of a TPU loop.*dataset.repeat\(\)") as info:
            _estimator(tmp_path, 32).train(train_input_fn, steps=9)
    assert isinstance(info.value.__cause__, tf.errors.OutOfRangeError)
    assert chip.kinds()[-1] == "shutdown"


def test_predict_restores_the_latest_checkpoint_on_the_tpu_session(tmp_path):
    with fake_tpu_worker(8, 1) as chip:
        _estimator(tmp_path, 8).train(train_input_fn, steps=3)
    # The fake chip's restore reads the global step only (the predict model's variables differ).
    with fake_tpu_worker(8, 1, predict_rows=_host_rows(1, 8)) as chip:
        out = list(_predictor(tmp_path, 8).predict(_predict_input_fn(1)))
    assert len(out) == EXAMPLES
    assert ("restore", 3) in chip.calls
    assert chip.kinds().index("restore") < chip.kinds().index("predict_step")
