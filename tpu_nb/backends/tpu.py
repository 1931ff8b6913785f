"""A real TPU, through TensorFlow's graph-mode TPU runtime, as the original TPUEstimator ran on it.

* ``connect`` resolves the TPU (a dead or silent address fails within ``connect_timeout_secs``, naming
  it) and returns the ``TPU`` backend.
* The session target is the TPU's gRPC master (``''`` on a TPU VM) with the resolver's cluster_def.
* ``startup()`` initialises the TPU system in its own session (``tf.compat.v1.tpu.initialize_system``)
  and records its topology; ``shutdown()`` shuts it down after the last session, also after an error.
* One session run executes ``iterations_per_loop`` steps on every core inside the TPU computation
  (``tpu_graph.py``), with one infeed thread per host and one outfeed thread beside it
  (``tpu_runtime.py``); an error in those threads ends the run with that error.
* Evaluation runs the same way, with eval_metrics through the outfeed and the host stopping after the
  first step without real rows.
* Prediction runs one predict step per session run (``tpu_predict_graph.py``): the infeed threads feed
  one padded batch per host, the same run dequeues every replica's predictions with the stopping
  signal, and the host stops after the run whose signal is set (that run's batch is empty).

Refused with a clear error: model parallelism (``num_cores_per_replica > 1``), TPU embedding
(``embedding_config_spec`` or TPU embedding ops built by model_fn) and ``training_chief_hooks``.
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

from .base import Backend, EvalGraph, PredictGraph, SessionSetup, TrainGraph
from .tpu_semantics import refuse_chief_hooks, refuse_v1_summaries, require_batch_and_steps

_log = logging.getLogger("tpu_nb")

class TPUNotSupportedError(NotImplementedError):
    """What the TPU backend does not run (model parallelism, TPU embedding)."""


class TPULostError(RuntimeError):
    """The TPU stopped answering during a run; the last checkpoint is intact."""


# Session errors that mean the TPU worker went away (restarted, preempted, unreachable).
_LOST_TPU_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def connect(address, timeout_secs, what, job_name: Optional[str] = None) -> "TPU":
    """Resolves the TPU at ``address`` (an address, 'local', or a TPUClusterResolver) into the TPU backend.

    ``what`` is 'train', 'evaluate' or 'predict'. ``job_name``: TPUConfig.tpu_job_name, the TPU workers' job
    when it is not the one the TPU reports.
    """
    from .tpu_connection import resolve_tpu

    # Fails within connect_timeout_secs with the address named, instead of TensorFlow's 5-minute hang.
    found = resolve_tpu(address, timeout_secs=timeout_secs)
    return TPU(found, cluster_def=_cluster_def(address), job_name=job_name)


def _cluster_def(address):
    """The resolver's cluster_def (a TPU pod's workers); None for a bare address, whose master is enough."""
    if not isinstance(address, tf.distribute.cluster_resolver.TPUClusterResolver):
        return None
    spec = address.cluster_spec()  # answered already while resolving: no new lookup
    return spec.as_cluster_def() if spec is not None and spec.jobs else None


def _topology(found, job):
    from .topology import Topology

    hosts, per_host = found.num_hosts, found.num_cores_per_host
    prefix = f"/job:{job}" if job else ""
    description = (f"TPU {found.num_cores}x{hosts} ({found.num_cores} cores, {hosts} host{'s' if hosts != 1 else ''})"
                   f" at {found.master or 'local'}")
    return Topology(
        "tpu", found.num_cores, hosts,
        devices=tuple(f"{prefix}/replica:0/task:{h}/device:TPU:{c}" for h in range(hosts) for c in range(per_host)),
        device_type="TPU", description=description,
        host_devices=tuple(f"{prefix}/replica:0/task:{h}/device:CPU:0" for h in range(hosts)),
        local_host_ids=tuple(range(hosts)))


class TPU(Backend):
    """A resolved TPU system: ``found`` is ``tpu_connection.TPUTopology``; ``cluster_def`` the pod's, or None."""

    def __init__(self, found, cluster_def=None, error_grace_secs: Optional[float] = None,
                 job_name: Optional[str] = None):
        self.found = found
        self.master = found.master
        self.cluster_def = cluster_def
        # A TPU VM's own chips ('' master) belong to the local job; a remote TPU's to its worker job.
        self.job = job_name or ((found.job_name or "worker") if found.master else None)
        self.error_grace_secs = error_grace_secs
        self.system_topology: Optional[bytes] = None  # what initialize_system answered, once started
        self._system = None
        super().__init__(_topology(found, self.job))

    # -- arguments ------------------------------------------------------------
    def check_train_args(self, est, steps, max_steps):
        _refuse_unsupported(est)
        require_batch_and_steps(self.description, est, steps, max_steps)

    def check_chief_hooks(self, spec):
        refuse_chief_hooks(self.description, spec)

    def check_host_call_graph(self, graph):
        refuse_v1_summaries(graph)

    # -- building -------------------------------------------------------------
    def system(self):
        """The TPU's cores, hosts and mesh (TensorFlow's TPU system metadata query), asked once."""
        if self._system is None:
            from .tpu_graph import query_tpu_system

            self._system = query_tpu_system(self.master, cluster_def=self.cluster_def)
        return self._system

    def _iterations(self, system, iterations):
        """(variable, assign op, feed): the loop length the host loops and the TPU computation both read.

        A host variable, as the original's ``iterations_per_loop`` variable, set before each loop.
        """
        host = system.device_assignment().host_device(0, job=self.job)
        feed = iterations if isinstance(iterations, tf.Tensor) else tf.compat.v1.placeholder_with_default(
            tf.constant(int(iterations), tf.int32), [], name="iterations_per_loop_value")
        with tf.device(host), tf.compat.v1.variable_scope("tpu_nb", reuse=tf.compat.v1.AUTO_REUSE):
            variable = tf.compat.v1.get_variable(
                "iterations_per_loop", shape=[], dtype=tf.int32, initializer=tf.compat.v1.zeros_initializer(),
                trainable=False, collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES], use_resource=True)
            assign = variable.assign(tf.cast(feed, tf.int32), read_value=False)
        return variable, assign, feed, host

    def build_train(self, est, input_fn, iterations) -> TrainGraph:
        from .host_calls import _names_for
        from .tpu_graph import build_tpu_train_graph
        from .tpu_runtime import TPUHostCall, TPUHostDriver, TPUInput, TPUOutfeed

        _refuse_unsupported(est)
        system = self.system()
        variable, assign, feed, host = self._iterations(system, iterations)
        built = build_tpu_train_graph(est, input_fn, variable, system, job=self.job)
        _refuse_tpu_embedding(tf.compat.v1.get_default_graph())
        outputs = [replica[0] for replica in built.replicated]
        with tf.device(host), tf.name_scope("tpu_loop"):
            with tf.control_dependencies(outputs):  # every core's computation, not only replica 0's
                ran = tf.identity(variable.read_value(), name="steps_ran")
                step_after = tf.identity(built.global_step.read_value(), name="global_step_after")
            loss = tf.identity(built.loss, name="last_loss")
            # The loop cannot stop early on a TPU: a non-finite loss is found at its end, as the original's.
            bad_step = tf.where(tf.math.is_finite(loss), tf.constant(-1, tf.int64), step_after, name="bad_step")
        host_call, outfeed = None, None
        every_n = est.config.tpu_config.experimental_host_call_every_n_steps
        if built.host_call_outputs is not None and every_n != 1:
            raise TPUNotSupportedError(
                f"TPUConfig(experimental_host_call_every_n_steps={every_n}) is not supported on the TPU backend "
                "yet: host_call runs on every step here. Drop the setting, or thin the host_call's work yourself.")
        if built.host_call_outputs is not None:
            fn, structure = built.spec.host_call
            host_call = TPUHostCall(_names_for(fn, structure), built.host_call_outputs, built.host_call_values,
                                    built.global_step)
            outfeed = TPUOutfeed(host_call.fetches, host_call.consume)
        driver = TPUHostDriver(tuple(zip(dict.fromkeys(built.replica_hosts), built.infeed_loops)), assign, feed,
                               outfeed, self.error_grace_secs,
                               initial_sleep_secs=est.config.tpu_config.initial_infeed_sleep_secs)
        plan = built.plan
        layout = (f"{plan.input_mode.name}: input_fn x{plan.input_fn_calls} with batch {plan.input_fn_batch}, "
                  f"model_fn batch {plan.model_fn_batch}, one TPU computation over {built.num_replicas} cores")
        return TrainGraph(built.global_step, TPUInput(tf.group(*built.initializers), driver), (ran, loss, bad_step),
                          step_after, built.spec, host_call, model_fn_batch=plan.model_fn_batch, layout=layout)

    def build_eval(self, est, input_fn, steps, iterations_per_loop) -> EvalGraph:
        from .eval_step import advance_eval_step
        from .tpu_graph import build_tpu_eval_graph
        from .tpu_runtime import TPUHostDriver

        _refuse_unsupported(est)
        system = self.system()
        per_loop = int(iterations_per_loop.value) if not iterations_per_loop.is_time else 100
        variable, assign, feed, host = self._iterations(system, per_loop)
        built = build_tpu_eval_graph(est, input_fn, variable, system, job=self.job)
        _refuse_tpu_embedding(tf.compat.v1.get_default_graph())
        outputs = [replica[0] for replica in built.replicated]
        with tf.device(host), tf.name_scope("tpu_eval_loop"):
            with tf.control_dependencies(outputs):
                ran = tf.identity(variable.read_value(), name="steps_ran")
            counted = tf.compat.v1.placeholder(tf.int64, [], name="steps_counted")
            advance = advance_eval_step(counted)
        updates = [built.loss[1]] + [pair[1] for pair in built.metrics.values()]
        updates += [o for o in tf.nest.flatten(built.host_call_outputs) if o is not None]
        loop = _TPUEvalLoop(
            TPUHostDriver(tuple(zip(dict.fromkeys(built.replica_hosts), built.infeed_loops)), assign, feed, None,
                          self.error_grace_secs, initial_sleep_secs=est.config.tpu_config.initial_infeed_sleep_secs),
            ran, step_fetches=[updates, built.real_rows], drain_fetches=list(built.outfeed_dequeues),
            advance=advance, counted=counted, per_loop=per_loop)
        return EvalGraph(built.global_step, tf.group(*built.initializers), built.spec, built.loss, built.metrics,
                         loop.run)

    def build_predict(self, est, input_fn, select) -> PredictGraph:
        from .tpu_predict_graph import build_tpu_predict_graph
        from .tpu_runtime import TPUHostDriver

        _refuse_unsupported(est)
        system = self.system()
        built = build_tpu_predict_graph(est, input_fn, system, job=self.job)
        _refuse_tpu_embedding(tf.compat.v1.get_default_graph())
        outputs = [replica[0] for replica in built.replicated]
        with tf.device(built.replica_hosts[0]), tf.name_scope("tpu_predict_loop"):
            computed = tf.group(*outputs, name="computed")  # every core's step, not only replica 0's
        predictions = select(built.predictions)
        # The infeed loops have one step each: no iterations variable to set before a run.
        driver = TPUHostDriver(tuple(zip(dict.fromkeys(built.replica_hosts), built.infeed_loops)), None, None, None,
                               self.error_grace_secs,
                               initial_sleep_secs=est.config.tpu_config.initial_infeed_sleep_secs)
        loop = _TPUPredictLoop(driver, computed, predictions, built.stopping)
        return PredictGraph(built.spec, predictions, tf.group(*built.initializers), loopable=True,
                            empty_batch_ends=False, run_batch=loop.run_batch)

    # -- sessions -------------------------------------------------------------
    def session(self, user_config, built=None) -> SessionSetup:
        config = tf.compat.v1.ConfigProto()
        if user_config is not None:
            config.CopyFrom(user_config)
        config.allow_soft_placement = True
        if self.cluster_def is not None:
            config.cluster_def.CopyFrom(self.cluster_def)
        # As the original on TPUs: this program's variables are not shared with other sessions on the worker.
        config.isolate_session_state = True
        # No automatic session re-creation: the TPU system is initialised once per run (startup), so a
        # re-created session after a TPU restart would find it uninitialised; the run ends with a clear
        # error instead, and the next train() resumes from the checkpoint.
        return SessionSetup(self.master, config, singular=True)

    def translate_error(self, error, model_dir):
        if isinstance(error, _LOST_TPU_ERRORS):
            latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
            return TPULostError(
                f"Lost the TPU at {self.master or 'local'} during the run ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}). The run stopped; the last checkpoint "
                f"({latest or 'none yet'}) is intact. Check the TPU's health (gcloud compute tpus describe), "
                "then call train() again to resume from it.")
        return None

    def startup(self):
        from . import tpu_runtime

        _log.info("Initializing the TPU system at %s.", self.master or "local")
        self.system_topology = tpu_runtime.initialize_system(self.master, self.cluster_def, self.job)

    def shutdown(self):
        from . import tpu_runtime

        _log.info("Shutting down the TPU system at %s.", self.master or "local")
        tpu_runtime.shutdown_system(self.master, self.cluster_def, self.job)


