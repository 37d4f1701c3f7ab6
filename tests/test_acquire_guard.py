"""The public safe-motion layer of the executor: MotionGuard, ReadingCheck, check_frame."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoro_optics.acquire import MAX_TIMEOUT_S, MotionGuard, ReadingCheck, check_frame
from nanoro_optics.hardware import (
    CameraError,
    CameraTimeoutError,
    MockZStage,
    StagePositionError,
    StageTimeoutError,
)
from nanoro_optics.testing import BlockingCamera

#: real-time deadline of the blocking tests, and how late a guard may raise past it
DEADLINE_S = 0.1
LATE_S = 1.0


def _check(**kw: float) -> ReadingCheck:
    args = {"floor_um": 10.0, "lo_um": 0.0, "hi_um": 100.0, "r": 0.1, "p": 0.5} | kw
    return ReadingCheck(args["floor_um"], args["lo_um"], args["hi_um"], args["r"], args["p"])


@pytest.mark.parametrize(
    ("reading", "commanded", "overshoot", "match"),
    [
        (math.nan, 20.0, False, "not finite"),
        ("20", 20.0, False, "not a number"),
        (True, 20.0, False, "not a number"),
        (100.2, 100.0, False, r"outside the stage limits \[0\.0, 100\.0\]"),
        (9.8, 10.0, False, r"below the start 10\.0 um"),
        (20.6, 20.0, False, r"0\.6 um from the commanded 20\.0 um"),
        (9.8, 25.0, True, "below the start"),  # an overshoot is checked against the floor
    ],
)
def test_reading_check_refuses_what_is_wrong(reading, commanded, overshoot, match) -> None:
    with pytest.raises(StagePositionError, match=match) as e:
        _check()(reading, commanded, 3, overshoot=overshoot)
    assert e.value.index == 3 and e.value.commanded_um == commanded


def test_reading_check_accepts_within_its_tolerances() -> None:
    check = _check()
    assert check(9.95, 10.0, 0) == 9.95  # below the floor within the readout tolerance
    assert check(22.0, 25.0, 0, overshoot=True) == 22.0  # an overshoot lands short
    assert check(np.float32(20.25), 20.0, None) == pytest.approx(20.25)
    named = ReadingCheck(10.0, 0.0, 100.0, 0.1, 0.5, floor_name="the bottom of the range")
    with pytest.raises(StagePositionError, match=r"below the bottom of the range 10\.0 um"):
        named(5.0, 5.0, 0)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"floor_um": math.inf}, ValueError, "floor_um must be finite"),
        ({"lo_um": 5.0, "hi_um": 1.0}, ValueError, r"\(lo_um, hi_um\)"),
        ({"r": -0.1}, ValueError, "readout_tolerance_um must be >= 0"),
        ({"p": math.nan}, ValueError, "position_tolerance_um"),
    ],
)
def test_reading_check_validates_its_fields(kw, error, match) -> None:
    with pytest.raises(error, match=match):
        _check(**kw)


@given(
    z=st.floats(-1e3, 1e3, allow_nan=False),
    commanded=st.floats(-1e3, 1e3, allow_nan=False),
)
def test_an_accepted_reading_keeps_every_rule(z: float, commanded: float) -> None:
    check = _check(floor_um=-10.0, lo_um=-500.0, hi_um=500.0)
    try:
        got = check(z, commanded, 0)
    except StagePositionError:
        return
    assert got == z and -500.1 <= z <= 500.1 and z >= -10.1 and abs(z - commanded) <= 0.5


def test_check_frame_copies_and_refuses() -> None:
    buf = np.arange(12, dtype=np.float32).reshape(3, 4)
    own = check_frame(buf, index=0)
    buf[0, 0] = 99.0  # the camera reuses its buffer
    assert own[0, 0] == 0.0 and not own.flags.writeable and own.flags.c_contiguous
    bad = buf.copy()
    bad[1, 1] = np.nan
    with pytest.raises(CameraError, match="frame 2 has 1 NaN or infinite pixel"):
        check_frame(bad, index=2)
    with pytest.raises(CameraError, match="unlike the first frame's"):
        check_frame(buf.astype(np.float64), index=1, like=own)
    with pytest.raises(CameraError, match="not a numpy array"):
        check_frame([[1, 2]], index=0)
    with pytest.raises(CameraError, match="dtype bool"):
        check_frame(np.zeros((2, 2), bool), index=0)


def test_guard_moves_reads_and_times_out_in_real_time() -> None:
    class BlockingWait(MockZStage):
        gate = threading.Event()

        def wait_until_idle(self, timeout_s: float | None = None) -> None:
            if self.move_count == 2:
                self.gate.wait(30.0)  # ignores timeout_s
            super().wait_until_idle(timeout_s)

    stage = BlockingWait(position_um=10.0)
    check = _check()
    try:
        with MotionGuard(stage, timeout_s=DEADLINE_S) as guard:
            guard.move(12.0)
            assert guard.read(12.0, index=0, check=check) == 12.0
            t0 = time.perf_counter()
            with pytest.raises(StageTimeoutError, match="real time"):
                guard.move(14.0)
            assert time.perf_counter() - t0 < DEADLINE_S + LATE_S
            assert guard.abandoned == 1
            guard.stop()  # a fresh worker: not queued behind the blocked wait
            assert stage.stop_count == 1
    finally:
        BlockingWait.gate.set()


def test_guard_snaps_checked_frames_and_times_out() -> None:
    stage = MockZStage(position_um=0.0)
    cam = BlockingCamera(shape=(4, 4), dtype=np.uint16, block_on_snap=2)
    try:
        with MotionGuard(stage, cam, timeout_s=DEADLINE_S) as guard:
            first = guard.snap(0)
            assert first.shape == (4, 4) and not first.flags.writeable
            t0 = time.perf_counter()
            with pytest.raises(CameraTimeoutError, match="snap 1 did not return"):
                guard.snap(1)
            assert time.perf_counter() - t0 < DEADLINE_S + LATE_S
    finally:
        cam.release()
    with pytest.raises(TypeError, match="no camera"):
        MotionGuard(stage).snap(0)


def test_guard_stop_hides_a_failing_stop_and_arguments_are_checked() -> None:
    class BadStop(MockZStage):
        def stop(self) -> None:
            raise RuntimeError("bus error")

    MotionGuard(BadStop()).stop()  # best effort: nothing raised
    with pytest.raises(ValueError, match="timeout_s"):
        MotionGuard(MockZStage(), timeout_s=0.0)
    with pytest.raises(ValueError, match="timeout_s"):
        MotionGuard(MockZStage(), timeout_s=2 * MAX_TIMEOUT_S)
    with pytest.raises(TypeError, match="ZStage protocol"):
        MotionGuard(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Camera protocol"):
        MotionGuard(MockZStage(), object())  # type: ignore[arg-type]
