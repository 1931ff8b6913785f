"""``evaluate()`` on one device: metrics accumulated over the input, one result dict."""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from . import const_lifting, events
from .control_edges import share_control_inputs
from .eval_step import advance_eval_step
from .graph_scopes import names_as_outside_loop
from .input_pipeline import InputPipeline
from .memory_guard import BuildMeter
from .model_calls import call_input_fn, call_model_fn
from .modes import ModeKeys
from .schedule import check_step_arg
from .spec import EstimatorSpec, call_with_tensors, flat_tensors, repacked
from .scaffolds import merge_scaffold, user_scaffold
from .summary_writers import flush_writers_op, writer_init_ops
from .training import check_hooks

_log = logging.getLogger("tpu_nb")
_RESERVED_METRIC_NAMES = ("loss", "global_step")
_FLUSH = "_tpu_nb_flush_summary_writers"


def resolve_checkpoint(est, checkpoint_path, what):
    """The checkpoint to use: the given path (file prefix or directory) or the latest in model_dir."""
    if checkpoint_path is not None:
        path = os.fspath(checkpoint_path)
        if tf.io.gfile.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest is None:
                raise ValueError(f"checkpoint_path={path!r} is a directory without a checkpoint in it.")
            return latest
        if not tf.io.gfile.exists(path + ".index"):
            raise ValueError(f"checkpoint_path={path!r} is not a checkpoint (no {path}.index). "
                             + _existing_checkpoints_hint(est.model_dir))
        return path
    latest = tf.train.latest_checkpoint(est.model_dir)
    if latest is None:
        _log.warning("Could not find a trained model in model_dir %s: running %s with freshly initialized "
                     "variables. Call train() first, or pass checkpoint_path.", est.model_dir, what)
    return latest


def _existing_checkpoints_hint(model_dir, shown=5):
    """Which checkpoint prefixes exist in model_dir, so the fix can be copied from the message."""
    prefixes = sorted((p[: -len(".index")] for p in tf.io.gfile.glob(os.path.join(model_dir, "*.index"))),
                      key=_checkpoint_step)
    if not prefixes:
        return f"model_dir {model_dir!r} holds no checkpoint yet: call train() first, or pass a checkpoint's prefix."
    listed = ", ".join(repr(p) for p in prefixes[-shown:])
    more = f" (the latest {shown} of {len(prefixes)})" if len(prefixes) > shown else ""
    return f"Checkpoints in model_dir{more}: {listed}. Pass one of these prefixes, or a directory."


def _checkpoint_step(prefix):
    tail = prefix.rsplit("-", 1)[-1]
    return (0, int(tail), prefix) if tail.isdigit() else (1, 0, prefix)


def metric_ops_from_spec(spec):
    """{name: (value, update_op)} from eval_metrics (TPU spec) or eval_metric_ops (plain spec)."""
    if isinstance(spec, EstimatorSpec):
        ops = dict(spec.eval_metric_ops or {})
    elif spec.eval_metrics is not None:
        fn, tensors = spec.eval_metrics
        ops = call_with_tensors(fn, tensors)
    else:
        ops = {}
    return _check_metric_dict(ops)


def _check_metric_dict(ops):
    if not isinstance(ops, dict):
        raise TypeError(
            f"eval_metrics' metric_fn must return a dict of name -> (value, update_op), got {type(ops).__name__}."
        )
    for name, pair in ops.items():
        if name in _RESERVED_METRIC_NAMES:
            raise ValueError(f"Metric name {name!r} is reserved (the result dict has it already): rename the metric.")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"metric {name!r} must be a (value, update_op) pair as tf.compat.v1.metrics.* return, got {pair!r}."
            )
    return ops


def _write_eval_summary(est, name, step, results):
    # The original's line, which users' scripts and log scrapers look for.
    _log.info("Saving dict for global step %d: %s", step,
              ", ".join(f"{k} = {v}" for k, v in sorted(results.items()) if not isinstance(v, bytes)))
    path = os.path.join(est.model_dir, "eval" if not name else f"eval_{name}")
    writer = tf.compat.v1.summary.FileWriterCache.get(path)
    values = []
    for key, value in results.items():
        if key == "global_step":
            continue
        arr = np.asarray(value)
        if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
            values.append(tf.compat.v1.Summary.Value(tag=key, simple_value=float(arr)))
    writer.add_summary(tf.compat.v1.Summary(value=values), step)
    writer.flush()


