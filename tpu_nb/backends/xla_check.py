"""Checking on the CPU, before paying for TPU time, that a training step compiles with XLA.

A TPU runs the whole ``model_fn`` step as one XLA program, so any op XLA has no
kernel for (``tf.py_function``, ``tf.numpy_function``, string ops, v1 summaries,
...) makes the TPU job fail, often only after minutes of provisioning and
start-up. XLA also compiles for the CPU, so building one step inside an XLA
cluster here and running it once finds most of these in seconds.
"""

from __future__ import annotations

import contextlib

import dataclasses
import re
import threading
import time
from typing import Dict, List, Tuple

import tensorflow as tf

from ..inputs.input_pipeline import InputPipeline
from ..graph.model_calls import call_input_fn, call_model_fn
from ..contract.modes import ModeKeys
from ..reporting.tf_logs import quiet_tf_logs

_XLA_DEVICE = "XLA_CPU_JIT"
_COMPILE_ATTR = "_xla_compile_id"  # what xla.compile marks the ops of its cluster with
_TPU_REPLICATE_ATTR = "_tpu_replicate"  # what tpu.replicate/rewrite marks the ops of a TPU computation with
# How TensorFlow reports an op without a kernel for the XLA device, e.g.
# "PyFunc (No registered 'PyFunc' OpKernel for XLA_CPU_JIT devices compatible with node {{node my_np}})".
_UNSUPPORTED_RE = re.compile(
    r"No registered '(?P<type>[^']+)' OpKernel for XLA_\w+ devices compatible with node \{\{node (?P<name>[^}]+)\}\}"
)
# Handled by XLA's graph passes (control-flow functionalisation, argument plumbing), not by kernels.
_HANDLED_WITHOUT_KERNEL = frozenset({
    "_Arg", "_Retval", "NoOp", "Enter", "RefEnter", "Exit", "RefExit", "Switch", "RefSwitch", "Merge",
    "RefMerge", "NextIteration", "RefNextIteration", "LoopCond", "ControlTrigger",
})
# Collectives only TPUs implement: CPU XLA has no kernel, so this check cannot vouch for them.
_TPU_ONLY = frozenset({"CrossReplicaSum", "AllToAll", "CollectivePermute", "TPUReplicatedInput",
                       "TPUReplicatedOutput", "TPUReplicateMetadata", "TPUCompilationResult"})
# The TPU runtime's own ops in a TPU computation: TPU XLA compiles them; CPU XLA has no kernel to look up.
_TPU_RUNTIME = _TPU_ONLY | frozenset({"InfeedDequeue", "InfeedDequeueTuple", "OutfeedEnqueue",
                                      "OutfeedEnqueueTuple"})
_registration_lock = threading.Lock()
_kernels_ready = False


@dataclasses.dataclass(frozen=True)
class CompatibilityReport:
    """The result of ``check_tpu_compatibility``.

    Attributes:
      ok: True when one training step compiled with XLA and ran.
      unsupported_ops: ``(op name, op type)`` pairs XLA could not compile, in graph order.
      seconds: wall time of the first (compiling) run of the step: compilation plus one step.
      message: what happened and, when not ok, what to do about it.

    Example::

        report = check_tpu_compatibility(estimator, train_input_fn)
        if not report.ok:
            for name, op_type in report.unsupported_ops:
                print(name, op_type)
    """

    ok: bool
    unsupported_ops: Tuple[Tuple[str, str], ...]
    seconds: float
    message: str

    def __str__(self):
        lines = [self.message]
        lines += [f"  {name}  ({op_type})" for name, op_type in self.unsupported_ops]
        return "\n".join(lines)


