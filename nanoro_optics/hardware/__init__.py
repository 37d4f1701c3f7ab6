"""Hardware: Z-stage and camera protocols, errors, a mock stage, a simulated camera, adapters.

=============================== ==============================================================
name                            what it is
=============================== ==============================================================
:class:`ZStage`, :class:`Camera` runtime-checkable protocols any driver can satisfy
errors                          :class:`StageLimitError` (a ValueError), :class:`StageTimeoutError`
                                (a TimeoutError), :class:`StageFault` (and its
                                :class:`StagePositionError`), :class:`CameraError` (and
                                its :class:`CameraTimeoutError`, a TimeoutError),
                                :class:`AcquisitionError` / :class:`AcquisitionInterrupted`
:class:`MockZStage`             simulated stage: limits, speed, settling, backlash, noise,
                                drift, injected faults, a log; on a :class:`SimulatedClock`
:class:`SimulatedCamera`        renders a synthetic specimen at the stage's z with defocus blur
=============================== ==============================================================

The simulated camera is imported on first use. The adapters for a pymmcore-plus core
(``MMCoreZStage``, ``MMCoreCamera``) live in :mod:`nanoro_optics.mmcore`.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .errors import (
    AcquisitionError,
    AcquisitionInterrupted,
    CameraError,
    CameraTimeoutError,
    HardwareError,
    StageFault,
    StageLimitError,
    StagePositionError,
    StageTimeoutError,
)
from .mock_stage import MockZStage, SimulatedClock, StageEvent
from .protocols import Camera, ZStage

_LAZY = {
    "SimulatedCamera": "sim_camera",
    "Specimen": "specimen",
    "GroundTruth": "sim_camera",
}

__all__ = [
    "AcquisitionError",
    "AcquisitionInterrupted",
    "Camera",
    "CameraError",
    "CameraTimeoutError",
    "HardwareError",
    "MockZStage",
    "SimulatedClock",
    "StageEvent",
    "StageFault",
    "StageLimitError",
    "StagePositionError",
    "StageTimeoutError",
    "ZStage",
    *sorted(_LAZY),
]


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
