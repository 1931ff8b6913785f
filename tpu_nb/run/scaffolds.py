"""Combining the user's ``Scaffold`` (from ``scaffold_fn``) with what the engine needs to initialise."""

from __future__ import annotations

import tensorflow as tf

from ..graph.walk import upstream_ops


def user_scaffold(spec):
    """The Scaffold a spec asks for: ``scaffold_fn()`` (TPU spec) or ``scaffold`` (plain spec)."""
    from ..contract.spec import EstimatorSpec

    if isinstance(spec, EstimatorSpec):
        return spec.scaffold
    return spec.scaffold_fn() if spec.scaffold_fn is not None else None


def local_init_op(extra=(), user_op=None):
    """One op running the default local initializers (local variables, tables, local resources),
    each of ``extra`` that is not None (such as an input iterator's initializer) and ``user_op``, the
    user's own Scaffold ``local_init_op``.

    State that ``user_op`` reads or writes is left to it. One ``tf.group`` runs its members in no set
    order, so a default initializer of a variable the user's op assigns could run after the assignment
    and undo it (in 1 of 30 predict() calls, and in most sessions of a small graph). The original
    TPUEstimator runs the user's op alone in train() and predict(), as a Scaffold's local_init_op
    replaces the default one, so programs written for it already set up what that op touches.
    """
    if user_op is None:
        ops = [tf.compat.v1.train.Scaffold.default_local_init_op()]
    else:
        ops = _default_local_initializers_outside(upstream_ops(user_op))
        ops.append(user_op)
    ops.extend(op for op in extra if op is not None)
    return tf.group(*ops)


def _state_ops(variable) -> set:
    # A distributed variable (sharded runs) holds one variable per replica, and its own .op may be a
    # read of one of them; the user's op may touch any.
    parts = getattr(variable, "values", None)
    parts = parts if isinstance(parts, (tuple, list)) else ()
    return {variable.op, *(part.op for part in parts)}


def _default_local_initializers_outside(touched: set) -> list:
    """``Scaffold.default_local_init_op``'s parts, less the variables, tables and resources whose
    state-holding op is in ``touched``."""
    graph = tf.compat.v1.get_default_graph()
    variables = [v for v in tf.compat.v1.local_variables() if not _state_ops(v) & touched]
    # Every table initializer takes the table's handle as its first input.
    tables = [init for init in graph.get_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
              if init.inputs[0].op not in touched]
    resources = [r.create for r in graph.get_collection(tf.compat.v1.GraphKeys.LOCAL_RESOURCES)
                 if r.handle.op not in touched]
    return [tf.compat.v1.variables_initializer(variables), *tables, *resources]


def _one_copy_each(variables) -> list:
    # A distributed variable's copies are initialised by one initializer op and restored by one saveable,
    # so its first replica's copy stands for all of them (and reports the variable's own name).
    return [getattr(v, "_primary", v) for v in variables]


def compact_ready_ops():
    """(ready_op, ready_for_local_init_op) as Scaffold's defaults, checking each variable once, or
    (None, None) to keep the defaults: no variable is distributed, or the graph's collections hold some.

    On N shards the defaults check all N copies of every variable: about 4,000 ops for ResNet-18 on 8
    shards in each of two checks, each optimised and run once per session. Where there is no local
    state the two checks are one tensor.
    """
    from tensorflow.python.ops import resources

    keys = tf.compat.v1.GraphKeys
    global_vars = tf.compat.v1.global_variables()
    all_vars = global_vars + tf.compat.v1.local_variables()
    if not any(hasattr(v, "_primary") for v in all_vars) or \
            tf.compat.v1.get_collection(keys.READY_OP) or tf.compat.v1.get_collection(keys.READY_FOR_LOCAL_INIT_OP):
        return None, None
    ready = tf.concat([tf.compat.v1.report_uninitialized_variables(_one_copy_each(all_vars)),
                       resources.report_uninitialized_resources()], 0)
    if not tf.compat.v1.local_variables() and not tf.compat.v1.get_collection(keys.LOCAL_RESOURCES):
        # Both checks cover the same state then; one tensor is one executor for the session to build.
        return ready, ready
    ready_for_local_init = tf.concat([
        tf.compat.v1.report_uninitialized_variables(_one_copy_each(global_vars)),
        resources.report_uninitialized_resources(resources.shared_resources())], 0)
    return ready, ready_for_local_init


def _is_finalized(scaffold) -> bool:
    # finalize() fills in every op it defaults; a fresh Scaffold has them None.
    return scaffold.ready_for_local_init_op is not None and scaffold.saver is not None and \
        scaffold.local_init_op is not None and scaffold.init_op is not None


def merge_scaffold(user, extra_local_init=(), saver=None):
    """The Scaffold a session runs: the user's own, with the engine's local initializers added.

    The user's object itself is returned (so it is the one the session finalizes, as in the original, and
    code holding it sees its init/ready ops set); a fresh one when the user gave none or already finalized it.
    """
    if user is not None and not isinstance(user, tf.compat.v1.train.Scaffold):
        raise TypeError(f"scaffold_fn must return a tf.compat.v1.train.Scaffold or None, got {type(user).__name__}.")
    if user is not None and user.saver is not None:
        saver = user.saver
    if user is not None and not _is_finalized(user):
        # Scaffold has no setters; its fields are plain attributes read by finalize().
        user._local_init_op = local_init_op(extra_local_init, user.local_init_op)  # noqa: SLF001
        if user.saver is None:
            user._saver = saver  # noqa: SLF001
        if user.ready_op is None and user.ready_for_local_init_op is None:
            user._ready_op, user._ready_for_local_init_op = compact_ready_ops()  # noqa: SLF001
        return user
    init_fn = None
    if user is not None and user._init_fn is not None:  # noqa: SLF001 - already bound to the user's scaffold
        bound = user._init_fn  # noqa: SLF001
        init_fn = lambda _scaffold, sess: bound(sess)  # noqa: E731
    ready_op = user.ready_op if user is not None else None
    ready_for_local_init_op = user.ready_for_local_init_op if user is not None else None
    if ready_op is None and ready_for_local_init_op is None:
        ready_op, ready_for_local_init_op = compact_ready_ops()
    return tf.compat.v1.train.Scaffold(
        init_op=user.init_op if user is not None else None,
        init_feed_dict=user.init_feed_dict if user is not None else None,
        init_fn=init_fn,
        ready_op=ready_op,
        ready_for_local_init_op=ready_for_local_init_op,
        local_init_op=local_init_op(extra_local_init, user.local_init_op if user is not None else None),
        summary_op=user.summary_op if user is not None else None,
        saver=saver,
    )
