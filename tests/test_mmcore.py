"""The pymmcore-plus adapters: the executor's contract on a UniMMCore with pure-Python devices.

The devices delegate to the mock stage and the camera double of ``test_acquire``, so the
very same scenarios (faults, limits, interrupts) run through Micro-Manager's core API. No
Micro-Manager device adapters (which need a download) are used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

pytest.importorskip("pymmcore_plus", reason="the mmcore extra is not installed")

# the shared scenarios live in test_acquire.py next to this file
sys.path.insert(0, str(Path(__file__).parent))
from test_acquire import CountingCamera, Rig, check_scenario, scenarios

from nanoro_optics.acquire import run_zscan
from nanoro_optics.hardware import (
    Camera,
    CameraError,
    MockZStage,
    SimulatedCamera,
    Specimen,
    StageFault,
    StageLimitError,
    StageTimeoutError,
    ZStage,
)
from nanoro_optics.mmcore import (
    MMCoreCamera,
    MMCoreZStage,
    simulated_core,
)
from nanoro_optics.zscan import ZScanPlan


class Forward:
    """Forwards every attribute to ``target``: lets one core serve many scenarios."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_SHARED: dict[str, Any] = {}


def mmcore_rig(mock: MockZStage, cam: CountingCamera) -> Rig:
    # One UniMMCore for all scenarios (thousands of C++ cores in one process crash
    # pymmcore); its Python devices forward to this scenario's mock and camera double.
    if not _SHARED:
        _SHARED["stage"], _SHARED["camera"] = Forward(), Forward()
        _SHARED["core"] = simulated_core(
            _SHARED["stage"], _SHARED["camera"], frame_shape=(2, 2), dtype=np.uint16
        )
    assert cam.shape == (2, 2)
    _SHARED["stage"].target, _SHARED["camera"].target = mock, cam
    core = _SHARED["core"]
    return Rig(MMCoreZStage(core, limits_um=mock.limits_um), MMCoreCamera(core), mock, cam)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_executor_safety_property_mmcore(sc: dict[str, Any]) -> None:
    check_scenario(sc, mmcore_rig)


def test_adapters_follow_the_protocols_and_scan() -> None:
    mock = MockZStage(position_um=10.0)
    cam = SimulatedCamera(mock, Specimen.synthetic((24, 24), relief_um=2.0, base_um=10.0))
    core = simulated_core(mock, cam)
    stage, camera = MMCoreZStage(core, limits_um=(0.0, 100.0)), MMCoreCamera(core)
    assert isinstance(stage, ZStage) and isinstance(camera, Camera)
    assert stage.device == "Z" and camera.device == "Camera"
    camera.set_exposure_ms(12.5)
    assert camera.exposure_ms == 12.5 and cam.exposure_ms == 12.5
    stack = run_zscan(ZScanPlan(2.0, 1.0, 2), stage, camera)
    assert mock.commanded_um == [12.0, 11.0, 10.0]
    assert stack.as_array().shape == (3, 24, 24) and stack.frames[0].dtype == np.uint16
    # the frames through the core are the simulated camera's frames at those positions
    ref = cam.frame_to_reflectance(stack.frames[-1]) - cam.render(10.0)
    assert abs(float(ref.mean())) < 0.01
    assert "Z" in repr(stage) and "Camera" in repr(camera)


def test_limits_refused_before_the_core_is_called() -> None:
    mock = MockZStage(limits_um=(-100.0, 100.0))
    core = simulated_core(mock, CountingCamera(), frame_shape=(2, 2))
    stage = MMCoreZStage(core, limits_um=(-10.0, 10.0))  # tighter than the device
    with pytest.raises(StageLimitError, match=r"\[-10\.0, 10\.0\]"):
        stage.move_to_um(50.0)
    assert mock.log == []


