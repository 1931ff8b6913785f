"""Route large, repeated sets of control inputs through one shared ``NoOp`` each.

TPU programs in the TF1 style wrap their whole train op in ``with tf.control_dependencies(update_ops)``
so BatchNorm's moving statistics update every step. TensorFlow then gives *every* op created in that
block without an input from inside it (each gradient constant, shape op, ...) a control edge to
*every* update op: an EfficientNet-B0 model_fn gets about 135,000 control edges, some 9 MB of its
13 MB loop body, and on simulated shards the cross-replica ops made in a merge call inherit the
update ops of all replicas. Each edge is paid again in the session's copies of the graph (about 20x
the serialized bytes before the first step), which is what made large models on 8 shards exhaust
memory. An op with control inputs ``{a, b, c}`` waits for exactly the same work when it instead
waits for one ``NoOp`` that waits for ``{a, b, c}``, so sharing that ``NoOp`` among every op with the
same set changes no ordering and turns ops x inputs edges into ops + inputs.
"""

import tensorflow as tf

#: Below this many control inputs an op keeps its own edges: a gate would save almost nothing.
MIN_SHARED = 4
#: A control input of fewer ops than this is an op's own: a ``tf.group``'s member is also a control input
#: of the read that ``assign_add`` returns, so two holders do not make an input part of a shared set.
MIN_HOLDERS = 3


def share_control_inputs(graph, min_inputs=MIN_SHARED):
    """Give the ops of ``graph`` that share ``min_inputs`` or more control inputs one gate over them.

    An op's control inputs that at least ``MIN_HOLDERS`` such ops have are its shared part; the rest (a
    ``tf.group``'s own members, say) are its own. Ops whose shared parts are the same set wait for one gate over that
    set instead, and keep their own inputs: the gradients' ``tuple/group_deps`` made under
    ``control_dependencies(update_ops)`` each add their own two inputs to the same BatchNorm updates, so
    whole sets are almost never equal (5,305 distinct sets among EfficientNet-B0's 5,777 such ops on 8
    shards) while their shared parts are (18).

    Call it where ``graph`` is the default graph and its current control-flow context is the one the
    ops were built in (the body of a loop, for example): the gates are built there. Ops whose control
    inputs or own context differ from that context keep their edges (v1 control flow forbids such
    edges into a gate), and so does a shared part only one op has. Returns the number of control edges
    removed (net of the gates' own).

    Example::

        with graph.as_default():
            removed = share_control_inputs(graph)
    """
    context = graph._get_control_flow_context()  # noqa: SLF001
    candidates = []
    # Keyed by the ops themselves (one Python object per op, hashed by identity): reading ``op.name``
    # for each of an EfficientNet's 135,000 edges per shard took most of this function's time.
    holders = {}  # control input -> how many candidates have it
    for op in graph.get_operations():  # a snapshot: the gates built below are not visited
        inputs = op.control_inputs
        if len(inputs) < min_inputs:
            continue
        if _context(op) is not context or any(_context(x) is not context for x in inputs):
            continue
        candidates.append((op, inputs))
        for x in inputs:
            holders[x] = holders.get(x, 0) + 1
    parts = []
    uses = {}
    for op, inputs in candidates:
        shared = [x for x in inputs if holders[x] >= MIN_HOLDERS]
        own = [x for x in inputs if holders[x] < MIN_HOLDERS]
        # Constants get gates of their own: constant folding once could not order a gate that constants
        # and other ops shared.
        key = (op.type == "Const", frozenset(shared))
        parts.append((op, shared, own, key))
        if len(shared) >= min_inputs:
            uses[key] = uses.get(key, 0) + 1
    gates = {}
    removed = 0
    for op, shared, own, key in parts:
        if uses.get(key, 0) < 2:
            continue  # a gate for one op would only add a node
        gate = gates.get(key)
        if gate is None:
            gate = gate_over(graph, context, sorted(shared, key=lambda x: x.name), "shared_control_inputs")
            gates[key] = gate
            removed -= len(shared)
        op._remove_all_control_inputs()  # noqa: SLF001
        op._add_control_inputs([gate, *own])  # noqa: SLF001
        removed += len(shared) - 1
    return removed


def gate_over(graph, context, ops, name):
    """One NoOp in ``context`` that waits for exactly ``ops``.

    No inherited control dependencies or name scope. Clearing the dependencies also clears the
    control-flow context, which the gate needs back (a v1 loop refuses edges into it from outside).
    """
    with graph.control_dependencies(None), graph.name_scope(None):
        graph._set_control_flow_context(context)  # noqa: SLF001
        return tf.group(*ops, name=name)


def _context(op):
    return op._get_control_flow_context()  # noqa: SLF001

