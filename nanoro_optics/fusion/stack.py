"""Streaming focus fusion: :class:`StackFuser`, :func:`fuse_stack` and :class:`FusionResult`.

Each frame is decomposed into a Burt-Adelson Laplacian pyramid [1]_ level by level and folded
into a running fused pyramid with the rule of :mod:`.rule`; the frame's pyramid is never
stored whole. The state is, per level, the weighted mean of the coefficients (planar; int16
fixed point for uint8 frames, else float32) and one map of the frames' activities (their
maximum, or their p-norm for the soft rule; for integer frames as 16-bit codes, else
float32), plus the depth tracker on the half-resolution level and the frames' per-pixel
range: for a uint8 RGB frame about ``4/3 * (6 + 2) + 11 / 4 + 6`` bytes per pixel (without
the tracker, ``depth=False``, the third term goes; without the range, which the file
pipeline hands over after a second read of the files, the last), and the per-frame work
buffers (the frame in planar form, its next Gaussian level). Memory does not grow with the
number of frames, and frames can be fused as a camera delivers them.

References
----------
.. [1] P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
   IEEE Trans. Commun. 31(4), 532-540 (1983). https://doi.org/10.1109/TCOM.1983.1095851
.. [2] P. J. Burt and R. J. Kolczynski, "Enhanced image capture through fusion", Proc. 4th
   ICCV, 173-182 (1993). https://doi.org/10.1109/ICCV.1993.378222
"""

from __future__ import annotations

import math
import operator
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nanoro_optics._validation import (
    as_float_array,
    check_bool,
)

from .depth import DepthTracker
from .options import UNSET, FusionOptions, _Unset, check_monotonic, merge
from .pyramid import auto_levels

if TYPE_CHECKING:
    from nanoro_optics.psf import IndexMismatch

__all__ = [
    "ONE_FRAME_ERROR",
    "FrameRange",
    "FusionResult",
    "StackFuser",
    "frame_range",
    "fuse_stack",
]

#: smallest noise standard deviation (DN) assumed for integer frames: the rounding to
#: integers alone gives 1 / sqrt(12) DN and cameras add read noise; below 1 DN the
#: quantisation steps of blurred frames pass for detail (the depth of a clean synthetic
#: 8-bit stack: 0.68 frame RMS at 0.29 DN, 0.15 at 1 DN; the fused image the same)
_SIGMA_MIN_DN = 1.0
#: the one answer to a stack of one frame, in every front end (a depth needs two frames)
ONE_FRAME_ERROR = (
    "the stack holds 1 frame: focus fusion needs at least 2 (one frame has nothing to fuse "
    "and no depth to measure)"
)
#: activity floor (noise energies) of the depth estimate and its confidence: below one
#: noise energy the focus profile is noise, whatever floor the fusion weights use
DEPTH_FLOOR = 1.0
#: rows of the first frame the noise estimate reads (evenly spaced; at 4000 px wide and
#: 3 channels, 7.7e5 samples: the median's relative error is about 1e-3)
_NOISE_ROWS = 64
#: tiles of the noise estimate (rows x columns of the second differences) and the quantile
#: of the tiles' medians it takes
_NOISE_TILE_ROWS = 4
_NOISE_TILE_COLS = 128
_NOISE_QUANTILE = 0.25


def noise_rows(h: int) -> np.ndarray:
    """Return the rows of an ``h``-row frame that the noise estimate reads.

    All rows of a frame of at most :data:`_NOISE_ROWS` rows; else :data:`_NOISE_ROWS` rows
    in blocks of :data:`_NOISE_TILE_ROWS` adjacent rows, evenly spaced (so that the rows
    taken out of a frame and stacked give back the same rows and blocks).
    """
    if h <= _NOISE_ROWS:
        return np.arange(h, dtype=np.intp)
    n_blocks = _NOISE_ROWS // _NOISE_TILE_ROWS
    starts = np.linspace(0, h - _NOISE_TILE_ROWS, n_blocks).astype(np.intp)
    return (starts[:, None] + np.arange(_NOISE_TILE_ROWS)).ravel()


def noise_sigma(frame: np.ndarray, next_frame: np.ndarray | None = None) -> np.ndarray:
    """Noise standard deviation per channel of ``frame`` (H, W, C) as the fuser uses it.

    :func:`estimate_noise` of the frame and, given the next frame of the stack, the smaller
    of that and the estimate of their difference over ``sqrt(2)``: texture that looks like
    noise within one frame (sharp, fine, everywhere) is common to both frames and cancels in
    the difference, noise does not. At least 1 DN for integer frames (:data:`_SIGMA_MIN_DN`)
    or ``1e-6`` of the span of float ones. Only the rows :func:`noise_rows` names are read,
    so those rows alone, stacked, give the same value.
    """
    rows = np.asarray(frame[noise_rows(frame.shape[0])])
    sigma = estimate_noise(rows)
    if next_frame is not None:
        rows1 = np.asarray(next_frame[noise_rows(next_frame.shape[0])], dtype=np.float32)
        diff = rows1.astype(np.float32) - rows.astype(np.float32)
        sigma = np.minimum(sigma, estimate_noise(diff) / np.sqrt(2.0))
    if frame.dtype.kind == "f":
        span = float(np.max(rows) - np.min(rows))
        lo = 1e-6 * span if span > 0 else 1.0
    else:  # 1 DN at least (this also bounds the activity codes)
        lo = _SIGMA_MIN_DN
    return np.maximum(sigma, lo)


def estimate_noise(frame: np.ndarray) -> np.ndarray:
    """Robust noise standard deviation of every channel of a frame ``(H, W, C)``, in DN.

    The median absolute second difference along rows, ``x[j] - (x[j-1] + x[j+1]) / 2``
    (variance ``1.5 sigma**2`` for white noise), scaled to a standard deviation (MAD / 0.6745,
    Donoho & Johnstone [1]_), in tiles of :data:`_NOISE_TILE_ROWS` x :data:`_NOISE_TILE_COLS`
    px; the estimate is the lower quartile of the tiles' values. Detail and edges barely move
    a median, and texture that looks like noise in focus (in some tiles) is blurred away in
    the defocused parts of a frame (in others), so this measures the noise of the flattest
    quarter of the frame (in a fluorescence image, the dark background's). For white noise
    the lower quartile of 512-sample tiles lies about 3 % below the noise. Reads at most
    :data:`_NOISE_ROWS` rows (:func:`noise_rows`).

    References
    ----------
    .. [1] D. L. Donoho and I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
       Biometrika 81(3), 425-455 (1994). https://doi.org/10.1093/biomet/81.3.425
    """
    w = frame.shape[1]
    if w < 3:
        return np.zeros(frame.shape[2])
    x = frame[noise_rows(frame.shape[0])].astype(np.float32)
    r = np.abs(x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:]))  # (rows, w - 2, C)
    # tiles of adjacent rows and columns; the median in each, then a low quantile of those
    th = _NOISE_TILE_ROWS if r.shape[0] >= 2 * _NOISE_TILE_ROWS else r.shape[0]
    tw = min(_NOISE_TILE_COLS, r.shape[1])
    ny, nx = r.shape[0] // th, r.shape[1] // tw
    tiles = r[: ny * th, : nx * tw].reshape(ny, th, nx, tw, -1).transpose(0, 2, 1, 3, 4)
    mads = np.median(tiles.reshape(ny * nx, th * tw, -1), axis=1)  # (tiles, C)
    mad = np.quantile(mads, _NOISE_QUANTILE, axis=0) if len(mads) > 1 else mads[0]
    return np.asarray(mad, np.float64) / (0.6745 * np.sqrt(1.5))