class _TPUEvalLoop:
    """Evaluation loops on the TPU: ``iterations`` steps per session run, metrics updated by the outfeed thread.

    As the original: ``steps=N`` is one loop of N steps, ``steps=None`` loops of iterations_per_loop until
    a step has no real rows (every host past the end of its input). The computation still runs the
    loop's remaining steps; their outfeed entries are dequeued without updating the metrics.
    """

    def __init__(self, driver, ran, step_fetches, drain_fetches, advance, counted, per_loop):
        self.driver, self.ran = driver, ran
        self.step_fetches, self.drain_fetches = step_fetches, drain_fetches
        self.advance, self.counted, self.per_loop = advance, counted, per_loop

    def run(self, sess, steps):
        from ..inputs.host_infeed import feeding
        from .tpu_runtime import TPUOutfeed

        raw = sess.run_step_fn(lambda step_context: step_context.session)
        count, ended = 0, False
        while not ended and not sess.should_stop() and (steps is None or count < steps):
            k = self.per_loop if steps is None else steps - count
            state = {"ended": False, "real": 0}

            def fetches(i, state=state):
                return self.drain_fetches if state["ended"] else self.step_fetches

            def consume(i, values, state=state):
                if state["ended"]:
                    return
                if int(values[-1]) == 0:
                    state["ended"] = True  # the stopping signal: no host has real rows left
                else:
                    state["real"] += 1

            self.driver.outfeed = TPUOutfeed(fetches, consume)
            with feeding(self.driver, raw, k) as feed:
                feed.ran = int(sess.run(self.ran))  # through the MonitoredSession: hooks see one run per loop
            raw.run(self.advance, {self.counted: state["real"]})
            count += state["real"]
            ended = state["ended"]
        return count