def _build_single(est, input_fn, steps):
    global_step = tf.compat.v1.train.get_or_create_global_step()
    since = const_lifting.mark(tf.compat.v1.get_default_graph())
    returned = call_input_fn(input_fn, ModeKeys.EVAL, est.config, est.params, est.eval_batch_size)
    const_lifting.lift_dataset_constants(tf.compat.v1.get_default_graph(), returned, since)
    pipeline = InputPipeline(returned)
    if not pipeline.loopable and steps is None:
        raise ValueError("input_fn returned tensors rather than a tf.data.Dataset, so the end of the input "
                         "cannot be detected: pass evaluate(steps=N).")
    features, labels = pipeline.next()
    spec = call_model_fn(est.model_fn, features, labels, ModeKeys.EVAL, est.config, est.params,
                         est.eval_batch_size, est.use_tpu)
    loss_mean, loss_update = tf.compat.v1.metrics.mean(tf.cast(spec.loss, tf.float32), name="mean_loss")
    metrics = metric_ops_from_spec(spec)
    host_call = getattr(spec, "host_call", None)
    if host_call is not None:  # runs with every evaluation step, as the original's
        outputs = call_with_tensors(*host_call)
        loss_update = tf.group(loss_update, *[o for o in tf.nest.flatten(outputs) if o is not None])
    return global_step, pipeline.initializer, spec, (loss_mean, loss_update), metrics


def eval_input_mode(est):
    """The input mode for sharded evaluation/prediction (SLICED when the config asks for it)."""
    from .config import InputPipelineConfig

    tpu_config = est.config.tpu_config
    if tpu_config.eval_training_input_configuration == InputPipelineConfig.SLICED:
        return InputPipelineConfig.SLICED
    return tpu_config.input_mode


def _sharded_setup(est, input_fn, topology, mode, batch_size, what):
    from .batching import plan_batches
    from .sharded import make_strategy, sharded_scope
    from .sharded_inputs import InputContext, ShardedInput

    if batch_size is None:
        kind = "eval" if mode == ModeKeys.EVAL else "predict"
        raise ValueError(f"{kind}_batch_size in TPUEstimator constructor cannot be `None` when {what} runs on "
                         f"{topology.description}: pass the global batch size, TPUEstimator(..., {kind}_batch_size=N).")
    plan = plan_batches(batch_size, topology.num_replicas, topology.num_hosts, eval_input_mode(est), mode)
    strategy = make_strategy(topology)
    context = InputContext(topology, mode, plan)
    with sharded_scope(strategy):
        global_step = tf.compat.v1.train.get_or_create_global_step()
        inputs = ShardedInput(est, input_fn, mode, topology, plan, pad=True, context=context,
                              batch_axis=est._batch_axis)  # noqa: SLF001
    _log.info("%s on %s (%s: input_fn x%d with batch %d, model_fn batch %d).", what, topology.description,
              plan.input_mode.name, plan.input_fn_calls, plan.input_fn_batch, plan.model_fn_batch)
    return strategy, plan, context, global_step, inputs


def build_sharded_step(est, input_fn, topology, mode, batch_size, what):
    """Padded, masked sharded inputs plus one ShardedStep for EVAL or PREDICT (no loop)."""
    from .sharded import ShardedStep, sharded_scope

    strategy, plan, context, global_step, inputs = _sharded_setup(est, input_fn, topology, mode, batch_size, what)
    with sharded_scope(strategy):
        step = ShardedStep(est, strategy, topology, plan, context, mode).build(inputs.next(), train=False)
    return global_step, inputs.initializer, step


