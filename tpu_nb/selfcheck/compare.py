"""The self-check's comparisons: pure functions from two backends' results to pass/fail checks with numbers.

A result is what ``_selfcheck_worker`` wrote for one phase (plain JSON values); the reference is the
one-device run's result for that phase, or the numpy float64 answer when checking the one-device run
itself. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|value - reference| <= atol + rtol * |reference|``, elementwise (numpy's ``isclose``)."""

    rtol: float
    atol: float

    def describe(self) -> str:
        return f"|a-b| <= {self.atol:g} + {self.rtol:g}*|b|"


# float32 through 16 SGD steps of a small MLP: rounding differences are about 1e-7 relative (1e-8 measured
# between 1 and 8 shards); 1e-4 leaves three orders of magnitude of room, while real faults (a shard's gradient
# counted twice, a row dropped, rows out of order) move values by 1e-2 or more.
FLOAT32 = Tolerance(rtol=1e-4, atol=1e-5)
# TPUs multiply float32 matrices in bfloat16 passes by default (about 3 significant digits).
TPU = Tolerance(rtol=2e-2, atol=2e-3)


@dataclasses.dataclass(frozen=True)
class Check:
    """One check of one backend: its name, whether it passed (None: not run), and the numbers compared, in words."""

    name: str
    passed: Optional[bool]
    detail: str
    max_abs_diff: Optional[float] = None

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "not run"}[self.passed]

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), status=self.status)


# The check each phase gives, in report order (train gives two).
CHECK_NAMES = {"connect": ("connect",), "train": ("train loss", "trained weights"), "evaluate": ("eval metrics",),
               "predict": ("predictions",), "export": ("export serve",)}


def _num(value) -> str:
    return "none" if value is None else f"{value:.8g}"


def close(value, reference, tol: Tolerance) -> Tuple[bool, float]:
    """(within tolerance everywhere, max |value - reference|); False for mismatched shapes or non-finite values."""
    a, b = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        return False, float("inf")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False, float("inf")
    if not a.size:
        return True, 0.0
    return bool(np.all(np.abs(a - b) <= tol.atol + tol.rtol * np.abs(b))), float(np.max(np.abs(a - b)))


def check_train(values: dict, ref: dict, tol: Tolerance, ref_name: str) -> List[Check]:
    checks = []
    loss, ref_loss = values.get("loss"), ref.get("loss")
    if loss is None:
        checks.append(Check("train loss", False, "train() reported no loss"))
    else:
        ok, diff = close(loss, ref_loss, tol)
        steps_ok = values.get("global_step") == ref.get("global_step")
        checks.append(Check("train loss", ok and steps_ok,
                            f"{_num(loss)} vs {_num(ref_loss)} ({ref_name}), |diff| {diff:.2g}; "
                            f"global step {values.get('global_step')} vs {ref.get('global_step')}", diff))
    worst, worst_name, failed, count = 0.0, None, [], 0
    for name, ref_value in ref["weights"].items():
        value = values.get("weights", {}).get(name)
        if value is None:
            failed.append(f"{name} missing")
            continue
        ok, diff = close(value, ref_value, tol)
        count += np.asarray(ref_value).size
        if not ok:
            failed.append(name)
        if diff > worst or worst_name is None:
            worst, worst_name = diff, name
    detail = (f"{len(ref['weights'])} variables, {count} values vs {ref_name}: max|diff| {worst:.2g} ({worst_name})"
              + (f"; out of tolerance: {', '.join(failed)}" if failed else ""))
    checks.append(Check("trained weights", not failed, detail, worst))
    return checks


def check_evaluate(values: dict, ref: dict, tol: Tolerance, ref_name: str) -> List[Check]:
    parts, failed, worst = [], [], 0.0
    for key in sorted(ref):
        value = values.get(key)
        if key == "global_step":
            ok, diff = value == ref[key], 0.0
        elif value is None:
            ok, diff = False, float("inf")
        else:
            ok, diff = close(value, ref[key], tol)
        parts.append(f"{key} {_num(value)} vs {_num(ref[key])}")
        worst = max(worst, diff)
        if not ok:
            failed.append(key)
    detail = "; ".join(parts) + f" ({ref_name}); max|diff| {worst:.2g}"
    if failed:
        detail += f"; out of tolerance: {', '.join(failed)}"
    return [Check("eval metrics", not failed, detail, worst)]


def _rows(values: dict, ref: dict, tol: Tolerance, what: str, ref_name: str, check: str) -> List[Check]:
    """Probabilities within tolerance and class ids equal, row for row."""
    probs, ref_probs = values.get("probabilities", []), ref["probabilities"]
    problems = []
    if len(probs) != len(ref_probs):
        problems.append(f"{len(probs)} rows, expected {len(ref_probs)}")
        return [Check(check, False, f"{what}: " + "; ".join(problems))]
    if "index" in ref and values.get("index") != ref["index"]:
        problems.append("rows out of order or missing (the 'index' feature does not come back as 0..N-1)")
    ok, diff = close(probs, ref_probs, tol)
    if not ok:
        problems.append("probabilities out of tolerance")
    same = sum(int(a == b) for a, b in zip(values.get("class_ids", []), ref["class_ids"]))
    if same != len(ref["class_ids"]):
        problems.append("class ids differ")
    detail = (f"{what}: {len(probs)} rows{' in order' if 'index' in ref and values.get('index') == ref['index'] else ''}"
              f", probabilities max|diff| {diff:.2g} vs {ref_name}, class ids {same}/{len(ref['class_ids'])} equal")
    if "tags" in values:
        detail += f"; metagraphs {' + '.join(values['tags'])}"
    if problems:
        detail += "; " + "; ".join(problems)
    return [Check(check, not problems, detail, diff)]


def check_predict(values: dict, ref: dict, tol: Tolerance, ref_name: str) -> List[Check]:
    return _rows(values, ref, tol, "predict()", ref_name, "predictions")


def check_export(values: dict, ref: dict, tol: Tolerance, ref_name: str) -> List[Check]:
    return _rows(values, ref, tol, "SavedModel 'serve' signature", ref_name, "export serve")


CHECKERS = {"train": check_train, "evaluate": check_evaluate, "predict": check_predict, "export": check_export}


def check_phase(phase: str, values: dict, ref: dict, tol: Tolerance, ref_name: str) -> List[Check]:
    """The checks of one phase's result against the reference's result of the same phase."""
    return CHECKERS[phase](values, ref, tol, ref_name)


def failed_phase(phase: str, error: str) -> List[Check]:
    """A phase that raised: each of its checks fails with the error."""
    return [Check(name, False, f"{phase}() raised {error}") for name in CHECK_NAMES[phase]]


def not_run(phase: str, why: str) -> List[Check]:
    """A phase that never started (time limit, or an earlier phase failed): its checks, not run."""
    return [Check(name, None, why) for name in CHECK_NAMES[phase]]


def counts(checks: List[Check]) -> Dict[str, int]:
    """How many checks passed, failed and did not run."""
    return {"passed": sum(c.passed is True for c in checks), "failed": sum(c.passed is False for c in checks),
            "not run": sum(c.passed is None for c in checks)}
