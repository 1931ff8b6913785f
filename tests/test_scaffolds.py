"""A user's Scaffold local_init_op, combined with the initializers the engine runs in every session
(train, evaluate and predict all start their sessions from tpu_nb.run.scaffolds.merge_scaffold)."""

import numpy as np
import tensorflow as tf

from tpu_nb.run.scaffolds import merge_scaffold


def _start_sessions(scaffold, count):
    """Yields `count` sessions started from `scaffold` the way the engine starts them."""
    creator = tf.compat.v1.train.ChiefSessionCreator(scaffold=scaffold)
    for _ in range(count):
        with tf.compat.v1.train.MonitoredSession(session_creator=creator) as sess:
            yield sess


def test_what_the_users_local_init_op_assigns_holds_in_every_session():
    # One tf.group of the default initializers and the user's op undid the assignment in most sessions
    # of a graph this small (and in about 1 of 30 predict() calls); 20 variables x 10 sessions make a
    # lucky pass impossible in practice.
    with tf.Graph().as_default():
        offsets = [tf.compat.v1.get_local_variable(f"offset{i}", initializer=tf.constant(0.0)) for i in range(20)]
        user = tf.compat.v1.train.Scaffold(local_init_op=tf.group(*[o.assign(5.0) for o in offsets]))
        for sess in _start_sessions(merge_scaffold(user), 10):
            np.testing.assert_array_equal(sess.run(offsets), [5.0] * 20)


def test_state_the_users_op_does_not_touch_still_gets_the_default_initializers():
    with tf.Graph().as_default():
        offset = tf.compat.v1.get_local_variable("offset", initializer=tf.constant(0.0))
        count = tf.compat.v1.get_local_variable("count", initializer=tf.constant(3))
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([1], tf.int64), tf.constant(["one"])), "?")
        name = table.lookup(tf.constant([1], tf.int64))
        user = tf.compat.v1.train.Scaffold(local_init_op=offset.assign(5.0).op)
        for sess in _start_sessions(merge_scaffold(user), 2):
            assert sess.run([offset, count, name]) == [5.0, 3, [b"one"]]


def test_a_users_op_that_runs_the_default_initializers_itself_then_assigns():
    # The usual TF1 pattern: the user's op initializes locals and tables, and sets a value after that.
    with tf.Graph().as_default():
        offset = tf.compat.v1.get_local_variable("offset", initializer=tf.constant(0.0))
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([1], tf.int64), tf.constant(["one"])), "?")
        defaults = tf.group(tf.compat.v1.local_variables_initializer(), tf.compat.v1.tables_initializer())
        with tf.control_dependencies([defaults]):
            user_op = offset.assign(5.0).op
        name = table.lookup(tf.constant([1], tf.int64))
        user = tf.compat.v1.train.Scaffold(local_init_op=user_op)
        for sess in _start_sessions(merge_scaffold(user, [tf.no_op(name="engine_extra")]), 10):
            assert sess.run([offset, name]) == [5.0, [b"one"]]
