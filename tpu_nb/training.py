"""``train()`` on one device: ``iterations_per_loop`` steps per session run.

The model is built inside a ``tf.while_loop`` in its own ``tf.Graph``, so one
``Session.run`` executes a whole loop of steps on the device. Hooks,
checkpoints, summaries, host_call processing, events, interrupts and the
NaN check all happen at loop boundaries, as on a TPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from typing import Optional

import tensorflow as tf

from . import const_lifting, events
from .control_edges import share_control_inputs
from .graph_scopes import names_as_outside_loop
from .host_calls import HostCallQueue
from .host_infeed import feeding
from .input_pipeline import InputPipeline
from .interrupts import StopRequest, deferred_interrupts
from .memory_guard import BuildMeter
from .model_calls import call_input_fn, call_model_fn
from .model_dir_lock import ModelDirLock
from .modes import ModeKeys
from .scaffolds import merge_scaffold, user_scaffold
from .schedule import TimedLoopSizer, check_step_arg, next_loop_size, target_step
from .spec import EstimatorSpec
from .summary_writers import flush_writers_op, writer_init_ops

_log = logging.getLogger("tpu_nb")


class NanLossError(tf.compat.v1.train.NanLossDuringTrainingError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def __str__(self):
        return self.message


def checkpointed_step(model_dir: str) -> int:
    path = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if not path:
        return 0
    try:
        return int(tf.train.load_variable(path, "global_step"))
    except (tf.errors.NotFoundError, ValueError):
        return 0


def check_hooks(hooks, what="hooks"):
    hooks = list(hooks or [])
    for hook in hooks:
        if not isinstance(hook, tf.compat.v1.train.SessionRunHook):
            raise TypeError(
                f"All {what} must be tf.compat.v1.train.SessionRunHook instances, got {type(hook).__name__}."
            )
    return hooks


class _PublishingListener(tf.compat.v1.train.CheckpointSaverListener):
    def __init__(self, run_id, model_dir):
        self.run_id = run_id
        self.model_dir = model_dir
        self.last_saved_step = None

    def after_save(self, session, global_step_value):
        self.last_saved_step = int(global_step_value)
        path = tf.train.latest_checkpoint(self.model_dir) or ""
        _log.info("Saved checkpoint for step %d: %s", global_step_value, path)
        events.publish(events.CheckpointSaved(self.run_id, int(global_step_value), path))


class _TrainGraph:
    """Everything built for one ``train()`` call: the device loop, host side and scaffold."""

    def __init__(self, est, input_fn, run_id, topology):
        self.graph = tf.Graph()
        self.captured = {}
        self.topology = topology
        with self.graph.as_default():
            if est.config.tf_random_seed is not None:
                tf.compat.v1.set_random_seed(est.config.tf_random_seed)
            self.iterations = tf.compat.v1.placeholder(tf.int32, [], name="iterations_per_loop")
            if topology.sharded:
                self._build_sharded(est, input_fn)
            else:
                self._build_single(est, input_fn)
            spec = self.captured["spec"]
            self.spec = spec
            self.host_call = self.captured.get("host_call")
            if self.host_call is not None:
                self.host_call.build_host_side()
                if topology.sharded:
                    _refuse_v1_summaries_in_host_call(self.graph)
            self.flush_writers = flush_writers_op()

            scaffold_from_user = user_scaffold(spec)
            if est.warm_start_from is not None and not tf.train.latest_checkpoint(est.model_dir):
                from .warm_start import warm_start

                warm_start(est.warm_start_from)
            self.scaffold = _merge_scaffold(scaffold_from_user, est.config, self.input)

    def _loop(self, step_fn):
        """The on-device loop: ``step_fn(i)`` -> (loss, deps, step) per iteration i; stops early on NaN."""

        def body(i, last_loss, bad_step):
            with names_as_outside_loop():
                loss, deps, step = step_fn(i)
            share_control_inputs(tf.compat.v1.get_default_graph())
            if self.input.infeed is not None:
                deps = list(deps) + self.input.infeed.take_dequeues()
            with tf.control_dependencies(deps):
                finite = tf.math.is_finite(loss)
                new_bad = tf.where(tf.logical_or(finite, bad_step >= 0), bad_step, step)
                return i + 1, tf.identity(loss), new_bad

        def cond(i, last_loss, bad_step):
            return tf.logical_and(i < self.iterations, bad_step < 0)

        self.loop = tf.while_loop(
            cond, body, [tf.constant(0), tf.constant(0.0), tf.constant(-1, tf.int64)],
            parallel_iterations=1, name="train_loop",
        )
        with tf.control_dependencies(list(self.loop)):
            # Without the dependency the read may run before the loop and see a stale step.
            self.step_after = tf.identity(self.global_step.read_value(), name="global_step_after_loop")

    def _build_single(self, est, input_fn):
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        since = const_lifting.mark(self.graph)
        returned = call_input_fn(input_fn, ModeKeys.TRAIN, est.config, est.params, est.train_batch_size)
        const_lifting.lift_dataset_constants(self.graph, returned, since)  # numpy arrays: fed, not embedded
        self.input = InputPipeline(returned, feed_tensors=True)
        # As the original off TPU: host_call runs on every step; experimental_host_call_every_n_steps thins
        # the TPU outfeed only (simulated shards here).
        every_n = 1

        def step_fn(i):
            features, labels = self.input.next()
            spec = call_model_fn(est.model_fn, features, labels, ModeKeys.TRAIN, est.config, est.params,
                                 est.train_batch_size, est.use_tpu)
            self.captured["spec"] = spec
            loss = tf.cast(tf.convert_to_tensor(spec.loss), tf.float32)
            with tf.control_dependencies([spec.train_op]):
                step = tf.identity(self.global_step.read_value())
            deps = [spec.train_op]
            host_call = getattr(spec, "host_call", None)
            if host_call is not None:
                self.captured["host_call"] = HostCallQueue(host_call[0], host_call[1], every_n)
                deps.append(self.captured["host_call"].enqueue(step, i))
            return loss, deps, step

        self._loop(step_fn)

    def _build_sharded(self, est, input_fn):
        from .batching import plan_batches
        from .sharded import ShardedStep, make_strategy, sharded_scope
        from .sharded_inputs import InputContext, ShardedInput

        topo = self.topology
        self.plan = plan_batches(est.train_batch_size, topo.num_replicas, topo.num_hosts,
                                 est.config.tpu_config.input_mode, ModeKeys.TRAIN)
        strategy = make_strategy(topo)
        self.strategy = strategy
        context = InputContext(topo, ModeKeys.TRAIN, self.plan)
        every_n = est.config.tpu_config.experimental_host_call_every_n_steps
        with sharded_scope(strategy):
            self.global_step = tf.compat.v1.train.get_or_create_global_step()
            self.input = ShardedInput(est, input_fn, ModeKeys.TRAIN, topo, self.plan, pad=False, context=context,
                                      batch_axis=est._batch_axis)  # noqa: SLF001

            def step_fn(i):
                step = ShardedStep(est, strategy, topo, self.plan, context, ModeKeys.TRAIN)
                step.build(self.input.next(), train=True)
                self.captured["spec"] = step.spec
                deps = [step.loss]
                with tf.control_dependencies(deps):
                    global_step = tf.identity(self.global_step.read_value())
                if step.host_call is not None:
                    self.captured["host_call"] = HostCallQueue(step.host_call[0], step.host_call[1], every_n)
                    deps.append(self.captured["host_call"].enqueue(global_step, i))
                return step.loss, deps, global_step

            self._loop(step_fn)
            if topo.kind == "multi_worker":
                # Run by every worker after its last loop, so no worker exits while a peer still needs it.
                ones = strategy.extended.call_for_each_replica(
                    lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.ones([])))
                self.barrier = strategy.experimental_local_results(ones)[0]


_NEVER = 2**62  # a checkpoint period no run reaches


class _NoLock:
    took_over_stale = False


def _lost_peer(error, topology, model_dir):
    from .multi_worker import lost_peer_error

    return lost_peer_error(error, topology, model_dir)


def _refuse_v1_summaries_in_host_call(graph):
    if graph.get_collection(tf.compat.v1.GraphKeys.SUMMARIES):
        raise ValueError(
            "host_call created tf.compat.v1.summary ops, which cannot run on the host of a sharded run "
            "(the original TPUEstimator refused them too). Use tf.summary (v2) with a writer: "
            "with tf.summary.create_file_writer(model_dir).as_default(): tf.summary.scalar(...)."
        )


def _merge_scaffold(user, config, input_pipeline):
    saver = None
    if user is None or user.saver is None:
        saver = tf.compat.v1.train.Saver(
            sharded=True,
            max_to_keep=config.keep_checkpoint_max,
            keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
            save_relative_paths=True,
        )
    # tf.summary v2 writers a host_call created need initializing in every new session.
    extra = [input_pipeline.initializer] + writer_init_ops()
    return const_lifting.add_to_scaffold(merge_scaffold(user, extra, saver), tf.compat.v1.get_default_graph())


class _Summaries:
    """loss and global_step/sec for TensorBoard, written from Python at loop boundaries."""

    def __init__(self, model_dir, every_steps, log_every_steps, loss_tag="loss"):
        self.model_dir = model_dir
        self.loss_tag = loss_tag
        self.every = every_steps or 0
        self.log_every = log_every_steps or 0
        self.last_written = None
        self.last_logged = None
        self._writer = None

    def _get_writer(self):
        if self._writer is None:
            self._writer = tf.compat.v1.summary.FileWriterCache.get(self.model_dir)
        return self._writer

    def at_boundary(self, step, loss, steps_per_sec, examples_per_sec, final=False):
        due = self.every and (self.last_written is None or step - self.last_written >= self.every)
        if due or (final and self.every):
            values = [tf.compat.v1.Summary.Value(tag=self.loss_tag, simple_value=loss)]
            if steps_per_sec is not None:
                values.append(tf.compat.v1.Summary.Value(tag="global_step/sec", simple_value=steps_per_sec))
            if examples_per_sec is not None:
                values.append(tf.compat.v1.Summary.Value(tag="examples/sec", simple_value=examples_per_sec))
            self._get_writer().add_summary(tf.compat.v1.Summary(value=values), step)
            self.last_written = step
        if self.log_every and (self.last_logged is None or step - self.last_logged >= self.log_every or final):
            rate = f", {steps_per_sec:.1f} steps/s" if steps_per_sec else ""
            _log.info("global step %d: loss = %.6g%s", step, loss, rate)
            self.last_logged = step

    def close(self):
        if self._writer is not None:
            self._writer.flush()


def run_train(est, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None,
              stop: Optional[StopRequest] = None, topology=None):
    """Implements ``TPUEstimator.train`` (one device or shards, per ``topology``)."""
    from .topology import single_device

    topology = topology or single_device()
    steps = check_step_arg("steps", steps)
    max_steps = check_step_arg("max_steps", max_steps)
    target_step(0, steps, max_steps)  # validates the combination before any work
    if topology.sharded:
        if est.train_batch_size is None:
            raise ValueError(f"train_batch_size is required to train on {topology.description}: pass the global "
                             "batch size, e.g. TPUEstimator(..., train_batch_size=1024).")
        if steps is None and max_steps is None:
            raise ValueError(f"Training on {topology.description} needs steps or max_steps "
                             "(the device loop has a fixed length). Pass train(..., steps=N).")
    hooks = check_hooks(hooks)
    listeners = list(saving_listeners or [])
    for listener in listeners:
        if not isinstance(listener, tf.compat.v1.train.CheckpointSaverListener):
            raise TypeError(
                "saving_listeners must be tf.compat.v1.train.CheckpointSaverListener instances, "
                f"got {type(listener).__name__}."
            )
    model_dir = est.model_dir
    start_step = checkpointed_step(model_dir)
    if max_steps is not None and start_step >= max_steps:
        _log.info("Skipping training: the checkpoint in %s is at step %d >= max_steps=%d.", model_dir, start_step, max_steps)
        return est
    target = target_step(start_step, steps, max_steps)
    ipl = est.config.tpu_config.parsed_iterations_per_loop
    stop = stop or StopRequest()
    run_id = events.bus.new_run_id()

    chief = topology.is_chief
    # Non-chief workers run the same hooks and session runs (collectives need lock step) but save to a
    # scratch directory; they restore from the chief's model_dir.
    save_dir = model_dir if chief else tempfile.mkdtemp(prefix=f"tpu_nb_worker{topology.task_index}_")
    with (ModelDirLock(model_dir) if chief else contextlib.nullcontext(_NoLock())) as lock:
        if lock.took_over_stale:
            _log.info("Took over a stale training lock in %s left by a process that no longer runs.", model_dir)
        meter = BuildMeter()
        built = _TrainGraph(est, input_fn, run_id, topology)
        meter.check(f"training on {topology.description}", topology.num_replicas)
        sizer = TimedLoopSizer(ipl.value) if ipl.is_time else None
        listener = _PublishingListener(run_id, save_dir)
        # As the original's tf.compat.v1.summary.scalar('loss'): the graph's next free 'loss' name, so a
        # host_call that writes its own 'loss' keeps that tag and the engine's lands on 'loss_1'.
        summaries = _Summaries(model_dir, est.config.save_summary_steps if chief else 0,
                               est.config.log_step_count_steps,
                               loss_tag=built.graph.unique_name("loss", mark_as_used=False))
        with built.graph.as_default():
            save_steps = est.config.save_checkpoints_steps if est.config.save_checkpoints_secs is None else None
            if save_steps is None and est.config.save_checkpoints_secs is None:
                # Both None: the original saved nothing; here only the first and final steps are saved
                # (TF's hook needs a period), so evaluate/predict/resume still have a checkpoint.
                save_steps = _NEVER
            saver_hook = tf.compat.v1.train.CheckpointSaverHook(
                save_dir,
                save_secs=est.config.save_checkpoints_secs,
                save_steps=save_steps,
                scaffold=built.scaffold,
                listeners=listeners + [listener],
                save_graph_def=est.config.checkpoint_save_graph_def,
            )
            all_hooks = hooks + list(built.spec.training_hooks) + [saver_hook]
            if isinstance(built.spec, EstimatorSpec):
                if built.spec.training_chief_hooks and topology.sharded and topology.kind != "multi_worker":
                    # The original's TPU training step refused them; its key phrase is kept for callers.
                    raise ValueError(
                        "training_chief_hooks returned by EstimatorSpec is not supported in TPUEstimator "
                        f"(training on {topology.description}): return them as training_hooks, or pass "
                        "them to train(hooks=...).")
                all_hooks += list(built.spec.training_chief_hooks)
            master = ""
            if topology.kind == "multi_worker":
                from .multi_worker import session_target_and_config

                master, session_config = session_target_and_config(topology, built.strategy,
                                                                   est.config.session_config)
            elif topology.sharded:
                session_config = topology.session_config(est.config.session_config)
            else:
                session_config = est.config.session_config
            creator = tf.compat.v1.train.ChiefSessionCreator(
                scaffold=built.scaffold, checkpoint_dir=model_dir, config=session_config, master=master,
            )
            per_shard = built.plan.model_fn_batch if topology.sharded else est.train_batch_size
            events.publish(events.RunStarted(
                run_id, ModeKeys.TRAIN, topology.description, topology.num_replicas, topology.num_hosts,
                est.train_batch_size, per_shard, model_dir, start_step, target,
                est.config.tpu_config.iterations_per_loop,
            ))
            layout = (f"{built.plan.input_mode.name}: input_fn x{built.plan.input_fn_calls} with batch "
                      f"{built.plan.input_fn_batch}, model_fn batch {per_shard}" if topology.sharded else
                      f"batch {est.train_batch_size}")
            _log.info("Training on %s (%s) into %s from step %d%s.", topology.description, layout, model_dir,
                      start_step, f" to step {target}" if target is not None else " until the input ends")
            state = {"step": start_step, "first_loop": True, "exhausted": False, "last_loss": None}

            def step_fn(step_context):
                ctx = step_context
                session = ctx.session
                k = sizer.size if sizer else int(ipl.value)
                k = next_loop_size(state["step"], target, k)
                if k == 0:
                    ctx.request_stop()
                    return
                t0 = time.perf_counter()
                with feeding(built.input.infeed, session, k) as feed:
                    try:
                        ran, loss, bad_step, step = session.run(
                            [built.loop[0], built.loop[1], built.loop[2], built.step_after], {built.iterations: k})
                        feed.ran = int(ran)
                    except tf.errors.OutOfRangeError:
                        state["exhausted"] = True
                        step = session.run(built.global_step)
                        ran, loss, bad_step = step - state["step"], state["last_loss"], -1
                seconds = time.perf_counter() - t0
                step = int(step)
                if bad_step >= 0:
                    raise NanLossError(
                        f"Training loss became {'NaN' if math.isnan(loss) else 'infinite'} at global step "
                        f"{int(bad_step)}. Training stopped; the last checkpoint written before it "
                        f"({tf.train.latest_checkpoint(model_dir)}) is still the latest. Lower the learning "
                        "rate, clip gradients, or check the input for NaN/Inf values."
                    )
                if not state["exhausted"] and step - state["step"] != ran:
                    raise RuntimeError(
                        f"train_op did not increment the global step: it moved from {state['step']} to {step} "
                        f"over {ran} step(s). Pass global_step=tf.compat.v1.train.get_global_step() to "
                        "optimizer.minimize() (or apply_gradients)."
                    )
                if built.host_call is not None:
                    drained = built.host_call.drain(session)
                    if drained is not None and events.bus.active:
                        events.publish(events.HostCallBatch(run_id, *drained))
                    if built.flush_writers is not None:
                        session.run(built.flush_writers)  # TensorBoard sees host_call summaries every loop
                state["step"] = step
                state["last_loss"] = loss
                if sizer and not state["first_loop"]:
                    sizer.observe(ran, seconds)
                elif sizer:
                    sizer.observe(ran, seconds * 0.5)  # the first loop also pays for compilation
                steps_per_sec = ran / seconds if seconds > 0 and ran else None
                examples = steps_per_sec * est.train_batch_size if steps_per_sec and est.train_batch_size else None
                summaries.at_boundary(step, float(loss), None if state["first_loop"] else steps_per_sec, examples)
                state["first_loop"] = False
                if events.bus.active:
                    events.publish(events.LoopFinished(run_id, step, int(ran), time.time(), seconds, float(loss),
                                                       examples, steps_per_sec or 0.0))
                # Hooks see the state after the loop (the global step is read fresh).
                ctx.run_with_hooks(built.global_step)
                if state["exhausted"] or (target is not None and step >= target) or stop.is_set():
                    if getattr(built, "barrier", None) is not None:
                        session.run(built.barrier)
                    ctx.request_stop()

            try:
                with deferred_interrupts(stop):
                    if topology.kind == "multi_worker":
                        # No automatic session re-creation: a lost peer must end the run, not retry it.
                        sess = tf.compat.v1.train.SingularMonitoredSession(
                            hooks=all_hooks, scaffold=built.scaffold, master=master, config=session_config,
                            checkpoint_dir=model_dir)
                    else:
                        sess = tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=all_hooks)
                    with sess:
                        while not sess.should_stop():
                            sess.run_step_fn(step_fn)
            except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                    tf.errors.CancelledError, tf.errors.InternalError) as error:
                if topology.kind != "multi_worker":
                    events.publish(events.RunFailed(run_id, state["step"], error))
                    raise
                lost = _lost_peer(error, topology, model_dir)
                events.publish(events.RunFailed(run_id, state["step"], lost))
                raise lost from error
            except BaseException as error:
                events.publish(events.RunFailed(run_id, state["step"], error))
                raise
            finally:
                summaries.close()

    final = state["step"]
    if stop.is_set():
        _log.warning("Training stopped at step %d (%s); checkpoint saved.", final, stop.reason)
        events.publish(events.RunStopped(run_id, final, stop.reason))
        if stop.from_interrupt:
            raise KeyboardInterrupt(f"training interrupted at step {final}; checkpoint saved")
    else:
        if state["last_loss"] is not None:
            with built.graph.as_default():
                summaries.at_boundary(final, float(state["last_loss"]), None, None, final=True)
                summaries.close()
            _log.info("Loss for final step: %s.", state["last_loss"])  # the original's line, scripts grep it
        events.publish(events.RunFinished(run_id, final, ModeKeys.TRAIN))
    return est