def check_tpu_compatibility(estimator, input_fn) -> CompatibilityReport:
    """Compiles and runs one training step of ``estimator``'s ``model_fn`` with XLA on this CPU.

    ``input_fn`` is called as in training (``params['batch_size'] =
    estimator.train_batch_size``) and one element is taken from it; ``model_fn`` is
    called in TRAIN mode with ``params['use_tpu'] = True`` (the path a TPU would
    run) inside an XLA cluster (``xla.compile``), the variables are freshly
    initialised, and the step runs once in a plain Session in its own graph.
    Nothing is read from or written to ``model_dir``; ``scaffold_fn``, hooks and
    ``host_call`` (which runs on the host on a TPU anyway) are not run.

    This is XLA for the CPU, not the TPU: its op coverage is close to, not equal to,
    the TPU's (``tf.compat.v1.tpu.cross_replica_sum`` and TF's ``CrossShardOptimizer``
    are compiled as on one shard; a ``CrossReplicaSum`` op built outside tpu_nb's
    calls has no CPU kernel and is reported), and numerics, memory and speed are not
    the TPU's. A clean report makes a TPU failure unlikely, not impossible.

    Returns:
      A ``CompatibilityReport``. Errors in ``input_fn``/``model_fn`` themselves
      (exceptions while building the graph) propagate unchanged.

    Example::

        report = check_tpu_compatibility(est, train_input_fn)
        print(report)    # e.g. "1 op in model_fn cannot be compiled by XLA: 'my_np' (PyFunc) ..."
        assert report.ok, report.message
    """
    batch_size = getattr(estimator, "train_batch_size", None)
    if batch_size is None:
        raise ValueError("check_tpu_compatibility needs the estimator's train_batch_size: "
                         "pass train_batch_size=... to TPUEstimator.")
    with quiet_tf_logs():
        _ensure_xla_kernels_registered()
        try:
            graph, step, init_ops = _build_step(estimator, input_fn, batch_size)
        except ValueError as e:
            # Control flow v1 (TF1 behaviour) rejects some XLA-incompatible graphs while building them.
            if "XLA" not in str(e):
                raise
            return CompatibilityReport(False, (), 0.0, _failure_message((), e, 0.0))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(init_ops)
            start = time.perf_counter()
            try:
                session.run(step)
                error = None
            except tf.errors.OutOfRangeError as e:
                raise ValueError("input_fn produced no element to run a training step with.") from e
            except tf.errors.OpError as e:
                if not _is_xla_error(e):
                    raise
                error = e
            seconds = time.perf_counter() - start
    if error is None:
        return CompatibilityReport(
            True, (), seconds,
            f"One training step of model_fn compiled with XLA (CPU) and ran in {seconds:.2f} s. "
            "CPU XLA is close to, not the same as, TPU XLA: see check_tpu_compatibility's docstring.",
        )
    unsupported = _merge(_scan_cluster(graph), _ops_named_in(error))
    return CompatibilityReport(False, tuple(unsupported), seconds, _failure_message(unsupported, error, seconds))


def _build_step(estimator, input_fn, batch_size):
    from tensorflow.python.compiler.xla import xla

    graph = tf.Graph()
    with graph.as_default(), _resource_variables():
        seed = getattr(estimator.config, "tf_random_seed", None)
        if seed is not None:
            tf.compat.v1.set_random_seed(seed)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        returned = call_input_fn(input_fn, ModeKeys.TRAIN, estimator.config, estimator.params, batch_size)
        pipeline = InputPipeline(returned)
        # The input stays outside the cluster: on a TPU it runs on the host and is infed.
        features, labels = pipeline.next()
        has_labels = labels is not None

        def step(*inputs):
            spec = call_model_fn(estimator.model_fn, inputs[0], inputs[1] if has_labels else None,
                                 ModeKeys.TRAIN, estimator.config, estimator.params, batch_size, use_tpu=True)
            with tf.control_dependencies([spec.train_op]):
                return tf.identity(tf.convert_to_tensor(spec.loss))

        (loss,) = xla.compile(step, [features, labels] if has_labels else [features])
        with tf.control_dependencies([loss]):
            # Fetch the step count too so the training op's update is part of what runs.
            run = tf.identity(global_step.read_value())
        init_ops = [tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer(),
                    tf.compat.v1.tables_initializer()]
        if pipeline.initializer is not None:
            init_ops.append(pipeline.initializer)
    return graph, run, init_ops


