"""Refusals every backend with TPU semantics shares (simulated shards, several workers, a real TPU).

The messages keep the original TPUEstimator's phrases, which users' code matches on, and name the fix.
"""

from __future__ import annotations

import tensorflow as tf


def require_batch_and_steps(description: str, est, steps, max_steps) -> None:
    """A global train batch size, and a loop length: ``train()`` on replicas needs both before any work."""
    if est.train_batch_size is None:
        raise ValueError(f"train_batch_size is required to train on {description}: pass the global "
                         "batch size, e.g. TPUEstimator(..., train_batch_size=1024).")
    if steps is None and max_steps is None:
        raise ValueError(f"Training on {description} needs steps or max_steps "
                         "(the device loop has a fixed length). Pass train(..., steps=N).")


def refuse_chief_hooks(description: str, spec) -> None:
    """The original's TPU training step refused ``training_chief_hooks``; its key phrase is kept for callers."""
    if spec.training_chief_hooks:
        raise ValueError(
            "training_chief_hooks returned by EstimatorSpec is not supported in TPUEstimator "
            f"(training on {description}): return them as training_hooks, or pass "
            "them to train(hooks=...).")


def refuse_v1_summaries(graph) -> None:
    """A host_call that built ``tf.compat.v1.summary`` ops: they cannot run on the host of a replicated run."""
    if graph.get_collection(tf.compat.v1.GraphKeys.SUMMARIES):
        raise ValueError(
            "host_call created tf.compat.v1.summary ops, which cannot run on the host of a sharded run "
            "(the original TPUEstimator refused them too). Use tf.summary (v2) with a writer: "
            "with tf.summary.create_file_writer(model_dir).as_default(): tf.summary.scalar(...)."
        )