@dataclass(frozen=True)
class FusionResult:
    """The fused image of a focus stack and its depth map.

    Attributes
    ----------
    image : numpy.ndarray
        Fused image, same dtype and shape as one input frame (integers rounded half to even).
    depth : numpy.ndarray
        float32 ``(H, W)``: frame of best focus with a sub-frame estimate (0 = first frame),
        or its z position in um when z positions were given. Where no frame is confidently
        in focus (confidence below the rule's ``min_confidence``) the depth is filled from
        the confident pixels around it (``fill_depth=True``, the default), else NaN; NaN
        everywhere when no pixel is confident, and outside ``valid_bbox`` with alignment.
    confidence : numpy.ndarray
        float32 ``(H, W)`` in ``[0, 1]``: how clearly one frame stands out as the sharpest
        (0: the focus profile is flat to within the noise, 1: one frame stands far above
        the rest); it marks the filled, less certain pixels.
    n_frames : int
        Number of frames fused.
    depth_unit : str
        ``"frame"`` or ``"um"``.
    depth_kind : str
        ``"nominal"`` (stage z of best focus, or frame index) or ``"actual"`` (height in the
        sample, corrected for an index mismatch: ``FusionOptions.index_mismatch``).
    """

    image: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    n_frames: int
    depth_unit: str = "frame"
    depth_kind: str = "nominal"

    def cropped(self, bbox: tuple[int, int, int, int]) -> FusionResult:
        """Return the result cut to ``bbox = (y0, y1, x0, x1)`` (contiguous copies)."""
        y0, y1, x0, x1 = (int(v) for v in bbox)
        return FusionResult(
            image=np.ascontiguousarray(self.image[y0:y1, x0:x1]),
            depth=np.ascontiguousarray(self.depth[y0:y1, x0:x1]),
            confidence=np.ascontiguousarray(self.confidence[y0:y1, x0:x1]),
            n_frames=self.n_frames,
            depth_unit=self.depth_unit,
            depth_kind=self.depth_kind,
        )


def _collapse(accs: list[np.ndarray], scale: float, dtype: np.dtype, kernels: Any) -> np.ndarray:
    """Rebuild the image (H, W, C) in ``dtype`` from the fused levels (``acc * scale``)."""
    top = len(accs) - 1
    nc, h, w = accs[0].shape
    # other dtypes are fused in float32 working units: built as float32, mapped back exactly
    # by StackFuser._from_work (the kernel's float clip cannot hold 64-bit limits)
    dtype = dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)
    is_int = dtype.kind in "ui"
    lo, hi = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if is_int else (0.0, 0.0)
    sc = np.float32(scale)
    if top == 0:
        cur = np.empty(accs[0].shape, np.float32)
        kernels.scale_into(accs[0], sc, cur)
        img = np.moveaxis(cur, 0, -1)
        if is_int:
            return np.clip(np.rint(img), lo, hi).astype(dtype)
        return np.ascontiguousarray(img, dtype=dtype)
    cur = np.empty(accs[top].shape, np.float32)
    kernels.scale_into(accs[top], sc, cur)
    for k in range(top - 1, 0, -1):
        nxt = np.empty(accs[k].shape, np.float32)
        kernels.expand_add(accs[k], sc, cur, nxt, False, False, 0.0, 0.0)
        accs[k + 1] = accs[k + 1][:0]  # no longer needed: let its memory go
        cur = nxt
    out = np.empty((h, w, nc), dtype=dtype if is_int else np.float32)
    kernels.expand_add(accs[0], sc, cur, out, True, is_int, lo, hi)
    return out if is_int else out.astype(dtype, copy=False)


#: activity / eps that 16-bit activity codes hold (``_kernel_common._encode_row``), with a margin
_CODE_RANGE = 2.0**31


def _activity_bound(levels: int, inherit: float, energy: float) -> float:
    """Largest activity on any level, for frames whose weighted energy is at most ``energy``.

    Activities here are in units of the floor. A Laplacian coefficient is at most the white
    level in magnitude (REDUCE and EXPAND average with positive weights), so the local
    weighted energy of a level is at most ``sum_c w_c white**2 / floor`` (``energy``; the
    channel weights ``w_c = 1 / (C sigma_c**2)`` sum to at most ``1 / sigma_min**2``); level
    ``k`` adds ``inherit`` times the (averaged) activity of level ``k - 1``, and the floor.
    """
    one_level = 1.0 + energy
    return one_level * sum(float(inherit) ** k for k in range(levels))


#: int16 steps per DN of the fused coefficients of uint8 frames: coefficients of a uint8
#: image lie in [-255, 255], so 128 steps per DN fit int16 and keep 1/256 DN rounding
_QSCALE_UINT8 = 128.0

#: float frames whose largest magnitude lies in this window are fused at their own scale;
#: others are first multiplied by a power of two (exact) that brings it to [0.5, 1): the
#: float32 energies (coefficient squared over noise squared) then neither overflow nor
#: underflow (float32 frames at 1e20 or 1e-20 fused to NaN before)
_FLOAT_SCALE_WINDOW = (2.0**-24, 2.0**24)
#: integer frames (other than uint8 and uint16) whose first frame lies in +-2**24 are fused
#: as they are (float32 holds them exactly); wider ones relative to the midpoint of the
#: first frame's range, scaled by a power of two to a span of at most 2**24
_INT_EXACT = 2**24
#: smallest noise standard deviation the fuser works with, in its float32 working units
#: (the data scaled as above): 1 / (C sigma**2) stays finite in float32 (2**-60 is far
#: below float32's resolution of data of magnitude >= 2**-24)
_SIGMA_TINY = 2.0**-60
#: a float frame of magnitude 2**this in the working units (frame 0 at most 2**24 there)
#: is refused: its pyramid sums would near float32's 2**128 (the fusion kernel saturates
#: the energies, ``_blend_kernels.ACTIVITY_MAX``, so they do not overflow before)
_WORK_MAX_EXP = 100
_SIGN_BIT = np.uint64(1 << 63)


def _biased(a: np.ndarray) -> np.ndarray:
    """Map an integer array onto uint64, order-preserving (signed: the sign bit flipped)."""
    if a.dtype.kind == "u":
        return a.astype(np.uint64)
    return a.astype(np.int64).view(np.uint64) ^ _SIGN_BIT