class FakeCore:
    """A minimal stand-in for CMMCorePlus with scripted failures."""

    def __init__(self) -> None:
        self.pos = 0.0
        self.busy_forever = False
        self.fail: dict[str, BaseException] = {}
        self.stopped = 0

    def _maybe(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def getFocusDevice(self) -> str:
        return "Focus"

    def getCameraDevice(self) -> str:
        return "Cam"

    def setCameraDevice(self, label: str) -> None:
        self._maybe("setCameraDevice")

    def getPosition(self, label: str) -> float:
        self._maybe("getPosition")
        return self.pos

    def setPosition(self, label: str, z: float) -> None:
        self._maybe("setPosition")
        self.pos = z

    def deviceBusy(self, label: str) -> bool:
        self._maybe("deviceBusy")
        return self.busy_forever

    def getTimeoutMs(self) -> float:
        return 20.0

    def stop(self, label: str) -> None:
        self._maybe("stop")
        self.stopped += 1

    def getExposure(self) -> float:
        self._maybe("getExposure")
        return 5.0

    def setExposure(self, ms: float) -> None:
        self._maybe("setExposure")

    def snap(self) -> np.ndarray:
        self._maybe("snap")
        return np.zeros((3, 3), np.uint16)


def test_core_errors_are_translated() -> None:
    core = FakeCore()
    stage = MMCoreZStage(core, limits_um=(-5.0, 5.0), poll_s=0.001)
    camera = MMCoreCamera(core, "Cam")
    core.fail["setPosition"] = RuntimeError("Serial port timed out")
    with pytest.raises(StageFault, match="Serial port") as info:
        stage.move_to_um(1.0)
    assert isinstance(info.value.__cause__, RuntimeError)
    core.fail = {"deviceBusy": TimeoutError("busy")}
    with pytest.raises(StageTimeoutError):
        stage.wait_until_idle()
    core.fail = {"getPosition": RuntimeError("x"), "stop": RuntimeError("y")}
    with pytest.raises(StageFault):
        stage.get_position_um()
    with pytest.raises(StageFault):
        stage.stop()
    core.fail = {"snap": RuntimeError("no buffer"), "getExposure": RuntimeError("e")}
    with pytest.raises(CameraError, match="no buffer"):
        camera.snap()
    with pytest.raises(CameraError):
        camera.exposure_ms  # noqa: B018
    core.fail = {"setExposure": RuntimeError("e")}
    with pytest.raises(CameraError):
        camera.set_exposure_ms(3.0)
    with pytest.raises(ValueError, match="ms"):
        camera.set_exposure_ms(-3.0)
    core.fail = {"setCameraDevice": RuntimeError("no such camera")}
    with pytest.raises(CameraError, match="no such camera"):
        MMCoreCamera(core, "Other")


def test_busy_device_times_out() -> None:
    core = FakeCore()
    core.busy_forever = True
    stage = MMCoreZStage(core, limits_um=(-5.0, 5.0), poll_s=0.001)
    with pytest.raises(StageTimeoutError, match=r"0\.01"):
        stage.wait_until_idle(timeout_s=0.01)
    with pytest.raises(StageTimeoutError, match=r"0\.02"):  # the core's own timeout
        stage.wait_until_idle()


def test_executor_on_fake_core_stops_after_stage_fault() -> None:
    from nanoro_optics.hardware import AcquisitionError

    core = FakeCore()
    stage = MMCoreZStage(core, limits_um=(-5.0, 5.0), poll_s=0.001)
    core.busy_forever = True
    with pytest.raises(AcquisitionError) as info:
        run_zscan(ZScanPlan(2.0, 1.0, 2, start_um=0.0), stage, MMCoreCamera(core), timeout_s=0.01)
    assert isinstance(info.value.__cause__, StageTimeoutError)
    assert core.stopped == 1 and len(info.value.partial) == 0
    # without a start in the plan, the start is read only once the stage is idle: it never
    # is, so the executor stops it and commands nothing
    with pytest.raises(StageTimeoutError):
        run_zscan(ZScanPlan(2.0, 1.0, 2), stage, MMCoreCamera(core), timeout_s=0.01)
    assert core.stopped == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"limits_um": (1.0, 0.0)}, ValueError, "lo < hi"),
        ({"limits_um": 3.0}, TypeError, "pair"),
        ({"limits_um": (0.0, float("inf"))}, ValueError, "limits_um"),
        ({"limits_um": (0.0, 1.0), "device": ""}, ValueError, "device"),
        ({"limits_um": (0.0, 1.0), "poll_s": 0.0}, ValueError, "poll_s"),
    ],
)
def test_stage_adapter_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        MMCoreZStage(FakeCore(), **kwargs)


