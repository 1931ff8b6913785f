"""Loop-size arithmetic, checked without TensorFlow sessions, and the time-budget loops."""

import pytest

from tpu_nb.run.schedule import TimedLoopSizer, check_step_arg, loop_boundaries, next_loop_size, target_step


@pytest.mark.parametrize(
    "start,steps,max_steps,expected",
    [
        (0, 10, None, [4, 8, 10]),  # SPEC: train(steps=10), ipl=4
        (3, 10, None, [7, 11, 13]),  # resumed from a checkpoint at 3
        (3, None, 10, [7, 10]),  # max_steps=10 from 3
        (10, None, 10, []),  # max_steps at the checkpointed step: nothing to do
        (0, 4, None, [4]),
        (0, 1, None, [1]),
    ],
)
def test_spec_schedule_table(start, steps, max_steps, expected):
    assert loop_boundaries(start, target_step(start, steps, max_steps), 4) == expected


def test_next_loop_size_without_target_is_full_loops():
    assert next_loop_size(123, None, 7) == 7
    assert next_loop_size(9, 10, 7) == 1
    assert next_loop_size(12, 10, 7) == 0


def test_step_args():
    assert check_step_arg("steps", None) is None
    assert check_step_arg("steps", 5) == 5
    with pytest.raises(TypeError, match="steps must be int"):
        check_step_arg("steps", 5.0)
    with pytest.raises(ValueError, match="positive"):
        check_step_arg("steps", 0)


def test_timed_sizer_fills_the_budget():
    sizer = TimedLoopSizer(2.0)
    assert sizer.size == 1  # the first loop pays for compilation
    sizer.observe(1, 0.01)  # 10 ms per step -> 200 wanted, capped at 10x growth
    assert sizer.size == 10
    sizer.observe(10, 0.1)
    assert sizer.size == 100
    sizer.observe(100, 1.0)
    assert sizer.size == 200
    sizer.observe(200, 4.0)  # the machine slowed down: shrink at once
    assert sizer.size == 100
