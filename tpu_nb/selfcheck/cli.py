"""``python -m tpu_nb.selfcheck``: confirm that tpu_nb gives the same numbers on every backend of this machine.

It trains, evaluates, predicts with and exports a tiny deterministic model (an 8-16-4 MLP, 16 SGD steps)
on each backend it finds: a TPU when an address is given, a GPU when TensorFlow sees one, simulated TPU
shards (8 logical CPU devices over 2 hosts; also the GPUs as shards when there are several), and one
CPU device. The one-CPU run is checked against the same computation in numpy (float64); every other
backend against the one-CPU run. The report (plain text, or ``--json``) names the versions, each
backend's topology, each check with the numbers compared and the tolerance, and the time taken:
paste it into a bug report.

Exit status: 0 every check passed; 1 a check failed (or a backend asked for by ``--backends`` is not
available); 2 bad arguments; 3 the time limit stopped the check before it finished (nothing failed).

Examples::

    python -m tpu_nb.selfcheck                              # every backend found here
    python -m tpu_nb.selfcheck --tpu grpc://10.0.0.2:8470 --model-dir-base gs://my-bucket/tmp
    python -m tpu_nb.selfcheck --tpu local --backends tpu   # on a Cloud TPU VM
    python -m tpu_nb.selfcheck --backends cpu,shards --json --time-limit 120
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

from . import compare
from . import model
from .worker import BACKENDS, PHASES, SHARDS_CORES, SHARDS_HOSTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMED_OUT = 0, 1, 2, 3
REFERENCE = "cpu"
NUMPY = "numpy float64"
BACKENDS_ORDER = ("cpu", "shards", "gpu", "gpu-shards", "tpu")  # the report's order
# One process per device kind: which devices TensorFlow sees is fixed when its runtime starts, and a TPU
# admits one process at a time. The CPU process hides GPUs so that 'cpu' really is the CPU.
_GROUPS = (("cpu", ("cpu", "shards")), ("gpu", ("gpu", "gpu-shards")), ("tpu", ("tpu",)))
_DESCRIPTIONS = {"cpu": "one CPU device (the reference)", "gpu": "one GPU",
                 "shards": f"simulated TPU, {SHARDS_CORES} logical CPU devices over {SHARDS_HOSTS} hosts",
                 "gpu-shards": "simulated TPU on the GPUs", "tpu": "TPU"}
# Environment variables that would change what a backend runs on; the self-check chooses that itself.
_CLEARED_ENV = ("TPU_NB_SIMULATE", "TF_CONFIG")


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class BackendResult:
    """One backend: how it went, what it ran on, its checks and its time."""

    name: str
    status: str  # 'pass', 'FAIL', 'skipped', 'timed out'
    description: str
    checks: Tuple[compare.Check, ...] = ()
    seconds: Optional[float] = None
    reason: str = ""
    tolerance: Optional[compare.Tolerance] = None
    startup_seconds: Optional[float] = None  # its worker process's start (importing TensorFlow), when it ran first

    def as_dict(self) -> dict:
        return {"backend": self.name, "status": self.status, "topology": self.description, "seconds": self.seconds,
                "startup_seconds": self.startup_seconds, "reason": self.reason, "tolerance": dataclasses.asdict(self.tolerance) if self.tolerance else None,
                "checks": [c.as_dict() for c in self.checks]}


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything the self-check found; ``text()`` for people, ``as_dict()`` for ``--json``."""

    environment: Dict[str, str]
    backends: Tuple[BackendResult, ...]
    seconds: float
    time_limit: float
    timed_out: bool

    @property
    def checks(self) -> List[compare.Check]:
        return [c for b in self.backends for c in b.checks]

    @property
    def exit_code(self) -> int:
        if any(c.passed is False for c in self.checks):
            return EXIT_FAILED
        return EXIT_TIMED_OUT if self.timed_out else EXIT_OK

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "PASS", EXIT_FAILED: "FAIL", EXIT_TIMED_OUT: "TIMED OUT"}[self.exit_code]

    def as_dict(self) -> dict:
        return {"result": self.verdict, "exit_code": self.exit_code, "seconds": round(self.seconds, 3),
                "time_limit": self.time_limit, "timed_out": self.timed_out, "environment": self.environment,
                "program": program_description(), "counts": compare.counts(self.checks),
                "backends": [b.as_dict() for b in self.backends]}

    def text(self) -> str:
        n = compare.counts(self.checks)
        lines = [f"tpu_nb self-check: {self.verdict} ({n['passed']} checks passed, {n['failed']} failed"
                 + (f", {n['not run']} not run" if n["not run"] else "") + f") in {self.seconds:.1f} s"
                 + (f"; stopped at the time limit of {self.time_limit:g} s" if self.timed_out else ""),
                 " | ".join(f"{k} {v}" for k, v in self.environment.items()),
                 f"program: {program_description()}",
                 f"reference: {REFERENCE} is checked against {NUMPY}, every other backend against {REFERENCE}"]
        for b in self.backends:
            head = f"[{b.name}] {b.description}: {b.status}"
            if b.seconds is not None:
                head += f" in {b.seconds:.1f} s"
                if b.startup_seconds is not None:
                    head += f" (+{b.startup_seconds:.1f} s process start-up)"
            if b.reason:
                head += f" ({b.reason})"
            if b.tolerance is not None:
                head += f"; tolerance {b.tolerance.describe()}"
            lines.append(head)
            width = max((len(c.name) for c in b.checks), default=0)
            lines += [f"  {c.status:<7} {c.name:<{width}}  {c.detail}" for c in b.checks]
        return "\n".join(lines)


