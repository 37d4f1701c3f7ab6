"""Tests of the hardware protocols, errors and the mock stage (no images here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.hardware import (
    AcquisitionError,
    AcquisitionInterrupted,
    Camera,
    CameraError,
    HardwareError,
    MockZStage,
    SimulatedClock,
    StageFault,
    StageLimitError,
    StageTimeoutError,
    ZStage,
)


class TinyCamera:
    exposure_ms = 1.0

    def set_exposure_ms(self, ms: float) -> None:
        self.exposure_ms = ms

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        return np.zeros((2, 2))


def test_error_hierarchy() -> None:
    assert issubclass(StageLimitError, ValueError)
    assert issubclass(StageTimeoutError, TimeoutError)
    for cls in (StageLimitError, StageTimeoutError, StageFault, CameraError, AcquisitionError):
        assert issubclass(cls, HardwareError)
    assert issubclass(AcquisitionInterrupted, KeyboardInterrupt)
    assert not issubclass(AcquisitionInterrupted, Exception)  # `except Exception` must not eat ^C
    err = AcquisitionError("x", partial=[1], stage_stopped=True)
    assert err.partial == [1] and err.stage_stopped and not err.returned_to_start


def test_protocols_are_runtime_checkable() -> None:
    assert isinstance(MockZStage(), ZStage)
    assert isinstance(TinyCamera(), Camera)
    assert not isinstance(TinyCamera(), ZStage)
    assert not isinstance(MockZStage(), Camera)
    assert not isinstance(object(), ZStage)


def test_clock() -> None:
    clock = SimulatedClock(1.0)
    clock.advance(0.5)
    clock.sleep(0.25)
    assert clock.time() == 1.75
    with pytest.raises(ValueError, match="dt_s"):
        clock.advance(-1.0)
    with pytest.raises(ValueError, match="start_s"):
        SimulatedClock(math.nan)


def test_move_timing_on_simulated_clock() -> None:
    stage = MockZStage(position_um=0.0, speed_um_per_s=100.0, settle_ms=20.0)
    stage.move_to_um(50.0)
    assert stage.is_moving
    stage.clock.advance(0.25)  # half way along the ramp
    assert stage.get_position_um() == pytest.approx(25.0)
    stage.wait_until_idle()
    assert stage.clock.time() == pytest.approx(0.5 + 0.02)
    assert not stage.is_moving
    assert stage.get_position_um() == 50.0
    assert [e.kind for e in stage.log] == ["move", "idle"]


def test_limits_refuse_never_clip() -> None:
    stage = MockZStage(limits_um=(-10.0, 10.0), position_um=3.0)
    with pytest.raises(StageLimitError, match=r"10\.5.*\[-10\.0, 10\.0\]"):
        stage.move_to_um(10.5)
    stage.wait_until_idle()
    assert stage.get_position_um() == 3.0
    assert stage.move_count == 0
    stage.move_to_um(10.0)  # the limit itself is reachable
    stage.wait_until_idle()
    assert stage.get_position_um() == 10.0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"limits_um": (1.0, 1.0)}, ValueError, "lo < hi"),
        ({"limits_um": (0.0, math.inf)}, ValueError, r"limits_um\[1\]"),
        ({"limits_um": 5.0}, TypeError, "pair"),
        ({"position_um": 1e9}, ValueError, "position_um"),
        ({"speed_um_per_s": 0.0}, ValueError, "speed_um_per_s"),
        ({"settle_ms": -1.0}, ValueError, "settle_ms"),
        ({"backlash_um": -0.1}, ValueError, "backlash_um"),
        ({"position_noise_um": math.nan}, ValueError, "position_noise_um"),
        ({"fail_on_move": 0}, ValueError, "fail_on_move"),
        ({"hang_on_move": 1.5}, TypeError, "hang_on_move"),
        ({"seed": -1}, ValueError, "seed"),
        ({"clock": object()}, TypeError, "clock"),
    ],
)
def test_bad_construction(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        MockZStage(**kwargs)


def test_bad_move_arguments() -> None:
    stage = MockZStage()
    with pytest.raises(ValueError, match="z_um"):
        stage.move_to_um(math.nan)
    with pytest.raises(TypeError, match="z_um"):
        stage.move_to_um("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        stage.wait_until_idle(timeout_s=-1.0)


def _play(carriage: float, target: float, b: float) -> float:
    """Obvious reference of the play operator: pushed down, dragged up past the gap."""
    if target < carriage:
        return target
    if target - carriage > b:
        return target - b
    return carriage


@settings(max_examples=200, deadline=None)
@given(
    b=st.floats(0.0, 5.0),
    moves=st.lists(st.floats(-50.0, 50.0), min_size=1, max_size=12),
)
def test_backlash_matches_reference(b: float, moves: list[float]) -> None:
    stage = MockZStage(limits_um=(-100.0, 100.0), backlash_um=b)
    carriage = 0.0
    for z in moves:
        stage.move_to_um(z)
        stage.wait_until_idle()
        carriage = _play(carriage, z, b)
        assert stage.get_position_um() == pytest.approx(carriage, abs=1e-12)
        assert z - b - 1e-12 <= stage.get_position_um() <= z + 1e-12


def test_overshoot_removes_backlash() -> None:
    stage = MockZStage(limits_um=(0.0, 100.0), position_um=10.0, backlash_um=2.0)
    stage.move_to_um(30.0)
    stage.wait_until_idle()
    assert stage.get_position_um() == 28.0
    stage.move_to_um(29.0)  # less than the play: the carriage does not move
    stage.wait_until_idle()
    assert stage.get_position_um() == 28.0
    stage.move_to_um(33.0)
    stage.wait_until_idle()
    stage.move_to_um(30.0)  # approach from above by more than the play
    stage.wait_until_idle()
    assert stage.get_position_um() == 30.0


def test_noise_is_seeded_and_drift_accumulates() -> None:
    def run(seed: int) -> list[float]:
        stage = MockZStage(position_noise_um=0.1, seed=seed, settle_ms=0.0)
        out = []
        for z in (1.0, 2.0, 3.0):
            stage.move_to_um(z)
            stage.wait_until_idle()
            out.append(stage.get_position_um() - z)
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert np.std(run(3)) > 0
    stage = MockZStage(drift_um_per_s=0.5)
    stage.clock.advance(4.0)
    assert stage.get_position_um() == pytest.approx(2.0)


def test_injected_fault_sticks_until_reset() -> None:
    stage = MockZStage(fail_on_move=2)
    stage.move_to_um(1.0)
    stage.wait_until_idle()
    with pytest.raises(StageFault, match="move 2"):
        stage.move_to_um(2.0)
    assert stage.faulted
    with pytest.raises(StageFault):
        stage.move_to_um(3.0)
    with pytest.raises(StageFault):
        stage.wait_until_idle()
    stage.stop()  # safe after a fault
    assert stage.get_position_um() == 1.0
    stage.reset()
    stage.move_to_um(3.0)
    stage.wait_until_idle()
    assert stage.get_position_um() == 3.0
    kinds = [e.kind for e in stage.log]
    assert kinds == ["move", "idle", "move", "fault", "move", "refused", "stop", "move", "idle"]
    assert stage.commanded_um == [1.0, 2.0, 3.0, 3.0]


def test_hang_and_timeout() -> None:
    stage = MockZStage(hang_on_move=1, hang_timeout_s=7.0)
    stage.move_to_um(5.0)
    with pytest.raises(StageTimeoutError, match="hung"):
        stage.wait_until_idle()
    assert stage.clock.time() == pytest.approx(7.0)
    assert stage.get_position_um() == 0.0  # a hung drive has not moved
    stage.stop()
    stage.wait_until_idle()  # a stop ends the hang

    slow = MockZStage(speed_um_per_s=10.0, settle_ms=0.0)
    slow.move_to_um(100.0)
    with pytest.raises(StageTimeoutError, match=r"timeout_s=1\.0"):
        slow.wait_until_idle(timeout_s=1.0)
    assert slow.get_position_um() == pytest.approx(10.0)
    slow.stop()  # stops mid-way
    slow.wait_until_idle()
    assert slow.get_position_um() == pytest.approx(10.0)
    assert slow.log[-1].kind == "idle"


def test_stage_doctest_repr() -> None:
    assert "faulted=False" in repr(MockZStage())
    assert "SimulatedClock" in repr(SimulatedClock())


# ------------------------------------------------------------------ extreme arguments


def test_extreme_stage_arguments_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="speed_um_per_s must be >= 1e-06"):
        MockZStage(speed_um_per_s=5e-324)  # before: the clock's "dt_s must be finite"
    stage = MockZStage(limits_um=(-1e308, 1e308), position_um=-1e308, speed_um_per_s=1e-6)
    with pytest.raises(ValueError, match=r"z_um=1e.308: the move from .* largest float time"):
        stage.move_to_um(1e308)
    assert stage.move_count == 0 and stage.log[-1].kind == "refused"
    clock = SimulatedClock(1e308)
    with pytest.raises(ValueError, match=r"dt_s=1e.308 takes the clock past"):
        clock.advance(1e308)
    assert clock.time() == 1e308


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout_s": 1e308}, "timeout_s must be <= 10000000.0"),  # before: OverflowError
        ({"settle_ms": 1e308}, "settle_ms must be <="),
        ({"timeout_s": 5e-324 * 0}, "timeout_s must be > 0.0"),
    ],
)
def test_extreme_executor_arguments_are_refused_naming_them(kwargs: dict, match: str) -> None:
    from nanoro_optics.acquire import run_zscan
    from nanoro_optics.testing.doubles import BufferReusingCamera
    from nanoro_optics.zscan import ZScanPlan

    stage = MockZStage()
    with pytest.raises(ValueError, match=match):
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, BufferReusingCamera(), **kwargs)
    assert stage.log == []


def test_scan_targets_refuse_non_finite_positions() -> None:
    from nanoro_optics.acquire import scan_targets_um

    with pytest.raises(ValueError, match="positions_um must not be NaN"):
        scan_targets_um(np.array([np.nan, 1.0]), backlash_um=1.0)  # before: [nan, nan, 1.0]
    with pytest.raises(ValueError, match=r"backlash_um=1e.308 above the top"):
        scan_targets_um(np.array([1e308, 1.0]), backlash_um=1e308)
    assert scan_targets_um(np.array([]), backlash_um=1.0) == []
