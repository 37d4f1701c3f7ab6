"""The ZStage and Camera contract suites: pass on the library's devices, fail on broken ones.

Each broken device breaks exactly one rule; the suite must name that check, explain it,
and pass every other check.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from nanoro_optics.hardware import (
    MockZStage,
    SimulatedCamera,
    Specimen,
    StageLimitError,
)
from nanoro_optics.testing import (
    CAMERA_CHECKS,
    ZSTAGE_CHECKS,
    ContractReport,
    StageFaultSchedule,
    check_camera_contract,
    check_zstage_contract,
    stage_faults,
)

LIMITS = (0.0, 200.0)


def mock(**kwargs: Any) -> MockZStage:
    return MockZStage(limits_um=LIMITS, position_um=50.0, **kwargs)


# ------------------------------------------------------------------------------ broken stages


class ClippingStage(MockZStage):
    """Clips an out-of-limit target to the limit, as python-microscope's stage does."""

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        lo, hi = self.limits_um
        z = float(z_um)
        if math.isfinite(z):
            z = min(max(z, lo), hi)
        super().move_to_um(z, timeout_s=timeout_s)


class StaleStage(MockZStage):
    """Reports where it was before the last move (a readout that lags one move behind)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reported = super().get_position_um()

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        before = super().get_position_um()
        super().move_to_um(z_um, timeout_s=timeout_s)
        self._reported = before

    def get_position_um(self) -> float:
        return self._reported


class IgnoresStop(MockZStage):
    """Accepts stop() and does nothing: the move carries on."""

    def stop(self) -> None:
        self.stop_count += 1


class EarlyWait(MockZStage):
    """Returns from a short wait without waiting and without raising."""

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        if timeout_s is not None and timeout_s < 0.001:
            return
        super().wait_until_idle(timeout_s)


class AcceptsNaN(MockZStage):
    """Passes a NaN target on and stays put (a driver that never validates)."""

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        if isinstance(z_um, float) and math.isnan(z_um):
            return
        super().move_to_um(z_um, timeout_s=timeout_s)


class WrongLimitError(MockZStage):
    """Refuses out-of-limit targets with a bare RuntimeError."""

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        try:
            super().move_to_um(z_um, timeout_s=timeout_s)
        except StageLimitError as exc:
            raise RuntimeError(str(exc)) from None


class NotAStage:
    """Has no ZStage members at all."""

    def position(self) -> float:
        return 0.0


def report_for(factory: Any, **kwargs: Any) -> ContractReport:
    return check_zstage_contract(factory, raise_on_failure=False, **kwargs)


# ------------------------------------------------------------------------------ stage tests


@pytest.mark.parametrize("below", [False, True])
def test_mock_stage_passes(below: bool) -> None:
    report = check_zstage_contract(mock, allow_below_start=below)
    assert report.ok and report.passed == ZSTAGE_CHECKS
    assert "all 6 checks passed" in report.message()


def test_mock_with_backlash_and_noise_passes_with_a_matching_tolerance() -> None:
    def factory() -> MockZStage:
        return mock(backlash_um=0.2, position_noise_um=0.01, seed=3)

    with pytest.raises(AssertionError, match="position_after_move"):
        check_zstage_contract(factory, tolerance_um=0.05)
    assert check_zstage_contract(factory, tolerance_um=0.3).ok


def test_each_check_gets_a_fresh_stage_and_the_position_is_restored() -> None:
    made: list[MockZStage] = []

    def factory() -> MockZStage:
        made.append(mock())
        return made[-1]

    check_zstage_contract(factory)
    assert len(made) == len(ZSTAGE_CHECKS)
    for stage in made:
        assert stage.get_position_um() == 50.0
        assert min(stage.commanded_um[:-1] or [50.0]) >= 50.0 or any(
            math.isnan(z) for z in stage.commanded_um
        )
        # nothing below the start but the NaN probe; nothing above the upper limit accepted
        finite = [z for z in stage.commanded_um if math.isfinite(z)]
        assert all(z >= 50.0 for z in finite)


@pytest.mark.parametrize(
    ("cls", "check", "explanation"),
    [
        (ClippingStage, "refuses_out_of_limits", r"move_to_um\(201\.0\) \(1 um above the upper "
         r"limit 200 um\) was accepted; the stage then reported 200 um\. A driver must refuse "
         r"such a target with StageLimitError before moving, never clip it"),
        (StaleStage, "position_after_move wait_and_timeout",
         r"after move_to_um\(51\.0\) and wait_until_idle\(\), get_position_um\(\) reported "
         r"50 um, 1 um from the target 51 um .*stale"),
        (IgnoresStop, "stop", r"stop\(\) was called while the stage was at 50 um, 10 um short "
         r"of its target 60 um, yet it ended at the target: stop\(\) did not halt the move"),
        (EarlyWait, "wait_and_timeout", r"wait_until_idle\(timeout_s=0\.0\) returned while the "
         r"stage was at 50 um, 1 um from its target 51 um"),
        (AcceptsNaN, "refuses_non_finite", r"move_to_um\(nan\) \(not a finite position\) was "
         r"accepted"),
        (WrongLimitError, "refuses_out_of_limits", r"raised RuntimeError: .* it must raise "
         r"StageLimitError"),
    ],
)  # fmt: skip
def test_broken_stages_fail_one_named_check(cls: type, check: str, explanation: str) -> None:
    def factory() -> MockZStage:
        return cls(limits_um=LIMITS, position_um=50.0)

    report = report_for(factory)
    assert [name for name, _ in report.failed] == check.split(), report.message()
    assert re.search(explanation, report.failed[0][1]), report.failed[0][1]
    with pytest.raises(AssertionError) as info:
        check_zstage_contract(factory)
    text = str(info.value)
    n = len(check.split())
    assert text.startswith(f"ZStage contract for {cls.__name__}: {n} of 6 checks failed")
    assert all(f"  - {c}: " in text for c in check.split()) and "passed: " in text


def test_stale_stage_fails_with_the_full_message() -> None:
    with pytest.raises(AssertionError) as info:
        check_zstage_contract(lambda: StaleStage(limits_um=LIMITS, position_um=50.0))
    assert "the reported position is stale or the stage did not go where it was sent" in str(
        info.value
    )


def test_clipping_below_is_caught_only_when_allowed_below_start() -> None:
    class ClipsLow(MockZStage):
        def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
            lo = self.limits_um[0]
            z = float(z_um)
            super().move_to_um(max(z, lo) if math.isfinite(z) else z, timeout_s=timeout_s)

    def factory() -> MockZStage:
        return ClipsLow(limits_um=LIMITS, position_um=50.0)

    assert report_for(factory).ok  # the default never commands below the start
    report = report_for(factory, allow_below_start=True)
    assert [n for n, _ in report.failed] == ["refuses_out_of_limits"]
    assert "below the lower limit 0 um" in report.failed[0][1]


def test_hung_and_faulted_mocks_fail_and_say_why() -> None:
    report = report_for(lambda: mock(hang_on_move=1))
    failed = dict(report.failed)
    assert "position_after_move" in failed
    assert "StageTimeoutError" in failed["position_after_move"]
    report = report_for(lambda: mock(fail_on_move=1))
    failed = dict(report.failed)
    assert "StageFault" in failed["position_after_move"]
    assert "returning to the start position 50 um failed" in failed["position_after_move"]


def test_not_a_stage_and_a_failing_factory() -> None:
    report = report_for(NotAStage)
    assert len(report.failed) == len(ZSTAGE_CHECKS)
    assert (
        "missing ['limits_um', 'get_position_um', 'move_to_um', 'wait_until_idle', 'stop']"
        in (report.failed[0][1])
    )

    def broken_factory() -> MockZStage:
        raise OSError("COM3 not found")

    report = report_for(broken_factory, checks=["protocol"])
    assert report.failed == (("protocol", "the factory raised OSError: COM3 not found"),)


def test_stage_near_its_upper_limit_cannot_be_tested_upward() -> None:
    report = report_for(lambda: MockZStage(limits_um=LIMITS, position_um=199.5))
    failed = dict(report.failed)
    assert (
        "cannot test: the stage at 199.5 um is less than 1 um below its upper limit"
        in (failed["position_after_move"])
    )
    ok = report_for(lambda: MockZStage(limits_um=LIMITS, position_um=199.5), allow_below_start=True)
    assert ok.ok, ok.message()


def test_stage_options_are_validated() -> None:
    with pytest.raises(ValueError, match="step_um must be > 0"):
        check_zstage_contract(mock, step_um=0.0)
    with pytest.raises(ValueError, match="unknown check"):
        check_zstage_contract(mock, checks=["teleport"])
    with pytest.raises(TypeError, match="factory must be callable"):
        check_zstage_contract(mock())  # type: ignore[arg-type]
    report = check_zstage_contract(mock, checks=["stop", "protocol"])
    assert report.passed == ("protocol", "stop")


# ------------------------------------------------------------------------------ cameras

SPECIMEN = Specimen.synthetic((16, 16), relief_um=2.0)


def sim_camera() -> SimulatedCamera:
    return SimulatedCamera(MockZStage(), SPECIMEN)


class BufferCamera:
    """Returns its one internal buffer every time (a classic driver bug)."""

    def __init__(self) -> None:
        self.exposure_ms = 5.0
        self._buf = np.zeros((8, 8), np.uint16)
        self._k = 0

    def set_exposure_ms(self, ms: float) -> None:
        if not (isinstance(ms, float | int) and math.isfinite(ms) and ms > 0):
            raise ValueError(f"ms must be finite and > 0, got {ms!r}")
        self.exposure_ms = ms

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        self._k += 1
        self._buf[:] = self._k
        return self._buf


class RoiCamera(BufferCamera):
    """Changes its frame shape between snaps."""

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        self._k += 1
        return np.zeros((8, 8 + self._k % 2), np.uint16)


class ClampingCamera(BufferCamera):
    """Clamps a bad exposure to 0.1 ms instead of refusing it."""

    def set_exposure_ms(self, ms: float) -> None:
        self.exposure_ms = ms if ms > 0 else 0.1

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        return np.zeros((8, 8), np.uint16)


class DeafCamera(BufferCamera):
    """Ignores set_exposure_ms."""

    def set_exposure_ms(self, ms: float) -> None:
        return None

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        return np.zeros((8, 8), np.uint16)


def test_simulated_camera_passes() -> None:
    report = check_camera_contract(sim_camera)
    assert report.ok and report.passed == CAMERA_CHECKS


@pytest.mark.parametrize(
    ("cls", "check", "explanation"),
    [
        (BufferCamera, "snap", "frames 0 and 1 share memory"),
        (RoiCamera, "snap", r"frame 1 has shape \(8, 8\), unlike frame 0's \(8, 9\)"),
        (ClampingCamera, "refuses_bad_exposure", r"set_exposure_ms\(0\.0\) was accepted "
         r"\(exposure_ms now reads 0\.1\)"),
        (DeafCamera, "exposure refuses_bad_exposure",
         r"after set_exposure_ms\(10\.0\) exposure_ms reads 5\.0"),
    ],
)  # fmt: skip
def test_broken_cameras_fail_one_named_check(cls: type, check: str, explanation: str) -> None:
    report = check_camera_contract(cls, raise_on_failure=False)
    assert [name for name, _ in report.failed] == check.split(), report.message()
    assert re.search(explanation, report.failed[0][1]), report.failed[0][1]
    n = len(check.split())
    with pytest.raises(AssertionError, match=f"Camera contract for {cls.__name__}: {n} of 4"):
        check_camera_contract(cls)


def test_camera_options_are_validated() -> None:
    with pytest.raises(ValueError, match="n_snaps"):
        check_camera_contract(sim_camera, n_snaps=1)
    with pytest.raises(ValueError, match="unknown check"):
        check_camera_contract(sim_camera, checks=["focus"])
    assert check_camera_contract(sim_camera, checks=["snap"], n_snaps=2).passed == ("snap",)


# ------------------------------------------------------------------------------ pymmcore-plus


class Forward:
    """Forwards every attribute to ``target``, so one core serves every check.

    (Thousands of C++ cores in one process crash pymmcore; one per module is enough.)
    """

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@pytest.fixture(scope="module")
def mm_rig() -> tuple[Any, Forward, Forward]:
    from nanoro_optics.mmcore import simulated_core

    stage = Forward(mock())
    camera = Forward(SimulatedCamera(stage.target, SPECIMEN))
    return simulated_core(stage, camera, frame_shape=(16, 16)), stage, camera


def mm_stage_factory(rig: tuple[Any, Forward, Forward], cls: type = MockZStage) -> Any:
    from nanoro_optics.mmcore import MMCoreZStage

    core, stage, _ = rig

    def factory() -> MMCoreZStage:
        stage.target = cls(limits_um=LIMITS, position_um=50.0)
        return MMCoreZStage(core, limits_um=LIMITS)

    return factory


@pytest.mark.parametrize("below", [False, True])
def test_mmcore_adapter_passes_the_stage_contract(
    mm_rig: tuple[Any, Forward, Forward], below: bool
) -> None:
    report = check_zstage_contract(mm_stage_factory(mm_rig), allow_below_start=below)
    assert report.ok and report.subject == "ZStage contract for MMCoreZStage"


def test_mmcore_adapter_passes_the_camera_contract(mm_rig: tuple[Any, Forward, Forward]) -> None:
    from nanoro_optics.mmcore import MMCoreCamera

    core, stage, camera = mm_rig

    def factory() -> MMCoreCamera:
        camera.target = SimulatedCamera(stage.target, SPECIMEN)
        return MMCoreCamera(core)

    assert check_camera_contract(factory).ok


def test_mmcore_adapter_over_broken_devices(mm_rig: tuple[Any, Forward, Forward]) -> None:
    # the adapter checks its limits before calling the core: a clipping device is shielded
    assert check_zstage_contract(mm_stage_factory(mm_rig, ClippingStage)).ok
    # but it cannot make a device stop or report a fresh position
    report = check_zstage_contract(mm_stage_factory(mm_rig, IgnoresStop), raise_on_failure=False)
    assert [n for n, _ in report.failed] == ["stop"]
    assert "stop() did not halt the move" in report.failed[0][1]
    report = check_zstage_contract(mm_stage_factory(mm_rig, StaleStage), raise_on_failure=False)
    assert "position_after_move" in dict(report.failed)


# ------------------------------------------------------------------------------ the example


def test_the_driver_example_runs() -> None:
    """examples/test_my_stage_driver.py is documentation: keep its contract calls working."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "test_my_stage_driver.py"
    spec = importlib.util.spec_from_file_location("_example_my_stage_driver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_my_stage_follows_the_zstage_contract()
    module.test_the_contract_catches_a_clipping_firmware()
    module.test_my_camera_follows_the_camera_contract()


# ------------------------------------------------------------------------------ composed


@settings(max_examples=20, deadline=None)
@given(stage_faults(kinds=("fail", "hang"), max_move=3))
def test_any_early_fault_fails_the_stage_contract(faults: StageFaultSchedule) -> None:
    report = check_zstage_contract(
        lambda: faults.make_stage(limits_um=LIMITS, position_um=50.0), raise_on_failure=False
    )
    assert "position_after_move" in dict(report.failed)  # its first three moves hit the fault
    assert any(("StageFault" in why or "StageTimeoutError" in why) for _, why in report.failed)


def test_camera_faults_fail_the_snap_check() -> None:
    report = check_camera_contract(
        lambda: SimulatedCamera(MockZStage(), SPECIMEN, fail_on_snap=2), raise_on_failure=False
    )
    assert report.failed == (
        (
            "snap",
            "snap(timeout_s=10.0) (snap 2) raised CameraError: injected camera fault on snap 2",
        ),
    )

    class ListCamera(BufferCamera):
        def snap(self, timeout_s: float | None = None) -> Any:
            return [[0, 1], [2, 3]]

    report = check_camera_contract(ListCamera, raise_on_failure=False)
    assert "frame 0 is a list, not a numpy array" in dict(report.failed)["snap"]
