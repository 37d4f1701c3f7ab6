"""The executor's motion safety, real-time deadlines and memory (reversed stages, blocking
devices, NaN frames, frames not kept), each against the doubles of the testing kit."""

from __future__ import annotations

import gc
import math
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanoro_optics.acquire import run_zscan
from nanoro_optics.hardware import (
    AcquisitionError,
    CameraError,
    CameraTimeoutError,
    MockZStage,
    StageFault,
    StagePositionError,
    StageTimeoutError,
)
from nanoro_optics.testing.doubles import (
    FAULT_SCAN_KINDS,
    BlockingCamera,
    BufferReusingCamera,
    FaultScan,
    LateReportingStage,
    ReversedStage,
    run_fault_scan,
)
from nanoro_optics.zscan import ZScanPlan

#: Real-time deadline of the tests below (s), and what a scan may take beyond it (thread
#: start-up and a loaded machine).
DEADLINE_S = 0.3
SLACK_S = 1.0


def moves(stage: MockZStage) -> list[tuple[float, float]]:
    """(commanded, position when commanded) of every move command."""
    return [(e.commanded_um, e.measured_um) for e in stage.log if e.kind == "move"]


# ------------------------------------------------------------------ a reversed stage


def test_a_reversed_stage_is_stopped_after_the_overshoot_below_the_start() -> None:
    stage = ReversedStage(position_um=100.0, limits_um=(0.0, 200.0))
    with pytest.raises(AcquisitionError) as info:
        run_zscan(ZScanPlan(10.0, 2.0, 5, start_um=100.0), stage, BufferReusingCamera(),
                  backlash_um=2.0)  # fmt: skip
    cause = info.value.__cause__
    assert isinstance(cause, StagePositionError) and "backlash overshoot" in str(cause)
    assert cause.measured_um == 88.0 and cause.commanded_um == 112.0
    assert moves(stage) == [(112.0, 100.0)]  # no second move (it went to 66 um)
    assert stage.stop_count == 1 and info.value.stage_stopped
    assert min(stage.reached_um) == 88.0


def test_a_reversed_stage_without_overshoot_stops_after_its_first_move() -> None:
    stage = ReversedStage(position_um=100.0, limits_um=(0.0, 200.0))
    with pytest.raises(AcquisitionError, match="below the start"):
        run_zscan(ZScanPlan(10.0, 2.0, 5), stage, BufferReusingCamera())
    assert len(moves(stage)) == 1 and stage.stop_count == 1


def test_the_overshoot_reading_is_checked_against_the_limits() -> None:
    class Wild(MockZStage):
        def get_position_um(self) -> float:
            return 1e6 if self.move_count == 1 else super().get_position_um()

    stage = Wild(position_um=0.0, limits_um=(-50.0, 50.0))
    with pytest.raises(AcquisitionError, match="outside the stage limits"):
        run_zscan(ZScanPlan(4.0, 1.0, 4), stage, BufferReusingCamera(), backlash_um=1.0)
    assert len(moves(stage)) == 1


def test_a_healthy_stage_with_play_still_completes_with_an_overshoot() -> None:
    stage = MockZStage(position_um=0.0, backlash_um=0.5)
    stack = run_zscan(ZScanPlan(4.0, 1.0, 4), stage, BufferReusingCamera(), backlash_um=1.0)
    assert stack.complete and stack.measured_um.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]


# ------------------------------------------------------------------ the start reading


def test_a_reading_that_raises_at_the_start_stops_the_stage() -> None:
    class BadRead(MockZStage):
        def get_position_um(self) -> float:
            raise StageFault("serial port gone")

    stage = BadRead()
    with pytest.raises(StageFault, match="serial port gone"):
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, BufferReusingCamera())
    assert stage.stop_count == 1 and moves(stage) == []


# ------------------------------------------------------------------ real-time deadlines


def test_a_snap_longer_than_the_deadline_is_timed_out_in_real_time() -> None:
    cam = BlockingCamera(block_on_snap=2, block_s=5 * DEADLINE_S)
    stage = MockZStage(position_um=0.0)
    t0 = time.perf_counter()
    try:
        with pytest.raises(AcquisitionError) as info:
            run_zscan(ZScanPlan(2.0, 1.0, 2), stage, cam, timeout_s=DEADLINE_S)
        elapsed = time.perf_counter() - t0
    finally:
        cam.release()
    assert isinstance(info.value.__cause__, CameraTimeoutError)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert elapsed < DEADLINE_S + SLACK_S
    assert info.value.returned_to_start and stage.get_position_um() == 0.0
    assert len(info.value.partial) == 1