@contextlib.contextmanager
def _resource_variables():
    """XLA compiles only resource variables; TF1 behaviour (disable_v2_behavior) makes RefVariables.

    A TPU computation gets resource variables either way, so the check asks for them too.
    """

    def creator(next_creator, **kwargs):
        kwargs["use_resource"] = True
        return next_creator(**kwargs)

    with tf.compat.v1.variable_creator_scope(creator):
        yield


def _is_xla_error(error: tf.errors.OpError) -> bool:
    text = error.message
    return any(marker in text for marker in ("XLA", "tf2xla", "compil", "cluster"))


def _ensure_xla_kernels_registered():
    """Makes TensorFlow register its XLA CPU kernels, which it does lazily at the first compilation.

    The cluster scan below looks kernels up in the registry, so it needs them
    there even when the step's own compilation failed before registering them.
    """
    global _kernels_ready
    with _registration_lock:
        if _kernels_ready or _has_xla_kernel("Identity"):
            _kernels_ready = True
            return
        from tensorflow.python.compiler.xla import xla

        with tf.Graph().as_default():
            (out,) = xla.compile(lambda: tf.constant(1.0) + 1.0)
            with tf.compat.v1.Session() as session:
                session.run(out)
        _kernels_ready = True


def _has_xla_kernel(op_type: str, node_def=None) -> bool:
    from tensorflow.python.framework import kernels

    for kernel in kernels.get_registered_kernels_for_op(op_type).kernel:
        if kernel.device_type == _XLA_DEVICE and (node_def is None or _satisfies(kernel, node_def)):
            return True
    return False


def _satisfies(kernel, node_def) -> bool:
    """Whether the node's type attributes are within the kernel's constraints (e.g. no DT_STRING)."""
    for constraint in kernel.constraint:
        allowed = set(constraint.allowed_values.list.type)
        if not allowed or constraint.name not in node_def.attr:
            continue
        value = node_def.attr[constraint.name]
        kind = value.WhichOneof("value")
        types = [value.type] if kind == "type" else list(value.list.type) if kind == "list" else []
        if any(t not in allowed for t in types):
            return False
    return True


def _scan_cluster(graph) -> List[Tuple[str, str]]:
    """Every op of the XLA cluster (and of the functions it calls) without a usable XLA kernel.

    The compiler stops at the first such op; this finds the others too, so one run
    of the check lists everything to fix.
    """
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    found: List[Tuple[str, str]] = []
    visited = set()

    def check(node_def, prefix=""):
        name = prefix + node_def.name
        if node_def.op in library:  # a call of a graph function by name
            visit_function(node_def.op, name + "/")
            return
        for value in node_def.attr.values():
            for fn in _functions_in(value):
                visit_function(fn, name + "/")
        if node_def.op in _HANDLED_WITHOUT_KERNEL:
            return
        if not _has_xla_kernel(node_def.op, node_def):
            found.append((name, node_def.op))

    def visit_function(fn_name, prefix):
        if fn_name in visited or fn_name not in library:
            return
        visited.add(fn_name)
        for node_def in library[fn_name].node_def:
            check(node_def, prefix)

    for op in graph.get_operations():
        if _COMPILE_ATTR in op.node_def.attr or _TPU_REPLICATE_ATTR in op.node_def.attr:
            check(op.node_def)
    return found


