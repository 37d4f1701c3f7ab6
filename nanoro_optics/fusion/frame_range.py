"""The frames' per-pixel range: :func:`frame_range` and :class:`FrameRange`.

The fuser keeps every pixel of the fused image inside the range its frames recorded there;
the file pipeline (:mod:`nanoro_optics.pipeline`) reads the files a second time for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["FrameRange", "frame_range"]


def _planar_view(a: np.ndarray) -> np.ndarray:
    """Return a frame ``(H, W)`` or ``(H, W, C)`` as a planar ``(C, H, W)`` view (no copy)."""
    return np.moveaxis(a if a.ndim == 3 else a[:, :, None], -1, 0)


def frame_range(frames: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel minimum and maximum of a stack's frames.

    Parameters
    ----------
    frames : iterable of array_like
        The frames, all of one shape and dtype (an iterator is consumed one frame at a time;
        each frame's buffer may be reused for the next). The range does not depend on the
        order of the frames.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``lo`` and ``hi``, of a frame's shape and dtype.

    Raises
    ------
    ValueError, TypeError
        No frame, frames of different shapes or dtypes, or a float frame with a NaN or
        infinite pixel.

    Examples
    --------
    >>> import numpy as np
    >>> lo, hi = frame_range([np.array([[1, 5]]), np.array([[3, 2]])])
    >>> lo.tolist(), hi.tolist()
    ([[1, 2]], [[3, 5]])
    """
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise TypeError(f"frames must be an iterable of frames, got {type(frames).__name__}")
    acc = FrameRange()
    for k, frame in enumerate(frames):
        acc.add(frame, f"frame {k}")
    return acc.maps()


class FrameRange:
    """Running per-pixel minimum and maximum of frames; threads may add frames at once.

    :func:`frame_range` over one iterable; the file pipeline (:mod:`nanoro_optics.pipeline`)
    adds the frames two decoding threads read.
    """

    def __init__(self) -> None:
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self._first = ""
        self._lock = threading.Lock()

    def add(self, frame: Any, name: str) -> None:
        """Fold ``frame`` in (``name`` says which frame in messages)."""
        from . import _blend_kernels

        f = np.asarray(frame)
        if f.dtype.kind not in "uif" or f.ndim not in (2, 3):
            raise TypeError(f"{name} must be a 2-D or 3-D integer or float array")
        if f.dtype.kind == "f" and not np.isfinite(f).all():
            raise ValueError(f"{name} has NaN or infinite pixels: frames must be finite")
        with self._lock:
            first = self.lo is None
            if self.lo is None or self.hi is None:
                self.lo, self.hi = np.empty(f.shape, f.dtype), np.empty(f.shape, f.dtype)
                self._first = name
            elif f.shape != self.lo.shape or f.dtype != self.lo.dtype:
                kind = TypeError if f.shape == self.lo.shape else ValueError
                raise kind(
                    f"{name} has shape {f.shape} and dtype {f.dtype}, expected "
                    f"{self.lo.shape} and {self.lo.dtype} ({self._first}'s)"
                )
            # one parallel pass over the frame for both maps, whatever its strides (the
            # lock keeps the threads' calls of the parallel kernel one at a time)
            _blend_kernels.update_range(
                _planar_view(f), _planar_view(self.lo), _planar_view(self.hi), first
            )

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(lo, hi)``."""
        if self.lo is None or self.hi is None:
            raise ValueError("frames is empty: a range needs at least one frame")
        return self.lo, self.hi
