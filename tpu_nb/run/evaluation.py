"""``evaluate()``: metrics accumulated over the input, one result dict, on whichever backend builds the graph."""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from ..graph.eager_checks import fast_eager_checks
from ..inputs import const_lifting
from ..reporting import events
from .memory_guard import BuildMeter
from .schedule import check_step_arg
from .scaffolds import merge_scaffold, user_scaffold
from .summary_writers import flush_writers_op, writer_init_ops
from .training import check_hooks

_log = logging.getLogger("tpu_nb")
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






def run_evaluate(est, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None, backend=None):
    """Implements ``TPUEstimator.evaluate`` on ``backend`` (default: one device).

    On shards the last batch is padded and padded rows are masked out of every
    metric, so ``steps=None`` evaluates exactly the examples of the input.
    """
    from ..backends import one_device_backend

    backend = backend or one_device_backend()
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
        with fast_eager_checks():
            built = backend.build_eval(est, input_fn, steps, est.config.tpu_config.parsed_iterations_per_loop)
        (loss_mean, _), metrics = built.loss, built.metrics
        session = backend.session(est.config.session_config)
        final_ops = {"loss": loss_mean, "global_step": built.global_step.read_value()}
        final_ops.update({k: pair[0] for k, pair in metrics.items()})
        flush = flush_writers_op()  # tf.summary writers a host_call made: their events reach disk at the end
        if flush is not None:
            final_ops[_FLUSH] = flush
        final_hook = tf.compat.v1.train.FinalOpsHook(final_ops)
        meter.check(f"evaluating on {backend.description}", backend.topology.num_replicas)
        # ... and they need initializing in the session, like the input.
        scaffold = const_lifting.add_to_scaffold(
            merge_scaffold(user_scaffold(built.spec), [built.initializer] + writer_init_ops()), graph)
        creator = tf.compat.v1.train.ChiefSessionCreator(
            scaffold=scaffold, checkpoint_filename_with_path=ckpt, config=session.config, master=session.target)
        all_hooks = hooks + list(built.spec.evaluation_hooks) + [final_hook]
        count = 0
        backend.startup()  # a TPU system's initialisation; nothing elsewhere
        try:
            with tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=all_hooks) as sess:
                count = built.run(sess, steps)
        finally:
            backend.shutdown()
        if steps is not None and count < steps:
            _log.info("Evaluation input ended after %d of %d steps.", count, steps)
        results = {k: _to_python_scalar(v) for k, v in final_hook.final_ops_values.items() if k != _FLUSH}
        _write_eval_summary(est, name, int(results["global_step"]), results)
    _log.info("Evaluation at step %d (%d steps): %s", results["global_step"], count,
              ", ".join(f"{k} = {v:.6g}" for k, v in results.items() if isinstance(v, (float, np.floating))))
    events.publish(events.EvalFinished(events.bus.new_run_id(), int(results["global_step"]), name, dict(results)))
    return results


def _to_python_scalar(value):
    arr = np.asarray(value)
    if arr.shape == () and np.issubdtype(arr.dtype, np.floating):
        return np.float32(arr)
    if arr.shape == () and np.issubdtype(arr.dtype, np.integer):
        return np.int64(arr)
    return value
