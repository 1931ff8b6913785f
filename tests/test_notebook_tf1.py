"""The notebook layer in a kernel whose first cell switches TensorFlow to TF1 behaviour, the way most
TPUEstimator programs start: %tpu_train with a host_call feeding the live dashboard, %tpu_evaluate
(overlaid on the run, and as a dashboard of every checkpoint), %tpu_predict into a DataFrame, and a
background run stopped with a checkpoint. The checks are on what the user sees: the displayed
outputs, the widget state the executed notebook keeps, and the numbers in the frames.

TPU_NB_TEST_BEHAVIOR switches only the pytest process; a kernel is a fresh process, so here the
notebook sets its behaviour itself, and the kernel gets no TPU_NB_* settings from the shell that
runs the tests (TPU_NB_SIMULATE or TPU_NB_TF_LOGS there would change what the notebook shows).
"""

import base64
import os
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow as tf

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")

import model_zoo

TESTS = pathlib.Path(__file__).parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOGITS = [f"logits_{i}" for i in range(model_zoo.CLASSES)]

# The first cell of the notebook, per behaviour: the whole of TF1 (RefVariables, control flow v1,
# Dimension objects), or only graph mode.
SWITCHES = {
    "tf1": "tf.compat.v1.disable_v2_behavior()",
    "no_eager": "tf.compat.v1.disable_eager_execution()",
}

SETUP = """
import sys
sys.path[:0] = [{tests!r}, {repo!r}]
import json, pickle, time
import tf_keras
import tpu_nb, model_zoo

LEARNING_RATE, DECAY_STEPS = 0.1, 100

def host_fn(global_step, learning_rate, batch_accuracy):
    # As Cloud TPU programs write it: the dashboard gets the same values without a summary.
    with tf.compat.v2.summary.create_file_writer({model_dir!r}).as_default():
        with tf.compat.v2.summary.record_if(True):
            tf.compat.v2.summary.scalar("learning_rate", learning_rate[0], step=global_step[0])
            return tf.compat.v1.summary.all_v2_summary_ops()

def metric_fn(labels, logits):
    return {{"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}}

def model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(model_zoo.CLASSES, name="logits")(features)
    if mode == tpu_nb.ModeKeys.PREDICT:
        return tpu_nb.TPUEstimatorSpec(mode, predictions={{"class_ids": tf.argmax(logits, 1), "logits": logits}})
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
    step = tf.compat.v1.train.get_global_step()
    learning_rate = tf.compat.v1.train.exponential_decay(LEARNING_RATE, step, DECAY_STEPS, 0.5)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(learning_rate).minimize(loss, global_step=step)
    correct = tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels)
    batch_accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
    host_call = (host_fn, [tf.reshape(step, [1]), tf.reshape(learning_rate, [1]), tf.reshape(batch_accuracy, [1])])
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op, host_call=host_call)

est = model_zoo.estimator({model_dir!r}, iterations_per_loop=10, fn=model_fn, save_checkpoints_steps=20)
bg_est = model_zoo.estimator({bg_model_dir!r}, iterations_per_loop=10, fn=model_fn)
train_fn, eval_fn, predict_fn = model_zoo.train_input_fn, model_zoo.eval_input_fn, model_zoo.predict_input_fn
"""

BACKGROUND_STOP = """
deadline = time.monotonic() + 120
while (bg.global_step or 0) < 30 and not bg.finished:
    assert time.monotonic() < deadline, "the background run made no progress"
    time.sleep(0.01)
bg.stop()  # what the dashboard's Stop button does
bg.wait(timeout=120)
print(bg.state)
"""

# Cell indices, for the checks below.
FIRST, TRAIN, EVALUATE, EVAL_DASHBOARD, PREDICT, BACKGROUND, STOP, SAVE = 0, 3, 4, 5, 6, 7, 8, 9


