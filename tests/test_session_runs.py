"""How many different runs a train() session makes on simulated shards.

A session builds an executor for each new set of fetches, feeds and targets: a pass of Grappler and
placement over the whole graph, about 1.4 s each for EfficientNet-B0 on 8 shards however small the fetch.
So the loop boundary reads the global step through the tensor TensorFlow's hooks fetch, and with no local
state the session's two readiness checks are one tensor.
"""

import collections

import tensorflow as tf
import tf_keras
from tensorflow.python.client import session as session_lib

import tpu_nb
from model_zoo import CLASSES, train_input_fn

SHARDS = 2


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES)(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if params.get("local_state"):
        # A local variable (as a streaming metric makes): readiness is then checked before and after the
        # local initializers, by two different checks.
        seen = tf.compat.v1.get_local_variable("rows_seen", [], initializer=tf.compat.v1.zeros_initializer())
        loss += 0.0 * seen.assign_add(tf.cast(tf.shape(features)[0], tf.float32))
    optimizer = tf.compat.v1.tpu.CrossShardOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.1))
    train_op = optimizer.minimize(loss, tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


class _Runs:
    """Every Session run's (targets, fetches, feeds), as the session keys its executors."""

    def __init__(self, monkeypatch):
        self.counts = collections.Counter()
        do_run = session_lib.BaseSession._do_run  # noqa: SLF001

        def recording(session, handle, targets, fetches, feeds, options, run_metadata):
            key = (frozenset(op.name for op in targets), frozenset(t.name for t in fetches),
                   frozenset(ref.deref().name for ref in feeds))
            self.counts[key] += 1
            return do_run(session, handle, targets, fetches, feeds, options, run_metadata)

        monkeypatch.setattr(session_lib.BaseSession, "_do_run", recording)

    def fetching(self, name):
        return [key for key in self.counts if any(t.startswith(name) for t in key[1])]


def _train(tmp_path, monkeypatch, **params):
    runs = _Runs(monkeypatch)
    config = tpu_nb.RunConfig(model_dir=str(tmp_path), tpu_config=tpu_nb.TPUConfig(iterations_per_loop=2),
                              cluster=tpu_nb.SimulatedTPU(num_cores=SHARDS))
    est = tpu_nb.TPUEstimator(_model_fn, config=config, params=params, use_tpu=True, train_batch_size=16)
    est.train(train_input_fn, steps=6)
    assert tf.train.load_variable(est.model_dir, "global_step") == 6
    return runs


def test_loop_boundaries_and_hooks_read_the_global_step_through_one_executor(tmp_path, monkeypatch):
    runs = _train(tmp_path, monkeypatch)
    step_reads = [key for key in runs.counts if key[1] and not key[0] and not key[2] and
                  all(name.startswith("global_step") for name in key[1])]
    # The checkpoint hook's reads at session start and the boundary run after each of the 3 loops.
    assert len(step_reads) == 1, step_reads
    assert runs.counts[step_reads[0]] >= 4
    readiness = runs.fetching("concat")
    assert len(readiness) == 1 and runs.counts[readiness[0]] == 2, readiness
    # Initialise, check readiness, local initialisers, global step, save, the device loop.
    assert len(runs.counts) == 6, sorted(runs.counts, key=str)


def test_with_local_state_readiness_is_still_checked_before_and_after_the_local_initializers(
        tmp_path, monkeypatch):
    runs = _train(tmp_path, monkeypatch, local_state=True)
    readiness = runs.fetching("concat")
    assert len(readiness) == 2 and all(runs.counts[key] == 1 for key in readiness), readiness
    assert len(runs.counts) == 7, sorted(runs.counts, key=str)
