"""One self-check process: runs the tiny program on one or more backends and writes what it measured.

``python -m tpu_nb.selfcheck`` starts this module in a fresh process per device kind (CPU backends
with GPUs hidden, GPU backends, the TPU), because which devices TensorFlow sees is settled when its
runtime starts, a TPU admits one process at a time, and a process can be ended at the time limit
whatever it is blocked in. Results go to ``--out`` as JSON lines, one per finished phase, so whatever
finished before a time-out is still reported.

Only tpu_nb's public API is used, as a user's program would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback

BACKENDS = ("cpu", "gpu", "shards", "gpu-shards", "tpu")
PHASES = ("train", "evaluate", "predict", "export")
SHARDS_CORES, SHARDS_HOSTS = 8, 2


class _Emitter:
    """Appends one JSON object per line to the results file, flushed at once (the parent may kill us any time)."""

    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8")

    def __call__(self, **record):
        record["t"] = time.time()  # lets the parent tell start-up (importing TensorFlow) from the work
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def _environment(tf):
    import tpu_nb

    return {"tensorflow": tf.__version__, "tpu_nb": tpu_nb.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "gpus": len(tf.config.list_physical_devices("GPU"))}


def _estimator(tpu_nb, backend, program, model_dir, args, gpus):
    """The TPUEstimator for ``backend``, and its topology in words (before any run)."""
    from . import model as m

    tpu_config = dict(iterations_per_loop=m.ITERATIONS_PER_LOOP)
    kwargs = dict(use_tpu=True)
    if backend in ("cpu", "gpu"):
        config = tpu_nb.RunConfig(model_dir=model_dir, tpu_config=tpu_nb.TPUConfig(**tpu_config))
        kwargs["use_tpu"] = False
    elif backend == "shards":
        config = tpu_nb.RunConfig(model_dir=model_dir, tpu_config=tpu_nb.TPUConfig(**tpu_config),
                                  cluster=tpu_nb.SimulatedTPU(SHARDS_CORES, SHARDS_HOSTS, use_gpus=False))
    elif backend == "gpu-shards":
        config = tpu_nb.RunConfig(model_dir=model_dir, tpu_config=tpu_nb.TPUConfig(**tpu_config),
                                  cluster=tpu_nb.SimulatedTPU(gpu_shards(gpus), 1, use_gpus=True))
    else:
        tpu_config["connect_timeout_secs"] = args.tpu_timeout
        tpu_kwargs = _tpu_target(args.tpu)
        config = tpu_nb.RunConfig(model_dir=model_dir, tpu_config=tpu_nb.TPUConfig(**tpu_config), **tpu_kwargs)
    return tpu_nb.TPUEstimator(program.model_fn, config=config, train_batch_size=m.GLOBAL_BATCH,
                               eval_batch_size=m.GLOBAL_BATCH, predict_batch_size=m.GLOBAL_BATCH, **kwargs)


def gpu_shards(gpus: int) -> int:
    """Shards for the several-GPU backend: the most GPUs (up to 8) that divide the global batch evenly."""
    n = 1
    while n * 2 <= min(gpus, 8):
        n *= 2
    return n


def _tpu_target(address):
    """RunConfig arguments naming the TPU: ``master=`` for a gRPC address, a TPUClusterResolver otherwise."""
    import tensorflow as tf

    if address.startswith("grpc://"):
        return {"master": address}
    return {"cluster": tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)}


@contextlib.contextmanager
def _started_runs(tpu_nb, seen):
    """Records the RunStarted events (the backend as tpu_nb describes it) and each training loop's loss."""
    def record(event):
        if isinstance(event, tpu_nb.events.RunStarted):
            seen.setdefault("started", []).append(event)
        elif isinstance(event, tpu_nb.events.LoopFinished):
            seen["last_loss"] = event.loss

    with tpu_nb.events.subscribed(record):
        yield


def _train(est, program, tpu_nb, seen):
    from . import model as m

    est.train(program.train_input_fn, max_steps=m.STEPS)
    weights = {name: est.get_variable_value(name).tolist() for name in m.VARIABLES}
    return {"loss": seen.get("last_loss"), "global_step": int(est.get_variable_value("global_step")),
            "weights": weights}


def _evaluate(est, program):
    result = est.evaluate(program.eval_input_fn, steps=None)
    return {key: float(value) if key != "global_step" else int(value) for key, value in result.items()}