def program_description() -> str:
    m = model
    return (f"{m.FEATURES}-{m.HIDDEN}-{m.CLASSES} tanh MLP, SGD, {m.STEPS} steps of global batch {m.GLOBAL_BATCH} "
            f"({m.ITERATIONS_PER_LOOP} per loop); evaluate {m.EVAL_ROWS} rows; predict {m.PREDICT_ROWS} rows "
            f"(short last batch); serve {m.SERVE_ROWS} rows from the exported SavedModel")


# --------------------------------------------------------------------------- checking results


def backend_checks(name: str, records: List[dict], reference: Dict[str, dict], numpy_ref: Dict[str, dict],
                   tol: compare.Tolerance, interrupted: bool) -> List[compare.Check]:
    """The checks of one backend from its worker records; ``reference`` is the one-device run's phase values.

    A phase that raised fails its checks; phases after it (or after a time-out) are 'not run'.
    """
    phases = {r["phase"]: r for r in records if r.get("type") in ("phase", "phase_failed")}
    checks: List[compare.Check] = []
    order = (("connect",) if name == "tpu" else ()) + PHASES
    stopped = None
    for phase in order:
        record = phases.get(phase)
        if stopped is not None or record is None:
            why = stopped or ("the time limit was reached" if interrupted else "the worker process ended early")
            checks += compare.not_run(phase, why)
            stopped = stopped or why
            continue
        if record["type"] == "phase_failed":
            checks += compare.failed_phase(phase, record["error"])
            stopped = f"{phase} failed"
            continue
        if phase == "connect":
            v = record["values"]
            checks.append(compare.Check("connect", True, f"{v['master']}: {v['num_cores']} TPU cores on "
                                        f"{v['num_hosts']} host(s), runtime TensorFlow {v['tf_version']}, "
                                        f"in {record['seconds']:.1f} s"))
            continue
        if name != REFERENCE and phase in reference:
            ref, ref_name = reference[phase], REFERENCE
        else:
            ref, ref_name = numpy_ref[phase], NUMPY if name == REFERENCE else f"{NUMPY}, as {REFERENCE} has no result"
        checks += compare.check_phase(phase, record["values"], ref, tol, ref_name)
    return checks


def backend_result(name: str, records: List[dict], reference: Dict[str, dict], numpy_ref: Dict[str, dict],
                   tol: compare.Tolerance, interrupted: bool, exit_note: str = "") -> BackendResult:
    """Turns one backend's worker records into its result."""
    mine = [r for r in records if r.get("backend") == name]
    skipped = [r for r in mine if r["type"] == "backend_skipped"]
    if skipped:
        return BackendResult(name, "skipped", _DESCRIPTIONS[name], reason=skipped[0]["reason"])
    description = _DESCRIPTIONS[name]
    for r in mine:
        if r["type"] == "topology":
            description = r["description"] if r["shards"] > 1 else f"one device ({r['description']})"
    startup = [r["startup_seconds"] for r in records
               if r.get("type") == "environment" and r.get("first_backend") == name and "startup_seconds" in r]
    finished = [r for r in mine if r["type"] == "backend_finished"]
    seconds = finished[0]["seconds"] if finished else (
        sum(r.get("seconds", 0.0) for r in mine if r["type"] in ("phase", "phase_failed")) or None)
    checks = backend_checks(name, mine, reference, numpy_ref, tol, interrupted and not finished)
    if any(c.passed is False for c in checks):
        status = "FAIL"
    elif any(c.passed is None for c in checks):
        status = "timed out" if interrupted else "FAIL"
    else:
        status = "pass"
    reason = exit_note if not finished else ""
    if status == "FAIL" and not finished and not any(c.passed is False for c in checks):
        # The worker died without saying why: make that a failed check, not a silent gap.
        checks = [compare.Check("worker", False, exit_note or "the worker process ended early")] + checks
    return BackendResult(name, status, description, tuple(checks), seconds, reason, tol,
                         startup[0] if startup else None)


