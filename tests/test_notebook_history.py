"""The run history store and the wire format: compact, complete in the kernel, bounded for the browser."""

import json

import numpy as np
import pytest

from tpu_nb.notebook import _wire
from tpu_nb.notebook.history import RunHistory


def test_history_frame_has_one_row_per_step_with_every_kind_of_record():
    h = RunHistory()
    for step in range(1, 21):
        h.add_scalars(step, {"learning_rate": np.float32(0.1 / step), "image": np.zeros((2, 2))})
        if step % 10 == 0:
            h.add_loop(step, 1000.0 + step, 2.0 / step, 500.0, 8000.0)
    h.add_eval(20, {"loss": np.float32(0.3), "accuracy": np.float32(0.9), "global_step": np.int64(20)})

    frame = h.to_frame()
    assert list(frame.columns) == ["step", "wall_time", "loss", "steps_per_sec", "examples_per_sec",
                                   "learning_rate", "eval_loss", "eval_accuracy"]
    assert frame.step.tolist() == list(range(1, 21))
    assert frame.learning_rate.iloc[4] == pytest.approx(0.02)
    assert frame.set_index("step").loss.dropna().to_dict() == {10: 0.2, 20: 0.1}
    assert frame.set_index("step").eval_accuracy.dropna().to_dict() == {20: pytest.approx(0.9)}
    assert "image" not in frame  # non-scalars stay out of the table


def test_host_call_scalar_named_loss_does_not_overwrite_the_training_loss():
    h = RunHistory()
    h.add_loop(10, 0.0, 1.5, None, None)
    h.add_scalars(10, {"loss": 7.0})
    row = h.to_frame().iloc[0]
    assert row["loss"] == 1.5 and row["host_loss"] == 7.0


def test_long_runs_of_three_scalars_stay_compact():
    h = RunHistory()
    values = {"a": np.float32(1.0), "b": np.float32(2.0), "c": np.float32(3.0)}
    for step in range(300_000):
        h.add_scalars(step, values)
    # 16 bytes per point (int64 step + float64 value), at most doubled by the growth policy.
    assert h.nbytes <= 3 * 300_000 * 16 * 2
    steps, vals = h.series("host/b")
    assert len(steps) == 300_000 and steps[-1] == 299_999 and vals.mean() == 2.0


def test_downsample_keeps_extremes_first_and_last_within_the_cap():
    steps = np.arange(100_000)
    values = np.sin(steps / 5000.0)
    values[31_337] = 50.0  # a spike must survive downsampling
    values[77_000] = np.nan
    s, v = _wire.downsample(steps, values, 2000)
    assert len(s) <= 2000
    assert s[-1] == 99_999 and s[0] == 0
    assert 50.0 in v
    assert np.all(np.diff(s) > 0)


def test_snapshot_caps_every_series_at_2000_points_and_is_json():
    h = RunHistory()
    for step in range(1, 50_001):
        h.add_scalars(step, {"x": float(step)})
    snap = _wire.snapshot(h)
    assert len(snap["host/x"][0]) <= _wire.MAX_POINTS
    json.dumps(snap, allow_nan=False)  # NaN/Inf never reach the browser as invalid JSON


def test_delta_sends_each_point_once_and_respects_the_byte_cap():
    h = RunHistory()
    cursor = _wire.DeltaCursor(max_bytes=4000)
    received = 0
    for step in range(1, 301):
        h.add_scalars(step, {"x": float(step), "nan": float("nan")})
    delta = cursor.next_delta(h)
    assert _wire.json_size(delta) <= 4000
    assert delta["host/x"][0][-1] == 300  # the newest point always goes
    assert delta["host/nan"][1][0] is None
    received += len(delta["host/x"][0])
    assert cursor.next_delta(h) == {}  # nothing new, nothing sent
    h.add_scalars(301, {"x": 301.0})
    assert cursor.next_delta(h)["host/x"] == [[301], [301.0]]


def test_many_series_that_do_not_fit_wait_for_the_next_delta():
    h = RunHistory()
    names = {f"scalar_{i:03d}": float(i) for i in range(400)}
    h.add_scalars(1, names)
    cursor = _wire.DeltaCursor(max_bytes=3000)
    seen = set()
    for _ in range(20):
        delta = cursor.next_delta(h)
        assert _wire.json_size(delta) <= 3000
        seen |= set(delta)
    assert len(seen) == 400


