"""The example notebooks execute headless, start to finish (the README's main job)."""

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
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if path.name == "quickstart.ipynb":
        assert "metagraph tags: [['serve'], ['serve', 'tpu']]" in text
        assert "served predictions match predict(): 500" in text
        assert "INFO:tensorflow" not in text  # no walls of TensorFlow log lines
