"""Tests of the safe Z-scan executor on the mock stage with a cheap camera double.

The same executor contract is checked on every backend in ``BACKENDS``: the mock stage
directly, and (when pymmcore-plus is installed) the pymmcore-plus adapters driving
pure-Python devices that delegate to the mock (see ``tests/test_mmcore.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoro_optics.acquire import FrameInfo, ZStack, run_zscan, scan_targets_um
from nanoro_optics.hardware import (
    AcquisitionError,
    AcquisitionInterrupted,
    CameraError,
    MockZStage,
    StageFault,
    StageLimitError,
    StageTimeoutError,
)
from nanoro_optics.zscan import PlanProblemsError, ZScanLimits, ZScanPlan


class CountingCamera:
    """A camera double: frame k is a 2x2 array filled with k; faults on request."""

    def __init__(
        self,
        *,
        fail_on_snap: int | None = None,
        interrupt_on_snap: int | None = None,
        shape: tuple[int, ...] = (2, 2),
    ) -> None:
        self.exposure_ms = 1.0
        self.fail_on_snap = fail_on_snap
        self.interrupt_on_snap = interrupt_on_snap
        self.shape = shape
        self.snaps = 0
        self.delivered: list[np.ndarray] = []

    def set_exposure_ms(self, ms: float) -> None:
        self.exposure_ms = ms

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        self.snaps += 1
        if self.fail_on_snap == self.snaps:
            raise CameraError(f"injected camera fault on snap {self.snaps}")
        if self.interrupt_on_snap == self.snaps:
            raise KeyboardInterrupt
        frame = np.full(self.shape, float(len(self.delivered)))
        self.delivered.append(frame)
        return frame


@dataclass
class Rig:
    """What a backend gives the tests: the objects to pass and the mock underneath."""

    stage: Any  # given to run_zscan
    camera: Any  # given to run_zscan
    mock: MockZStage  # the simulated drive (its log is the ground truth of what moved)
    cam: CountingCamera  # the camera double underneath


def _mock_rig(mock: MockZStage, cam: CountingCamera) -> Rig:
    return Rig(mock, cam, mock, cam)


#: name -> factory(mock, camera) -> Rig; test_mmcore.py runs the same checks on its rig
BACKENDS: dict[str, Callable[[MockZStage, CountingCamera], Rig]] = {"mock": _mock_rig}


def frames_match(got: tuple[np.ndarray, ...], delivered: list[np.ndarray]) -> bool:
    """Same frames in the same order (values: an adapter may copy them into its buffers)."""
    return len(got) == len(delivered) and all(
        np.array_equal(a, b) for a, b in zip(got, delivered, strict=True)
    )


def moves_after_first_stop(mock: MockZStage) -> list[float]:
    kinds = [e.kind for e in mock.log]
    if "stop" not in kinds:
        return []
    first = kinds.index("stop")
    return [e.commanded_um for e in mock.log[first:] if e.kind == "move"]


# --------------------------------------------------------------------------- the property


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    lo = draw(st.floats(-1000.0, 500.0))
    width = draw(st.floats(1.0, 1500.0))
    hi = lo + width
    start = draw(st.floats(lo, hi))
    spacing = draw(st.floats(0.05, 40.0))
    count = draw(st.integers(0, 25))
    plan_has_start = draw(st.booleans())
    fault = draw(st.sampled_from(["none", "stage", "hang", "camera", "interrupt"]))
    fault_at = draw(st.integers(1, count + 3))
    return {
        "limits": (lo, hi),
        "start": start,
        "plan": ZScanPlan(
            spacing * count, spacing, count, start_um=start if plan_has_start else None
        ),
        "backlash": draw(st.sampled_from([0.0, 0.5, 3.0])),
        "stage_backlash": draw(st.sampled_from([0.0, 0.5])),
        "noise": draw(st.sampled_from([0.0, 0.01])),
        "fault": fault,
        "fault_at": fault_at,
        "return_to_start": draw(st.booleans()),
    }


def check_scenario(sc: dict[str, Any], make_rig: Callable[..., Rig]) -> None:
    fault, k = sc["fault"], sc["fault_at"]
    mock = MockZStage(
        limits_um=sc["limits"],
        position_um=sc["start"],
        backlash_um=sc["stage_backlash"],
        position_noise_um=sc["noise"],
        fail_on_move=k if fault == "stage" else None,
        hang_on_move=k if fault == "hang" else None,
        settle_ms=1.0,
    )
    cam = CountingCamera(
        fail_on_snap=k if fault == "camera" else None,
        interrupt_on_snap=k if fault == "interrupt" else None,
    )
    rig = make_rig(mock, cam)
    plan: ZScanPlan = sc["plan"]
    start = sc["start"]
    lo, hi = sc["limits"]
    positions = plan.positions_um(start_um=None if plan.start_um is not None else start)
    targets = scan_targets_um(positions, backlash_um=sc["backlash"])
    fits = all(lo <= z <= hi for z in targets)

    result: ZStack | None = None
    error: BaseException | None = None
    try:
        result = run_zscan(
            plan,
            rig.stage,
            rig.camera,
            backlash_um=sc["backlash"],
            return_to_start=sc["return_to_start"],
            timeout_s=60.0,
        )
    except (AcquisitionError, AcquisitionInterrupted, StageLimitError) as exc:
        error = exc

    commanded = mock.commanded_um
    # 1. nothing outside the limits, nothing below the start, ever
    assert all(lo <= z <= hi for z in commanded), (commanded, sc["limits"])
    assert all(z >= start for z in commanded), (commanded, start)
    if not fits:
        # 2. refused before any motion
        assert isinstance(error, StageLimitError) and not isinstance(error, AcquisitionError)
        assert commanded == [] and cam.snaps == 0
        return
    # the commands are the planned targets in order, then (after a camera fault) the start
    returned = getattr(error, "returned_to_start", False)
    scan_moves = commanded[:-1] if returned else commanded
    assert scan_moves == targets[: len(scan_moves)]
    if error is None:
        assert result is not None and result.complete
        assert len(result) == plan.image_count
        np.testing.assert_array_equal(result.commanded_um, positions)
        assert frames_match(result.frames, cam.delivered)
        # 3. back at the start after success (the last image is taken there)
        assert commanded == targets and commanded[-1] == start
        assert mock.get_position_um() == pytest.approx(start, abs=5 * sc["noise"] + 1e-9)
        assert mock.stop_count == 0
        return
    partial = error.partial  # type: ignore[attr-defined]
    assert isinstance(partial, ZStack) and not partial.complete
    # 4. every frame captured before the fault is returned, in order, with its position
    assert len(partial) == len(cam.delivered)
    assert frames_match(partial.frames, cam.delivered)
    np.testing.assert_array_equal(partial.commanded_um, positions[: len(partial)])
    if fault in ("stage", "hang", "interrupt"):
        # 5. stopped, and not moved again
        assert error.stage_stopped  # type: ignore[attr-defined]
        assert mock.stop_count >= 1
        assert moves_after_first_stop(mock) == []
        if fault == "interrupt":
            assert isinstance(error, AcquisitionInterrupted)
        else:
            assert isinstance(error.__cause__, (StageFault, StageTimeoutError))
    else:  # camera fault, healthy stage
        assert fault == "camera"
        assert isinstance(error.__cause__, CameraError)
        assert mock.stop_count == 0
        if sc["return_to_start"]:
            assert error.returned_to_start  # type: ignore[attr-defined]
            assert commanded[-1] == start
        else:
            assert not error.returned_to_start  # type: ignore[attr-defined]


@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sc=scenarios())
def test_executor_safety_property_mock(sc: dict[str, Any]) -> None:
    check_scenario(sc, BACKENDS["mock"])


# --------------------------------------------------------------------------- examples


def test_seed_sequence_and_positions() -> None:
    """Seed 000: 5 steps of 1 um, up 5 um for the first image, then down to the start."""
    stage = MockZStage(position_um=20.0)
    cam = CountingCamera()
    stack = run_zscan(ZScanPlan(5.0, 1.0, 5), stage, cam)
    assert stage.commanded_um == [25.0, 24.0, 23.0, 22.0, 21.0, 20.0]
    np.testing.assert_array_equal(stack.commanded_um, [25, 24, 23, 22, 21, 20])
    np.testing.assert_array_equal(stack.measured_um, stack.commanded_um)
    assert stack.start_um == 20.0 and stack.complete and stack.returned_to_start
    assert stack.as_array().shape == (6, 2, 2)
    assert stack.plan == ZScanPlan(5.0, 1.0, 5)
    with pytest.raises(ValueError, match="read-only"):
        stack.commanded_um[0] = 1.0


def test_plan_start_is_used_and_stage_goes_there() -> None:
    plan = ZScanPlan(60.0, 10.0, 6, start_um=-10.0)
    stage = MockZStage(position_um=200.0)
    stack = run_zscan(plan, stage, CountingCamera())
    assert stage.commanded_um == [50.0, 40.0, 30.0, 20.0, 10.0, 0.0, -10.0]
    assert stack.start_um == -10.0 and stage.get_position_um() == -10.0


def test_single_image_plan() -> None:
    stage = MockZStage(position_um=3.0)
    stack = run_zscan(ZScanPlan(0.0, 1.0, 0), stage, CountingCamera())
    assert stage.commanded_um == [3.0] and len(stack) == 1


def test_backlash_overshoot_makes_positions_exact() -> None:
    plan = ZScanPlan(4.0, 1.0, 4)
    play = MockZStage(position_um=0.0, backlash_um=0.8)
    stack = run_zscan(plan, play, CountingCamera())
    assert stack.measured_um[0] == pytest.approx(4.0 - 0.8)  # approached from below
    play = MockZStage(position_um=0.0, backlash_um=0.8)
    stack = run_zscan(plan, play, CountingCamera(), backlash_um=1.0)
    assert play.commanded_um == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    np.testing.assert_allclose(stack.measured_um, stack.commanded_um, atol=1e-12)


def test_overshoot_is_checked_against_limits() -> None:
    stage = MockZStage(limits_um=(0.0, 10.0), position_um=5.0)
    with pytest.raises(StageLimitError, match=r"overshoot 10\.5"):
        run_zscan(ZScanPlan(5.0, 1.0, 5), stage, CountingCamera(), backlash_um=0.5)
    assert stage.log == []
    run_zscan(ZScanPlan(5.0, 1.0, 5), stage, CountingCamera())  # fits without overshoot


def test_plan_problems_refused_before_motion() -> None:
    stage = MockZStage()
    with pytest.raises(PlanProblemsError, match="out of sync"):
        run_zscan(ZScanPlan(54.0, 12.0, 5), stage, CountingCamera())
    lim = ZScanLimits.for_objective("Nikon MRP70101")
    with pytest.raises(PlanProblemsError, match="below the minimum"):
        run_zscan(ZScanPlan(6.0, 0.6, 10), stage, CountingCamera(), limits=lim)
    assert stage.log == []


def test_settle_goes_through_the_simulated_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(_: float) -> None:
        raise AssertionError("time.sleep must not be used with a simulated clock")

    monkeypatch.setattr(time, "sleep", no_sleep)
    stage = MockZStage(settle_ms=0.0, speed_um_per_s=1e9)
    run_zscan(ZScanPlan(2.0, 1.0, 2), stage, CountingCamera(), settle_ms=100.0)
    assert stage.clock.time() == pytest.approx(0.3, abs=1e-6)
    slept: list[float] = []
    run_zscan(ZScanPlan(2.0, 1.0, 2), stage, CountingCamera(), settle_ms=5.0, sleep=slept.append)
    assert slept == [0.005] * 3


class FuserDouble:
    def __init__(self, *, fail_at: int | None = None) -> None:
        self.added: list[tuple[np.ndarray, float | None]] = []
        self.fail_at = fail_at

    def add(self, frame: np.ndarray, *, z_um: float | None = None) -> None:
        if self.fail_at == len(self.added):
            raise RuntimeError("fuser broke")
        self.added.append((frame, z_um))

    def result(self) -> str:
        return f"fused {len(self.added)}"


def test_fuser_gets_frames_with_measured_z_and_callbacks_run() -> None:
    stage = MockZStage(position_um=0.0, position_noise_um=0.05, seed=1)
    fuser = FuserDouble()
    seen: list[FrameInfo] = []
    prog: list[tuple[int, int]] = []
    stack = run_zscan(
        ZScanPlan(3.0, 1.0, 3),
        stage,
        CountingCamera(),
        fuser=fuser,
        on_frame=lambda f, info: seen.append(info),
        progress=lambda d, t: prog.append((d, t)),
    )
    assert stack.fused == "fused 4"
    assert [z for _, z in fuser.added] == stack.measured_um.tolist()
    assert not np.array_equal(stack.measured_um, stack.commanded_um)  # noise was there
    assert [i.index for i in seen] == [0, 1, 2, 3] and seen[0].count == 4
    assert seen[1].commanded_um == 2.0 and seen[1].measured_um == stack.measured_um[1]
    assert prog == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_fuser_can_get_commanded_positions() -> None:
    stage = MockZStage(position_um=0.0, position_noise_um=0.05, seed=1)
    fuser = FuserDouble()
    stack = run_zscan(
        ZScanPlan(3.0, 1.0, 3), stage, CountingCamera(), fuser=fuser, fuse_z="commanded"
    )
    assert [z for _, z in fuser.added] == [3.0, 2.0, 1.0, 0.0] == stack.commanded_um.tolist()


def test_fuser_fault_returns_to_start_and_keeps_frames() -> None:
    stage = MockZStage(position_um=0.0)
    with pytest.raises(AcquisitionError, match="frame 2 of 4") as info:
        run_zscan(ZScanPlan(3.0, 1.0, 3), stage, CountingCamera(), fuser=FuserDouble(fail_at=2))
    # the third frame arrived but could not be fused: it is kept with the others
    assert len(info.value.partial) == 3
    assert info.value.returned_to_start and stage.get_position_um() == 0.0


def test_callback_fault_is_treated_like_camera_fault() -> None:
    stage = MockZStage(position_um=0.0)

    def bad(frame: np.ndarray, info: FrameInfo) -> None:
        if info.index == 1:
            raise OSError("disk full")

    with pytest.raises(AcquisitionError, match="disk full") as info:
        run_zscan(ZScanPlan(3.0, 1.0, 3), stage, CountingCamera(), on_frame=bad)
    assert isinstance(info.value.__cause__, OSError)
    assert stage.commanded_um[-1] == 0.0 and stage.stop_count == 0


def test_stage_timeout_stops_and_keeps_frames() -> None:
    stage = MockZStage(position_um=0.0, speed_um_per_s=1.0, settle_ms=0.0)
    with pytest.raises(AcquisitionError, match="StageTimeoutError") as info:
        run_zscan(ZScanPlan(3.0, 1.0, 3), stage, CountingCamera(), timeout_s=2.0)
    assert len(info.value.partial) == 0  # the 3 um climb takes 3 s
    assert info.value.stage_stopped and stage.stop_count == 1
    assert moves_after_first_stop(stage) == []


def test_return_move_failure_stops_the_stage() -> None:
    # frames at moves 1..2, camera fails on snap 2, the return move (move 3) faults
    stage = MockZStage(position_um=0.0, fail_on_move=3)
    with pytest.raises(AcquisitionError, match="stage fault") as info:
        run_zscan(ZScanPlan(3.0, 1.0, 3), stage, CountingCamera(fail_on_snap=2))
    assert info.value.stage_stopped and not info.value.returned_to_start
    assert isinstance(info.value.__cause__, CameraError)
    assert len(info.value.partial) == 1


def test_interrupt_during_move_stops() -> None:
    class InterruptingStage(MockZStage):
        def wait_until_idle(self, timeout_s: float | None = None) -> None:
            if self.move_count == 2:
                raise KeyboardInterrupt
            super().wait_until_idle(timeout_s)

    stage = InterruptingStage(position_um=0.0)
    with pytest.raises(KeyboardInterrupt) as info:
        run_zscan(ZScanPlan(3.0, 1.0, 3), stage, CountingCamera())
    assert isinstance(info.value, AcquisitionInterrupted)
    assert len(info.value.partial) == 1 and stage.stop_count == 1
    assert moves_after_first_stop(stage) == []


def test_bad_frames_are_camera_faults() -> None:
    class Shifty(CountingCamera):
        def snap(self, timeout_s: float | None = None) -> Any:
            self.shape = (2, 2) if self.snaps == 0 else (3, 3)
            return super().snap(timeout_s)

    stage = MockZStage()
    with pytest.raises(AcquisitionError, match=r"shape \(3, 3\)"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), stage, Shifty())

    class Listy(CountingCamera):
        def snap(self, timeout_s: float | None = None) -> Any:
            return [[1, 2]]

    with pytest.raises(AcquisitionError, match="not a numpy array"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), MockZStage(), Listy())


def test_broken_stop_does_not_hide_the_fault() -> None:
    class BadStop(MockZStage):
        def stop(self) -> None:
            raise RuntimeError("stop failed too")

    with pytest.raises(AcquisitionError) as info:
        run_zscan(ZScanPlan(1.0, 1.0, 1), BadStop(fail_on_move=1), CountingCamera())
    assert isinstance(info.value.__cause__, StageFault)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"settle_ms": -1.0}, ValueError, "settle_ms"),
        ({"backlash_um": float("nan")}, ValueError, "backlash_um"),
        ({"timeout_s": 0.0}, ValueError, "timeout_s"),
        ({"return_to_start": 1}, TypeError, "return_to_start"),
        ({"on_frame": 3}, TypeError, "on_frame"),
        ({"progress": "x"}, TypeError, "progress"),
        ({"fuser": object()}, TypeError, "fuser"),
        ({"fuse_z": "nominal"}, ValueError, "fuse_z"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    stage = MockZStage()
    with pytest.raises(exc, match=match):
        run_zscan(ZScanPlan(1.0, 1.0, 1), stage, CountingCamera(), **kwargs)
    assert stage.log == []


def test_not_a_stage_or_camera() -> None:
    with pytest.raises(TypeError, match="stage must follow"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), object(), CountingCamera())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="camera must follow"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), MockZStage(), MockZStage())  # type: ignore[arg-type]


def test_zstack_validates_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        ZStack((np.zeros((2, 2)),), [1.0, 2.0], [1.0], 0.0, [1.0], True)
    with pytest.raises(ValueError, match="no frames"):
        ZStack((), [], [], 0.0, [1.0], False).as_array()


def test_limits_property_checked() -> None:
    class WeirdLimits(MockZStage):
        @property
        def limits_um(self) -> tuple[float, float]:
            return (5.0, -5.0)

    with pytest.raises(ValueError, match="lo < hi"):
        run_zscan(ZScanPlan(1.0, 1.0, 1), WeirdLimits(), CountingCamera())