def _unbiased(u: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_biased` (``u`` must hold values of ``dtype``)."""
    if dtype.kind == "u":
        return u.astype(dtype)
    return (u ^ _SIGN_BIT).view(np.int64).astype(dtype)


def _bias_of(dtype: np.dtype) -> int:
    return 1 << 63 if dtype.kind == "i" else 0


def _saturating_add(base: int, steps: np.ndarray) -> np.ndarray:
    """Add integral float64 ``steps`` to ``base`` in uint64, saturated to ``[0, 2**64 - 1]``."""
    big = np.float64(2.0**64 - 2048)  # the largest float64 below 2**64
    ub = np.uint64(base)
    up = np.minimum(np.maximum(steps, 0.0), big).astype(np.uint64)
    down = np.minimum(np.maximum(-steps, 0.0), big).astype(np.uint64)
    top = np.uint64(2**64 - 1) - ub
    out = np.where(up > top, np.uint64(2**64 - 1), ub + np.minimum(up, top))
    return np.where(down > ub, np.uint64(0), out - np.minimum(down, ub))


class StackFuser:
    """Fuse a focus stack frame by frame (memory independent of the number of frames).

    Parameters
    ----------
    options : FusionOptions, optional
        Every setting of the fusion (:class:`~nanoro_optics.fusion.FusionOptions`, whose
        fields document each one); default ``FusionOptions()``.
    sharpness, window_px, coarse_window_px, inherit, focus_levels, noise_floor, levels, \
align, reference, crop, bit_depth, noise_dn, guide_channel, fill_depth, min_confidence, \
z_step_um, z_um, index_mismatch : keyword-only, optional
        Override that field of ``options`` (validated as :meth:`FusionOptions.replace`
        does). z positions may also be given to each :meth:`add`. ``reference="middle"``
        needs ``align_reference`` (a streaming fuser sees each frame once); ``crop`` is
        applied by :func:`fuse_stack` and :mod:`nanoro_optics.pipeline` (the fuser's
        result keeps the full grid, :attr:`valid_bbox` says what to crop).
    depth : bool, optional
        Track the frame of best focus for the depth map (default). With ``False`` the fuser
        keeps no depth tracker (at 12 MP about 63 MB less and a little less work per frame)
        and only :meth:`image` gives a result; :meth:`result` then raises.
    align_reference : array_like, optional
        With ``align``, the 2x3 matrix of the frame whose pixel grid the result takes
        (:func:`~nanoro_optics.fusion.align.reference_transform` over the same frames, a
        first pass); by default the first frame's grid.

    Notes
    -----
    Frames must all have the same shape and dtype: uint8, uint16 (any integer type) or float,
    grey ``(H, W)`` or colour ``(H, W, C)``. The depth map assumes frames arrive in focus
    order (as a Z scan delivers them). The channels' noise is estimated from the first two
    frames (:func:`noise_sigma`); with ``noise_dn`` given, the fused image does not depend on
    the frames' order, up to rounding (exactly with the hard rule, ``sharpness=None``).

    Every pixel of the fused image lies within the range ``[min_k, max_k]`` the frames
    recorded at that pixel (the fuser keeps that range, two maps of the frame's size): a
    Laplacian pyramid whose levels come from different frames can overshoot where the frames
    differ at coarse scales (brightness changes, misalignment, specular highlights), and the
    data bound it. Single frames come back exactly.

    The fused pyramid holds, per coefficient, the weighted mean of the frames' coefficients
    so far. For uint8 frames it is stored as int16 fixed point, 128 steps per DN
    (coefficients of a uint8 image lie within +-255 DN): half the memory and memory traffic
    of float32, at a rounding of 1/256 DN per frame, far below the output's 1 DN step.
    Other dtypes are fused in float32 (16-bit frames keep their full precision): float
    frames scaled by a power of two when frame 0's largest magnitude lies outside
    ``2**-24`` to ``2**24``, integers wider than 24 bits relative to the midpoint of frame
    0's range, and mapped back exactly (:meth:`_set_scale`), so that every integer width
    (int8 to uint64) and every finite float scale (float16 to float64) fuses to a finite
    image inside the frames' range. A float frame ``2**100`` times frame 0's scale is
    refused (its pyramid would overflow float32).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    >>> fuser = StackFuser()
    >>> for _ in range(3):
    ...     fuser.add(img)
    >>> res = fuser.result()
    >>> res.n_frames, bool(np.array_equal(res.image, img))
    (3, True)
    """

    def __init__(
        self,
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
        depth: bool = True,
        align_reference: Any = None,
    ) -> None:
        opts = merge(
            options,
            {
                "sharpness": sharpness,
                "window_px": window_px,
                "coarse_window_px": coarse_window_px,
                "inherit": inherit,
                "focus_levels": focus_levels,
                "noise_floor": noise_floor,
                "levels": levels,
                "align": align,
                "reference": reference,
                "crop": crop,
                "bit_depth": bit_depth,
                "noise_dn": noise_dn,
                "guide_channel": guide_channel,
                "fill_depth": fill_depth,
                "min_confidence": min_confidence,
                "z_step_um": z_step_um,
                "z_um": z_um,
                "index_mismatch": index_mismatch,
            },
        )
        self.options = opts
        self.rule = opts.rule
        self.guide_channel = opts.guide_channel
        self.depth = check_bool(depth, "depth")
        self._keep_range = True  # the file pipeline hands the range over instead (_set_range)
        self.bit_depth = opts.bit_depth
        self._noise_opt: np.ndarray | None = (
            None if opts.noise_dn is None else np.atleast_1d(np.asarray(opts.noise_dn, float))
        )
        self.noise_dn: np.ndarray | None = None
        self._z_init = None if opts.z_um is None else np.asarray(opts.z_um, np.float64)
        self._levels_opt = opts.levels
        self.align = opts.align
        self._aligner: Any = None
        if align_reference is not None:
            if not self.align:
                raise ValueError("align_reference is for align=True (it sets the output grid)")
            from .align import FrameAligner

            self._aligner = FrameAligner(reference=align_reference)  # checks the matrix
        elif opts.reference != "first":
            raise ValueError(
                f"reference={opts.reference!r}: a StackFuser sees each frame once, so it "
                "takes the reference frame's transform as align_reference= (fuse_stack and "
                "nanoro_optics.pipeline compute it from a first pass over the frames)"
            )
        self._z_frames: list[float] = []
        self._n = 0
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._first: np.ndarray | None = None
        self._shape_source = "frame 0"
        self._allocated = False
        self._kernels: Any = None
        self._pyr_kernels: Any = None
        self._released = False
        self._closed = False
        self._rows0: np.ndarray | None = None  # frame 0's noise rows while it waits
        self._acc: list[np.ndarray] = []
        self._built: np.ndarray | None = None  # the image collapsed by _close(collapse=True)

    # -- properties ---------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Number of frames added so far."""
        return self._n

    @property
    def valid_bbox(self) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)`` covered by every aligned frame (None without alignment)."""
        if self._aligner is None:
            return None
        return tuple(int(v) for v in self._aligner.valid_bbox)  # type: ignore[return-value]

    # -- frame intake -------------------------------------------------------------------
    def _check_frame(self, frame: Any) -> np.ndarray:
        k = self._n
        if not isinstance(frame, np.ndarray):
            try:
                frame = np.asarray(frame)
            except Exception as exc:
                raise TypeError(f"frame {k} is not an array: {type(frame).__name__}") from exc
        if frame.dtype.kind not in "uif":
            raise TypeError(f"frame {k} must hold integers or floats, got dtype {frame.dtype}")
        if frame.ndim not in (2, 3) or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(
                f"frame {k} must be (rows, cols) or (rows, cols, channels), got shape {frame.shape}"
            )
        if frame.ndim == 3 and not 1 <= frame.shape[2] <= 16:
            raise ValueError(f"frame {k} has {frame.shape[2]} channels, expected 1 to 16")
        self._check_guide(frame.shape[2] if frame.ndim == 3 else 1, f"frame {k}")
        if self._shape is not None:
            if frame.shape != self._shape:
                raise ValueError(
                    f"frame {k} has shape {frame.shape}, expected {self._shape} "
                    f"(the shape of {self._shape_source})"
                )
            if frame.dtype != self._dtype:
                raise TypeError(
                    f"frame {k} has dtype {frame.dtype}, expected {self._dtype} "
                    f"(the dtype of {self._shape_source})"
                )
        self._in_dtype = frame.dtype
        if self.bit_depth is not None and frame.dtype.kind in "ui":
            white = self._white_level(frame.dtype)
            top = int(frame.max())
            if top > white:
                pos = np.unravel_index(int(np.argmax(frame)), frame.shape)
                raise ValueError(
                    f"frame {k} has the value {top} at {tuple(int(p) for p in pos)}, above "
                    f"{int(white)}, the largest of bit_depth={self.bit_depth}"
                )
        if frame.dtype.kind == "f":
            # checked at the frame's own precision (float32 of a finite 1e300 is inf); the
            # pyramid works in float32 whatever the input precision (float16: exactly)
            frame = np.ascontiguousarray(frame, dtype=np.promote_types(frame.dtype, np.float32))
            bad, top = self._kern().finite_absmax(frame)
            if bad >= 0:
                pos = np.unravel_index(int(bad), frame.shape)
                raise ValueError(
                    f"frame {k} has a non-finite pixel ({frame.flat[int(bad)]}) at "
                    f"{tuple(int(p) for p in pos)}"
                )
            if k == 0:
                self._set_scale(frame, float(top))
            if top > 0 and math.frexp(top)[1] + self._exp > _WORK_MAX_EXP:
                raise ValueError(
                    f"frame {k} has a pixel of magnitude {float(top)!r}, at least "
                    f"2**{_WORK_MAX_EXP - self._exp}, this stack's limit: the fuser works in "
                    f"float32 scaled to frame 0 (largest magnitude {self._scale0!r}), where "
                    f"pixels must stay below 2**{_WORK_MAX_EXP}"
                )
        elif k == 0:
            self._set_scale(frame, 0.0)
        if self._work_dtype(self._in_dtype) != frame.dtype or self._exp != 0:
            frame = self._to_work(frame)  # float32 working units (see _set_scale)
        return frame  # copied into the planar buffer, whatever its strides

    def _set_scale(self, frame: np.ndarray, top: float) -> None:
        """Choose, from frame 0, how frames map onto the float32 working units.

        A frame ``x`` is fused as ``(x - offset) * 2**exp`` in float32. uint8 and uint16
        frames, float frames whose largest magnitude lies in :data:`_FLOAT_SCALE_WINDOW`
        and integer frames within ``+-2**24`` keep ``offset = 0, exp = 0`` (fused as they
        are). Other float frames are scaled by a power of two (exactly) to a largest
        magnitude in ``[0.5, 1)``; other integer frames are taken relative to the midpoint
        of frame 0's range (``offset``, exact in 64-bit integers) and scaled by a power of
        two to a span of at most ``2**24``. The fused image is mapped back exactly
        (:meth:`_from_work`), so any integer width and any finite float scale fuse
        finite and inside the frames' range.
        """
        self._exp = 0
        self._offset: int | None = None  # in the biased uint64 domain of _biased()
        self._scale0 = top  # frame 0's largest magnitude (float frames)
        if frame.dtype in (np.uint8, np.uint16):
            return
        if frame.dtype.kind == "f":
            if top > 0 and not _FLOAT_SCALE_WINDOW[0] <= top <= _FLOAT_SCALE_WINDOW[1]:
                self._exp = -math.frexp(top)[1]
            return
        lo, hi = int(frame.min()), int(frame.max())
        if -_INT_EXACT <= lo and hi <= _INT_EXACT:
            return
        self._offset = _bias_of(frame.dtype) + (lo + hi) // 2
        self._exp = -max(0, (hi - lo).bit_length() - 24)

    def _to_work(self, frame: np.ndarray) -> np.ndarray:
        """Return a frame in the float32 working units of :meth:`_set_scale`."""
        if frame.dtype.kind == "f":  # (magnitudes checked: below 2**100 once scaled)
            if self._exp == 0:
                return frame.astype(np.float32)
            if frame.dtype == np.float32:  # (ldexp is exact up to the one final rounding)
                return np.ldexp(frame, self._exp)
            return np.ldexp(frame.astype(np.float64, copy=False), self._exp).astype(np.float32)
        if self._offset is None:  # exact in float32 below 2**24, rounded (no wrap) above
            return frame.astype(np.float32)
        return np.ldexp(self._steps(frame), self._exp).astype(np.float32)

    def _steps(self, frame: np.ndarray) -> np.ndarray:
        """``frame - offset`` as float64, computed exactly in uint64 (then rounded once)."""
        assert self._offset is not None
        u = _biased(frame)
        base = np.uint64(self._offset)
        above = u >= base
        return np.where(
            above,
            (u - np.where(above, base, u)).astype(np.float64),
            -(np.where(above, u, base) - u).astype(np.float64),
        )

    def _from_work(
        self, image3: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None
    ) -> np.ndarray:
        """Map a float32 image ``(H, W, C)`` of working units back to the frames' dtype.

        Exactly: integers rounded half to even from the offset in 64-bit integers and
        saturated at the dtype's limits, floats scaled back by the power of two; then
        clamped to the planar per-pixel range ``lo``, ``hi`` (the frames' dtype) in that
        exact arithmetic, so that no pixel leaves the data (nor wraps around).
        """
        dtype = self._dtype
        assert dtype is not None
        out = np.empty(image3.shape, dtype)
        step = 256  # rows at a time: the float64 / uint64 temporaries stay small
        for r0 in range(0, image3.shape[0], step):
            rows = slice(r0, r0 + step)
            y = np.ldexp(image3[rows].astype(np.float64), -self._exp)
            b = None if lo is None or hi is None else (lo[:, rows], hi[:, rows])
            if dtype.kind == "f":
                if b is not None:  # lo, hi are values of dtype: its rounding keeps y inside
                    y = np.minimum(np.maximum(y, _interleaved(b[0])), _interleaved(b[1]))
                with np.errstate(over="ignore"):
                    out[rows] = y.astype(dtype)
                continue
            base = _bias_of(dtype) if self._offset is None else self._offset
            u = _saturating_add(base, np.rint(y))
            info = np.iinfo(dtype)
            lim = _biased(np.array([info.min, info.max], dtype))
            u = np.minimum(np.maximum(u, lim[0]), lim[1])
            if b is not None:
                u = np.minimum(
                    np.maximum(u, _biased(_interleaved(b[0]))), _biased(_interleaved(b[1]))
                )
            out[rows] = _unbiased(u, dtype)
        return out

    def _check_guide(self, c: int, source: str) -> None:
        g = self.guide_channel
        if g is not None and g >= c:
            raise ValueError(
                f"guide_channel={g} is out of range: {source} has {c} channel"
                f"{'s' if c > 1 else ''} (guide_channel 0 to {c - 1})"
            )

    def _kern(self) -> Any:
        if self._kernels is None:
            from . import _blend_kernels

            self._kernels = _blend_kernels
        return self._kernels

    def _pyr(self) -> Any:
        if self._pyr_kernels is None:
            from . import _pyramid_kernels

            self._pyr_kernels = _pyramid_kernels
        return self._pyr_kernels

    def _take_z(self, z_um: Any) -> None:
        k = self._n
        step = self.options.z_step_um
        if z_um is not None and step is not None:
            raise ValueError(
                f"frame {k}: z_um={z_um!r} was given to add() but the options set "
                f"z_step_um={step}; give one"
            )
        if z_um is None and step is not None:
            z_um = k * step  # frame k at k * z_step_um from the first frame
        if z_um is None:
            if self._z_frames:
                raise ValueError(f"frame {k} has no z_um but the frames before it had one")
            return
        if self._z_init is not None:
            raise ValueError(
                f"frame {k}: z_um was given both to StackFuser() and to add(); give it once"
            )
        if k > 0 and not self._z_frames:
            raise ValueError(f"frame {k} has z_um={z_um!r} but the frames before it had none")
        z = float(as_float_array(z_um, "z_um"))
        zs = [*self._z_frames, z]
        _check_monotonic(np.asarray(zs), "z_um")
        self._z_frames.append(z)

    def _white_level(self, dtype: np.dtype) -> float:
        """Largest value a frame may hold: ``2**bit_depth - 1``, else the dtype's maximum."""
        if dtype.kind in "ui":
            top = float(np.iinfo(dtype).max)
            if self.bit_depth is not None:
                if 2.0**self.bit_depth - 1 > top:
                    raise ValueError(
                        f"bit_depth={self.bit_depth} does not fit frames of dtype {dtype} "
                        f"(at most {np.iinfo(dtype).bits} bits)"
                    )
                return 2.0**self.bit_depth - 1
            return top
        return 1.0

    def _set_noise(self, frame3: np.ndarray, next_frame: np.ndarray | None = None) -> None:
        """Weigh every channel's energy by its noise (first two frames, or ``noise_dn``).

        Activity is then in units of the noise energy, whatever the dtype, range or gain of
        the data: a dim 12-bit channel in a uint16 container counts as much as a bright one,
        and the floor ``rule.noise_floor`` sits at the noise, not at a fraction of the
        container's range.
        """
        c = frame3.shape[2]
        g = self.guide_channel
        if self._noise_opt is not None:
            if self._noise_opt.size not in (1, c):
                raise ValueError(
                    f"noise_dn has {self._noise_opt.size} values but the frames have {c} "
                    f"channels (give one, or one per channel)"
                )
            sigma = np.broadcast_to(self._noise_opt, (c,)).astype(np.float64)
            if frame3.dtype.kind in "ui":  # 1 DN at least (this also bounds the codes)
                sigma = np.maximum(sigma, _SIGMA_MIN_DN)
            sigma = np.ldexp(sigma, self._exp)  # in the working units (_set_scale)
            if np.any(sigma < _SIGMA_TINY) or np.any(sigma > 1.0 / _SIGMA_TINY):
                raise ValueError(
                    f"noise_dn={self._noise_opt.tolist()!r} does not fit these frames: "
                    f"from {math.ldexp(_SIGMA_TINY, -self._exp):.6g} to "
                    f"{math.ldexp(1.0 / _SIGMA_TINY, -self._exp):.6g} (2**-60 to 2**60 of "
                    f"the frames' scale), else the noise energy leaves float32"
                )
        else:  # (at least 2**-60 of the frames' scale: far below float32's resolution)
            sigma = np.maximum(noise_sigma(frame3, next_frame), _SIGMA_TINY)
        self.noise_dn = np.ldexp(sigma, -self._exp)  # in DN of the frames
        if g is None:
            self._lum = (1.0 / (c * sigma**2)).astype(np.float32)
        else:  # the guide alone, weighed as in a single-channel fusion of it
            self._lum = np.zeros(c, np.float32)
            self._lum[g] = np.float32(1.0 / sigma[g] ** 2)

    @staticmethod
    def _work_dtype(dtype: np.dtype) -> np.dtype:
        """Return the dtype frames are fused in: uint8 and uint16 as given, else float32."""
        return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)

    def _reserve(self, shape: Sequence[int], dtype: Any) -> None:
        """Allocate the working memory for frames of ``shape`` and ``dtype`` before the first.

        Otherwise the first :meth:`add` pays for it: at 12 MP about 0.3 GB of new memory,
        whose pages the system maps in as they are first written. The file pipeline
        (:mod:`nanoro_optics.pipeline`) calls it while the first frame is being decoded (the
        work is done outside the GIL, so it runs beside a decoding thread). Every frame
        added afterwards must have this shape and dtype.

        Parameters
        ----------
        shape : sequence of int
            ``(H, W)`` or ``(H, W, C)`` of the frames.
        dtype : numpy dtype or type
            Their dtype (integers or floats).

        Raises
        ------
        ValueError
            A shape that is not a frame's, or frames were already added or reserved for.
        TypeError
            A dtype that is not numeric.
        """
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._shape is not None:
            raise ValueError(
                f"_reserve() must come before the first frame; this fuser already has frames "
                f"of shape {self._shape}"
            )
        try:
            dims = tuple(operator.index(v) for v in shape)
        except TypeError as exc:
            raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from exc
        if len(dims) not in (2, 3) or min(dims) < 1 or (len(dims) == 3 and dims[2] > 16):
            raise ValueError(
                f"shape must be (rows, cols) or (rows, cols, channels) with 1 to 16 channels, "
                f"all >= 1, got {dims}"
            )
        try:
            kind = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be a numpy dtype, got {dtype!r}") from exc
        if kind.kind not in "uif":
            raise TypeError(f"dtype must be an integer or float type, got {kind}")
        c = dims[2] if len(dims) == 3 else 1
        self._check_guide(c, f"the reserved shape {dims}")
        self._shape, self._dtype, self._shape_source = dims, kind, "_reserve()"
        self._allocate(dims[0], dims[1], c, self._work_dtype(kind))
        assert self._plane is not None
        maps: list[np.ndarray] = [*self._acc, *self._wnorm, *self._gbuf, *self._rbuf]
        ranges = () if self._lo is None or self._hi is None else (self._lo, self._hi)
        for arr in (*maps, self._plane, *ranges, *self._tracker_arrays()):
            arr[...] = 0  # map the pages in now (numpy releases the GIL for this)

    def _allocate(self, h: int, w: int, c: int, work_dtype: np.dtype) -> None:
        self._allocated = True
        n_levels = self._levels_opt if self._levels_opt is not None else auto_levels((h, w))
        self.levels = n_levels
        self._acc = []
        self._wnorm: list[np.ndarray] = []
        shapes = []
        hh, ww = h, w
        for _ in range(n_levels):
            shapes.append((hh, ww))
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
        self._level_shapes = shapes
        # uint8 frames: the fused coefficients in int16 fixed point (half the memory and
        # memory traffic of float32, rounding 1/256 DN); anything else in float32
        self._quant = self._dtype == np.uint8
        self._qscale = _QSCALE_UINT8 if self._quant else 1.0
        acc_dtype = np.int16 if self._quant else np.float32
        assert self._dtype is not None
        # activity is in units of the noise energy (the channel weights are set from the
        # first frame, :meth:`_set_noise`); the floor is ``rule.noise_floor`` of it
        self._eps = float(self.rule.noise_floor)
        self._white = self._white_level(self._dtype)
        # integer frames bound the activity: its maps (the norms below, the depth tracker's)
        # can then hold 16-bit codes of activity / eps, half the memory of float32
        self._coded = self._dtype.kind in "ui" and (
            _activity_bound(
                n_levels, self.rule.inherit, self._white**2 / _SIGMA_MIN_DN**2 / self._eps
            )
            < _CODE_RANGE
        )
        norm_dtype = np.uint16 if self._coded else np.float32
        for hh, ww in shapes:
            self._acc.append(np.zeros((c, hh, ww), acc_dtype))
            self._wnorm.append(np.zeros((hh, ww), norm_dtype))
        self._depth_level = min(1, n_levels - 1) if self.depth else -1
        self._tracker: DepthTracker | None = None
        floor = self._eps if self._coded else None
        if self.depth:
            lev = self._depth_level
            self._tracker = DepthTracker(shapes[lev], lev, (h, w), floor=floor)
        self._lum = np.full(c, 1.0 / c, np.float32)  # set from the first frame
        # per-frame work buffers, reused so that no frame pays for fresh pages
        # (uint8 frames: the Gaussian levels in the fixed point of ``acc``, half the memory)
        self._gbuf = [np.empty((c, hh, ww), acc_dtype) for hh, ww in shapes[1:]]
        self._rbuf = [np.empty((hh, ww), np.float32) for hh, ww in shapes[1:]]
        # level 0 is read planar: every frame is first copied into this buffer, after which
        # the caller may reuse its own (``_add(frame, z, on_copied)``)
        # (uint16 frames are copied into float32: level 0 then runs the same compiled
        # kernels as the coarser levels, one specialisation less of each to compile on a
        # first run, for 2 bytes a sample more; uint8 frames keep their compact plane)
        plane_dtype = np.float32 if work_dtype == np.uint16 else work_dtype
        self._plane: np.ndarray | None = np.empty((c, h, w), plane_dtype)
        # the frames' per-pixel range: the fused image is kept inside it (see result())
        # (in the frames' own dtype: exact for every dtype, as _set_range gives it)
        keep = self._keep_range
        self._lo: np.ndarray | None = np.empty((c, h, w), self._dtype) if keep else None
        self._hi: np.ndarray | None = np.empty((c, h, w), self._dtype) if keep else None
        self._dummy2 = np.zeros((1, 1), np.float32)
        self._dummy3 = np.zeros((c, 1, 1), acc_dtype)
        # placeholders of the tracker's maps on the levels it does not follow (a tracker of
        # one pixel: the same dtypes, so that the kernel compiles once for both)
        self._no_track = DepthTracker((1, 1), 0, (1, 1), floor=floor).arrays()

    def _tracker_arrays(self) -> tuple[np.ndarray, ...]:
        return () if self._tracker is None else self._tracker.arrays()

    def add(self, frame: Any, *, z_um: float | None = None) -> None:
        """Fuse one more frame into the result.

        Parameters
        ----------
        frame : array_like, shape (H, W) or (H, W, C)
            The next frame, same shape and dtype as the first one.
        z_um : float, optional
            Its z position in um (then every frame needs one, strictly monotonic; not with
            the options' ``z_um`` or ``z_step_um``).

        Raises
        ------
        ValueError
            Shape differs from frame 0, a NaN/inf pixel, or an inconsistent ``z_um``.
        TypeError
            Not numeric, or dtype differs from frame 0.
        """
        self._add(frame, z_um, None)

    def _add(self, frame: Any, z_um: float | None, on_copied: Callable[[], None] | None) -> None:
        """:meth:`add`; ``on_copied()`` is called once the fuser holds its copy of the frame.

        The file pipeline's decoding thread then refills the frame's buffer while the frame
        is fused. Not called when the frame is refused.
        """
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._closed:
            raise RuntimeError("this StackFuser was closed (close()): it takes no more frames")
        raw = frame
        frame = self._check_frame(frame)
        self._take_z(z_um)
        if self._shape is None:
            self._shape = frame.shape
            self._dtype = self._in_dtype
        if self.align:
            if self._aligner is None:
                from .align import FrameAligner

                self._aligner = FrameAligner()
            frame = self._aligner.add(frame)
        frame3 = frame if frame.ndim == 3 else frame[:, :, None]
        if self._n == 0:
            if not self._allocated:
                h, w, c = frame3.shape
                self._allocate(h, w, c, frame3.dtype)
            if self._dtype not in (np.uint8, np.uint16):
                # float32 rounding would change other dtypes; 8- and 16-bit frames come
                # back from their pyramid exactly, so they need no copy of a large frame
                self._first = np.array(raw, copy=True)
        elif self._first is not None:
            self._first = None  # only a single-frame stack comes back as is
        assert self._plane is not None
        first = self._n == 0
        if first and self._noise_opt is None:
            # the noise is measured on the first two frames: frame 0 waits in the plane
            # (folded when frame 1 arrives, or when a result is asked for first)
            self._rows0 = np.array(frame3[noise_rows(frame3.shape[0])])  # its own dtype
        elif first:
            self._set_noise(frame3)
        elif self._rows0 is not None:
            self._fold_pending(np.asarray(frame3[noise_rows(frame3.shape[0])]))
        self._pyr().to_planar(frame3, self._plane)
        if on_copied is not None:
            on_copied()
        if self._lo is not None:
            if self._dtype in (np.uint8, np.uint16) or (
                self._dtype == np.float32 and self._exp == 0
            ):  # the plane holds the frame's values exactly
                self._kern().update_range(self._plane, self._lo, self._hi, first)
            else:
                self._update_range(None if self.align else raw, frame3, first)
        if self._rows0 is None:
            self._fold(first)
        self._n += 1

    def _update_range(self, raw: Any, work3: np.ndarray, first: bool) -> None:
        """Fold a frame into the range maps, in the frames' own dtype (exact).

        The frame as given, or (``raw`` None: aligned) its warped working-unit values
        mapped back to the dtype.
        """
        assert self._lo is not None and self._hi is not None
        if raw is None:
            src3 = self._from_work(work3, None, None)
        else:
            src3 = np.asarray(raw)
            src3 = src3 if src3.ndim == 3 else src3[:, :, None]
        src = _planar_view(src3)
        if first:
            self._lo[...] = src
            self._hi[...] = src
        else:
            np.minimum(self._lo, src, out=self._lo)
            np.maximum(self._hi, src, out=self._hi)

    def _fold_pending(self, rows1: np.ndarray | None = None) -> None:
        """Set the noise from frame 0's rows (and frame 1's) and fold frame 0 in."""
        if self._rows0 is None:
            return
        self._set_noise(self._rows0, rows1)
        self._rows0 = None
        self._fold(True)

    def _fold(self, first: bool) -> None:
        kern = self._kern()
        pyr = self._pyr()
        rule = self.rule
        hard = rule.sharpness is None
        power = 1 if rule.sharpness is None else int(rule.sharpness)
        g: np.ndarray = self._plane  # type: ignore[assignment]
        inherited = self._dummy2
        for lev in range(self.levels):
            top = lev == self.levels - 1
            if top:
                gn = self._dummy3
                reduced = self._dummy2
            else:
                gn = self._gbuf[lev]
                # uint8: Gaussian levels as int16 in steps of 1 / qscale (rounded)
                pyr.reduce_level(g, False, gn, self._qscale if lev == 0 else 1.0, self._quant)
                reduced = self._rbuf[lev]
            g_scale = 1.0 if lev == 0 else 1.0 / self._qscale
            want_act = lev == self._depth_level
            tracker = self._tracker
            kern.fuse_level(
                g,
                gn,
                inherited,
                self._acc[lev],
                self._wnorm[lev],
                reduced,
                *(tracker.arrays() if want_act and tracker else self._no_track),
                tracker.next_frame() if want_act and tracker else 0,
                self._coded,
                first,
                self._lum,
                rule.window_at(lev) // 2,
                np.float32(rule.inherit if lev > 0 else 0.0),
                np.float32(self._eps),
                power,
                hard,
                top,
                lev < rule.focus_levels,
                want_act,
                not top,
                self._quant,
                np.float32(self._qscale),
                np.float32(g_scale),
                np.float32(1.0 / self._qscale),
            )
            g = gn
            inherited = reduced

    def close(self) -> None:
        """Take no more frames: free the per-frame work buffers now.

        The fused pyramid (and the depth tracker and kept range) stay for :meth:`image` and
        :meth:`result`. A caller with more work to do before asking for the result calls
        this first, so the two do not add up in memory. Adding a frame afterwards raises
        ``RuntimeError``.
        """
        self._close(collapse=False)

    def _close(self, *, collapse: bool) -> None:
        """:meth:`close`; with ``collapse`` also build the fused image now.

        The fused pyramid is then freed (for uint8 RGB frames 8 bytes a pixel, the image 3)
        before the file pipeline reads the files again for their range; the image is brought
        inside that range when it is asked for, after :meth:`_set_range`.
        """
        self._fold_pending()
        self._closed = True
        self._wnorm, self._gbuf, self._rbuf = [], [], []
        self._plane = None
        if collapse and self._built is None and self._acc and not self._released:
            if not (self._n == 1 and self._first is not None):  # (that one is returned as is)
                assert self._dtype is not None
                self._built = _collapse(self._acc, 1.0 / self._qscale, self._dtype, self._pyr())
                self._acc = []

    def _fused_levels(self) -> list[np.ndarray]:
        """Return the fused Laplacian levels as float32 ``(C, H, W)`` (tests, inspection)."""
        self._fold_pending()
        return [a.astype(np.float32) / np.float32(self._qscale) for a in self._acc]

    # -- output -------------------------------------------------------------------------
    def _z_positions(self) -> np.ndarray | None:
        if self._z_init is not None:
            if self._z_init.size != self._n:
                raise ValueError(
                    f"z_um has {self._z_init.size} positions but {self._n} frames were added"
                )
            return self._z_init
        if self._z_frames:
            return np.asarray(self._z_frames)
        return None

    def result(self, *, release: bool = False) -> FusionResult:
        """Return the fused image and depth map of the frames added so far.

        Parameters
        ----------
        release : bool, optional
            Free the fuser's working memory while the result is built (the peak memory is
            then that of the frames' loop, not more); the fuser takes no frame afterwards.
            By default more frames may be added and ``result`` called again.

        Raises
        ------
        ValueError
            If no frame was added, or ``z_um`` does not match the number of frames.
        RuntimeError
            If the fuser was released by an earlier ``result(release=True)``, or was made
            with ``depth=False`` (then only :meth:`image` gives a result).
        """
        release = check_bool(release, "release")
        if not self.depth:
            raise RuntimeError(
                "this StackFuser was made with depth=False and keeps no depth map; "
                "call image() for the fused image"
            )
        return self._result(release=release)

    def image(self, *, release: bool = False) -> np.ndarray:
        """Return the fused image alone, without the depth map :meth:`result` also builds.

        Parameters
        ----------
        release : bool, optional
            As in :meth:`result`: free the working memory; the fuser takes no frame after.

        Raises
        ------
        ValueError
            If no frame was added.
        RuntimeError
            If the fuser was released by an earlier ``result`` or ``image(release=True)``.
        """
        release = check_bool(release, "release")
        if release and not self._released and self._n > 0 and self._tracker is not None:
            self._tracker.release()  # no depth map: its maps can go before the collapse
        return self._image(release=release)

    def _drop_range(self) -> None:
        """Keep no per-pixel range of the frames: :meth:`_set_range` hands it over after them.

        Two frame-size maps less while fusing; the file pipeline reads the files a second
        time for the range (:class:`FrameRange`). Must come before the first frame.
        """
        if self._allocated or self._n:
            raise ValueError("_drop_range() must come before the first frame")
        self._keep_range = False

    def _set_range(self, lo: Any, hi: Any) -> None:
        """Hand over the frames' per-pixel range, for a fuser that keeps none (:meth:`_drop_range`).

        The fuser takes the arrays and closes itself (:meth:`close`): no frame may follow.

        Raises
        ------
        ValueError
            A fuser that keeps its own range, no frame yet, or arrays of the wrong shape or
            dtype, or ``lo > hi`` somewhere.
        """
        if self._keep_range:
            raise ValueError(
                "_set_range() is for a StackFuser that keeps no range (_drop_range()); this "
                "one keeps the frames' range itself"
            )
        if self._n == 0 or self._shape is None:
            raise ValueError("_set_range() comes after the frames: none was added yet")
        planar = []
        for name, arr in (("lo", lo), ("hi", hi)):
            a = np.asarray(arr)
            if a.shape != self._shape or a.dtype != self._dtype:
                raise ValueError(
                    f"_set_range {name} has shape {a.shape} and dtype {a.dtype}, expected "
                    f"{self._shape} and {self._dtype} (the frames')"
                )
            planar.append(_planar_view(a))
        if np.any(planar[0] > planar[1]):
            raise ValueError("_set_range lo exceeds hi somewhere: give (minimum, maximum)")
        self.close()
        self._lo, self._hi = planar

    def _image(self, *, release: bool) -> np.ndarray:
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._n == 0:
            raise ValueError("the stack is empty: add at least one frame before result()")
        assert self._dtype is not None and self._shape is not None
        self._fold_pending()  # a single frame so far: its noise from itself
        if self._lo is None and self._n > 1:
            raise ValueError(
                "this StackFuser keeps no range of the frames (_drop_range()): hand it "
                "over with _set_range(lo, hi) first, e.g. _set_range(*frame_range(frames))"
            )
        if release:  # the collapse needs only the fused means; free the rest before it
            self._released = True
            self._wnorm, self._gbuf, self._rbuf = [], [], []
            self._plane = None
        if self._n == 1 and self._first is not None:
            image = self._first.copy()
        else:
            if self._built is not None:  # collapsed by _close(collapse=True)
                image3 = self._built if release else self._built.copy()
            else:
                accs = self._acc if release else list(self._acc)
                image3 = _collapse(accs, 1.0 / self._qscale, self._dtype, self._pyr())
            # no fused pixel outside the range the frames recorded there: where levels come
            # from different frames (frames that differ in brightness or position at coarse
            # scales), their sum can overshoot; this bounds it by the data
            lo, hi = self._lo, self._hi
            if image3.dtype != self._dtype or self._exp != 0:  # fused in working units
                image3 = self._from_work(image3, lo, hi)  # back, and clamped exactly
            elif lo is not None and hi is not None:  # (a single frame needs no range)
                self._kern().clamp_to_range(image3, lo, hi)
            image = image3 if len(self._shape) == 3 else image3[:, :, 0]
        if release:
            self._acc = []
            self._built = None
            self._lo = self._hi = None
        return image

    def _result(self, *, release: bool) -> FusionResult:
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._n == 1:
            raise ValueError(ONE_FRAME_ERROR)
        z = self._z_positions()
        mismatch = self.options.index_mismatch
        if mismatch is not None and z is None:
            raise ValueError(
                "index_mismatch corrects a depth map in um: give z positions (z_step_um or "
                "z_um in the options, or z_um to add())"
            )
        image = self._image(release=release)
        assert self._tracker is not None
        fill = self.rule.fill_depth
        depth, conf = self._tracker.finish(
            z_um=z,
            min_confidence=self.rule.min_confidence,
            release=release,
            fill=fill,
            # the depth estimate counts activity above a floor of one noise energy (on the
            # tracked level the floors of the finer levels add up through ``inherit``)
            extra_floor=max(DEPTH_FLOOR - self._eps, 0.0)
            * sum(self.rule.inherit**i for i in range(self._depth_level + 1)),
        )
        bbox = self.valid_bbox
        if bbox is not None:
            # where some aligned frames have no data (edge-filled), the focus profile is not
            # measured: confidence 0 there, and no depth, unless the depth is filled: then
            # from the nearest pixel every frame covers (as the fill takes the confident
            # pixels around a hole)
            y0, y1, x0, x1 = bbox
            h, w = depth.shape
            outside = np.ones(depth.shape, dtype=bool)
            outside[y0:y1, x0:x1] = False
            if fill and y1 > y0 and x1 > x0:
                inner = depth[y0:y1, x0:x1]
                depth = np.pad(inner, ((y0, h - y1), (x0, w - x1)), mode="edge")
            else:
                depth[outside] = np.nan
            conf[outside] = 0.0
        kind = "nominal"
        if mismatch is not None and z is not None:
            depth, kind = mismatch.relabel(depth, z), "actual"
        return FusionResult(
            image=image,
            depth=depth,
            confidence=conf,
            n_frames=self._n,
            depth_unit="frame" if z is None else "um",
            depth_kind=kind,
        )


def _interleaved(a: np.ndarray) -> np.ndarray:
    """Return a planar ``(C, H, W)`` array as an interleaved ``(H, W, C)`` view."""
    return np.moveaxis(a, 0, -1)


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


_check_monotonic = check_monotonic


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
z_step_um, z_um, index_mismatch : keyword-only, optional
        Override that field of ``options`` (:meth:`FusionOptions.replace`).
        ``reference="middle"`` (with ``align``) makes a first pass over the frames, so they
        must be an array (or files), not a one-shot iterator. ``crop`` cuts the result to
        the area every aligned frame covers.
    progress : callable, optional
        Called as ``progress(frames_done, n_frames_or_None)`` after each frame.

    Returns
    -------
    FusionResult
        ``image`` in the frames' dtype, ``depth``, ``confidence``, ``n_frames``.

    Raises
    ------
    ValueError
        Fewer than 2 frames (:data:`ONE_FRAME_ERROR`), frames of different shapes, NaN
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
    opts = merge(
        options,
        {
            "sharpness": sharpness,
            "window_px": window_px,
            "coarse_window_px": coarse_window_px,
            "inherit": inherit,
            "focus_levels": focus_levels,
            "noise_floor": noise_floor,
            "levels": levels,
            "align": align,
            "reference": reference,
            "crop": crop,
            "bit_depth": bit_depth,
            "noise_dn": noise_dn,
            "guide_channel": guide_channel,
            "fill_depth": fill_depth,
            "min_confidence": min_confidence,
            "z_step_um": z_step_um,
            "z_um": z_um,
            "index_mismatch": index_mismatch,
        },
    )
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
    res = fuser.result(release=True)
    bbox = fuser.valid_bbox
    if opts.crop and bbox is not None:
        res = res.cropped(bbox)
    return res
