"""``train()``: ``iterations_per_loop`` steps per session run, on whichever backend builds the device loop.

The backend (``tpu_nb.backends``) builds the model inside a device loop in
its own ``tf.Graph``, so one ``Session.run`` executes a whole loop of steps. Hooks,
checkpoints, summaries, host_call processing, events, interrupts and the
NaN check all happen at loop boundaries, as on a TPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import tempfile
import time
from typing import Optional

import tensorflow as tf
from tensorflow.python.training import training_util

from ..graph.eager_checks import fast_eager_checks
from ..inputs import const_lifting
from ..reporting import events
from ..inputs.host_infeed import feeding
from .checkpoint_hook import CheckpointSaverHook
from .interrupts import StopRequest, deferred_interrupts
from .memory_guard import BuildMeter
from .model_dir_lock import ModelDirLock
from ..contract.modes import ModeKeys
from .scaffolds import merge_scaffold, user_scaffold
from .schedule import TimedLoopSizer, check_step_arg, next_loop_size, target_step
from ..contract.spec import EstimatorSpec
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
    """Everything built for one ``train()`` call: the backend's device loop, the host side and the scaffold."""

    def __init__(self, est, input_fn, backend):
        self.graph = tf.Graph()
        with self.graph.as_default():
            if est.config.tf_random_seed is not None:
                tf.compat.v1.set_random_seed(est.config.tf_random_seed)
            self.iterations = tf.compat.v1.placeholder(tf.int32, [], name="iterations_per_loop")
            self.device = backend.build_train(est, input_fn, self.iterations)
            self.spec = self.device.spec
            self.input = self.device.input
            self.global_step = self.device.global_step
            self.loop = self.device.loop
            self.step_after = self.device.step_after
            self.host_call = self.device.host_call
            if self.host_call is not None:
                self.host_call.build_host_side()
                backend.check_host_call_graph(self.graph)
            self.flush_writers = flush_writers_op()

            scaffold_from_user = user_scaffold(self.spec)
            if est.warm_start_from is not None and not tf.train.latest_checkpoint(est.model_dir):
                from ..contract.warm_start import warm_start

                warm_start(est.warm_start_from)
            self.scaffold = _merge_scaffold(scaffold_from_user, est.config, self.input)
            # The tensor TensorFlow's hooks fetch for the global step. Fetching it at loop boundaries too
            # lets those runs share the session's executor for it: each new set of fetches costs the
            # session a pass of Grappler and placement over the whole graph, seconds on N shards.
            read = training_util._get_or_create_global_step_read(self.graph)  # noqa: SLF001
            self.global_step_read = read if read is not None else self.global_step


_NEVER = 2**62  # a checkpoint period no run reaches


class _NoLock:
    took_over_stale = False


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



# --------------------------------------------------------------------------- the phases of one train() call
#
# run_train is the list of phases; each phase below has one job. What passes between them is the
# request (what was asked, checked), the built graph, and the loop's running state.


@dataclasses.dataclass(frozen=True)
class _Request:
    """``train()``'s arguments, checked, with where the run starts and should end."""

    hooks: list
    listeners: list
    start_step: int
    target: Optional[int]


def _check_arguments(est, backend, hooks, steps, max_steps, saving_listeners) -> Optional[_Request]:
    """Phase 1: refuses bad arguments before any work; None when the checkpoint is already past max_steps."""
    steps = check_step_arg("steps", steps)
    max_steps = check_step_arg("max_steps", max_steps)
    target_step(0, steps, max_steps)  # validates the combination before any work
    backend.check_train_args(est, steps, max_steps)
    hooks = check_hooks(hooks)
    listeners = list(saving_listeners or [])
    for listener in listeners:
        if not isinstance(listener, tf.compat.v1.train.CheckpointSaverListener):
            raise TypeError(
                "saving_listeners must be tf.compat.v1.train.CheckpointSaverListener instances, "
                f"got {type(listener).__name__}."
            )
    start_step = checkpointed_step(est.model_dir)
    if max_steps is not None and start_step >= max_steps:
        _log.info("Skipping training: the checkpoint in %s is at step %d >= max_steps=%d.", est.model_dir,
                  start_step, max_steps)
        return None
    return _Request(hooks, listeners, start_step, target_step(start_step, steps, max_steps))


@contextlib.contextmanager
def _claim_model_dir(backend, model_dir):
    """Phase 2: the model_dir lock (chief only); yields the directory this process saves to.

    Non-chief workers run the same hooks and session runs (collectives need lock step) but save to a
    scratch directory; they restore from the chief's model_dir.
    """
    topology = backend.topology
    if not topology.is_chief:
        yield tempfile.mkdtemp(prefix=f"tpu_nb_worker{topology.task_index}_")
        return
    with ModelDirLock(model_dir) as lock:
        if lock.took_over_stale:
            _log.info("Took over a stale training lock in %s left by a process that no longer runs.", model_dir)
        yield model_dir


