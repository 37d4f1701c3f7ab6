"""The executor against stages and cameras that behave like real SDKs (issue 19).

Each test reproduces one way a driver written from the protocols misbehaves (a reused frame
buffer, a NaN reading, a stage still moving at the start, an overshoot below the start, odd
frame dtypes, an ignored timeout) with the doubles of :mod:`nanoro_optics.testing.doubles`,
and checks what :func:`~nanoro_optics.acquire.run_zscan` guarantees instead.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from nanoro_optics.acquire import run_zscan
from nanoro_optics.fusion import StackFuser
from nanoro_optics.hardware import (
    AcquisitionError,
    CameraError,
    MockZStage,
    StageFault,
    StagePositionError,
    StageTimeoutError,
)
from nanoro_optics.testing import (
    BufferReusingCamera,
    NaNReadingStage,
    OvershootingStage,
    SettlingStage,
    SlowStage,
)
from nanoro_optics.zscan import ZScanPlan

PLAN = ZScanPlan(4.0, 1.0, 4)  # 5 images: 4, 3, 2, 1, 0 um above the start


def values(stack: Any) -> list[int]:
    return [int(f.flat[0]) for f in stack.frames]


def moves_after_first_stop(stage: MockZStage) -> list[float]:
    kinds = [e.kind for e in stage.log]
    first = kinds.index("stop")
    return [e.commanded_um for e in stage.log[first:] if e.kind == "move"]


def stage_fault_of(info: pytest.ExceptionInfo[AcquisitionError]) -> BaseException:
    err = info.value
    assert err.stage_stopped
    assert isinstance(err.__cause__, (StageFault, StageTimeoutError))
    return err.__cause__


# ----------------------------------------------------------------- 1. frames owned by the stack


def test_a_reused_camera_buffer_does_not_change_captured_frames() -> None:
    cam = BufferReusingCamera(shape=(2, 3))
    stack = run_zscan(PLAN, MockZStage(), cam)
    assert values(stack) == [1, 2, 3, 4, 5]  # not [5, 5, 5, 5, 5]
    for got, delivered in zip(stack.frames, cam.delivered, strict=True):
        np.testing.assert_array_equal(got, delivered)
        assert got.dtype == np.uint16 and got.shape == (2, 3)
        assert not got.flags.writeable  # owned by the stack, read-only
    cam.snap()  # the camera goes on using its buffer
    assert values(stack) == [1, 2, 3, 4, 5]


def test_the_partial_stack_after_a_camera_fault_is_owned_too() -> None:
    cam = BufferReusingCamera(fail_on_snap=4)
    with pytest.raises(AcquisitionError, match="frame 3 of 5") as info:
        run_zscan(PLAN, MockZStage(), cam)
    assert values(info.value.partial) == [1, 2, 3]  # not [3, 3, 3]
    cam.fail_on_snap = None
    cam.snap()
    assert values(info.value.partial) == [1, 2, 3]


def test_on_frame_and_the_fuser_see_the_stack_copy() -> None:
    cam = BufferReusingCamera(shape=(8, 8), dtype=np.uint8)
    seen: list[np.ndarray] = []
    fuser = StackFuser()
    stack = run_zscan(PLAN, MockZStage(), cam, fuser=fuser, on_frame=lambda f, _: seen.append(f))
    assert all(a is b for a, b in zip(seen, stack.frames, strict=True))
    assert stack.fused is not None and stack.fused.image.shape == (8, 8)


# ----------------------------------------------------------------- 2. measured positions


def test_a_nan_reading_stops_the_stage_and_keeps_the_frames() -> None:
    stage = NaNReadingStage(nan_on_read=4)  # the start is read twice, then one read per frame
    with pytest.raises(AcquisitionError, match="before frame 1 of 5") as info:
        run_zscan(PLAN, stage, BufferReusingCamera())
    cause = stage_fault_of(info)
    assert isinstance(cause, StagePositionError) and "not finite" in str(cause)
    assert np.isnan(cause.measured_um) and cause.commanded_um == 3.0 and cause.index == 1
    partial = info.value.partial
    assert values(partial) == [1] and partial.commanded_um.tolist() == [4.0]
    assert partial.measured_um.tolist() == [4.0]
    assert stage.stop_count == 1 and moves_after_first_stop(stage) == []


def test_a_nan_reading_with_a_fuser_stops_the_stage_before_anything_else() -> None:
    stage = NaNReadingStage(nan_on_read=2)  # plan with a start: one read per frame
    plan = ZScanPlan(4.0, 1.0, 4, start_um=0.0)
    with pytest.raises(AcquisitionError) as info:
        run_zscan(plan, stage, BufferReusingCamera(), fuser=StackFuser())
    assert isinstance(stage_fault_of(info), StagePositionError)
    # the stop came right after the bad reading: no return to the start, no other move
    assert stage.log[-1].kind == "stop" and moves_after_first_stop(stage) == []
    assert stage.commanded_um == [4.0, 3.0] and len(info.value.partial) == 1


def test_an_overshoot_below_the_start_is_a_stage_fault() -> None:
    stage = OvershootingStage(overshoot_um=2.0, overshoot_on_move=5)  # the move to 0.0
    with pytest.raises(AcquisitionError) as info:
        run_zscan(PLAN, stage, BufferReusingCamera())
    cause = stage_fault_of(info)
    assert isinstance(cause, StagePositionError)
    assert "-2.0 um" in str(cause) and "below the start 0.0 um" in str(cause)
    assert info.value.partial.commanded_um.tolist() == [4.0, 3.0, 2.0, 1.0]
    assert stage.stop_count == 1 and moves_after_first_stop(stage) == []


def test_a_position_off_the_commanded_one_is_a_stage_fault() -> None:
    # 0.5 um short of 3.0: not below the start, but half a spacing off
    stage = OvershootingStage(overshoot_um=0.5, overshoot_on_move=2)
    with pytest.raises(AcquisitionError) as info:
        run_zscan(PLAN, stage, BufferReusingCamera())
    cause = stage_fault_of(info)
    assert isinstance(cause, StagePositionError)
    assert "0.5 um from the commanded 3.0 um" in str(cause) and "0.25 um" in str(cause)
    # the same stage passes with a tolerance that admits it (documented option)
    stage = OvershootingStage(overshoot_um=0.5, overshoot_on_move=2)
    stack = run_zscan(PLAN, stage, BufferReusingCamera(), position_tolerance_um=0.6)
    assert stack.complete and stack.measured_um[1] == 2.5


def test_a_reading_outside_the_limits_is_a_stage_fault() -> None:
    # the start is the lower limit; the last move ends 1 um past it
    stage = OvershootingStage(
        overshoot_um=1.0, overshoot_on_move=5, limits_um=(0.0, 100.0), position_um=0.0
    )
    with pytest.raises(AcquisitionError) as info:
        run_zscan(PLAN, stage, BufferReusingCamera(), position_tolerance_um=2.0)
    cause = stage_fault_of(info)
    assert "outside the stage limits [0.0, 100.0] um" in str(cause)


def test_readings_within_the_tolerances_are_accepted() -> None:
    # noise well inside a quarter spacing and the readout tolerance
    stage = MockZStage(position_noise_um=0.01, seed=3)
    stack = run_zscan(ZScanPlan(8.0, 2.0, 4), stage, BufferReusingCamera())
    assert stack.complete and np.all(np.abs(stack.measured_um - stack.commanded_um) < 0.05)


# ----------------------------------------------------------------- 3. the start, at rest


def test_the_start_is_read_after_the_stage_is_idle() -> None:
    stage = MockZStage(position_um=0.0)
    stage.move_to_um(50.0)  # handed over still moving (50 ms at 1000 um/s)
    stack = run_zscan(PLAN, stage, BufferReusingCamera())
    assert stack.start_um == 50.0
    assert stage.commanded_um == [50.0, 54.0, 53.0, 52.0, 51.0, 50.0]


def test_a_start_that_does_not_hold_still_is_refused_before_any_move() -> None:
    stage = SettlingStage(idle_early_ms=20.0)
    stage.move_to_um(50.0)  # "idle" 20 ms before the end of a 50 ms move
    with pytest.raises(StagePositionError, match="two readings of the start") as info:
        run_zscan(PLAN, stage, BufferReusingCamera())
    assert "nothing was moved" in str(info.value)
    assert stage.commanded_um == [50.0]  # the user's move only


def test_a_nan_start_is_refused_before_any_move() -> None:
    stage = NaNReadingStage(nan_on_read=2)
    with pytest.raises(StagePositionError, match="not finite"):
        run_zscan(PLAN, stage, BufferReusingCamera())
    assert stage.commanded_um == []


def test_a_failed_wait_before_the_start_read_stops_the_stage() -> None:
    stage = MockZStage(hang_on_move=1)
    stage.move_to_um(10.0)  # hangs
    with pytest.raises(StageTimeoutError):
        run_zscan(PLAN, stage, BufferReusingCamera(), timeout_s=1.0)
    assert stage.stop_count == 1 and stage.commanded_um == [10.0]


# ----------------------------------------------------------------- 4. frame dtypes


class ScriptedCamera:
    """Returns the given frames in turn (fresh arrays)."""

    def __init__(self, frames: list[Any]) -> None:
        self.exposure_ms = 1.0
        self.frames = list(frames)

    def set_exposure_ms(self, ms: float) -> None:
        self.exposure_ms = ms

    def snap(self, timeout_s: float | None = None) -> Any:
        return self.frames.pop(0)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((2, 2), dtype=bool),
        np.zeros((2, 2), dtype=complex),
        np.zeros((2, 2), dtype=object),
        np.full((2, 2), "a"),
        np.zeros((2, 2), dtype="datetime64[s]"),
    ],
    ids=["bool", "complex", "object", "str", "datetime"],
)
def test_non_numeric_frames_are_camera_errors(frame: np.ndarray) -> None:
    stage = MockZStage()
    with pytest.raises(AcquisitionError, match="frame 0 of") as info:
        run_zscan(PLAN, stage, ScriptedCamera([frame]))
    cause = info.value.__cause__
    assert isinstance(cause, CameraError)
    assert f"frame 0 has dtype {frame.dtype}" in str(cause) and "integer or float" in str(cause)
    assert len(info.value.partial) == 0 and stage.stop_count == 0


def test_a_dtype_change_mid_scan_is_a_camera_error() -> None:
    frames = [np.zeros((2, 2), np.uint16), np.zeros((2, 2), np.float64)]
    with pytest.raises(AcquisitionError) as info:
        run_zscan(PLAN, MockZStage(), ScriptedCamera(frames))
    cause = info.value.__cause__
    assert isinstance(cause, CameraError)
    assert "frame 1 has dtype float64, unlike the first frame's uint16" in str(cause)
    assert len(info.value.partial) == 1 and info.value.returned_to_start


def test_integer_and_float_frames_of_any_width_are_accepted() -> None:
    for dtype in (np.uint8, np.int16, np.uint32, np.float32, np.float64):
        frames = [np.full((2, 2), k, dtype) for k in range(5)]
        stack = run_zscan(PLAN, MockZStage(), ScriptedCamera(frames))
        assert [f.dtype for f in stack.frames] == [np.dtype(dtype)] * 5


# ----------------------------------------------------------------- 5. the executor's deadline


def test_a_stage_ignoring_its_timeout_is_timed_out_by_the_executor() -> None:
    stage = SlowStage(delay_s=30.0, slow_on_move=2)  # move 2 takes 30 s, its wait ignores 5 s
    with pytest.raises(AcquisitionError, match="StageTimeoutError") as info:
        run_zscan(PLAN, stage, BufferReusingCamera(), timeout_s=5.0)
    cause = stage_fault_of(info)
    assert isinstance(cause, StageTimeoutError) and "timeout_s=5.0 s" in str(cause)
    assert len(info.value.partial) == 1
    assert stage.stop_count == 1 and moves_after_first_stop(stage) == []
    assert stage.clock.time() < 60.0  # simulated: the test did not wait


@pytest.mark.parametrize(
    "clock",
    [None, SimpleNamespace(time=12.0, sleep="fast")],
    ids=["no clock", "clock not a clock"],
)
def test_the_deadline_uses_the_wall_clock_for_a_stage_without_clock(
    monkeypatch: pytest.MonkeyPatch, clock: object
) -> None:
    slow = SlowStage(delay_s=30.0, slow_on_move=3)

    class Driver:  # a driver without a usable clock attribute, wrapping the slow mock
        def __init__(self) -> None:
            if clock is not None:
                self.clock = clock  # an unrelated attribute of that name
            self.limits_um = slow.limits_um
            self.get_position_um = slow.get_position_um
            self.move_to_um = slow.move_to_um
            self.wait_until_idle = slow.wait_until_idle
            self.stop = slow.stop

    import time

    # time.monotonic follows the mock's clock here, so the test does not wait
    monkeypatch.setattr(time, "monotonic", slow.clock.time)
    with pytest.raises(AcquisitionError, match="StageTimeoutError") as info:
        run_zscan(PLAN, Driver(), BufferReusingCamera(), timeout_s=5.0)
    assert len(info.value.partial) == 2 and slow.stop_count == 1


def test_a_slow_stage_within_the_timeout_is_fine() -> None:
    stage = SlowStage(delay_s=2.0)
    stack = run_zscan(PLAN, stage, BufferReusingCamera(), timeout_s=5.0)
    assert stack.complete and stage.stop_count == 0


# ----------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"position_tolerance_um": -0.1}, ValueError, "position_tolerance_um"),
        ({"position_tolerance_um": float("nan")}, ValueError, "position_tolerance_um"),
        ({"position_tolerance_um": "1"}, TypeError, "position_tolerance_um"),
        ({"readout_tolerance_um": -1.0}, ValueError, "readout_tolerance_um"),
        ({"readout_tolerance_um": float("inf")}, ValueError, "readout_tolerance_um"),
        ({"readout_tolerance_um": None}, TypeError, "readout_tolerance_um"),
    ],
)
def test_bad_tolerances_are_refused_before_motion(kwargs: dict, exc: type, match: str) -> None:
    stage = MockZStage()
    with pytest.raises(exc, match=match):
        run_zscan(PLAN, stage, BufferReusingCamera(), **kwargs)
    assert stage.log == []


def test_zero_tolerances_demand_exact_positions() -> None:
    stack = run_zscan(
        PLAN,
        MockZStage(),
        BufferReusingCamera(),
        position_tolerance_um=0.0,
        readout_tolerance_um=0.0,
    )
    assert stack.complete
    with pytest.raises(AcquisitionError):
        run_zscan(
            PLAN,
            MockZStage(position_noise_um=1e-6),
            BufferReusingCamera(),
            position_tolerance_um=0.0,
        )
