"""One device (this machine's CPU or first GPU): the model called once per step, no replicas."""

from __future__ import annotations

import tensorflow as tf

from ..inputs import const_lifting
from .host_calls import HostCallQueue
from ..inputs.input_pipeline import InputPipeline
from ..graph.model_calls import call_input_fn, call_model_fn
from .replica_collections import collections_per_replica
from ..contract.modes import ModeKeys
from .base import Backend, EvalGraph, PredictGraph, TrainGraph
from .device_loop import train_while_loop
from .hook_tensors import carry_hook_tensors


class OneDevice(Backend):
    """The plain Estimator path: one device, ``params['batch_size']`` is the whole batch."""

    def build_train(self, est, input_fn, iterations) -> TrainGraph:
        graph = tf.compat.v1.get_default_graph()
        global_step = tf.compat.v1.train.get_or_create_global_step()
        since = const_lifting.mark(graph)
        returned = call_input_fn(input_fn, ModeKeys.TRAIN, est.config, est.params, est.train_batch_size,
                                 params_required=est.input_fn_needs_params)
        const_lifting.lift_dataset_constants(graph, returned, since)  # numpy arrays: fed, not embedded
        pipeline = InputPipeline(returned, feed_tensors=True)
        # As the original off TPU: host_call runs on every step; experimental_host_call_every_n_steps thins
        # the TPU outfeed only (simulated shards here).
        every_n = 1
        captured = {}

        def step_fn(i):
            features, labels = pipeline.next()
            # One replica's view too: the v1 summaries model_fn builds in the loop are left out of the
            # collection the session would merge (and fail on), as on shards.
            with collections_per_replica() as views, views.replica(0):
                spec = call_model_fn(est.model_fn, features, labels, ModeKeys.TRAIN, est.config, est.params,
                                     est.train_batch_size, est.use_tpu)
            captured["spec"] = spec
            loss = tf.cast(tf.convert_to_tensor(spec.loss), tf.float32)
            with tf.control_dependencies([spec.train_op]):
                step = tf.identity(global_step.read_value())
            deps = [spec.train_op]
            # As the original off TPU (one step per Session.run), the hooks model_fn returned may fetch the
            # step's tensors; they run between loops, so they get the loop's last step's values.
            deps += carry_hook_tensors(list(spec.training_hooks) + list(getattr(spec, "training_chief_hooks", ())))
            host_call = getattr(spec, "host_call", None)
            if host_call is not None:
                captured["host_call"] = HostCallQueue(host_call[0], host_call[1], every_n)
                deps.append(captured["host_call"].enqueue(step, i))
            return loss, deps, step

        loop, step_after = train_while_loop(step_fn, iterations, pipeline.infeed, global_step)
        return TrainGraph(global_step, pipeline, loop, step_after, captured["spec"], captured.get("host_call"),
                          model_fn_batch=est.train_batch_size, layout=f"batch {est.train_batch_size}")

    def build_eval(self, est, input_fn, steps, iterations_per_loop) -> EvalGraph:
        from .eval_step import advance_eval_step
        from ..graph.metric_calls import metric_ops_from_spec
        from ..contract.spec import call_with_tensors

        graph = tf.compat.v1.get_default_graph()
        global_step = tf.compat.v1.train.get_or_create_global_step()
        since = const_lifting.mark(graph)
        returned = call_input_fn(input_fn, ModeKeys.EVAL, est.config, est.params, est.eval_batch_size,
                                 params_required=est.input_fn_needs_params)
        const_lifting.lift_dataset_constants(graph, returned, since)
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
        update = tf.group(loss_update, *[pair[1] for pair in metrics.values()], advance_eval_step(1))

        def run(sess, steps):
            count = 0
            try:
                while not sess.should_stop() and (steps is None or count < steps):
                    sess.run(update)
                    count += 1
            except tf.errors.OutOfRangeError:
                pass  # the input ended; the session closes as MonitoredSession closes it on this error
            return count

        return EvalGraph(global_step, pipeline.initializer, spec, (loss_mean, loss_update), metrics, run)

    def build_predict(self, est, input_fn, select) -> PredictGraph:
        graph = tf.compat.v1.get_default_graph()
        tf.compat.v1.train.get_or_create_global_step()
        since = const_lifting.mark(graph)
        returned = call_input_fn(input_fn, ModeKeys.PREDICT, est.config, est.params, est.predict_batch_size,
                                 params_required=est.input_fn_needs_params)
        const_lifting.lift_dataset_constants(graph, returned, since)
        pipeline = InputPipeline(returned)
        features, labels = pipeline.next()
        spec = call_model_fn(est.model_fn, features, labels, ModeKeys.PREDICT, est.config, est.params,
                             est.predict_batch_size, est.use_tpu)
        return PredictGraph(spec, select(spec.predictions), pipeline.initializer, pipeline.loopable,
                            empty_batch_ends=False)