def _build(est, input_fn, backend) -> _TrainGraph:
    """Phase 3: the graph, with the memory guard's check of what building it cost."""
    meter = BuildMeter()
    with fast_eager_checks():
        built = _TrainGraph(est, input_fn, backend)
    meter.check(f"training on {backend.description}", backend.topology.num_replicas)
    return built


def _session_hooks(est, backend, built, request, save_dir, listener):
    """Phase 4: the user's, model_fn's and checkpoint hooks, in the order the original ran them."""
    config = est.config
    save_steps = config.save_checkpoints_steps if config.save_checkpoints_secs is None else None
    if save_steps is None and config.save_checkpoints_secs is None:
        # Both None: the original saved nothing; here only the first and final steps are saved
        # (TF's hook needs a period), so evaluate/predict/resume still have a checkpoint.
        save_steps = _NEVER
    saver_hook = CheckpointSaverHook(
        save_dir,
        save_secs=config.save_checkpoints_secs,
        save_steps=save_steps,
        scaffold=built.scaffold,
        listeners=request.listeners + [listener],
        save_graph_def=config.checkpoint_save_graph_def,
    )
    hooks = request.hooks + list(built.spec.training_hooks) + [saver_hook]
    if isinstance(built.spec, EstimatorSpec):
        backend.check_chief_hooks(built.spec)
        hooks += list(built.spec.training_chief_hooks)
    return hooks


def _announce(est, backend, built, request, run_id):
    """Phase 5: the RunStarted event (dashboards) and the log line."""
    topology = backend.topology
    events.publish(events.RunStarted(
        run_id, ModeKeys.TRAIN, backend.description, topology.num_replicas, topology.num_hosts,
        est.train_batch_size, built.device.model_fn_batch, est.model_dir, request.start_step, request.target,
        est.config.tpu_config.iterations_per_loop,
    ))
    target = request.target
    _log.info("Training on %s (%s) into %s from step %d%s.", backend.description, built.device.layout,
              est.model_dir, request.start_step, f" to step {target}" if target is not None else " until the input ends")


def _open_session(est, backend, built, hooks):
    """Phase 6: the session the backend asks for, restoring model_dir's checkpoint."""
    setup = backend.session(est.config.session_config, built.device)
    if setup.singular:
        return tf.compat.v1.train.SingularMonitoredSession(
            hooks=hooks, scaffold=built.scaffold, master=setup.target, config=setup.config,
            checkpoint_dir=est.model_dir)
    creator = tf.compat.v1.train.ChiefSessionCreator(
        scaffold=built.scaffold, checkpoint_dir=est.model_dir, config=setup.config, master=setup.target)
    return tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=hooks)


class _LoopStep:
    """Phase 7, once per session run: one device loop, then everything the host does at its boundary."""

    def __init__(self, est, built, request, run_id, summaries, stop):
        self.est = est
        self.built = built
        self.target = request.target
        self.run_id = run_id
        self.summaries = summaries
        self.stop = stop
        ipl = est.config.tpu_config.parsed_iterations_per_loop
        self.ipl = ipl
        self.sizer = TimedLoopSizer(ipl.value) if ipl.is_time else None
        self.step = request.start_step
        self.first_loop = True
        self.exhausted = False
        self.last_loss = None

    def __call__(self, step_context):
        built = self.built
        session = step_context.session
        k = self.sizer.size if self.sizer else int(self.ipl.value)
        k = next_loop_size(self.step, self.target, k)
        if k == 0:
            step_context.request_stop()
            return
        ran, loss, bad_step, step, seconds = self._run_device_loop(session, k)
        self._check(ran, loss, bad_step, step)
        if built.host_call is not None:
            drained = built.host_call.drain(session)
            if drained is not None and events.bus.active:
                events.publish(events.HostCallBatch(self.run_id, *drained))
            if built.flush_writers is not None:
                session.run(built.flush_writers)  # TensorBoard sees host_call summaries every loop
        self.step = step
        self.last_loss = loss
        self._report(ran, loss, seconds)
        # Hooks see the state after the loop (the global step is read fresh).
        step_context.run_with_hooks(built.global_step_read)
        if self.exhausted or (self.target is not None and step >= self.target) or self.stop.is_set():
            if built.device.barrier is not None:
                session.run(built.device.barrier)
            step_context.request_stop()

    def _run_device_loop(self, session, k):
        built = self.built
        t0 = time.perf_counter()
        with feeding(built.input.infeed, session, k) as feed:
            try:
                ran, loss, bad_step, step = session.run(
                    [built.loop[0], built.loop[1], built.loop[2], built.step_after], {built.iterations: k})
                feed.ran = int(ran)
            except tf.errors.OutOfRangeError:
                self.exhausted = True
                step = session.run(built.global_step_read)
                ran, loss, bad_step = step - self.step, self.last_loss, -1
        return ran, loss, bad_step, int(step), time.perf_counter() - t0

    def _check(self, ran, loss, bad_step, step):
        if bad_step >= 0:
            raise NanLossError(
                f"Training loss became {'NaN' if math.isnan(loss) else 'infinite'} at global step "
                f"{int(bad_step)}. Training stopped; the last checkpoint written before it "
                f"({tf.train.latest_checkpoint(self.est.model_dir)}) is still the latest. Lower the learning "
                "rate, clip gradients, or check the input for NaN/Inf values."
            )
        if not self.exhausted and step - self.step != ran:
            raise RuntimeError(
                f"train_op did not increment the global step: it moved from {self.step} to {step} "
                f"over {ran} step(s). Pass global_step=tf.compat.v1.train.get_global_step() to "
                "optimizer.minimize() (or apply_gradients)."
            )

    def _report(self, ran, loss, seconds):
        if self.sizer:
            # The first loop also pays for compilation.
            self.sizer.observe(ran, seconds if not self.first_loop else seconds * 0.5)
        steps_per_sec = ran / seconds if seconds > 0 and ran else None
        batch = self.est.train_batch_size
        examples = steps_per_sec * batch if steps_per_sec and batch else None
        self.summaries.at_boundary(self.step, float(loss), None if self.first_loop else steps_per_sec, examples)
        self.first_loop = False
        if events.bus.active:
            events.publish(events.LoopFinished(self.run_id, self.step, int(ran), time.time(), seconds, float(loss),
                                               examples, steps_per_sec or 0.0))


