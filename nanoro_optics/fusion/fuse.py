"""Fuse a whole focus stack in one call: :func:`fuse_stack`.

An array, an iterable of frames or (handed to :mod:`nanoro_optics.pipeline`) files, fused
frame by frame by a :class:`~nanoro_optics.fusion.stack.StackFuser` into a
:class:`~nanoro_optics.fusion.result.FusionResult`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .options import UNSET, FusionOptions, _Unset, field_values, merge
from .result import FusionResult
from .stack import StackFuser

if TYPE_CHECKING:
    from nanoro_optics.psf import IndexMismatch

__all__ = ["fuse_stack"]


def _is_path_source(frames: Any) -> bool:
    """Say whether ``frames`` names files (for :mod:`nanoro_optics.pipeline` to read)."""
    if isinstance(frames, (str, os.PathLike)):
        return True
    return (
        isinstance(frames, (list, tuple))
        and len(frames) > 0
        and all(isinstance(f, (str, os.PathLike)) for f in frames)
    )


def fuse_stack(
    frames: Any,
    options: FusionOptions | None = None,
    *,
    sharpness: int | _Unset | None = UNSET,
    window_px: int | _Unset = UNSET,
    coarse_window_px: int | _Unset | None = UNSET,
    inherit: float | _Unset = UNSET,
    focus_levels: int | _Unset = UNSET,
    noise_floor: float | _Unset = UNSET,
    levels: int | _Unset | None = UNSET,
    align: bool | _Unset = UNSET,
    reference: str | _Unset = UNSET,
    crop: bool | _Unset = UNSET,
    bit_depth: int | _Unset | None = UNSET,
    noise_dn: float | Sequence[float] | _Unset | None = UNSET,
    guide_channel: int | _Unset | None = UNSET,
    fill_depth: bool | _Unset = UNSET,
    min_confidence: float | _Unset = UNSET,
    z_step_um: float | _Unset | None = UNSET,
    z_um: Sequence[float] | _Unset | None = UNSET,
    index_mismatch: IndexMismatch | _Unset | None = UNSET,
    halo: str | _Unset = UNSET,
    halo_blur_px: float | _Unset | None = UNSET,
    progress: Callable[[int, int | None], None] | None = None,
) -> FusionResult:
    """Fuse a focus stack into one sharp image and a depth map.

    Parameters
    ----------
    frames : array_like, iterable of array_like, or path
        An array ``(N, H, W)`` or ``(N, H, W, C)``, or any iterable of frames (a generator
        reading files or a camera is consumed one frame at a time; the stack is never held in
        memory). For compatibility a folder, glob pattern, image file or list of them is
        also taken: that is handed to :func:`nanoro_optics.pipeline.fuse_files` (imported
        then), the file route the CLI takes.
    options : FusionOptions, optional
        Every setting of the fusion (:class:`~nanoro_optics.fusion.FusionOptions`).
    sharpness, window_px, coarse_window_px, inherit, focus_levels, noise_floor, levels, \
align, reference, crop, bit_depth, noise_dn, guide_channel, fill_depth, min_confidence, \
z_step_um, z_um, index_mismatch, halo, halo_blur_px : keyword-only, optional
        Override that field of ``options`` (:meth:`FusionOptions.replace`).
        ``reference="middle"`` (with ``align``) makes a first pass over the frames, so they
        must be an array (or files), not a one-shot iterator. ``crop`` cuts the result to
        the area every aligned frame covers.
    progress : callable, optional
        Called as ``progress(frames_done, n_frames_or_None)`` after each frame.

    Returns
    -------
    FusionResult
        ``image`` in the frames' dtype, ``depth``, ``confidence``, ``n_frames``; with
        ``halo="auto"`` the halo correction applied (an array of frames is read again near
        occluding edges, as is a list; a one-shot iterable is not, and ``result.halo.note`` says
        so).

    Raises
    ------
    ValueError
        Fewer than 2 frames (:data:`~.stack.ONE_FRAME_ERROR`), frames of different shapes, NaN
        pixels (the message names the frame).
    TypeError
        Frames of different dtypes or non-numeric data.

    References
    ----------
    .. [1] Burt & Adelson (1983), https://doi.org/10.1109/TCOM.1983.1095851
    .. [2] Burt & Kolczynski (1993), https://doi.org/10.1109/ICCV.1993.378222

    Examples
    --------
    >>> from nanoro_optics.fusion import synthetic_stack
    >>> stack = synthetic_stack((96, 96), 5, seed=1)
    >>> res = fuse_stack(stack.frames)
    >>> res.image.shape, res.image.dtype, res.n_frames
    ((96, 96, 3), dtype('uint8'), 5)
    """
    opts = merge(options, field_values(locals()))
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, got {type(progress).__name__}")
    if _is_path_source(frames):
        from nanoro_optics.pipeline import fuse_files  # the file route (reads, no writes)

        return fuse_files(frames, opts, progress=progress)
    total: int | None = None
    iterator: Iterable[Any]
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise ValueError(
                f"frames must be an array (N, H, W) or (N, H, W, C), got shape {frames.shape}"
            )
        total = int(frames.shape[0])
        iterator = (frames[k] for k in range(total))
    elif isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise TypeError(
            f"frames must be an array or an iterable of frames, got {type(frames).__name__}"
        )
    else:
        if hasattr(frames, "__len__"):
            total = len(frames)  # type: ignore[arg-type]
        iterator = frames
    align_reference = None
    if opts.reference == "middle":
        if not isinstance(frames, np.ndarray):
            raise TypeError(
                "reference='middle' reads the frames twice: give an array or a path, not a "
                f"one-shot {type(frames).__name__}"
            )
        from .align import reference_transform

        align_reference = reference_transform(frames, "middle")
    if opts.z_um is not None and total is not None and len(opts.z_um) != total:
        raise ValueError(
            f"z_um has {len(opts.z_um)} positions but {total} frames were given (one position "
            "per frame)"
        )
    fuser = StackFuser(opts, align_reference=align_reference)
    for frame in iterator:
        fuser.add(frame)
        if progress is not None:
            progress(fuser.n_frames, total)
    if fuser.n_frames == 0:
        raise ValueError("frames is empty: a focus stack needs at least one frame")
    # the halo correction reads the frames again: an array or a list can be, an iterator not
    again = frames if isinstance(frames, (np.ndarray, list, tuple)) else None
    res = fuser.result(release=True, frames=again)
    bbox = fuser.valid_bbox
    if opts.crop and bbox is not None:
        res = res.cropped(bbox)
    return res
