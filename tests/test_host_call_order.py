"""host_call values are this step's, read before its updates: the usual TPU summary of the global step.

``host_call=(fn, [tf.reshape(global_step, [1]), ...])`` is how TPU programs tag their summaries. The
read of the global step and the optimizer's increment are not ordered by the user's graph; when the
read ran second, a step was summarised as the next one (about once in 1,000 steps), which shows up
as a repeated step in TensorBoard and the dashboard.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import train_input_fn

STEPS = 1200


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(5)(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    global_step = tf.compat.v1.train.get_global_step()
    # Built before the train op, as the values are meant: the step's inputs. (Built after it on shards,
    # replica 1's read comes back through the optimizer's merge call, after the update: a known gap.)
    host_tensors = [tf.reshape(global_step, [1]), tf.reshape(loss, [1])]
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.01)
    if params["shards"]:
        optimizer = tf.compat.v1.tpu.CrossShardOptimizer(optimizer)
    train_op = optimizer.minimize(loss, global_step=global_step)

    def host_fn(step_seen, loss):
        return []

    host_call = (host_fn, host_tensors)
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)


# On shards the values go on under control_dependencies([train_op]) (the enqueue follows the step, as
# the original's outfeed did): replica 1's read used to see the increment at about 1 step in 1,000.
@pytest.mark.parametrize("shards", [0, 2])
def test_every_step_sees_the_global_step_before_its_own_increment(tmp_path, shards):
    cluster = tpu_nb.SimulatedTPU(num_cores=shards) if shards else None
    est = tpu_nb.TPUEstimator(_model_fn, params={"shards": shards}, use_tpu=bool(shards), train_batch_size=16,
                              config=tpu_nb.RunConfig(model_dir=str(tmp_path), cluster=cluster,
                                                      save_checkpoints_steps=10**6,
                                                      tpu_config=tpu_nb.TPUConfig(iterations_per_loop=4)))
    batches = []
    with tpu_nb.events.subscribed(lambda e: batches.append(e) if isinstance(e, tpu_nb.events.HostCallBatch) else None):
        est.train(train_input_fn, steps=STEPS)
    after = np.concatenate([b.global_steps for b in batches])  # the step each entry was queued at (after it)
    seen = np.concatenate([b.values["step_seen"] for b in batches])  # (steps, shards or 1)
    assert after.tolist() == list(range(1, STEPS + 1))
    np.testing.assert_array_equal(seen, np.broadcast_to((after - 1)[:, None], seen.shape))