class _ShardedEvalLoop:
    """``iterations_per_loop`` eval steps per session run over the shards.

    Each step's gathered, mask-filtered eval_metrics tensors go to the host
    through the outfeed queue; metric updates run on the host after the loop.
    The loop ends early after a step with no real rows (every shard past the
    end of its input).
    """

    def __init__(self, est, input_fn, topology):
        from .host_calls import HostCallQueue
        from .sharded import ShardedStep, sharded_scope

        strategy, plan, context, self.global_step, inputs = _sharded_setup(
            est, input_fn, topology, ModeKeys.EVAL, est.eval_batch_size, "evaluate()")
        self.initializer = inputs.initializer
        self.infeed = inputs.infeed
        self.iterations = tf.compat.v1.placeholder(tf.int32, [], name="eval_iterations")
        captured = {}

        def body(i, rows):
            with names_as_outside_loop():
                step = ShardedStep(est, strategy, topology, plan, context, ModeKeys.EVAL).build(inputs.next())
            share_control_inputs(tf.compat.v1.get_default_graph())
            captured["step"] = step
            real = tf.reduce_sum(tf.cast(step.mask, tf.int64))
            metric_tensors = _flat_fn_tensors(step.eval_metrics)
            captured["metric_count"] = len(metric_tensors)
            host_tensors = _flat_fn_tensors(step.host_call)  # the original ran host_call on every eval step too
            queue = HostCallQueue(self._host_fn, [step.loss, real] + metric_tensors + host_tensors)
            captured["queue"] = queue
            consumed = inputs.infeed.take_dequeues() if inputs.infeed is not None else []
            with tf.control_dependencies([queue.enqueue(tf.cast(i, tf.int64))] + consumed):
                return i + 1, tf.identity(real)

        with sharded_scope(strategy):
            self.loop = tf.while_loop(lambda i, rows: tf.logical_and(i < self.iterations, tf.not_equal(rows, 0)),
                                      body, [tf.constant(0), tf.constant(-1, tf.int64)], parallel_iterations=1,
                                      name="eval_loop")
        step = captured["step"]
        self.spec = step.spec
        self._metric_fn_tensors = step.eval_metrics
        self._host_call = step.host_call
        self._metric_count = captured["metric_count"]
        self.queue = captured["queue"]
        self.metrics = {}
        self.loss = None
        self.queue.build_host_side()
        ran, rows = self.loop
        # Run with the loop: the eval step advances by the steps it ran (the stop-signal step, with no real
        # rows, is not an evaluation step), so hooks see it in after_run.
        self.advance_eval_step = advance_eval_step(ran - tf.cast(tf.equal(rows, 0), ran.dtype))

    def _host_fn(self, loss, real, *tensors):
        # Weighted by real rows, so the padded tail of the input barely moves the mean loss.
        self.loss = tf.compat.v1.metrics.mean(loss, weights=tf.cast(real, tf.float32), name="mean_loss")
        updates = [self.loss[1]]
        metric_tensors, host_tensors = tensors[:self._metric_count], tensors[self._metric_count:]
        if self._metric_fn_tensors is not None:
            self.metrics = _check_metric_dict(_call_on_flat(self._metric_fn_tensors, metric_tensors))
            updates += [pair[1] for pair in self.metrics.values()]
        if self._host_call is not None:
            outputs = _call_on_flat(self._host_call, host_tensors)
            updates += [o for o in tf.nest.flatten(outputs) if o is not None]
        return updates


def _flat_fn_tensors(fn_and_tensors):
    """The tensors of an (fn, list or dict) pair, flat (none for None)."""
    return [] if fn_and_tensors is None else flat_tensors(fn_and_tensors[1])


def _call_on_flat(fn_and_tensors, flat):
    """Calls the pair's fn on ``flat`` put back in the pair's structure."""
    fn, structure = fn_and_tensors
    return call_with_tensors(fn, repacked(structure, flat))


