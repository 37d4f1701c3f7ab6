"""The kit's misbehaving device doubles and the device_faults strategy do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from nanoro_optics.hardware import Camera, CameraError, MockZStage, SimulatedClock, ZStage
from nanoro_optics.testing import (
    DEVICE_FAULT_KINDS,
    BufferReusingCamera,
    DeviceFault,
    NaNReadingStage,
    OvershootingStage,
    SettlingStage,
    SlowStage,
    check_camera_contract,
    check_zstage_contract,
    device_faults,
)

# ----------------------------------------------------------------------------- the camera


def test_buffer_reusing_camera_returns_one_buffer_and_keeps_the_truth() -> None:
    clock = SimulatedClock()
    cam = BufferReusingCamera(shape=(2, 3, 3), dtype=np.float32, exposure_ms=4.0, clock=clock)
    assert isinstance(cam, Camera) and cam.shape == (2, 3, 3) and cam.dtype == np.float32
    frames = [cam.snap(timeout_s=1.0) for _ in range(3)]
    assert frames[0] is frames[1] is frames[2]
    assert float(frames[0][0, 0, 0]) == 3.0
    assert [float(f[0, 0, 0]) for f in cam.delivered] == [1.0, 2.0, 3.0]
    assert not any(np.shares_memory(f, frames[0]) for f in cam.delivered)
    assert clock.time() == pytest.approx(0.012) and cam.snap_count == 3
    cam.set_exposure_ms(2.0)
    assert cam.exposure_ms == 2.0
    assert "snaps=3" in repr(cam)


def test_buffer_reusing_camera_wraps_integer_values_and_fails_on_request() -> None:
    cam = BufferReusingCamera(shape=(1, 1), dtype=np.uint8, fail_on_snap=2)
    cam.snap()
    with pytest.raises(CameraError, match="snap 2"):
        cam.snap()
    for _ in range(255):
        frame = cam.snap()
    assert int(frame[0, 0]) == 257 % 256 and cam.snap_count == 257
    assert len(cam.delivered) == 256  # the failed snap delivered nothing


def test_the_camera_contract_catches_the_reused_buffer() -> None:
    report = check_camera_contract(BufferReusingCamera, raise_on_failure=False)
    assert [name for name, _ in report.failed] == ["snap"]
    assert "share memory" in report.failed[0][1]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"shape": (4,)}, ValueError, "shape"),
        ({"shape": (4, 0)}, ValueError, "shape"),
        ({"shape": [4, 4]}, ValueError, "shape"),
        ({"dtype": bool}, TypeError, "dtype"),
        ({"dtype": complex}, TypeError, "dtype"),
        ({"exposure_ms": 0.0}, ValueError, "exposure_ms"),
        ({"fail_on_snap": 0}, ValueError, "fail_on_snap"),
        ({"fail_on_snap": 1.5}, TypeError, "fail_on_snap"),
        ({"clock": 3.0}, TypeError, "clock"),
    ],
)
def test_camera_options_are_validated(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        BufferReusingCamera(**kwargs)


def test_camera_refuses_bad_exposure_and_timeout() -> None:
    cam = BufferReusingCamera()
    with pytest.raises(ValueError, match="ms"):
        cam.set_exposure_ms(math.nan)
    with pytest.raises(ValueError, match="timeout_s"):
        cam.snap(timeout_s=-1.0)


# ----------------------------------------------------------------------------- the stages


def test_nan_reading_stage_counts_only_the_callers_readings() -> None:
    stage = NaNReadingStage(nan_on_read=2, position_um=3.0)
    assert isinstance(stage, ZStage) and isinstance(stage, MockZStage)
    stage.move_to_um(4.0)
    stage.wait_until_idle()  # logs the position without reading it through the protocol
    assert stage.read_count == 0
    readings = [stage.get_position_um() for _ in range(3)]
    assert readings[0] == 4.0 and math.isnan(readings[1]) and readings[2] == 4.0
    assert stage.read_count == 3
    with pytest.raises(ValueError, match="nan_on_read"):
        NaNReadingStage(nan_on_read=0)


def test_settling_stage_reports_idle_while_moving() -> None:
    stage = SettlingStage(idle_early_ms=20.0, read_time_ms=1.0)
    stage.move_to_um(50.0)  # 50 ms at 1000 um/s
    stage.wait_until_idle()
    assert stage.clock.time() == pytest.approx(0.030)
    a, b = stage.get_position_um(), stage.get_position_um()
    assert a == pytest.approx(30.0) and b == pytest.approx(31.0)
    assert stage.is_moving  # the carriage keeps its own pace
    stage.wait_until_idle()  # 20 ms before the end is already past: returns at once
    assert stage.get_position_um() == pytest.approx(32.0) and stage.is_moving
    stage.clock.advance(1.0)
    assert stage.get_position_um() == 50.0 and not stage.is_moving


def test_settling_stage_without_an_early_idle_is_a_plain_mock() -> None:
    stage = SettlingStage(idle_early_ms=0.0, read_time_ms=0.0)
    stage.move_to_um(5.0)
    stage.wait_until_idle()
    assert stage.get_position_um() == 5.0 and not stage.is_moving
    check_zstage_contract(lambda: SettlingStage(idle_early_ms=0.0))


def test_overshooting_stage_ends_below_the_chosen_target_only() -> None:
    stage = OvershootingStage(overshoot_um=0.5, overshoot_on_move=2, position_um=0.0)
    for target, expected in ((3.0, 3.0), (2.0, 1.5), (1.0, 1.0)):
        stage.move_to_um(target)
        stage.wait_until_idle()
        assert stage.get_position_um() == expected
    with pytest.raises(ValueError, match="overshoot_um"):
        OvershootingStage(overshoot_um=0.0)


def test_slow_stage_ignores_its_timeout() -> None:
    stage = SlowStage(delay_s=30.0, slow_on_move=1, position_um=0.0)
    stage.move_to_um(1.0)
    stage.wait_until_idle(timeout_s=0.5)  # no StageTimeoutError
    assert stage.clock.time() > 30.0 and stage.get_position_um() == 1.0
    t = stage.clock.time()
    stage.move_to_um(2.0)  # not the slow move
    stage.wait_until_idle(timeout_s=0.5)
    assert stage.clock.time() - t < 0.5
    with pytest.raises(ValueError, match="timeout_s"):
        stage.wait_until_idle(timeout_s=-1.0)
    with pytest.raises(ValueError, match="delay_s"):
        SlowStage(delay_s=-1.0)


@pytest.mark.parametrize(
    ("factory", "check"),
    [
        (lambda: NaNReadingStage(nan_on_read=1), "protocol"),
        (lambda: SettlingStage(idle_early_ms=20.0), "position_after_move"),
        (lambda: OvershootingStage(overshoot_um=1.0), "position_after_move"),
    ],
    ids=["nan", "settling", "overshoot"],
)
def test_the_stage_contract_catches_the_misbehaviour(factory: object, check: str) -> None:
    report = check_zstage_contract(factory, checks=[check], raise_on_failure=False)  # type: ignore[arg-type]
    assert [name for name, _ in report.failed] == [check]


# ----------------------------------------------------------------------------- the strategy


@settings(max_examples=200, deadline=None)
@given(fault=device_faults(max_at=5))
def test_device_faults_build_matching_devices(fault: DeviceFault) -> None:
    assert fault.kind in DEVICE_FAULT_KINDS and 1 <= fault.at <= 5 and 0.05 <= fault.size <= 20
    stage = fault.make_stage(position_um=1.0)
    camera = fault.make_camera(shape=(2, 2))
    assert isinstance(stage, MockZStage) and isinstance(camera, BufferReusingCamera)
    expected = {
        "nan": NaNReadingStage,
        "overshoot": OvershootingStage,
        "slow": SlowStage,
        "settling": SettlingStage,
    }.get(fault.kind, MockZStage)
    assert type(stage) is expected
    assert fault.stage_fault == (fault.kind not in ("none", "camera"))
    assert stage.fail_on_move == (fault.at if fault.kind == "fail" else None)
    assert stage.hang_on_move == (fault.at if fault.kind == "hang" else None)
    assert camera.fail_on_snap == (fault.at if fault.kind == "camera" else None)


def test_device_faults_pin_and_refuse_options() -> None:
    assert find(device_faults(kinds=("slow",), size=7.0), lambda f: True) == DeviceFault(
        "slow", 1, 7.0
    )
    assert find(device_faults(size=st.just(0.5)), lambda f: f.kind == "nan").size == 0.5
    with pytest.raises(ValueError, match="kinds"):
        device_faults(kinds=("melt",))
    with pytest.raises(ValueError, match="kinds"):
        device_faults(kinds=())
    with pytest.raises(ValueError, match="max_at"):
        device_faults(max_at=0)
    with pytest.raises(ValueError, match="kind"):
        DeviceFault("melt")
    with pytest.raises(ValueError, match="at"):
        DeviceFault("fail", 0)
    with pytest.raises(ValueError, match="size"):
        DeviceFault("overshoot", 1, -1.0)