class _TPUPredictLoop:
    """One predict step per session run: the hosts' infeed threads beside one run of the computation, the
    replicas' predictions and the stopping signal (dequeued from the outfeed by that same run).
    """

    def __init__(self, driver, computed, predictions, stopping):
        self.driver, self.fetches = driver, [computed, predictions, stopping]

    def run_batch(self, run, session):
        from ..inputs.host_infeed import feeding

        with feeding(self.driver, session, 1) as feed:
            _, predictions, stopping = run(self.fetches)
            feed.ran = 1
        # Every host's input had ended: this run's batch holds no real rows, and none follow.
        return None if stopping else predictions


def _refuse_unsupported(est):
    tpu_config = est.config.tpu_config
    cores = tpu_config.num_cores_per_replica
    if (cores is not None and cores > 1) or tpu_config.input_partition_dims is not None:
        raise TPUNotSupportedError(
            "Model parallelism (num_cores_per_replica > 1 or input_partition_dims) is not supported on the TPU "
            "backend: every replica runs on one core. Drop those settings to train data-parallel.")
    if getattr(est, "_embedding_config_spec", None) is not None:
        raise TPUNotSupportedError(
            "TPU embedding (embedding_config_spec) is not supported on the TPU backend: use "
            "tf.compat.v1.nn.embedding_lookup on ordinary variables in model_fn.")


def _refuse_tpu_embedding(graph):
    """TPU embedding ops a model_fn built itself need the TPU embedding engine, which this backend does not set up."""
    found = sorted({op.type for op in graph.get_operations() if "TPUEmbedding" in op.type})
    if found:
        raise TPUNotSupportedError(
            f"model_fn built TPU embedding ops ({', '.join(found)}), which the TPU backend does not support: use "
            "tf.compat.v1.nn.embedding_lookup on ordinary variables in model_fn.")