def _run_loops(backend, sess_factory, loop_step, stop, run_id, model_dir, summaries):
    """Phase 7: device loops until the target, the input's end or a stop; failures become RunFailed events."""
    try:
        with deferred_interrupts(stop):
            backend.startup()
            try:
                with sess_factory() as sess:
                    while not sess.should_stop():
                        sess.run_step_fn(loop_step)
            finally:
                backend.shutdown()
    except BaseException as error:
        clearer = backend.translate_error(error, model_dir)
        events.publish(events.RunFailed(run_id, loop_step.step, clearer or error))
        if clearer is not None:
            raise clearer from error
        raise
    finally:
        summaries.close()


def _finish(built, loop_step, stop, run_id, summaries):
    """Phase 8: the final summary and log line, or the stop's warning (and KeyboardInterrupt for Ctrl-C)."""
    final = loop_step.step
    if stop.is_set():
        _log.warning("Training stopped at step %d (%s); checkpoint saved.", final, stop.reason)
        events.publish(events.RunStopped(run_id, final, stop.reason))
        if stop.from_interrupt:
            raise KeyboardInterrupt(f"training interrupted at step {final}; checkpoint saved")
        return
    if loop_step.last_loss is not None:
        with built.graph.as_default():
            summaries.at_boundary(final, float(loop_step.last_loss), None, None, final=True)
            summaries.close()
        _log.info("Loss for final step: %s.", loop_step.last_loss)  # the original's line, scripts grep it
    events.publish(events.RunFinished(run_id, final, ModeKeys.TRAIN))


def run_train(est, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None,
              stop: Optional[StopRequest] = None, backend=None):
    """Implements ``TPUEstimator.train`` on ``backend`` (default: one device), phase by phase."""
    from ..backends import one_device_backend

    backend = backend or one_device_backend()
    request = _check_arguments(est, backend, hooks, steps, max_steps, saving_listeners)
    if request is None:
        return est
    stop = stop or StopRequest()
    run_id = events.bus.new_run_id()
    chief = backend.topology.is_chief
    with _claim_model_dir(backend, est.model_dir) as save_dir:
        built = _build(est, input_fn, backend)
        # As the original's tf.compat.v1.summary.scalar('loss'): the graph's next free 'loss' name, so a
        # host_call that writes its own 'loss' keeps that tag and the engine's lands on 'loss_1'.
        summaries = _Summaries(est.model_dir, est.config.save_summary_steps if chief else 0,
                               est.config.log_step_count_steps,
                               loss_tag=built.graph.unique_name("loss", mark_as_used=False))
        loop_step = _LoopStep(est, built, request, run_id, summaries, stop)
        with built.graph.as_default():
            hooks = _session_hooks(est, backend, built, request, save_dir, _PublishingListener(run_id, save_dir))
            _announce(est, backend, built, request, run_id)
            _run_loops(backend, lambda: _open_session(est, backend, built, hooks), loop_step, stop, run_id,
                       est.model_dir, summaries)
    _finish(built, loop_step, stop, run_id, summaries)
    return est