def test_queued_host_call_values_are_converted_in_bulk_and_read_back_in_order():
    h = RunHistory()
    for step in range(1, 101):
        values = {"lr": np.asarray([0.1], np.float32), "acc": np.asarray([step / 100], np.float32)}
        if step > 90:  # a host_call whose shape changes mid-run still records what is scalar
            values["acc"] = np.asarray([[step / 100]], np.float32)
            values["vector"] = np.zeros(3)
        h.queue_scalars(step, values)
        if step % 10 == 0:
            h.add_loop(step, float(step), 1.0 / step, None, None)
    steps, acc = h.series("host/acc")
    assert steps.tolist() == list(range(1, 101))
    assert acc[-1] == pytest.approx(1.0) and acc[49] == pytest.approx(0.5)
    assert "host/vector" not in h.names
    h.queue_scalars(101, {"lr": np.asarray([0.2], np.float32)})
    assert h.last("host/lr") == pytest.approx(0.2)  # reads see queued values without waiting for a loop


def test_host_call_columns_from_the_engine_keep_scalars_and_skip_the_rest():
    h = RunHistory()
    # Two loops of a host_call with a [1]-shaped loss, a scalar bool, a [4] vector and a ragged column.
    for first in (1, 5):
        steps = np.arange(first, first + 4, dtype=np.int64)
        ragged = np.empty(4, dtype=object)
        ragged[:] = [np.zeros(i + 1) for i in range(4)]
        h.queue_columns(steps, {"loss": (steps / 10.0).astype(np.float32).reshape(4, 1),
                                "ok": steps % 2 == 0, "logits": np.zeros((4, 4)), "ragged": ragged})
        h.add_loop(int(steps[-1]), 0.0, 1.0, None, None)
    steps, loss = h.series("host/loss")
    assert steps.tolist() == list(range(1, 9))
    np.testing.assert_allclose(loss, np.arange(1, 9) / 10.0, rtol=1e-6)
    assert h.series("host/ok")[1].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    # Only the ragged column's 1-element first value is a scalar; the vectors are left out.
    assert h.series("host/ragged")[0].tolist() == [1, 5]
    assert "host/logits" not in h.names
    frame = h.to_frame()
    assert frame.loc[frame.step == 8, "loss"].item() == 1.0  # the loop's loss keeps its column
    assert frame.loc[frame.step == 8, "host_loss"].item() == pytest.approx(0.8)


def _shard_loop(first, count=4, shards=4):
    """One loop's host_call columns on ``shards`` shards, as the engine publishes them: each argument's
    per-shard [1] tensors concatenated, so every step holds one entry per shard."""
    steps = np.arange(first, first + count, dtype=np.int64)
    per_shard_loss = (steps[:, None] + np.arange(shards)[None, :] / 10.0).astype(np.float32)
    return steps, {
        "global_step": np.repeat(steps[:, None] - 1, shards, axis=1),  # int64, equal on every shard
        "learning_rate": np.full((count, shards), 0.05, np.float32),
        "loss": per_shard_loss,  # differs between shards
        "logits": np.zeros((count, 2 * shards), np.float32),  # two numbers per shard: not a chart
        "names": np.full((count, shards), "x"),
    }


def test_one_number_per_shard_is_the_common_value_or_the_noted_mean():
    h = RunHistory(num_shards=4)
    for first in (1, 5):
        steps, columns = _shard_loop(first)
        h.queue_columns(steps, columns)
        h.add_loop(int(steps[-1]), 0.0, 1.0, None, None)

    steps, global_step = h.series("host/global_step")
    assert steps.tolist() == list(range(1, 9)) and global_step.tolist() == list(range(0, 8))
    assert h.series("host/learning_rate")[1].tolist() == [np.float64(np.float32(0.05))] * 8  # not a mean's rounding
    np.testing.assert_allclose(h.series("host/loss")[1], np.arange(1, 9) + 0.15, rtol=1e-6)
    assert "host/logits" not in h.names and "host/names" not in h.names
    # Only the series that is a mean says so; equal shards chart as plain values.
    assert h.notes == {"host/loss": "mean of 4 shards"}
    frame = h.to_frame()
    assert frame.attrs["notes"] == {"host_loss": "mean of 4 shards"}
    assert frame.loc[frame.step == 8, "global_step"].item() == 7


def test_a_series_becomes_a_mean_when_its_shards_first_differ_and_nan_on_a_shard_shows():
    h = RunHistory(num_shards=2)
    agree = np.array([[0.5, 0.5], [0.25, 0.25]])
    h.queue_columns(np.array([1, 2]), {"accuracy": agree, "nan": np.array([[np.nan, np.nan], [1.0, 1.0]])})
    assert h.notes == {}  # NaN on every shard is not a difference between shards
    h.queue_columns(np.array([3, 4]), {"accuracy": np.array([[0.5, 1.0], [1.0, 1.0]]),
                                       "nan": np.array([[1.0, np.nan], [2.0, 2.0]])})
    assert h.series("host/accuracy")[1].tolist() == [0.5, 0.25, 0.75, 1.0]
    nan = h.series("host/nan")[1]
    assert np.isnan(nan[0]) and nan[1] == 1.0 and np.isnan(nan[2]) and nan[3] == 2.0
    assert h.notes == {"host/accuracy": "mean of 2 shards"}


