"""What a scan returns and fuses with: :class:`ZStack`, :class:`FrameInfo`, a fuser's protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["FrameInfo", "StackFuserLike", "ZStack"]


class StackFuserLike(Protocol):
    """What :func:`run_zscan` needs of a fuser (e.g. :class:`nanoro_optics.fusion.StackFuser`)."""

    def add(self, frame: Any, *, z_um: float | None = None) -> Any:
        """Fuse one more frame taken at ``z_um``."""
        ...

    def result(self) -> Any:
        """Return the fused result of the frames added so far."""
        ...


@dataclass(frozen=True)
class FrameInfo:
    """What :func:`run_zscan` passes to ``on_frame`` with each frame.

    Attributes
    ----------
    index : int
        0-based index of the frame in capture order (0 is the top).
    count : int
        Number of frames the plan takes.
    commanded_um, measured_um : float
        Commanded stage position and the position the stage reported after settling.
    """

    index: int
    count: int
    commanded_um: float
    measured_um: float


@dataclass(frozen=True, eq=False)
class ZStack:
    """Frames of a Z scan with their commanded and measured positions.

    Attributes
    ----------
    frames : tuple of numpy.ndarray
        The frames in capture order (top first): read-only copies that
        :func:`run_zscan` made of what the camera returned. Empty when the scan ran with
        ``keep_frames=False`` (``frames_kept`` False): the positions are still recorded.
    commanded_um : numpy.ndarray
        Commanded position of each frame (um, read-only).
    measured_um : numpy.ndarray
        Position the stage reported before each snap (um, read-only).
    start_um : float
        The start (lowest) position of the scan.
    planned_um : numpy.ndarray
        Every position the plan asked for; ``len(frames) < len(planned_um)`` after a fault.
    complete : bool
        True when every planned frame was captured.
    returned_to_start : bool
        True if the stage was commanded back to the start at the end.
    fused : object or None
        The fuser's result (e.g. a :class:`~nanoro_optics.fusion.FusionResult`) with
        ``fuser=``: of every frame after a complete scan; in ``err.partial`` after a fault,
        of the frames fused before it (None if no frame was fused or the fuser's
        ``result()`` failed). None without a fuser.
    elapsed_s : float
        Wall-clock duration of the scan in seconds.
    plan : ZScanPlan or None
        The plan that was run.
    frames_kept : bool
        False when the frames were not kept (``run_zscan(..., keep_frames=False)``).
    """

    frames: tuple[np.ndarray, ...]
    commanded_um: np.ndarray
    measured_um: np.ndarray
    start_um: float
    planned_um: np.ndarray
    complete: bool
    returned_to_start: bool = False
    fused: Any = None
    elapsed_s: float = 0.0
    plan: Any = field(default=None, repr=False)
    frames_kept: bool = True

    def __post_init__(self) -> None:
        for name in ("commanded_um", "measured_um", "planned_um"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "frames", tuple(self.frames))
        if not self.frames_kept and self.frames:
            raise ValueError(f"frames_kept is False but {len(self.frames)} frames were given")
        n_frames = len(self.frames) if self.frames_kept else self.commanded_um.size
        if not n_frames == self.commanded_um.size == self.measured_um.size:
            raise ValueError(
                f"frames ({len(self.frames)}), commanded_um ({self.commanded_um.size}) and "
                f"measured_um ({self.measured_um.size}) must have the same length"
            )

    def __len__(self) -> int:
        """Return the number of frames captured (kept or not)."""
        return int(self.commanded_um.size)

    def as_array(self) -> np.ndarray:
        """Return the frames stacked along a new first axis (top first)."""
        if not self.frames_kept:
            raise ValueError("the frames were not kept (run_zscan(..., keep_frames=False))")
        if not self.frames:
            raise ValueError("the stack has no frames")
        return np.stack(self.frames)
