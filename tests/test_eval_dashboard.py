"""EvalDashboard: checkpoint list, evaluating selected/all, continuous mode while training, fallback."""

import threading

import pytest
import tensorflow as tf
import tf_keras

import tpu_nb
from model_zoo import CLASSES, eval_input_fn, train_input_fn
from tpu_nb.notebook.eval_dashboard import EvalDashboard, evaluate_dashboard, list_checkpoints


def _model_fn(features, labels, mode, params):
    logits = tf_keras.layers.Dense(CLASSES, name="logits")(features)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    if mode == tpu_nb.ModeKeys.EVAL:
        def metric_fn(labels, logits):
            return {"accuracy": tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, 1))}
        return tpu_nb.TPUEstimatorSpec(mode, loss=loss, eval_metrics=(metric_fn, [labels, logits]))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tpu_nb.TPUEstimatorSpec(mode, loss=loss, train_op=train_op)


def _estimator(model_dir, every=4, ipl=4):
    config = tpu_nb.RunConfig(model_dir=str(model_dir), save_checkpoints_steps=every, keep_checkpoint_max=100,
                              tpu_config=tpu_nb.TPUConfig(iterations_per_loop=ipl))
    return tpu_nb.TPUEstimator(_model_fn, config=config, use_tpu=False, train_batch_size=16, eval_batch_size=50)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    est = _estimator(tmp_path_factory.mktemp("eval_dash"))
    est.train(train_input_fn, steps=12)
    return est


def test_lists_checkpoints_and_evaluates_the_selected_ones(trained):
    dash = EvalDashboard(trained, eval_input_fn)
    assert [c["step"] for c in dash.checkpoints] == [0, 4, 8, 12]
    dash.selected = [12, 4]  # what the browser's list does
    dash.evaluate_clicks += 1  # the "Evaluate selected" button: runs in a thread
    assert dash.wait(60)
    frame = dash.frame
    assert frame["step"].tolist() == [4, 12]
    assert list(frame.columns) == ["step", "loss", "accuracy", "checkpoint"]
    expected = trained.evaluate(eval_input_fn, checkpoint_path=dict(list_checkpoints(trained.model_dir))[4])
    assert frame["accuracy"][0] == pytest.approx(expected["accuracy"])
    assert [c["evaluated"] for c in dash.checkpoints] == [False, True, False, True]


def test_evaluate_all_and_the_static_fallback(trained):
    dash = EvalDashboard(trained, eval_input_fn)
    data, _ = dash._repr_mimebundle_()
    assert "image/png" not in data and "0 of 4 checkpoint(s)" in data["text/html"]
    frame = dash.evaluate("all")
    assert frame["step"].tolist() == [0, 4, 8, 12] and frame["loss"].notna().all()
    data, _ = dash._repr_mimebundle_()
    assert data["image/png"] and "4 of 4 checkpoint(s)" in data["text/html"]
    assert "model.ckpt-8" in data["text/html"]


def test_unknown_step_is_an_error_naming_the_available_ones(trained):
    dash = EvalDashboard(trained, eval_input_fn)
    with pytest.raises(ValueError, match=r"No checkpoint for step\(s\) \[5\].*\[0, 4, 8, 12\]"):
        dash.evaluate([5])
    dash.selected = [5]
    dash.evaluate_clicks += 1  # from the button the same message lands in the widget
    dash.wait(30)
    assert "No checkpoint for step(s) [5]" in dash.error and dash.rows == []


class _PauseUntil(tf.compat.v1.train.SessionRunHook):
    """Holds training after ``runs`` session runs until ``ready()`` is true (or 60 s pass)."""

    def __init__(self, runs, ready):
        self.runs, self.ready, self.count, self.saw_ready = runs, ready, 0, False

    def after_run(self, run_context, run_values):
        self.count += 1
        if self.count == self.runs:
            for _ in range(600):
                if self.ready():
                    self.saw_ready = True
                    return
                threading.Event().wait(0.1)