def test_per_step_host_call_values_on_shards_are_combined_the_same_way():
    h = RunHistory(num_shards=4)
    for step in range(1, 4):
        h.queue_scalars(step, {"global_step": np.full(4, step - 1, np.int64),
                               "loss": np.arange(4, dtype=np.float32) + step, "vector": np.zeros(8)})
    assert len(h.series("host/loss")[0]) == 3
    h.add_scalars(4, {"global_step": np.full(4, 3, np.int64), "loss": np.arange(4, dtype=np.float32) + 4})
    assert h.series("host/global_step")[1].tolist() == [0, 1, 2, 3]
    assert h.series("host/loss")[1].tolist() == [2.5, 3.5, 4.5, 5.5]
    assert "host/vector" not in h.names
    assert h.notes == {"host/loss": "mean of 4 shards"}


def test_one_device_keeps_only_one_number_per_step():
    h = RunHistory()  # num_shards=1: a [4] host_call value is a vector, not four shards
    steps, columns = _shard_loop(1)
    h.queue_columns(steps, columns)
    assert h.names == []
    h.queue_columns(steps + 4, {"loss": np.arange(4, dtype=np.float32).reshape(4, 1)})
    assert h.series("host/loss")[1].tolist() == [0, 1, 2, 3] and h.notes == {}


def test_a_continued_run_charts_the_earlier_runs_up_to_its_starting_checkpoint():
    first = RunHistory()
    for step in (100, 200, 300):
        first.add_loop(step, 1000.0 + step, 1.0 / step, 50.0, None)
    first.add_eval(300, {"accuracy": 0.8, "global_step": 300})
    # The second run resumed from the checkpoint at step 200 (step 300 was never saved).
    second = RunHistory()
    second.continue_from(first, 200)
    second.add_loop(250, 2000.0, 0.004, 50.0, None)

    steps, values = second.chart_series("loss")
    assert steps.tolist() == [100, 200, 250]
    assert values[-1] == pytest.approx(0.004)
    assert second.chart_series("eval/accuracy")[0].tolist() == []  # its step 300 is past the checkpoint
    assert second.series("loss")[0].tolist() == [250]  # the run's own history stays its own
    assert second.to_frame().step.tolist() == [250]
    third = RunHistory()
    third.continue_from(second, 250)
    assert third.chart_series("loss")[0].tolist() == [100, 200, 250]  # a chain of runs
    snapshot = _wire.snapshot(third)
    assert snapshot["loss"][0] == [100, 200, 250]


def test_wall_time_goes_to_the_browser_to_a_tenth_of_a_second():
    h = RunHistory()
    h.add_loop(10, 1_796_214_706.7291, 0.5, 100.0, None)
    snapshot = _wire.snapshot(h)
    assert snapshot["wall_time"] == [[10], [1_796_214_706.7]]  # not 1.7962e9: the hover shows a clock time
    assert "steps_per_sec" not in snapshot


def test_a_host_call_global_step_argument_is_the_step_not_a_chart():
    # host_call=(fn, [tf.reshape(global_step, [1]), tf.reshape(loss, [1])]), read before the increment:
    # the engine gives each point its step already, so the step tensor is no series of its own.
    from tpu_nb.notebook.history import HOST_PREFIX, RunHistory

    store = RunHistory(num_shards=8)
    steps = np.arange(1, 101, dtype=np.int64)
    store.queue_columns(steps, {"gs": np.repeat((steps - 1)[:, None], 8, axis=1),  # one per shard
                                "loss": np.linspace(2.0, 0.5, 100, dtype=np.float32).reshape(100, 1).repeat(8, 1),
                                "examples": np.full((100, 8), 64, np.int64)})  # whole numbers, yet no step
    names = store.chart_names
    assert HOST_PREFIX + "gs" not in names
    assert not any(name.endswith("gs") for name in _wire.snapshot(store))  # nor sent to the browser
    assert HOST_PREFIX + "loss" in names and HOST_PREFIX + "examples" in names
    series_steps, values = store.series(HOST_PREFIX + "loss")
    assert list(series_steps[:3]) == [1, 2, 3] and values[0] == pytest.approx(2.0)


def test_a_step_argument_of_one_step_at_a_time_is_not_charted_either():
    from tpu_nb.notebook.history import HOST_PREFIX, RunHistory

    store = RunHistory()
    for step in range(1, 4):
        store.add_scalars(step, {"global_step": np.array([step], np.int64), "lr": np.float32(0.1)})
    assert HOST_PREFIX + "global_step" not in store.chart_names and HOST_PREFIX + "lr" in store.chart_names
    assert HOST_PREFIX + "global_step" in store.names  # still in the run's history, as a column
