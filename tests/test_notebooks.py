"""The example notebooks execute headless, start to finish (the README's main job)."""

import logging
import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(p for p in (pathlib.Path(__file__).parent.parent / "example_notebooks").glob("*.ipynb")
                   if not p.stem.endswith("_executed"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "example_notebooks/ has no notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client_log = _Lines()
    client.log.addHandler(client_log)
    try:
        client.execute()
    finally:
        client.log.removeHandler(client_log)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # Quiet outputs: no red boxes (TensorFlow's C++ lines go to a log file, tpu_nb's messages to plain
    # output) and nothing a headless front end complains about (the lab comm is listed, not announced).
    stderr = [(i, o.get("text", "")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr
    assert not [m for m in client_log.messages if "comm target" in m], client_log.messages
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if path.name == "quickstart.ipynb":
        assert "metagraph tags: [['serve'], ['serve', 'tpu']]" in text
        assert "served predictions match predict(): 500" in text
        assert "INFO:tensorflow" not in text  # no walls of TensorFlow log lines
        assert "'global_step': 2000," in text  # an integer, as in the original's results


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())