@pytest.mark.slow
def test_continuous_mode_evaluates_checkpoints_while_training_writes_them(tmp_path):
    est = _estimator(tmp_path, every=10, ipl=5)
    dash = EvalDashboard(est, eval_input_fn, poll_secs=0.1)
    assert dash.checkpoints == []
    dash.watch(stop_after_step=60)  # watching an empty model_dir: every result comes from training
    assert dash.watching and dash.status in ("watching", "idle")
    # Training pauses at step 30 until the dashboard has evaluated a checkpoint it wrote.
    pause = _PauseUntil(6, lambda: len(dash.rows) > 0)
    trainer = threading.Thread(target=est.train, args=(train_input_fn,), kwargs={"steps": 60, "hooks": [pause]})
    trainer.start()
    trainer.join(120)
    assert pause.saw_ready, "no checkpoint was evaluated while training ran"
    assert dash.wait(60) and not dash.watching and dash.status == "idle"
    steps = dash.frame["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == 60 and steps[0] <= 30
    assert set(steps) <= {0, 10, 20, 30, 40, 50, 60}
    assert dash.frame["accuracy"].notna().all()


def test_watching_trait_starts_and_stops_the_watcher(trained):
    dash = EvalDashboard(trained, eval_input_fn, poll_secs=0.1)
    dash.watching = True  # the browser's Watch toggle
    assert dash._watcher is not None and dash._watcher.is_alive()
    for _ in range(300):  # the four existing checkpoints are evaluated first
        if len(dash.rows) == 4:
            break
        threading.Event().wait(0.1)
    dash.watching = False
    assert dash.wait(30) and dash.status == "idle"
    assert dash.frame["step"].tolist() == [0, 4, 8, 12]


def test_evaluate_dashboard_helper_for_the_magic(trained):
    dash = evaluate_dashboard(trained, eval_input_fn, which="latest", show=False)
    assert dash.frame["step"].tolist() == [12]
    with pytest.raises(TypeError, match="TPUEstimator"):
        EvalDashboard(object(), eval_input_fn)


def test_dashboard_options_for_tpu_evaluate(trained):
    from IPython.core.magic_arguments import magic_arguments, parse_argstring

    from tpu_nb.notebook.magics_extra import dashboard_arguments, evaluate_dashboard_from_args

    @magic_arguments()
    @dashboard_arguments
    def fake_tpu_evaluate(line):
        """What %tpu_evaluate gains."""

    args = parse_argstring(fake_tpu_evaluate, "--dashboard --which latest")
    assert args.dashboard and not args.watch
    dash = evaluate_dashboard_from_args(trained, eval_input_fn, args)
    assert dash.frame["step"].tolist() == [12]


def test_the_table_aligns_each_columns_numbers_and_marks_the_best_checkpoint(trained):
    dash = EvalDashboard(trained, eval_input_fn)
    frame = dash.evaluate("all")
    best = frame.loc[frame["accuracy"].idxmax()]
    assert dash.best["metric"] == "accuracy" and dash.best["direction"] == "max"
    assert dash.best["step"] == best["step"]  # the first step with the highest accuracy
    table = dash._html()
    # One count of decimals per column: 0.9100 above 0.9460, never 0.91 above 0.946.
    import re
    cells = re.findall(r"<tr[^>]*><td[^>]*>[0-9,]+</td><td[^>]*>([0-9.—]+)</td><td[^>]*>([0-9.—]+)</td>", table)
    assert len(cells) == 4
    for column in zip(*cells):
        assert len({len(value.split(".")[1]) for value in column if "." in value}) == 1, column
    assert table.count("★ best accuracy") == 1
    assert f"{int(best['step']):,}</td>" in table.split("★ best accuracy")[0].rsplit("<tr", 1)[1]


def test_the_best_checkpoint_is_the_lowest_loss_without_metrics_and_the_highest_score_otherwise():
    from tpu_nb.notebook.eval_dashboard import best_checkpoint, column_decimals

    rows = [{"step": 10, "loss": 0.5, "error_rate": 0.2}, {"step": 20, "loss": 0.4, "error_rate": 0.3}]
    assert best_checkpoint(rows, ["loss", "error_rate"])["step"] == 10  # an error rate is better lower
    assert best_checkpoint(rows, ["loss"]) == {"step": 20, "metric": "loss", "direction": "min", "value": 0.4}
    assert best_checkpoint([], ["loss"]) == {}
    assert column_decimals([0.91, 0.946, 0.09348]) == 4 and column_decimals([1234.5, 12.0]) == 0


def test_the_status_says_watching_once_the_checkpoint_is_in_the_table(trained):
    dash = EvalDashboard(trained, eval_input_fn, poll_secs=30)  # one pass, then a long wait for new ones
    seen = []
    dash.observe(lambda change: seen.append((change["new"], len(dash.rows))), names="status")
    dash.watching = True
    for _ in range(300):
        if len(dash.rows) == 4 and dash.status == "watching":
            break
        threading.Event().wait(0.1)
    # While the watcher waits for the next checkpoint it says so, not "evaluating model.ckpt-12".
    assert dash.status == "watching" and len(dash.rows) == 4
    evaluating = [rows for status, rows in seen if status.startswith("evaluating")]
    assert evaluating == [0, 1, 2, 3]  # each "evaluating" came before its own row, never after
    dash.stop(30)
    assert dash.status == "idle"
