"""Run a Z-scan plan on a stage and a camera, safely, optionally fusing while acquiring.

The executor and its safe-motion layer live in ``_scan`` (see :mod:`nanoro_optics.acquire._scan`
for the guarantees and the faults table).
"""

from __future__ import annotations

from ._scan import (
    DEFAULT_READOUT_TOLERANCE_UM,
    MAX_TIMEOUT_S,
    POSITION_TOLERANCE_SPACINGS,
    FrameInfo,
    MotionGuard,
    ReadingCheck,
    StackFuserLike,
    ZStack,
    check_frame,
    run_zscan,
    scan_targets_um,
)
from ._scan import _ReadingCheck as _ReadingCheck

__all__ = [
    "DEFAULT_READOUT_TOLERANCE_UM",
    "MAX_TIMEOUT_S",
    "POSITION_TOLERANCE_SPACINGS",
    "FrameInfo",
    "MotionGuard",
    "ReadingCheck",
    "StackFuserLike",
    "ZStack",
    "check_frame",
    "run_zscan",
    "scan_targets_um",
]
