"""What the replicated backends share: the model on N replicas through a graph-mode distribution strategy.

Simulated shards (``simulated.py``) and several workers (``multi_worker.py``)
build the same graphs; they differ in the strategy, where per-replica values
meet, the session and what a lost peer means. Each says so by overriding the
few methods at the bottom of ``Replicated``.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from ..inputs.batching import plan_batches
from ..graph.control_edges import share_control_inputs
from ..graph.scopes import names_as_outside_loop
from .host_calls import HostCallQueue
from ..contract.modes import ModeKeys
from .sharded import ShardedStep, sharded_scope
from ..inputs.sharded_inputs import InputContext, ShardedInput
from .base import Backend, EvalGraph, PredictGraph, SessionSetup, TrainGraph
from .device_loop import train_while_loop
from .tpu_semantics import refuse_v1_summaries, require_batch_and_steps

_log = logging.getLogger("tpu_nb")


def eval_input_mode(est):
    """The input mode for sharded evaluation/prediction (SLICED when the config asks for it)."""
    from ..contract.config import InputPipelineConfig

    tpu_config = est.config.tpu_config
    if tpu_config.eval_training_input_configuration == InputPipelineConfig.SLICED:
        return InputPipelineConfig.SLICED
    return tpu_config.input_mode


class Replicated(Backend):
    """The model on every replica of ``topology``, per-shard batches, padded evaluation and prediction."""

    # -- arguments ------------------------------------------------------------
    def check_train_args(self, est, steps, max_steps):
        require_batch_and_steps(self.description, est, steps, max_steps)

    def check_host_call_graph(self, graph):
        refuse_v1_summaries(graph)

    # -- building -------------------------------------------------------------
    def build_train(self, est, input_fn, iterations) -> TrainGraph:
        topo = self.topology
        plan = plan_batches(est.train_batch_size, topo.num_replicas, topo.num_hosts,
                            est.config.tpu_config.input_mode, ModeKeys.TRAIN)
        strategy = self.make_strategy()
        context = InputContext(topo, ModeKeys.TRAIN, plan)
        every_n = est.config.tpu_config.experimental_host_call_every_n_steps
        captured = {}
        with sharded_scope(strategy):
            global_step = tf.compat.v1.train.get_or_create_global_step()
            inputs = ShardedInput(est, input_fn, ModeKeys.TRAIN, topo, plan, pad=False, context=context,
                                  batch_axis=est._batch_axis)  # noqa: SLF001

            def step_fn(i):
                step = ShardedStep(est, strategy, self, plan, context, ModeKeys.TRAIN)
                step.build(inputs.next(), train=True)
                captured["spec"] = step.spec
                deps = [step.loss]
                with tf.control_dependencies(deps):
                    step_value = tf.identity(global_step.read_value())
                if step.host_call is not None:
                    captured["host_call"] = HostCallQueue(step.host_call[0], step.host_call[1], every_n)
                    deps.append(captured["host_call"].enqueue(step_value, i))
                return step.loss, deps, step_value

            loop, step_after = train_while_loop(step_fn, iterations, inputs.infeed, global_step)
            barrier = self.build_barrier(strategy)
        layout = (f"{plan.input_mode.name}: input_fn x{plan.input_fn_calls} with batch {plan.input_fn_batch}, "
                  f"model_fn batch {plan.model_fn_batch}")
        return TrainGraph(global_step, inputs, loop, step_after, captured["spec"], captured.get("host_call"),
                          model_fn_batch=plan.model_fn_batch, layout=layout, barrier=barrier, strategy=strategy)

    def _setup(self, est, input_fn, mode, batch_size, what):
        topology = self.topology
        if batch_size is None:
            kind = "eval" if mode == ModeKeys.EVAL else "predict"
            raise ValueError(f"{kind}_batch_size in TPUEstimator constructor cannot be `None` when {what} runs on "
                             f"{self.description}: pass the global batch size, TPUEstimator(..., "
                             f"{kind}_batch_size=N).")
        plan = plan_batches(batch_size, topology.num_replicas, topology.num_hosts, eval_input_mode(est), mode)
        strategy = self.make_strategy()
        context = InputContext(topology, mode, plan)
        with sharded_scope(strategy):
            global_step = tf.compat.v1.train.get_or_create_global_step()
            inputs = ShardedInput(est, input_fn, mode, topology, plan, pad=True, context=context,
                                  batch_axis=est._batch_axis)  # noqa: SLF001
        _log.info("%s on %s (%s: input_fn x%d with batch %d, model_fn batch %d).", what, self.description,
                  plan.input_mode.name, plan.input_fn_calls, plan.input_fn_batch, plan.model_fn_batch)
        return strategy, plan, context, global_step, inputs

    def build_eval(self, est, input_fn, steps, iterations_per_loop) -> EvalGraph:
        loop = _EvalLoop(self, est, input_fn, steps)
        if loop.infeed is not None and steps is None:
            raise ValueError("input_fn returned tensors rather than a tf.data.Dataset, so the end of the input "
                             "cannot be detected: pass evaluate(steps=N), or return a Dataset.")
        return EvalGraph(loop.global_step, loop.initializer, loop.spec, loop.loss, loop.metrics,
                         lambda sess, steps: _run_eval_loops(sess, loop, steps, iterations_per_loop))

    def build_predict(self, est, input_fn, select) -> PredictGraph:
        strategy, plan, context, _, inputs = self._setup(est, input_fn, ModeKeys.PREDICT, est.predict_batch_size,
                                                         "predict()")
        with sharded_scope(strategy):
            step = ShardedStep(est, strategy, self, plan, context, ModeKeys.PREDICT).build(inputs.next())
        predictions = select(step.predictions)
        if not isinstance(step.spec.predictions, dict):
            predictions = predictions["predictions"]
        return PredictGraph(step.spec, predictions, inputs.initializer, loopable=True, empty_batch_ends=True)

    # -- what each replicated backend says for itself --------------------------
    def make_strategy(self):
        """The distribution strategy over this backend's replicas."""
        raise NotImplementedError

    def gather_in_replica(self, tensors):
        """Per-replica tensors for the host, inside the replica function (all-gathered where needed)."""
        return tensors

    def gather_to_host(self, strategy, value, only_first=False):
        """A per-replica value as the host sees it: concatenated along dim 0 in replica order (the outfeed's)."""
        from .sharded import gather

        return gather(strategy, value, only_first=only_first)

    def build_barrier(self, strategy):
        """An op every replica's process runs after its last loop, or None."""
        return None

    def session(self, user_config, built=None):
        return SessionSetup("", self.topology.session_config(user_config))