def test_a_snap_that_never_returns_does_not_hang_the_scan() -> None:
    cam = BlockingCamera(block_on_snap=1)  # until released
    t0 = time.perf_counter()
    try:
        with pytest.raises(AcquisitionError, match="did not return within"):
            run_zscan(ZScanPlan(2.0, 1.0, 2), MockZStage(), cam, timeout_s=DEADLINE_S)
        assert time.perf_counter() - t0 < DEADLINE_S + SLACK_S
    finally:
        cam.release()


def test_a_stage_wait_past_the_deadline_in_real_time_stops_the_stage() -> None:
    stage = LateReportingStage(late_s=5 * DEADLINE_S, late_on_move=2, position_um=0.0)
    t0 = time.perf_counter()
    with pytest.raises(AcquisitionError) as info:
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, BufferReusingCamera(), timeout_s=DEADLINE_S)
    assert time.perf_counter() - t0 < DEADLINE_S + SLACK_S
    assert isinstance(info.value.__cause__, StageTimeoutError)
    assert info.value.stage_stopped and stage.stop_count == 1 and len(moves(stage)) == 2


def test_a_late_wait_for_the_start_stops_the_stage_and_commands_nothing() -> None:
    stage = LateReportingStage(late_s=5 * DEADLINE_S)
    t0 = time.perf_counter()
    with pytest.raises(StageTimeoutError, match="did not return within"):
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, BufferReusingCamera(), timeout_s=DEADLINE_S)
    assert time.perf_counter() - t0 < DEADLINE_S + SLACK_S
    assert stage.stop_count == 1 and moves(stage) == []


# ------------------------------------------------------------------ NaN frames


class ValueCamera(BufferReusingCamera):
    """A float camera that delivers ``bad`` on snap ``at``."""

    def __init__(self, *, at: int, bad: float) -> None:
        super().__init__(shape=(2, 2), dtype=np.float32)
        self.at, self.bad = at, bad

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        frame = super().snap(timeout_s)
        if self.snap_count == self.at:
            frame[0, 1] = self.bad
        return frame


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_frame_is_refused_without_a_fuser(bad: float) -> None:
    stage = MockZStage(position_um=0.0)
    with pytest.raises(AcquisitionError, match="frame 1 of 3 failed") as info:
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, ValueCamera(at=2, bad=bad))
    cause = info.value.__cause__
    assert isinstance(cause, CameraError) and "1 NaN or infinite pixel(s) of 4" in str(cause)
    assert len(info.value.partial) == 1 and info.value.returned_to_start


# ------------------------------------------------------------------ frames not kept


class CountingFuser:
    """Sums the frames (a stand-in for StackFuser: O(1) memory in the frame count)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.z: list[float] = []

    def add(self, frame: np.ndarray, *, z_um: float | None = None) -> None:
        f = frame.astype(np.float64)
        self.total = f if self.total is None else self.total + f
        self.z.append(float(z_um if z_um is not None else math.nan))

    def result(self) -> tuple[float, int]:
        assert self.total is not None
        return float(self.total.sum()), len(self.z)


def test_keep_frames_false_keeps_no_frame_and_records_every_position() -> None:
    stack = run_zscan(ZScanPlan(4.0, 1.0, 4), MockZStage(), BufferReusingCamera(),
                      fuser=CountingFuser(), keep_frames=False)  # fmt: skip
    assert stack.frames == () and not stack.frames_kept and len(stack) == 5
    assert stack.commanded_um.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert stack.fused == (16 * (1 + 2 + 3 + 4 + 5), 5)
    with pytest.raises(ValueError, match="not kept"):
        stack.as_array()


class ForgetfulCamera(BufferReusingCamera):
    """The kit's camera without its record of delivered frames (which would grow in N)."""

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        frame = super().snap(timeout_s)
        self.delivered.clear()
        return frame


def _peak_bytes(n_steps: int, *, keep: bool) -> int:
    cam = ForgetfulCamera(shape=(64, 64), dtype=np.float64)
    plan = ZScanPlan(float(n_steps), 1.0, n_steps)
    gc.collect()
    tracemalloc.start()
    try:
        stack = run_zscan(plan, MockZStage(), cam, fuser=CountingFuser(), keep_frames=keep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stack) == n_steps + 1
    return peak


FRAME_BYTES = 64 * 64 * 8


def test_keep_frames_false_memory_is_flat_in_the_number_of_frames() -> None:
    _peak_bytes(2, keep=False)  # first use: lazy imports and caches, not frames
    few, many = _peak_bytes(5, keep=False), _peak_bytes(60, keep=False)
    # 55 more frames of 32 KiB each would add 1.8 MB; allow a few frames' worth of noise
    assert abs(many - few) < 4 * FRAME_BYTES, (few, many)
    kept = _peak_bytes(60, keep=True)
    assert kept - few > 50 * FRAME_BYTES  # the measure sees kept frames


