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

from nanoro_optics.acquire import (
    DEFAULT_READOUT_TOLERANCE_UM,
    POSITION_TOLERANCE_SPACINGS,
    FrameInfo,
    ZStack,
    run_zscan,
    scan_targets_um,
)
from nanoro_optics.hardware import (
    AcquisitionError,
    AcquisitionInterrupted,
    CameraError,
    MockZStage,
    StageFault,
    StageLimitError,
    StagePositionError,
    StageTimeoutError,
)
from nanoro_optics.testing import (
    DEVICE_FAULT_KINDS,
    BufferReusingCamera,
    DeviceFault,
    assert_stack_consistent,
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
    cam: Any  # the camera double underneath (a kit BufferReusingCamera in the property)


def _mock_rig(mock: MockZStage, cam: Any) -> Rig:
    return Rig(mock, cam, mock, cam)


#: name -> factory(mock, camera) -> Rig; test_mmcore.py runs the same checks on its rig
BACKENDS: dict[str, Callable[[MockZStage, Any], Rig]] = {"mock": _mock_rig}


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


class InterruptingCamera(BufferReusingCamera):
    """The kit's buffer-reusing camera, with a Ctrl-C on one snap."""

    def __init__(self, *, interrupt_on_snap: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.interrupt_on_snap = interrupt_on_snap

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        if self.interrupt_on_snap == self.snap_count + 1:
            self.snap_count += 1
            raise KeyboardInterrupt
        return super().snap(timeout_s)


PROPERTY_TIMEOUT_S = 10.0  # the slowest healthy move of a scenario takes 1.5 s


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    lo = draw(st.floats(-1000.0, 500.0))
    width = draw(st.floats(1.0, 1500.0))
    spacing = draw(st.floats(0.05, 40.0))
    count = draw(st.integers(0, 25))
    backlash = draw(st.sampled_from([0.0, 0.5, 3.0]))
    height = spacing * count + backlash
    if draw(st.integers(0, 4)):  # four in five scans fit the travel, the rest may not
        width = max(width, height + 1.0)
        hi = lo + width
        start = draw(st.floats(lo, hi - height))
    else:
        hi = lo + width
        start = draw(st.floats(lo, hi))
    plan_has_start = draw(st.booleans())
    kind = draw(st.sampled_from((*DEVICE_FAULT_KINDS, "interrupt")))
    at = draw(st.integers(1, count + 4))
    # overshoot_um / delay_s / idle_early_ms: below and above what the executor tolerates
    size = draw(st.sampled_from([0.05, 0.3, 2.0, 30.0]))
    return {
        "limits": (lo, hi),
        "start": start,
        "plan": ZScanPlan(
            spacing * count, spacing, count, start_um=start if plan_has_start else None
        ),
        "backlash": backlash,
        "stage_backlash": draw(st.sampled_from([0.0, 0.5])),
        "noise": draw(st.sampled_from([0.0, 0.01])),
        "fault": DeviceFault("none" if kind == "interrupt" else kind, at, size),
        "interrupt_at": at if kind == "interrupt" else None,
        "return_to_start": draw(st.booleans()),
    }


def check_scenario(sc: dict[str, Any], make_rig: Callable[..., Rig]) -> None:
    """Run one scenario; check the executor's guarantees whatever the devices did."""
    fault: DeviceFault = sc["fault"]
    mock = fault.make_stage(
        limits_um=sc["limits"],
        position_um=sc["start"],
        backlash_um=sc["stage_backlash"],
        position_noise_um=sc["noise"],
        settle_ms=1.0,
    )
    cam = InterruptingCamera(
        shape=(2, 2),
        interrupt_on_snap=sc["interrupt_at"],
        fail_on_snap=fault.at if fault.kind == "camera" else None,
    )
    rig = make_rig(mock, cam)
    plan: ZScanPlan = sc["plan"]
    start = sc["start"]
    lo, hi = sc["limits"]
    positions = plan.positions_um(start_um=None if plan.start_um is not None else start)
    targets = scan_targets_um(positions, backlash_um=sc["backlash"])
    n_pre = len(targets) - len(positions)
    fits = all(lo <= z <= hi for z in targets)
    # the stage's play is left in the positions unless the overshoot takes it up
    play = sc["stage_backlash"] if sc["backlash"] < sc["stage_backlash"] else 0.0
    tol = max(POSITION_TOLERANCE_SPACINGS * plan.spacing_um, play + 6 * sc["noise"])
    readout = DEFAULT_READOUT_TOLERANCE_UM

    result: ZStack | None = None
    error: BaseException | None = None
    try:
        result = run_zscan(
            plan,
            rig.stage,
            rig.camera,
            backlash_um=sc["backlash"],
            return_to_start=sc["return_to_start"],
            timeout_s=PROPERTY_TIMEOUT_S,
            position_tolerance_um=tol,
        )
    except (AcquisitionError, AcquisitionInterrupted, StageLimitError, StagePositionError) as exc:
        error = exc

    commanded = mock.commanded_um
    # 1. nothing outside the limits, nothing below the start, ever
    assert all(lo <= z <= hi for z in commanded), (commanded, sc["limits"])
    assert all(z >= start for z in commanded), (commanded, start)
    if isinstance(error, StagePositionError):
        # 2a. a NaN among the two readings of the start: refused before any motion
        assert fault.kind == "nan" and fault.at <= 2 and plan.start_um is None
        assert commanded == [] and cam.snap_count == 0
        return
    if not fits:
        # 2b. refused before any motion
        assert isinstance(error, StageLimitError) and not isinstance(error, AcquisitionError)
        assert commanded == [] and cam.snap_count == 0
        return
    # the commands are the planned targets in order, then (after a camera fault) the start
    returned = getattr(error, "returned_to_start", False)
    scan_moves = commanded[:-1] if returned else commanded
    assert scan_moves == targets[: len(scan_moves)]
    stack = result if error is None else error.partial  # type: ignore[attr-defined]
    assert isinstance(stack, ZStack)
    # 3. every frame delivered is kept, in order, unaltered by the camera's buffer reuse,
    #    owned (no memory shared, read-only), with its commanded and validated measured z
    assert len(stack) == len(cam.delivered)
    assert frames_match(stack.frames, cam.delivered)
    if len(stack):
        assert_stack_consistent(stack)
        assert not any(f.flags.writeable for f in stack.frames)
    np.testing.assert_array_equal(stack.commanded_um, positions[: len(stack)])
    assert np.all(np.abs(stack.measured_um - stack.commanded_um) <= tol)
    assert np.all(stack.measured_um >= start - readout)
    if error is None:
        assert stack.complete and len(stack) == plan.image_count
        assert commanded == targets and commanded[-1] == start
        assert mock.stop_count == 0
        # a fault that must be seen was seen
        assert not (fault.kind in ("fail", "hang") and fault.at <= len(targets)), fault
        n_reads = (2 if plan.start_um is None else 0) + plan.image_count
        assert not (fault.kind == "nan" and fault.at <= n_reads), fault
        image_move = n_pre < fault.at <= len(targets)
        assert not (fault.kind == "overshoot" and image_move and fault.size > tol + readout)
        if hasattr(rig.stage, "clock"):  # the executor's deadline runs on the stage's clock
            assert not (
                # ``at`` counts the stage's accepted moves (SlowStage.slow_on_move)
                fault.kind == "slow"
                and fault.size > PROPERTY_TIMEOUT_S
                and fault.at <= len(targets)
            )
        assert sc["interrupt_at"] is None or sc["interrupt_at"] > plan.image_count
        return
    assert not stack.complete
    if isinstance(error, AcquisitionInterrupted) or error.stage_stopped:  # type: ignore[attr-defined]
        # 4. stopped, and not moved again
        assert error.stage_stopped  # type: ignore[attr-defined]
        assert mock.stop_count >= 1
        assert moves_after_first_stop(mock) == []
    if isinstance(error, AcquisitionInterrupted):
        assert sc["interrupt_at"] is not None
        return
    cause = error.__cause__
    if isinstance(cause, CameraError):
        assert fault.kind == "camera" or not error.stage_stopped  # type: ignore[attr-defined]
        if not error.stage_stopped:  # type: ignore[attr-defined]
            assert mock.stop_count == 0
            assert error.returned_to_start == sc["return_to_start"]  # type: ignore[attr-defined]
            if sc["return_to_start"]:
                assert commanded[-1] == start
    else:
        # 5. only a misbehaving stage is a stage fault, and the stage was stopped first
        assert fault.stage_fault, (fault, cause)
        assert isinstance(cause, (StageFault, StageTimeoutError)), cause
        assert error.stage_stopped  # type: ignore[attr-defined]


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
    # approached from below, the first frame is 0.8 spacing short: refused by default...
    with pytest.raises(AcquisitionError, match=r"0\.8 um from the commanded 4\.0 um"):
        run_zscan(plan, play, CountingCamera())
    # ...accepted with a tolerance that admits the play
    play = MockZStage(position_um=0.0, backlash_um=0.8)
    stack = run_zscan(plan, play, CountingCamera(), position_tolerance_um=1.0)
    assert stack.measured_um[0] == pytest.approx(4.0 - 0.8)
    play = MockZStage(position_um=0.0, backlash_um=0.8)
    stack = run_zscan(plan, play, CountingCamera(), backlash_um=1.0)
    assert play.commanded_um == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    np.testing.assert_allclose(stack.measured_um, stack.commanded_um, atol=1e-12)


def test_overshoot_is_checked_against_limits() -> None:
    stage = MockZStage(limits_um=(0.0, 10.0), position_um=5.0)
    with pytest.raises(StageLimitError, match=r"overshoot 10\.5"):
        run_zscan(ZScanPlan(5.0, 1.0, 5), stage, CountingCamera(), backlash_um=0.5)
    # the start was read at rest (the wait for idle is in the log), nothing was commanded
    assert [e.kind for e in stage.log] == ["idle"] and stage.commanded_um == []
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