def test_not_a_core() -> None:
    with pytest.raises(TypeError, match="lacks"):
        MMCoreZStage(object(), limits_um=(0.0, 1.0))
    with pytest.raises(TypeError, match="lacks"):
        MMCoreCamera(object())


def test_simulated_core_bad_arguments() -> None:
    mock = MockZStage()
    with pytest.raises(ValueError, match="frame_shape"):
        simulated_core(mock, CountingCamera())
    with pytest.raises(ValueError, match="grey"):
        simulated_core(mock, CountingCamera(), frame_shape=(2, 2, 3))
    with pytest.raises(ValueError, match="dtype"):
        simulated_core(mock, CountingCamera(), frame_shape=(2, 2), dtype=np.float64)


def test_missing_pymmcore_plus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymmcore_plus", None)
    with pytest.raises(ImportError, match=r"nanoro_optics\[mmcore\]"):
        MMCoreZStage(FakeCore(), limits_um=(0.0, 1.0))


class FixedCamera(CountingCamera):
    """Returns one given frame at every snap."""

    def __init__(self, frame: np.ndarray) -> None:
        super().__init__()
        self.frame = frame

    def snap(self, timeout_s: float | None = None) -> Any:
        return self.frame


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.full((2, 2), 70000, np.int32), r"70000, outside the uint16 range \[0, 65535\]"),
        (np.full((2, 2), -1, np.int16), r"-1, outside the uint16 range"),
        (np.arange(2, dtype=np.uint16)[None, :], r"shape \(1, 2\).* never broadcast"),
        (np.full((2, 2), np.nan), "returned nan at pixel"),
        (np.full((2, 2), 2.5), "returned 2.5 at pixel"),
        (np.full((2, 2), 1e20), "1e\\+20, outside the uint16 range"),
        (np.zeros((2, 2), bool), "dtype bool"),
        ([[1, 2], [3, 4]], "not a numpy array"),
    ],
)
def test_the_simulated_core_refuses_frames_its_buffer_cannot_hold(frame: Any, match: str) -> None:
    core = simulated_core(MockZStage(), FixedCamera(frame), frame_shape=(2, 2))
    with pytest.raises(CameraError, match=match):
        MMCoreCamera(core).snap()


def test_the_simulated_core_passes_frames_it_holds_unchanged() -> None:
    for frame in (np.full((2, 2), 7.0), np.full((2, 2), 255, np.uint8), np.full((2, 2), 65535)):
        core = simulated_core(MockZStage(), FixedCamera(frame), frame_shape=(2, 2))
        got = MMCoreCamera(core).snap()
        assert got.dtype == np.uint16 and got.tolist() == frame.tolist()


def test_the_simulated_core_waits_for_its_devices_in_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # UniMMCore starts a thread pool at every waitForSystem (before every MDA event); a
    # Micro-Manager core waits in the calling thread, and so does the simulated core
    import threading

    class SlowStage(MockZStage):
        waited = 0

        def wait_until_idle(self, timeout_s: float | None = None) -> None:
            self.waited += 1

    stage = SlowStage()
    core = simulated_core(stage, CountingCamera(), frame_shape=(2, 2))
    started: list[str] = []
    start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    stage.waited = 0
    core.waitForSystem()
    core.waitForDevice("Z")
    assert started == []
    assert stage.waited == 2  # the stage is still waited for, once per call