def _notebook(switch, model_dir, bg_model_dir, saved):
    cells = [
        f"import tensorflow as tf\n{switch}\nprint('eager:', tf.executing_eagerly())",
        SETUP.format(tests=str(TESTS), repo=str(TESTS.parent), model_dir=model_dir, bg_model_dir=bg_model_dir),
        "%load_ext tpu_nb",
        "%tpu_train est train_fn --steps 60 -o run",
        "%tpu_evaluate est eval_fn -o ev\nprint(ev.result)",
        "%tpu_evaluate est eval_fn --dashboard -o dash",
        "%tpu_predict est predict_fn -o df\ndf.head()",
        "%tpu_train bg_est train_fn --steps 1000000 --background -o bg",  # only Stop ends it in time
        BACKGROUND_STOP,
        # What the user would go on to work with, for exact checks here.
        f"pickle.dump({{'history': run.history, 'predictions': df, 'evaluation': ev.result}}, open({saved!r}, 'wb'))",
    ]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def _decay_steps(learning_rates, tolerance):
    """The global step each learning rate was decayed for: 0.1 * 0.5 ** (k / 100) has one k."""
    k = -100 * np.log2(np.asarray(learning_rates, np.float64) / 0.1)
    np.testing.assert_allclose(k, np.round(k), atol=tolerance)
    return np.round(k).astype(np.int64)


def _lags(steps, global_steps):
    """Step of each record minus the global step its host_call tensors read. A model_fn's reads of the
    global step are not ordered against the step's own increment (in the engine, under every
    behaviour), so a read sees step - 1 as a rule and, about once in a thousand steps, step itself."""
    return (np.asarray(steps, np.int64) - np.asarray(global_steps, np.int64)).tolist()


def _kernel_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("TPU_NB_")}


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _shown(cell):
    """The cell's one display (a widget with its PNG/HTML fallback)."""
    displays = [o for o in cell.outputs if o.output_type == "display_data"]
    assert len(displays) == 1, [o.output_type for o in cell.outputs]
    return displays[0].data


def _dashboard(cell):
    """A training cell's two displays: the live view (widget, HTML summary) and its static picture (PNG)."""
    displays = [o for o in cell.outputs if o.output_type == "display_data"]
    assert len(displays) == 2, [o.output_type for o in cell.outputs]
    return displays[0].data, displays[1].data


def _widget_state(nb, data):
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return state[data[WIDGET_MIME]["model_id"]]["state"]


