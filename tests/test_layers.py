"""The package's layers keep their import direction (pyproject's [tool.importlinter] contracts):
notebook, drop-in and self-check on the estimator, on the run verbs, on backends, on inputs, on graph
plumbing, on the contract's data; and no import cycle between sibling modules or packages."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("importlinter")

REPO = pathlib.Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(package_parent: pathlib.Path, config: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    return subprocess.run(LINT + ["--config", str(config), "--no-cache"], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy(tmp_path) -> pathlib.Path:
    """A copy of the package's Python files (no built JavaScript), and the contracts."""
    shutil.copytree(REPO / "tpu_nb", tmp_path / "tpu_nb", ignore=shutil.ignore_patterns("static", "labextension", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers_and_has_no_import_cycle(tmp_path):
    done = _lint(_copy(tmp_path), tmp_path / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, upward, named", [
    # A backend reaching up into a run verb: the circle backends <-> evaluation the move removed.
    ("backends/one_device.py", "from ..run import evaluation", "tpu_nb.backends is not allowed to import tpu_nb.run"),
    # The engine importing the notebook layer, even inside a function.
    ("run/training.py", "from ..notebook import runs", "tpu_nb.run is not allowed to import tpu_nb.notebook"),
])
def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path, module, upward, named):
    root = _copy(tmp_path)
    path = root / "tpu_nb" / module
    path.write_text(path.read_text() + f"\n\ndef _reaches_up():\n    {upward}\n")
    done = _lint(root, root / "pyproject.toml")
    assert done.returncode != 0
    assert named in done.stdout, done.stdout[-4000:]