def _predict(est, program):
    rows = list(est.predict(program.predict_input_fn))
    return {"index": [int(r["index"]) for r in rows], "probabilities": [r["probabilities"].tolist() for r in rows],
            "class_ids": [int(r["class_ids"]) for r in rows]}


def _export(est, program, export_base):
    """Exports, then loads the ``serve`` metagraph on the CPU and runs its default signature."""
    import tensorflow as tf

    from . import model as m

    path = est.export_saved_model(export_base, program.serving_input_receiver_fn)
    path = path.decode() if isinstance(path, bytes) else path
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    tags = sorted(",".join(sorted(mg.meta_info_def.tags)) for mg in saved.meta_graphs)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta.signature_def["serving_default"]
        feed = {signature.inputs["x"].name: program.prob.predict_x[:m.SERVE_ROWS]}
        names = {key: signature.outputs[key].name for key in ("probabilities", "class_ids")}
        out = session.run(names, feed)
    return {"tags": tags, "probabilities": out["probabilities"].tolist(),
            "class_ids": [int(c) for c in out["class_ids"]]}


def run_backend(backend, args, emit, gpus):
    """Runs the four phases on ``backend``, emitting each result; a failed phase ends the backend."""
    import tpu_nb

    from . import model as m

    start = time.monotonic()
    program = m.Program(m.problem())
    root = os.path.join(args.model_dir, backend)
    emit(type="backend_started", backend=backend)
    if backend == "gpu" and not gpus:
        emit(type="backend_skipped", backend=backend, reason="TensorFlow sees no GPU")
        return
    if backend == "gpu-shards" and gpus < 2:
        emit(type="backend_skipped", backend=backend, reason=f"needs 2 or more GPUs; TensorFlow sees {gpus}")
        return
    if backend == "tpu":
        phase_start = time.monotonic()
        try:
            found = tpu_nb.resolve_tpu(args.tpu, timeout_secs=args.tpu_timeout)
        except Exception as e:
            emit(type="phase_failed", backend=backend, phase="connect", seconds=time.monotonic() - phase_start,
                 error=_error_text(e))
            return
        emit(type="phase", backend=backend, phase="connect", seconds=time.monotonic() - phase_start,
             values={"master": found.master or "local", "num_cores": found.num_cores, "num_hosts": found.num_hosts,
                     "tf_version": found.tf_version})
    seen = {}
    try:
        est = _estimator(tpu_nb, backend, program, os.path.join(root, "model"), args, gpus)
    except Exception as e:
        emit(type="phase_failed", backend=backend, phase="train", seconds=0.0, error=_error_text(e))
        return
    steps = {"train": lambda: _train(est, program, tpu_nb, seen), "evaluate": lambda: _evaluate(est, program),
             "predict": lambda: _predict(est, program), "export": lambda: _export(est, program, os.path.join(root, "export"))}
    with _started_runs(tpu_nb, seen):
        for phase in PHASES:
            phase_start = time.monotonic()
            try:
                values = steps[phase]()
            except Exception as e:
                emit(type="phase_failed", backend=backend, phase=phase, seconds=time.monotonic() - phase_start,
                     error=_error_text(e))
                break
            if phase == "train" and seen.get("started"):
                started = seen["started"][0]
                emit(type="topology", backend=backend, description=started.backend, shards=started.num_shards,
                     hosts=started.num_hosts)
            emit(type="phase", backend=backend, phase=phase, seconds=time.monotonic() - phase_start, values=values)
    emit(type="backend_finished", backend=backend, seconds=time.monotonic() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tpu_nb.selfcheck.worker",
                                     description="One process of `python -m tpu_nb.selfcheck` (not for direct use).")
    parser.add_argument("--out", required=True, help="results file (JSON lines, appended)")
    parser.add_argument("--model-dir", required=True, help="a folder this process may write model_dirs under")
    parser.add_argument("--backend", action="append", choices=BACKENDS, required=True)
    parser.add_argument("--tpu", default=None)
    parser.add_argument("--tpu-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    emit = _Emitter(args.out)
    import tensorflow as tf

    if "gpu" in args.backend or "gpu-shards" in args.backend:
        # TF32 matmuls (TensorFlow's default on recent GPUs) round to 10 mantissa bits: off, so the GPU is held
        # to the same float32 tolerance as the CPU. That rounding is TensorFlow's, not tpu_nb's.
        tf.config.experimental.enable_tensor_float_32_execution(False)
    env = _environment(tf)
    emit(type="environment", **env)
    for backend in args.backend:
        run_backend(backend, args, emit, env["gpus"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