@pytest.mark.slow
@pytest.mark.parametrize("behavior", sorted(SWITCHES))
def test_magics_dashboards_and_frames_in_a_tf1_kernel(behavior, tmp_path):
    model_dir, bg_model_dir, saved = tmp_path / "model", tmp_path / "bg_model", tmp_path / "saved.pkl"
    nb = _notebook(SWITCHES[behavior], str(model_dir), str(bg_model_dir), str(saved))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute(env=_kernel_env())

    cells = nb.cells
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(cells) for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert "eager: False" in _text(cells[FIRST])  # the kernel really runs in graph mode
    everything = "".join(_text(c) for c in cells)
    assert "INFO:tensorflow" not in everything and "Traceback" not in everything
    with open(saved, "rb") as f:
        saved = pickle.load(f)
    evaluation = saved["evaluation"]
    assert evaluation["global_step"] == 60

    # The training dashboard: one display, its final state kept, the later evaluation overlaid.
    data, picture = _dashboard(cells[TRAIN])
    # The summary table once, under the final picture (the view's own fallback no longer repeats it).
    assert "done" in picture["text/html"] and "60 / 60" in picture["text/html"] and "eval loss" in picture["text/html"]
    assert "tpu-nb-summary" not in data["text/html"]
    assert base64.b64decode(picture["image/png"])[:8] == PNG_MAGIC
    snapshot = _widget_state(nb, data)["snapshot"]
    assert snapshot["status"]["state"] == "done" and snapshot["status"]["step"] == 60
    series = snapshot["series"]
    assert len(series["loss"][0]) == 6  # one loss per loop of 10
    # %tpu_evaluate's result, then the evaluation dashboard's, one per checkpoint: both are overlaid.
    assert series["eval/loss"][0] == [60, 0, 20, 40, 60]
    assert series["eval/loss"][1][0] == pytest.approx(evaluation["loss"], rel=1e-4)
    # The host_call's values, one point per step, as the browser draws them (rounded to 5 digits).
    # The host_call's global_step argument is the points' step: no chart of its own.
    assert "host/global_step" not in series
    steps = series["host/learning_rate"][0]
    assert steps == list(range(1, 61))
    assert set(_lags(steps, _decay_steps(series["host/learning_rate"][1], tolerance=0.05))) <= {0, 1}

    # The same run as a DataFrame, at full precision.
    history = saved["history"]
    assert {"loss", "global_step", "learning_rate", "batch_accuracy", "eval_loss", "eval_accuracy"} <= set(history)
    assert history.loss.notna().sum() == 6 and history.learning_rate.notna().sum() == 60
    logged = history.dropna(subset=["learning_rate"])
    assert set(_lags(logged.step, logged.global_step)) <= {0, 1}  # recorded in the history, as a column
    assert set(_lags(logged.step, _decay_steps(logged.learning_rate, tolerance=1e-3))) <= {0, 1}
    in_sixteenths = logged.batch_accuracy * 16  # one batch of 16 examples per step
    np.testing.assert_allclose(in_sixteenths, np.round(in_sixteenths), atol=1e-4)
    assert history.set_index("step").eval_accuracy[60] == pytest.approx(evaluation["accuracy"])

    # The evaluation dashboard: every checkpoint of model_dir evaluated, the latest as %tpu_evaluate's.
    data = _shown(cells[EVAL_DASHBOARD])
    assert "4 of 4 checkpoint(s) evaluated" in data["text/html"]
    assert base64.b64decode(data["image/png"])[:8] == PNG_MAGIC
    state = _widget_state(nb, data)
    assert [(c["step"], c["evaluated"]) for c in state["checkpoints"]] == [(0, True), (20, True), (40, True), (60, True)]
    rows = state["rows"]
    assert [r["step"] for r in rows] == [0, 20, 40, 60]
    assert rows[-1]["loss"] == pytest.approx(evaluation["loss"], rel=1e-5)
    assert rows[-1]["accuracy"] == pytest.approx(evaluation["accuracy"])
    assert rows[0]["loss"] > rows[-1]["loss"]

    # Predictions: one row per example, the model's own numbers from the checkpoint it used.
    shown = [o for o in cells[PREDICT].outputs if o.output_type == "execute_result"]
    assert len(shown) == 1 and "logits_0" in shown[0].data["text/html"]
    frame = saved["predictions"]
    assert list(frame.columns) == ["class_ids"] + LOGITS and list(frame.index) == list(range(100))
    checkpoint = str(model_dir / "model.ckpt-60")
    kernel, bias = tf.train.load_variable(checkpoint, "logits/kernel"), tf.train.load_variable(checkpoint, "logits/bias")
    x, y = model_zoo.make_data(100, seed=1)
    np.testing.assert_allclose(frame[LOGITS].to_numpy(), x @ kernel + bias, rtol=1e-4, atol=1e-4)
    assert (frame.class_ids.to_numpy() == frame[LOGITS].to_numpy().argmax(1)).all()
    assert (frame.class_ids.to_numpy() == y).mean() == pytest.approx(evaluation["accuracy"])

    # The background run stopped at a loop boundary with a checkpoint, and its display says so.
    state_line = _text(cells[STOP]).strip().splitlines()[-1]
    assert state_line.startswith("stopped at step ")
    stopped = int(state_line.rsplit(" ", 1)[1])
    assert 30 <= stopped < 1_000_000 and stopped % 10 == 0
    assert model_zoo.checkpoint_step(bg_model_dir) == stopped
    data, picture = _dashboard(cells[BACKGROUND])
    assert f"stopped at step {stopped}" in data["text/plain"] and f"stopped at step {stopped}" in picture["text/html"]
    assert "tpu-nb-summary" not in data["text/html"]  # the summary table once, under the picture
    assert _widget_state(nb, data)["snapshot"]["status"]["state"] == f"stopped at step {stopped}"
