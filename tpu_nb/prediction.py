"""``predict()`` on one device: a generator over examples (or batches)."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from .evaluation import resolve_checkpoint
from .input_pipeline import InputPipeline
from .model_calls import call_input_fn, call_model_fn
from .modes import ModeKeys
from .scaffolds import merge_scaffold, user_scaffold
from .tf_logs import quiet_tf_logs
from .training import check_hooks

_log = logging.getLogger("tpu_nb")


def _select(predictions, predict_keys):
    if predict_keys is None:
        return predictions
    if not isinstance(predictions, dict):
        raise ValueError("predict_keys was given, but model_fn's predictions are a single tensor, not a dict.")
    if isinstance(predict_keys, str):
        predict_keys = [predict_keys]
    missing = [k for k in predict_keys if k not in predictions]
    if missing:
        raise ValueError(f"predict_keys {missing} are not in the predictions; available keys: {sorted(predictions)}.")
    return {k: predictions[k] for k in predict_keys}


def _batch_length(preds):
    if isinstance(preds, dict):
        sizes = {k: (v.shape[0] if np.ndim(v) else None) for k, v in preds.items()}
        distinct = {s for s in sizes.values()}
        if None in distinct or len(distinct) != 1:
            raise ValueError(
                f"With yield_single_examples=True every prediction needs the same batch (first) dimension; got "
                f"{sizes}. Give each prediction a batch dimension, or use yield_single_examples=False."
            )
        return distinct.pop()
    if np.ndim(preds) == 0:
        raise ValueError("The prediction has no batch dimension; use yield_single_examples=False.")
    return preds.shape[0]


def run_predict(est, input_fn, predict_keys=None, hooks=None, checkpoint_path=None, yield_single_examples=True,
                topology=None):
    """Implements ``TPUEstimator.predict`` (a generator; one device or shards, per ``topology``).

    On shards a short last batch is padded to the static batch size and the
    padded rows are sliced off again, so N examples give exactly N predictions.
    """
    hooks = check_hooks(hooks)
    ckpt = resolve_checkpoint(est, checkpoint_path, "prediction")
    graph = tf.Graph()
    with graph.as_default():
        with quiet_tf_logs():
            if est.config.tf_random_seed is not None:
                tf.compat.v1.set_random_seed(est.config.tf_random_seed)
            if topology is not None and topology.sharded:
                built = _build_sharded(est, input_fn, predict_keys, topology)
            else:
                built = _build(est, input_fn, predict_keys)
            spec, predictions, initializer, loopable, session_config = built
            sess, hooked = _open_session(spec, initializer, hooks, ckpt, session_config)
        with sess:
            single_shot = not loopable
            next_batch = _batch_reader(sess, predictions, hooked)
            while True:
                preds = next_batch()
                if preds is None:
                    break
                if topology is not None and topology.sharded and _batch_length(preds) == 0:
                    break  # every shard is past the end of its input: the stopping signal
                if not yield_single_examples:
                    yield preds
                else:
                    n = _batch_length(preds)
                    if isinstance(preds, dict):
                        for i in range(n):
                            yield {k: v[i] for k, v in preds.items()}
                    else:
                        for i in range(n):
                            yield preds[i]
                if single_shot:
                    break


def _batch_reader(sess, predictions, hooked):
    """A function returning the next batch of predictions, or None at the end of the input.

    Without hooks there is nothing for MonitoredSession to wrap around each run, so batches are
    fetched through a callable on the raw session: about 3x less overhead per batch, which is most
    of predict's own cost for small models.
    """
    if not hooked:
        raw = sess.run_step_fn(lambda step_context: step_context.session)
        fetch = raw.make_callable(predictions)

        def read_raw():
            try:
                return fetch()
            except tf.errors.OutOfRangeError:
                return None

        return read_raw

    def read_hooked():
        if sess.should_stop():
            return None
        try:
            return sess.run(predictions)
        except tf.errors.OutOfRangeError:
            return None

    return read_hooked


def _build(est, input_fn, predict_keys):
    """Builds the one-device predict graph: (spec, predictions, input initializer, loopable, session config)."""
    tf.compat.v1.train.get_or_create_global_step()
    pipeline = InputPipeline(call_input_fn(input_fn, ModeKeys.PREDICT, est.config, est.params,
                                           est.predict_batch_size))
    features, labels = pipeline.next()
    spec = call_model_fn(est.model_fn, features, labels, ModeKeys.PREDICT, est.config, est.params,
                         est.predict_batch_size, est.use_tpu)
    predictions = _select(spec.predictions, predict_keys)
    return spec, predictions, pipeline.initializer, pipeline.loopable, est.config.session_config


def _build_sharded(est, input_fn, predict_keys, topology):
    """Builds the sharded predict step (padded input, masked predictions); same tuple as ``_build``."""
    from .evaluation import build_sharded_step

    _, initializer, step = build_sharded_step(est, input_fn, topology, ModeKeys.PREDICT, est.predict_batch_size,
                                              "predict()")
    predictions = _select(step.predictions, predict_keys)
    if not isinstance(step.spec.predictions, dict):
        predictions = predictions["predictions"]
    return step.spec, predictions, initializer, True, topology.session_config(est.config.session_config)


def _open_session(spec, initializer, hooks, ckpt, session_config):
    """The MonitoredSession restoring ``ckpt``; returns it and whether any hook is attached."""
    scaffold = merge_scaffold(user_scaffold(spec), [initializer])
    creator = tf.compat.v1.train.ChiefSessionCreator(
        scaffold=scaffold, checkpoint_filename_with_path=ckpt, config=session_config)
    all_hooks = hooks + list(spec.prediction_hooks)
    return tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=all_hooks), bool(all_hooks)
