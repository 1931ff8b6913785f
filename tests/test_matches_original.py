"""The same program on the original TPUEstimator (TF 2.15) and on tpu_nb gives the same results.

Needs an interpreter with tensorflow-cpu 2.15 + tensorflow-estimator 2.15, named by
TPU_NB_ORIGINAL_PYTHON (.ci/run builds one); skipped without it.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from compare_with_original import run  # noqa: E402

ORIGINAL = os.environ.get("TPU_NB_ORIGINAL_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not ORIGINAL, reason="set TPU_NB_ORIGINAL_PYTHON to a python with TF 2.15 + tensorflow-estimator")
def test_same_program_same_results_as_the_original():
    original = run(ORIGINAL, "original")
    ours = run(sys.executable, "tpu_nb")
    assert original["tf"].startswith("2.15") and not ours["tf"].startswith("2.15")
    assert ours["global_step"] == original["global_step"] == 300
    # Same seed, same graph-mode ops: the numbers agree to float tolerance.
    assert ours["accuracy"] == pytest.approx(original["accuracy"], abs=0.01)
    assert ours["loss"] == pytest.approx(original["loss"], rel=0.02)
    assert ours["predictions"] == original["predictions"] == 1003
    assert ours["in_order"] and original["in_order"]
    assert ours["export_tags"] == original["export_tags"] == ["serve", "serve,tpu"]
