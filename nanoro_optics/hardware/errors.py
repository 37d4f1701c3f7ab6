"""Errors raised by stages, cameras and the Z-scan executor.

Every class derives from :class:`HardwareError` so callers can catch the whole family, and
also from the built-in exception a caller would naturally reach for: a move past a limit
is a :class:`ValueError`, a move that does not finish in time is a :class:`TimeoutError`.
This module imports nothing of the package.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AcquisitionError",
    "AcquisitionInterrupted",
    "CameraError",
    "CameraTimeoutError",
    "HardwareError",
    "StageFault",
    "StageLimitError",
    "StagePositionError",
    "StageTimeoutError",
]


class HardwareError(Exception):
    """Base class of every error raised by a stage, a camera or the executor."""


class StageLimitError(HardwareError, ValueError):
    """A commanded position lies outside the stage's travel limits.

    Raised *before* the stage moves; nothing is ever clipped to the limit.
    """


class StageTimeoutError(HardwareError, TimeoutError):
    """The stage did not reach its target (or become idle) within the allowed time."""


class StageFault(HardwareError):
    """The stage reported a fault (driver error, lost steps, emergency stop, ...)."""


class StagePositionError(StageFault):
    """The stage reported a position the scan cannot accept.

    Not a finite number, outside the travel limits, below the scan's start, or off the
    commanded position by more than the executor's tolerance; also two readings of the
    start at rest that disagree.

    Parameters
    ----------
    message : str
        What is wrong, with the values and the tolerance.
    measured_um : float, keyword-only
        The reading (NaN if it was not a number).
    commanded_um : float, keyword-only
        Where the stage was sent (NaN when reading the start).
    index : int or None, keyword-only
        The frame about to be taken (None for the start or the move back to it).
    """

    def __init__(
        self,
        message: str,
        *,
        measured_um: float = float("nan"),
        commanded_um: float = float("nan"),
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.measured_um = measured_um
        self.commanded_um = commanded_um
        self.index = index


class CameraError(HardwareError):
    """The camera failed to deliver a frame."""


class CameraTimeoutError(CameraError, TimeoutError):
    """The camera did not deliver a frame within the allowed time."""


class AcquisitionError(HardwareError):
    """A Z-scan stopped early; ``partial`` holds everything captured before the fault.

    Parameters
    ----------
    message : str
        What went wrong.
    partial : object
        The partial result (an :class:`nanoro_optics.acquire.ZStack` with the frames and
        positions captured before the fault).
    stage_stopped : bool
        True if the executor called the stage's ``stop()`` and moved it no more (after a
        stage fault or an interrupt).
    returned_to_start : bool
        True if the stage was moved back to the start position after the fault.

    Notes
    -----
    The original exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: Any,
        stage_stopped: bool = False,
        returned_to_start: bool = False,
    ) -> None:
        super().__init__(message)
        self.partial = partial
        self.stage_stopped = stage_stopped
        self.returned_to_start = returned_to_start


class AcquisitionInterrupted(KeyboardInterrupt):
    """A Z-scan was interrupted (Ctrl-C); ``partial`` holds what was captured.

    It is a :class:`KeyboardInterrupt`, not an :class:`Exception`, so a generic ``except
    Exception`` does not swallow the user's interrupt; it carries the same attributes as
    :class:`AcquisitionError`. The stage was stopped and not moved again.
    """

    def __init__(self, message: str, *, partial: Any, stage_stopped: bool = True) -> None:
        super().__init__(message)
        self.partial = partial
        self.stage_stopped = stage_stopped
        self.returned_to_start = False