class _EvalLoop:
    """``iterations_per_loop`` eval steps per session run over the shards.

    Each step's gathered, mask-filtered eval_metrics tensors go to the host
    through the outfeed queue; metric updates run on the host after the loop.
    The loop ends early after a step with no real rows (every shard past the
    end of its input).
    """

    def __init__(self, backend, est, input_fn, steps=None):
        from .eval_step import advance_eval_step
        from ..graph.metric_calls import flat_fn_tensors

        strategy, plan, context, self.global_step, inputs = backend._setup(  # noqa: SLF001
            est, input_fn, ModeKeys.EVAL, est.eval_batch_size, "evaluate()")
        self.initializer = inputs.initializer
        self.infeed = inputs.infeed
        self.iterations = tf.compat.v1.placeholder(tf.int32, [], name="eval_iterations")
        captured = {}
        # Whole steps (all real, or all padding past the end): metric_fn gets the gathered tensors with their
        # static shapes, as the original's outfeed gave them. In PER_HOST_V2 only when evaluate() was given
        # steps, as the original required; a step that is then partly real is an error, never a count of
        # padding rows. Otherwise padded rows are masked out (the first dimension becomes unknown).
        whole = inputs.whole_steps and (inputs.one_element_per_step or steps is not None)
        guard_partial = whole and not inputs.one_element_per_step

        def body(i, rows):
            with names_as_outside_loop():
                # Steps all real or all padding: metric_fn gets the gathered tensors whole, with their static
                # shapes (as the original's outfeed gave them), and the padding steps are not queued.
                step = ShardedStep(est, strategy, backend, plan, context, ModeKeys.EVAL).build(
                    inputs.next(), mask_rows=not whole)
            share_control_inputs(tf.compat.v1.get_default_graph())
            captured["step"] = step
            real = tf.reduce_sum(tf.cast(step.mask, tf.int64))
            metric_tensors = flat_fn_tensors(step.eval_metrics)
            captured["metric_count"] = len(metric_tensors)
            host_tensors = flat_fn_tensors(step.host_call)  # the original ran host_call on every eval step too
            queue = HostCallQueue(self._host_fn, [step.loss, real] + metric_tensors + host_tensors)
            captured["queue"] = queue
            consumed = inputs.infeed.take_dequeues() if inputs.infeed is not None else []
            if whole:
                checks = []
                if guard_partial:
                    full = tf.size(step.mask, out_type=tf.int64)
                    checks.append(tf.debugging.Assert(
                        tf.logical_or(tf.equal(real, 0), tf.equal(real, full)),
                        ["evaluate(steps=...): the input ended in the middle of a step, so some shards got no "
                         "data (PER_HOST_V2 gives each shard elements of its own). Pass steps=None to evaluate "
                         "to the end of the input (padding is then masked out), or fewer steps. Real rows:",
                         real, "of", full]))
                with tf.control_dependencies(checks):
                    enqueue = tf.cond(real > 0, lambda: tf.group(queue.enqueue(tf.cast(i, tf.int64))), tf.no_op)
            else:
                enqueue = queue.enqueue(tf.cast(i, tf.int64))
            with tf.control_dependencies([enqueue] + consumed):
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
        from ..graph.metric_calls import call_on_flat, check_metric_dict

        # Weighted by real rows, so the padded tail of the input barely moves the mean loss.
        self.loss = tf.compat.v1.metrics.mean(loss, weights=tf.cast(real, tf.float32), name="mean_loss")
        updates = [self.loss[1]]
        metric_tensors, host_tensors = tensors[:self._metric_count], tensors[self._metric_count:]
        if self._metric_fn_tensors is not None:
            self.metrics = check_metric_dict(call_on_flat(self._metric_fn_tensors, metric_tensors))
            updates += [pair[1] for pair in self.metrics.values()]
        if self._host_call is not None:
            outputs = call_on_flat(self._host_call, host_tensors)
            updates += [o for o in tf.nest.flatten(outputs) if o is not None]
        return updates


def _run_eval_loops(sess, loop, steps, ipl):
    """Runs eval loops until ``steps`` or the stopping signal; returns the steps with real rows.

    As the original: ``steps=N`` is one loop of N steps (hooks see one run), ``steps=None`` loops of
    ``iterations_per_loop`` until every shard is past the end of its input. The host runs each step's
    metric updates while the loop runs, so a long loop never holds more than the host is behind.
    """
    from .host_calls import ConcurrentDrain
    from ..inputs.host_infeed import feeding

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