def test_a_fault_with_frames_not_kept_carries_the_fused_result_and_positions() -> None:
    stage = MockZStage(position_um=0.0, fail_on_move=4)
    with pytest.raises(AcquisitionError, match="3 frame\\(s\\) fused") as info:
        run_zscan(ZScanPlan(4.0, 1.0, 4), stage, BufferReusingCamera(),
                  fuser=CountingFuser(), keep_frames=False)  # fmt: skip
    partial = info.value.partial
    assert partial.frames == () and partial.commanded_um.tolist() == [4.0, 3.0, 2.0]
    assert partial.measured_um.tolist() == [4.0, 3.0, 2.0]
    assert partial.fused == (16 * (1 + 2 + 3), 3)


def test_keep_frames_false_needs_somewhere_for_the_frames() -> None:
    stage = MockZStage()
    with pytest.raises(ValueError, match="keep_frames=False needs a fuser"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), stage, BufferReusingCamera(), keep_frames=False)
    with pytest.raises(TypeError, match="keep_frames"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), stage, BufferReusingCamera(), keep_frames=0)  # type: ignore[arg-type]
    assert stage.log == []


# ------------------------------------------------------------------ fault injection


@st.composite
def fault_scans(draw: st.DrawFn) -> FaultScan:
    count = draw(st.integers(0, 12))
    spacing = draw(st.sampled_from([0.5, 1.0, 3.0]))
    backlash = draw(st.sampled_from([0.0, 0.5, 2.0]))
    lo = draw(st.floats(-500.0, 500.0))
    width = draw(st.floats(5.0, 100.0))
    start = draw(st.floats(lo, lo + width))
    return FaultScan(
        kind=draw(st.sampled_from(FAULT_SCAN_KINDS)),
        at=draw(st.integers(1, 4)),
        size=draw(st.sampled_from([0.05, 0.5, 2.0, 30.0])),
        limits_um=(lo, lo + width),
        start_um=start,
        spacing_um=spacing,
        count=count,
        backlash_um=backlash,
        stage_backlash_um=draw(st.sampled_from([0.0, 0.5])),
        noise_um=draw(st.sampled_from([0.0, 0.01])),
        plan_has_start=draw(st.booleans()),
        return_to_start=draw(st.booleans()),
        timeout_s=0.1,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fault_scans())
@example(FaultScan(kind="reversed", backlash_um=2.0, timeout_s=0.1))
@example(FaultScan(kind="blocking", at=2, timeout_s=0.1))
@example(FaultScan(kind="late", at=2, timeout_s=0.1))
def test_fault_injection_scans_stay_safe(scan: FaultScan) -> None:
    out = run_fault_scan(scan)
    assert out.safe, out
    if scan.kind in ("reversed", "late", "blocking") and out.outcome == "stopped":
        assert out.moves_from_below_start == 0


def test_the_fault_scan_audit_sees_an_unsafe_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    import nanoro_optics.acquire as acquire

    # an executor that trusts every reading lets a reversed stage move on below the start
    monkeypatch.setattr(acquire._ReadingCheck, "problem", lambda *a, **k: None)
    out = run_fault_scan(FaultScan(kind="reversed", count=3, timeout_s=1.0))
    assert out.moves_from_below_start >= 1 and not out.safe


def test_fault_scan_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="kind"):
        FaultScan(kind="gremlins")
    with pytest.raises(ValueError, match="start_um"):
        FaultScan(start_um=5000.0)
    with pytest.raises(ValueError, match="timeout_s"):
        FaultScan(timeout_s=1e300)
    with pytest.raises(TypeError, match="scan"):
        run_fault_scan("reversed")  # type: ignore[arg-type]


def test_ctrl_c_while_a_call_is_pending_stops_the_stage_at_once() -> None:
    import signal
    import threading

    class SlowWait(MockZStage):
        def wait_until_idle(self, timeout_s: float | None = None) -> None:
            if self.move_count == 2:  # Ctrl-C reaches the executor's thread meanwhile
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                time.sleep(5 * DEADLINE_S)
            super().wait_until_idle(timeout_s)

    stage = SlowWait(position_um=0.0)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt) as info:
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, BufferReusingCamera(), timeout_s=10.0)
    stopped_after = time.perf_counter() - t0
    assert info.value.partial.commanded_um.tolist() == [2.0]
    assert stage.stop_count == 1  # not queued behind the pending wait
    assert stopped_after < 4 * DEADLINE_S