def skipped_result(name: str, reason: str, asked_for: bool) -> BackendResult:
    """A backend that cannot run here: skipped, or a failed check when ``--backends`` asked for it by name."""
    if not asked_for:
        return BackendResult(name, "skipped", _DESCRIPTIONS[name], reason=reason)
    check = compare.Check("available", False, f"asked for with --backends, but {reason}")
    return BackendResult(name, "FAIL", _DESCRIPTIONS[name], (check,), reason=reason)


def phase_values(records: List[dict], backend: str) -> Dict[str, dict]:
    return {r["phase"]: r["values"] for r in records if r.get("type") == "phase" and r.get("backend") == backend}


# --------------------------------------------------------------------------- running the workers


def _gpu_absence() -> Optional[str]:
    """Why no GPU backend can run here, found without starting TensorFlow's runtime; None if one might."""
    import tensorflow as tf

    if not (tf.test.is_built_with_cuda() or tf.test.is_built_with_rocm()):
        return "this TensorFlow build has no GPU support"
    # NVIDIA (/dev/nvidiaN), AMD (/dev/kfd), WSL2 (/dev/dxg); anything else is left to the GPU worker to find.
    if sys.platform.startswith("linux") and not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")
                                                 or os.path.exists("/dev/dxg")):
        return "no GPU device on this machine"
    return None