def run_evaluate(est, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None, topology=None):
    """Implements ``TPUEstimator.evaluate`` (one device or shards, per ``topology``).

    On shards the last batch is padded and padded rows are masked out of every
    metric, so ``steps=None`` evaluates exactly the examples of the input.
    """
    from .topology import single_device

    topology = topology or single_device()
    steps = check_step_arg("steps", steps)
    hooks = check_hooks(hooks)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"evaluate(name=...) must be a string, got {type(name).__name__}.")
    ckpt = resolve_checkpoint(est, checkpoint_path, "evaluation")
    graph = tf.Graph()
    meter = BuildMeter()
    with graph.as_default():
        if est.config.tf_random_seed is not None:
            tf.compat.v1.set_random_seed(est.config.tf_random_seed)
        if topology.sharded:
            loop = _ShardedEvalLoop(est, input_fn, topology)
            if loop.infeed is not None and steps is None:
                raise ValueError("input_fn returned tensors rather than a tf.data.Dataset, so the end of the input "
                                 "cannot be detected: pass evaluate(steps=N), or return a Dataset.")
            global_step, initializer, spec = loop.global_step, loop.initializer, loop.spec
            (loss_mean, _), metrics = loop.loss, loop.metrics
            session_config = topology.session_config(est.config.session_config)
        else:
            built = _build_single(est, input_fn, steps)
            global_step, initializer, spec, (loss_mean, loss_update), metrics = built
            update = tf.group(loss_update, *[pair[1] for pair in metrics.values()], advance_eval_step(1))
            session_config = est.config.session_config
        final_ops = {"loss": loss_mean, "global_step": global_step.read_value()}
        final_ops.update({k: pair[0] for k, pair in metrics.items()})
        flush = flush_writers_op()  # tf.summary writers a host_call made: their events reach disk at the end
        if flush is not None:
            final_ops[_FLUSH] = flush
        final_hook = tf.compat.v1.train.FinalOpsHook(final_ops)
        meter.check(f"evaluating on {topology.description}", topology.num_replicas)
        # ... and they need initializing in the session, like the input.
        scaffold = const_lifting.add_to_scaffold(
            merge_scaffold(user_scaffold(spec), [initializer] + writer_init_ops()), graph)
        creator = tf.compat.v1.train.ChiefSessionCreator(
            scaffold=scaffold, checkpoint_filename_with_path=ckpt, config=session_config)
        all_hooks = hooks + list(spec.evaluation_hooks) + [final_hook]
        count = 0
        with tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=all_hooks) as sess:
            if topology.sharded:
                count = _run_sharded_eval_loops(sess, loop, steps, est.config.tpu_config.parsed_iterations_per_loop)
            else:
                while not sess.should_stop() and (steps is None or count < steps):
                    sess.run(update)
                    count += 1
        if steps is not None and count < steps:
            _log.info("Evaluation input ended after %d of %d steps.", count, steps)
        results = {k: _to_python_scalar(v) for k, v in final_hook.final_ops_values.items() if k != _FLUSH}
        _write_eval_summary(est, name, int(results["global_step"]), results)
    _log.info("Evaluation at step %d (%d steps): %s", results["global_step"], count,
              ", ".join(f"{k} = {v:.6g}" for k, v in results.items() if isinstance(v, (float, np.floating))))
    events.publish(events.EvalFinished(events.bus.new_run_id(), int(results["global_step"]), name, dict(results)))
    return results


def _run_sharded_eval_loops(sess, loop, steps, ipl):
    """Runs eval loops until ``steps`` or the stopping signal; returns the steps with real rows.

    As the original: ``steps=N`` is one loop of N steps (hooks see one run), ``steps=None`` loops of
    ``iterations_per_loop`` until every shard is past the end of its input. The host runs each step's
    metric updates while the loop runs, so a long loop never holds more than the host is behind.
    """
    from .host_calls import ConcurrentDrain
    from .host_infeed import feeding

    per_loop = int(ipl.value) if not ipl.is_time else 100
    count = 0
    raw = sess.run_step_fn(lambda step_context: step_context.session)
    while not sess.should_stop() and (steps is None or count < steps):
        k = per_loop if steps is None else steps - count
        with feeding(loop.infeed, raw, k) as feed:
            drain = ConcurrentDrain(loop.queue, raw)
            try:
                ran, rows, _ = sess.run([*loop.loop, loop.advance_eval_step], {loop.iterations: k})
                feed.ran = int(ran)
            except BaseException:
                drain.abort()
                raise
        drain.finish()
        count += int(ran) - (1 if rows == 0 else 0)
        if rows == 0:
            break  # every shard is past the end of its input
    return count


def _to_python_scalar(value):
    arr = np.asarray(value)
    if arr.shape == () and np.issubdtype(arr.dtype, np.floating):
        return np.float32(arr)
    if arr.shape == () and np.issubdtype(arr.dtype, np.integer):
        return np.int64(arr)
    return value
