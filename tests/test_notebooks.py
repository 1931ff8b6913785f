"""The example notebooks execute headless, start to finish (the README's main job), and print what a
reader should see: the checks live here, outside the notebooks, which read as tutorials."""

import logging
import os
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(p for p in (pathlib.Path(__file__).parent.parent / "example_notebooks").glob("*.ipynb")
                   if not p.stem.endswith("_executed"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "example_notebooks/ has no notebooks"


#: A line TensorFlow's runtime prints: absl's "I1207 10:40:16.969371 ..." (or "I0000 00:00:17..." before
#: absl starts), its pre-absl banner, the CUDA probes of a CUDA build without a GPU, and the Python
#: logger's "WARNING:tensorflow:" lines.
TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} |WARNING: All log messages before absl|.*cuInit|.*cuda drivers"
                         r"|(?:INFO|WARNING|ERROR):tensorflow:)", re.M)

#: The cell a user adds first when TensorFlow comes before tpu_nb (most notebooks start that way): what it
#: prints is the one exception; every cell after it must still be clean.
TENSORFLOW_FIRST = "import tensorflow as tf"


@pytest.mark.slow
@pytest.mark.parametrize("tensorflow_first", [False, True], ids=["as_written", "tensorflow_first"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tensorflow_first, tmp_path, monkeypatch):
    # The kernel inherits this process's environment: conftest's TF_CPP_MIN_LOG_LEVEL would hide the very
    # lines this test is about, which a user's kernel prints.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("TPU_NB_TF_LOGS", raising=False)
    nb = nbformat.read(path, as_version=4)
    if tensorflow_first:
        nb.cells.insert(0, nbformat.v4.new_code_cell(TENSORFLOW_FIRST))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client_log = _Lines()
    client.log.addHandler(client_log)
    try:
        client.execute()
    finally:
        client.log.removeHandler(client_log)
    cells = [c for c in nb.cells if c.cell_type == "code"][1 if tensorflow_first else 0:]
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors
    # Quiet outputs: no red boxes (TensorFlow's C++ lines go to a log file, tpu_nb's messages to plain
    # output) and nothing a headless front end complains about (the lab comm is listed, not announced).
    stderr = [(i, o.get("text", "")) for i, c in enumerate(cells)
              for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr
    assert not [m for m in client_log.messages if "comm target" in m], client_log.messages
    # No TensorFlow log line anywhere, in printed text or in a displayed value.
    noise = [(i, line) for i, c in enumerate(cells) for line in _output_lines(c) if TF_LOG_LINE.match(line)]
    assert not noise, noise
    # The notebooks read as tutorials (no assert in the reader's cells): their results are checked here.
    assert not [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
                if line.strip().startswith("assert ")]
    CHECKS[path.name](nb)


def _output_lines(cell):
    """Every line a code cell's outputs show: streams, plain-text values, error tracebacks."""
    for output in cell.outputs:
        text = output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", "")
        if output.output_type == "error":
            text = "\n".join(output.get("traceback", []))
        yield from (text if isinstance(text, str) else "".join(text)).splitlines()


def _printed(nb, snippet: str) -> str:
    """What the code cell whose source contains ``snippet`` printed."""
    cells = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(cells) == 1, f"{len(cells)} cells contain {snippet!r}"
    return "".join(o.get("text", "") for o in cells[0].outputs if o.output_type == "stream")


def _number(pattern: str, text: str, group: int = 1) -> float:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return float(found.group(group))


def _quickstart(nb):
    metrics = _printed(nb, "metrics = estimator.evaluate(eval_input_fn)")
    assert "'global_step': 2000," in metrics  # an integer, as in the original's results
    assert _number(r"'accuracy': ([0-9.]+)", metrics) > 0.9
    export = _printed(nb, "def serving_input_receiver_fn")
    assert "metagraph tags: [['serve'], ['serve', 'tpu']]" in export
    assert "served predictions match predict(): 500 of 500" in export


def _training_dashboard(nb):
    evaluation = _printed(nb, "%tpu_evaluate est eval_input_fn -o ev")
    assert _number(r"'accuracy': ([0-9.]+)", evaluation) > 0.9
    assert re.search(r"'global_step': \d+,", evaluation)  # a step is a whole number, not 2000.0
    # %tpu_predict -o frame: the cell shows the DataFrame it made.
    predict = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%tpu_predict")][0]
    assert [o for o in predict.outputs if o.output_type == "execute_result" and "text/html" in o.data]
    assert "done at step 5000" in _printed(nb, "-o resumed")  # resumed to the stopped run's target


def _tpu_semantics(nb):
    seen = _printed(nb, "with tpu_nb.events.subscribed(collect)")
    assert re.search(r"input_fn saw: .*'batch_size': 128\b", seen)  # per host: 128 = 8 shards x 16
    assert re.search(r"model_fn saw: .*'batch_size': 16\b", seen)
    shapes = re.findall(r"\(([^()]*)\)", _printed(nb, "first_step, first_values = host_calls[0]"))
    assert shapes and set(shapes) == {"8,"}  # one host_call value per shard
    assert _number(r"'accuracy': ([0-9.]+)", _printed(nb, "metrics = est.evaluate(eval_input_fn)")) > 0.8


def _eval_dashboard(nb):
    summary = _printed(nb, "best = evals")
    assert _number(r"last checkpoint: accuracy ([0-9.]+)", summary) > 0.85
    first = _number(r"loss ([0-9.]+) at the first checkpoint", summary)
    assert _number(r"([0-9.]+) at the last", summary) < first
    table = _printed(nb, "dash = EvalDashboard(est, eval_input_fn).show()")
    found = re.search(r"(\d+) checkpoints in the dashboard's table, as in the DataFrame above \((\d+)\)", table)
    assert found and found.group(1) == found.group(2)


def _migration(nb):
    assert _number(r"exits with code (-?\d+)", _printed(nb, '"import train_digits"')) != 0  # fails on TF 2.16+
    diff = _printed(nb, "REPLACEMENTS = [")
    assert "+import tf_keras" in diff and "tf_keras.layers.Dense(64" in diff
    assert not [line for line in diff.splitlines() if line.startswith("+") and "tf.compat.v1.layers" in line]
    one_device = _printed(nb, 'model_cpu")')
    assert "'global_step': 1000," in one_device and _number(r"'accuracy': ([0-9.]+)", one_device) > 0.9
    assert _number(r"accuracy ([0-9.]+) step", _printed(nb, "TPU_NB_SIMULATE")) > 0.9  # 8 simulated shards


CHECKS = {"quickstart.ipynb": _quickstart, "training_dashboard.ipynb": _training_dashboard,
          "tpu_semantics.ipynb": _tpu_semantics, "eval_dashboard.ipynb": _eval_dashboard,
          "migration.ipynb": _migration}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())