def _worker_env(group: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if group == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # 'cpu' must run on the CPU even where there is a GPU
    # The worker imports this copy of tpu_nb, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _read_records(path: str) -> List[dict]:
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a kill at the time limit
                    pass
    return records


def _log_tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tail = [line.rstrip() for line in f.readlines() if line.strip()][-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


def run_group(group: str, backends: Sequence[str], options, model_dir: str, work: str,
              deadline: float) -> Tuple[List[dict], bool, str]:
    """Runs one worker process for ``backends``; (its records, whether the time limit stopped it, exit note)."""
    out = os.path.join(work, f"{group}.jsonl")
    log = os.path.join(work, f"{group}.log")
    command = [sys.executable, "-m", "tpu_nb.selfcheck.worker", "--out", out, "--model-dir", model_dir,
               "--tpu-timeout", str(options.tpu_timeout)]
    if options.tpu:
        command += ["--tpu", options.tpu]
    for backend in backends:
        command += ["--backend", backend]
    started = time.time()
    with open(log, "w") as log_file:
        # Its own session, so that the time limit can end the worker and anything it started, by its id.
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=_worker_env(group),
                                   start_new_session=True)
        try:
            code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            return _with_start(_read_records(out), started), True, "stopped at the time limit"
    note = "" if code == 0 else f"the worker process exited with status {code}: {_log_tail(log)}"
    return _with_start(_read_records(out), started), False, note


def _with_start(records: List[dict], started: float) -> List[dict]:
    """Adds the worker's start-up time (mostly importing TensorFlow) to its environment record."""
    for r in records:
        if r.get("type") == "environment" and "t" in r:
            r["startup_seconds"] = max(0.0, r["t"] - started)
            r["first_backend"] = next((x["backend"] for x in records if x.get("type") == "backend_started"), None)
    return records


# --------------------------------------------------------------------------- the command


def tolerance_for(backend: str, options) -> compare.Tolerance:
    base = compare.TPU if backend == "tpu" else compare.FLOAT32
    return compare.Tolerance(rtol=base.rtol if options.rtol is None else options.rtol,
                             atol=base.atol if options.atol is None else options.atol)


def _environment() -> Dict[str, str]:
    import tensorflow as tf

    from .. import __version__

    return {"tpu_nb": __version__, "TensorFlow": tf.__version__, "Python": platform.python_version(),
            "platform": platform.platform()}


def _plan(options) -> Tuple[List[Tuple[str, List[str]]], Dict[str, str]]:
    """(worker groups to run, backends skipped with the reason) for the selected backends."""
    selected = options.backends
    skipped = {}
    no_gpu = _gpu_absence() if ("gpu" in selected or "gpu-shards" in selected) else None
    groups = []
    for group, members in _GROUPS:
        run = []
        for b in members:
            if b not in selected:
                continue
            if b in ("gpu", "gpu-shards") and no_gpu:
                skipped[b] = no_gpu
            elif b == "tpu" and not options.tpu:
                skipped[b] = "no TPU address given (--tpu ADDRESS, or $TPU_NAME)"
            else:
                run.append(b)
        if run:
            groups.append((group, run))
    return groups, skipped


def run(options) -> Report:
    """Runs the self-check as ``options`` (parsed arguments) say and returns the report."""
    start = time.monotonic()
    deadline = start + options.time_limit
    environment = _environment()
    numpy_ref = model.reference()
    groups, skipped = _plan(options)
    records: List[dict] = []
    interrupted_backends, notes = set(), {}
    timed_out = False
    work = tempfile.mkdtemp(prefix="tpu_nb_selfcheck_")
    model_dir = _model_dir(options, work)
    try:
        for group, backends in groups:
            if time.monotonic() >= deadline:
                timed_out = True
                interrupted_backends.update(backends)
                continue
            _progress(f"running {', '.join(backends)} ...")
            got, stopped, note = run_group(group, backends, options, model_dir, work, deadline)
            records += got
            timed_out = timed_out or stopped
            if stopped:
                interrupted_backends.update(backends)
            for b in backends:
                notes[b] = note
    finally:
        _remove(model_dir, work)
    reference = phase_values(records, REFERENCE)
    results = []
    for name in BACKENDS_ORDER:
        if name not in options.backends:
            continue
        tol = tolerance_for(name, options)
        if name in skipped:
            results.append(skipped_result(name, skipped[name], name in options.explicit_backends))
            continue
        results.append(backend_result(name, records, reference, numpy_ref, tol, name in interrupted_backends,
                                      notes.get(name, "")))
    return Report(environment, tuple(results), time.monotonic() - start, options.time_limit, timed_out)


def _progress(message: str) -> None:
    print(f"tpu_nb.selfcheck: {message}", file=sys.stderr, flush=True)


def _model_dir(options, work: str) -> str:
    """Where the workers' model_dirs go: the local work folder, or a fresh folder under ``--model-dir-base``."""
    if not options.model_dir_base:
        return os.path.join(work, "models")
    import tensorflow as tf

    path = options.model_dir_base.rstrip("/") + f"/tpu_nb_selfcheck_{uuid.uuid4().hex[:12]}"
    tf.io.gfile.makedirs(path)
    return path


def _remove(model_dir: str, work: str) -> None:
    import shutil

    if not model_dir.startswith(work):
        import tensorflow as tf

        try:
            tf.io.gfile.rmtree(model_dir)
        except Exception as e:  # the report matters more than the clean-up; say what is left behind
            print(f"tpu_nb.selfcheck: could not remove {model_dir}: {e}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tpu_nb.selfcheck",
        description="Train, evaluate, predict and export a tiny model on every backend found (TPU, GPU, simulated "
                    "TPU shards, CPU), compare each with the one-CPU run, and print a report to paste into a bug "
                    "report. Exit status: 0 pass, 1 a check failed, 2 bad arguments, 3 time limit reached.")
    parser.add_argument("--tpu", default=os.environ.get("TPU_NAME") or None, metavar="ADDRESS",
                        help="the TPU to check: 'grpc://host:port', a Cloud TPU name, or 'local' (a TPU VM's own "
                             "chips); default $TPU_NAME. Without it the TPU backend is skipped.")
    parser.add_argument("--tpu-timeout", type=_positive_seconds, default=30.0, metavar="SECONDS",
                        help="how long finding the TPU may take (TPUConfig.connect_timeout_secs; default 30)")
    parser.add_argument("--time-limit", type=_positive_seconds, default=600.0, metavar="SECONDS",
                        help="stop after this many seconds and report what ran (exit status 3; default 600)")
    parser.add_argument("--backends", default=None, metavar="LIST",
                        help=f"comma-separated subset of {','.join(BACKENDS)} (default: all found). "
                             f"'{REFERENCE}' always runs: it is the reference.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--rtol", type=_non_negative, default=None,
                        help=f"relative tolerance for every backend (default {compare.FLOAT32.rtol:g}, "
                             f"TPU {compare.TPU.rtol:g})")
    parser.add_argument("--atol", type=_non_negative, default=None,
                        help=f"absolute tolerance for every backend (default {compare.FLOAT32.atol:g}, "
                             f"TPU {compare.TPU.atol:g})")
    parser.add_argument("--model-dir-base", default=None, metavar="DIR",
                        help="make the temporary model_dirs under DIR (removed afterwards); a TPU reached over "
                             "gRPC or by name writes checkpoints itself and needs a gs:// path here. "
                             "Default: a local temporary folder.")
    options = parser.parse_args(argv)
    if options.backends is None:
        options.backends, options.explicit_backends = set(BACKENDS), set()
    else:
        names = [b.strip() for b in options.backends.split(",") if b.strip()]
        unknown = [b for b in names if b not in BACKENDS]
        if unknown or not names:
            parser.error(f"--backends: unknown backend(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(BACKENDS)}")
        options.explicit_backends = set(names)
        options.backends = set(names) | {REFERENCE}
    return options


def main(argv=None) -> int:
    """Runs the self-check; prints the report; returns the exit status."""
    options = parse_args(argv)
    report = run(options)
    if options.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