def ops_without_tpu_kernel(graph) -> List[Tuple[str, str]]:
    """``(op name, op type)`` of every op in ``graph``'s TPU computations that no TPU kernel would run.

    Looks at the ops ``tpu.replicate``/``tpu.rewrite`` marked (and the functions they call, such as a
    while loop's body) and at XLA's registry for the CPU, which TPU XLA covers nearly op for op; the TPU
    runtime's own ops (infeed, outfeed, cross-replica collectives) count as supported. An empty list
    means nothing host-only (a FIFOQueue, ``tf.py_function``, string ops) was built into the computation.

    Example::

        assert ops_without_tpu_kernel(tf.compat.v1.get_default_graph()) == []
    """
    with quiet_tf_logs():
        _ensure_xla_kernels_registered()
    return [(name, op_type) for name, op_type in _scan_cluster(graph) if op_type not in _TPU_RUNTIME]


def _functions_in(attr_value) -> List[str]:
    kind = attr_value.WhichOneof("value")
    if kind == "func":
        return [attr_value.func.name]
    if kind == "list":
        return [f.name for f in attr_value.list.func]
    return []


def _ops_named_in(error: tf.errors.OpError) -> List[Tuple[str, str]]:
    return [(m.group("name"), m.group("type")) for m in _UNSUPPORTED_RE.finditer(error.message)]


def _merge(*groups) -> List[Tuple[str, str]]:
    merged: Dict[str, str] = {}
    for group in groups:
        for name, op_type in group:
            merged.setdefault(name, op_type)
    return list(merged.items())


def _failure_message(unsupported, error, seconds) -> str:
    if not unsupported:
        return (f"model_fn's training step does not compile with XLA ({seconds:.2f} s): {_summarize(error)} "
                "Common causes: a tf.while_loop without maximum_iterations, TensorArrays or lists of unknown "
                "size, or tensors XLA needs as compile-time constants. Use static shapes (drop_remainder=True), "
                "bound loops, and move such computations into input_fn or host_call.")
    portable = [(name, op_type) for name, op_type in unsupported if op_type not in _TPU_ONLY]
    tpu_only = [(name, op_type) for name, op_type in unsupported if op_type in _TPU_ONLY]
    parts = []
    if portable:
        count = len(portable)
        them = "them" if count != 1 else "it"
        parts.append(
            f"{count} op{'s' if count != 1 else ''} in model_fn cannot be compiled by XLA, so the training step "
            f"would fail on a TPU: {_listing(portable)}. Move {them} out of model_fn: into input_fn (runs on "
            "the host before the step: parsing, string handling, Python code in tf.py_function/"
            "tf.numpy_function), or into host_call (runs on the host after the step: summaries, logging), "
            f"or replace {them} with TensorFlow ops XLA supports."
        )
    if tpu_only:
        parts.append(
            f"{_listing(tpu_only)} {'are TPU-only collectives' if len(tpu_only) > 1 else 'is a TPU-only collective'}"
            " that CPU XLA cannot compile, so this check could not compile the step around "
            f"{'them' if len(tpu_only) > 1 else 'it'}: use tpu_nb.CrossShardOptimizer (the same averaging, "
            "on every backend) instead of tf.compat.v1.tpu.CrossShardOptimizer and check again."
        )
    return " ".join(parts)


_NOISE = ("Graph execution error", "Detected at node", "File ", "Node:", "Stack trace", "dummy_file_name",
          "[[", "tf2xla conversion failed", "The op is created at")


def _summarize(error) -> str:
    """The cause from a compilation error, without the graph-construction tracebacks around it."""
    text = getattr(error, "message", None) or str(error)
    node = re.search(r"Detected at node '([^']+)'", text)
    lines = [line.strip() for line in text.splitlines()]
    cause = " ".join(dict.fromkeys(line for line in lines if line and not line.startswith(_NOISE)))
    cause = cause or text.strip() or type(error).__name__
    return cause + (f" (at node {node.group(1)!r})" if node else "")


def _listing(ops) -> str:
    return ", ".join(f"{name!r} ({op_type})" for name, op_type in ops)
