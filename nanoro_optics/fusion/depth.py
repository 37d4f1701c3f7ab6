"""Streaming depth-from-focus: the frame of best focus per pixel, with a sub-frame estimate.

The tracker reads the fuser's activity (local, noise-weighted energy of the Laplacian
coefficients, see :mod:`.rule`) on one pyramid level and keeps, per pixel, the largest
activity, the index of the frame that had it, the activities of its two neighbouring frames
and the smallest activity seen: five small maps and the index map, whatever the number of
frames. Given an activity floor, the five maps hold 16-bit codes of ``activity / floor`` (5
exponent and 11 mantissa bits, relative rounding at most 2.4e-4, i.e. 2.4e-4 in the log
activities the estimate uses) instead of float32: half the memory, for a change in the sub-
frame offset far below its own error (see the tests).

Sub-frame estimate: with ``y = log(activity)`` at frames ``k - 1, k, k + 1`` around the best
frame ``k``, the offset is the vertex of the parabola through the three points,
``delta = (y[k-1] - y[k+1]) / (2 (y[k-1] - 2 y[k] + y[k+1]))``, limited to ``[-0.5, 0.5]``.
A band-pass energy under Gaussian defocus of width ``sigma`` falls as
``exp(-(2 pi f sigma)^2)``, and ``sigma`` grows linearly with defocus, so ``log(activity)`` is
locally a parabola in ``z``, the model of the classic Gaussian-interpolation focus measure
([1]_, [2]_). At the first and last frame, where one neighbour is missing, the offset is 0.

Confidence: ``clip(log(a_max / a_min) / log(CONTRAST_FULL) , 0, 1)`` after removing the
contrast ``CONTRAST_NOISE`` that noise alone gives, i.e. how far the best focus stands above
the worst; a textured pixel swept through focus scores 1, a flat pixel whose activity is only
noise scores 0. The sub-frame map is then smoothed by a confidence-weighted Gaussian of
``SMOOTH_PX`` (normalised convolution [3]_), which regularises the per-pixel estimate as
depth-from-focus methods do. Where the estimates under that Gaussian disagree, the window
straddles a depth discontinuity (an occluding edge, where the background beside the edge
takes the foreground's frame from its defocused glow): the confidence is multiplied by
``clip((SPREAD_HI - s) / (SPREAD_HI - SPREAD_LO), 0, 1)``, with ``s`` the confidence-weighted
standard deviation (frames) of the estimates under the same Gaussian, so that it tells
these pixels too. Where the focus contrast alone (the confidence before that factor) is
below the rule's ``min_confidence``, the depth is filled from the confident pixels
(:func:`fill_depth`) or NaN; next to a discontinuity the estimate is kept, with its lower
confidence (filling there from the pixels around drew from both sides of the edge: on the
fluorescence benchmark scene the depth error grew from 1.60 to 1.87 frames RMSE).

References
----------
.. [1] S. K. Nayar and Y. Nakagawa, "Shape from focus", IEEE Trans. Pattern Anal. Mach.
   Intell. 16(8), 824-831 (1994). https://doi.org/10.1109/34.308479
.. [2] S. Pertuz, D. Puig and M. A. Garcia, "Analysis of focus measure operators for
   shape-from-focus", Pattern Recognit. 46(5), 1415-1432 (2013).
   https://doi.org/10.1016/j.patcog.2012.11.011
.. [3] H. Knutsson and C.-F. Westin, "Normalized and differential convolution", Proc. CVPR
   1993, 515-523. https://doi.org/10.1109/CVPR.1993.341081
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nanoro_optics._validation import as_float_array

__all__ = ["DepthTracker", "fill_depth", "subframe_offset"]

#: activity contrast (max / min over the stack) that noise alone produces on a flat pixel
#: (activities in units of the noise energy, with a floor of one noise energy, vary by a
#: few per cent there)
CONTRAST_NOISE = 1.15
#: activity contrast above the noise one at which the confidence reaches 1
CONTRAST_FULL = 3.0
#: sigma (px of the tracked level) of the confidence-weighted smoothing of the sub-frame map
SMOOTH_PX = 2.0
#: spread (standard deviation, frames) of the per-pixel estimates under the smoothing
#: Gaussian up to which the confidence is kept, and at which it reaches 0 (a plane tilted by
#: 0.375 frame per full-resolution pixel spreads by 1.5 frames; so does a step of 3 frames,
#: half-way across it). On the hard benchmark scenes (512 px, seed 3) the share of the
#: pixels whose depth is off by more than 2 frames that the confidence tells (< 0.5) went
#: from 6 to 89 % (occlusion, N = 15), 72 to 92 % (thick), 54 to 97 % (thick, N = 40) and 1 to
#: 38 % (fluorescence); of the pixels within 1 frame, from 4 to 5, 33 to 33, 22 to 26 and 0
#: to 1 %. (1 and 2 frames told more of both; 2 and 4, fewer.)
SPREAD_LO = 1.5
SPREAD_HI = 3.0


def subframe_offset(before: np.ndarray, best: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Vertex offset of the parabola through ``log`` activities at ``k - 1, k, k + 1``.

    Parameters
    ----------
    before, best, after : numpy.ndarray
        Activities of frames ``k - 1``, ``k``, ``k + 1``; NaN where a neighbour is missing.

    Returns
    -------
    numpy.ndarray
        Offset in frames, in ``[-0.5, 0.5]``; 0 where a neighbour is missing.

    Examples
    --------
    >>> import numpy as np
    >>> z = 0.3
    >>> a = np.exp(-np.array([-1.0 - z, -z, 1.0 - z]) ** 2)
    >>> round(float(subframe_offset(a[:1], a[1:2], a[2:])[0]), 6)
    0.3
    """
    before, best, after = (
        as_float_array(v, n, allow_nan=True)
        for v, n in ((before, "before"), (best, "best"), (after, "after"))
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ym = np.log(before)
        y0 = np.log(best)
        yp = np.log(after)
        den = ym - 2.0 * y0 + yp
        delta = 0.5 * (ym - yp) / den
    delta = np.where(np.isfinite(delta) & (den < 0), delta, 0.0)
    return np.clip(delta, -0.5, 0.5)


def _real_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an integer or float array, without a copy (maps can be frame-size)."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be a real array: {exc}") from exc
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    return arr


def fill_depth(depth: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill the pixels of zero ``weight`` from the weighted pixels around them (push-pull).

    The weights and weighted depths are averaged over 2 x 2 blocks level by level until one
    block is left ("push"); then, from the coarsest level down, every pixel whose own
    weight is zero takes the bilinearly upsampled estimate of the level above ("pull"),
    where that estimate is the weighted mean over the smallest block that holds any
    weight [1]_. Pixels of non-zero weight keep their depth. Where no pixel has weight, the
    result is NaN.

    Parameters
    ----------
    depth : numpy.ndarray
        ``(H, W)`` depth (any finite values where ``weight > 0``).
    weight : numpy.ndarray
        ``(H, W)`` non-negative weights (e.g. confidences; 0 marks a hole).

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)``.

    References
    ----------
    .. [1] S. J. Gortler, R. Grzeszczuk, R. Szeliski and M. F. Cohen, "The Lumigraph",
       Proc. SIGGRAPH 1996, 43-54 (the push-pull interpolation of scattered samples).
       https://doi.org/10.1145/237170.237200

    Examples
    --------
    >>> import numpy as np
    >>> d = np.array([[1.0, 0.0], [0.0, 3.0]])
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> fill_depth(d, w).tolist()
    [[1.0, 2.0], [2.0, 3.0]]
    """
    depth, weight = _real_array(depth, "depth"), _real_array(weight, "weight")
    if depth.ndim != 2 or weight.shape != depth.shape:
        raise ValueError(
            f"depth and weight must be 2-D arrays of one shape, got {depth.shape} and "
            f"{weight.shape}"
        )
    if not (weight >= 0).all():  # (NaN too)
        pos = tuple(int(i) for i in np.argwhere(~(weight >= 0))[0])
        raise ValueError(f"weight must be >= 0 (0 marks a hole), got {weight[pos]!r} at {pos}")
    bad = (weight > 0) & ~np.isfinite(depth)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"depth must be finite where weight > 0, got {depth[pos]!r} at {pos}")
    from . import _depth_kernels

    w0 = np.where(weight > 0, weight, 0).astype(np.float32)
    d0 = np.where(w0 > 0, depth, 0).astype(np.float32)
    ws, fs = [w0], [w0 * d0]
    while ws[-1].shape[0] > 1 or ws[-1].shape[1] > 1:
        h, w = ws[-1].shape
        half = (-(-h // 2), -(-w // 2))
        for maps in (ws, fs):
            maps.append(np.empty(half, np.float32))
            _depth_kernels.block_mean(maps[-2], maps[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(ws[-1] > 0, fs[-1] / ws[-1], np.float32(np.nan))
    ws.pop()
    fs.pop()
    while ws:  # from the coarsest level down, each freed once used
        w, f = ws.pop(), fs.pop()
        out = np.empty(w.shape, np.float32)
        tmp = np.empty((w.shape[0], est.shape[1]), np.float32)
        final = not ws  # the finest level keeps its own depths as given
        _depth_kernels.pull_level(est, w, d0 if final else f, final, out, tmp)
        est = out
    return est


def _gaussian_half_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Taps ``0 .. radius`` of ``scipy.ndimage``'s normalised Gaussian kernel (float64).

    The kernel ``gaussian_filter(..., sigma, truncate=truncate)`` uses: radius
    ``int(truncate * sigma + 0.5)``, ``exp(-x**2 / (2 sigma**2))`` divided by its sum.
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    phi = phi / phi.sum()
    return np.ascontiguousarray(phi[radius:])


class DepthTracker:
    """Per-pixel best frame and its neighbours' activities, updated frame by frame.

    Parameters
    ----------
    shape : tuple of int
        Shape of the activity maps (the tracked pyramid level).
    level : int
        Pyramid level of the activity maps (0 is full resolution).
    full_shape : tuple of int
        Shape of the depth map returned.
    floor : float, optional
        Activity floor (> 0): store the activities as 16-bit codes of ``activity / floor``,
        which must lie in ``[1, 2**32)`` (smaller ones are stored as the floor, larger ones
        as ``2**32``). The fuser passes its floor for integer frames, whose activities are
        bounded by the full scale; by default (None) the maps are float32, whatever the
        activities' range.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        level: int,
        full_shape: tuple[int, int],
        *,
        floor: float | None = None,
    ) -> None:
        self.shape = shape
        self.level = level
        self.full_shape = full_shape
        if floor is not None and not (np.isfinite(floor) and floor > 0):
            raise ValueError(f"floor must be a finite activity > 0, got {floor!r}")
        from ._codes import CODE_UNKNOWN  # (not the kernels: no numba import yet)

        self.floor = floor
        self.coded = floor is not None
        kind = np.uint16 if self.coded else np.float32
        unknown = CODE_UNKNOWN if self.coded else np.nan
        self.prev = np.zeros(shape, kind)
        self.best = np.zeros(shape, kind)
        # frame indices in the smallest type that holds them: uint8, widened as a stack grows
        self.idx: np.ndarray = np.zeros(shape, np.uint8)
        self.before = np.full(shape, unknown, kind)
        self.after = np.full(shape, unknown, kind)
        self.amin = np.zeros(shape, kind)
        self.count = 0

    def arrays(self) -> tuple[np.ndarray, ...]:
        """Return the maps the tracker keeps (for callers that map their memory in early)."""
        return self.prev, self.best, self.idx, self.before, self.after, self.amin

    def release(self) -> None:
        """Free the tracker's maps (it takes no frame and gives no depth afterwards)."""
        self.prev = self.best = self.idx = self.before = self.after = self.amin = None  # type: ignore[assignment]

    def next_frame(self) -> int:
        """Prepare for one more frame and return its index (for kernels that track in place).

        The caller must then fold the frame's activity into :meth:`arrays` (as
        ``_depth_kernels.depth_update`` does); the index map is widened first if it would overflow.
        """
        if self.count >= np.iinfo(self.idx.dtype).max:
            wider = {1: np.uint16, 2: np.int32}.get(self.idx.dtype.itemsize, np.int64)
            self.idx = self.idx.astype(wider)
        self.count += 1
        return self.count - 1

    def update(self, activity: np.ndarray) -> None:
        """Fold the activity map of the next frame in."""
        from . import _depth_kernels

        k = self.next_frame()
        _depth_kernels.depth_update(
            np.ascontiguousarray(activity, dtype=np.float32),
            k,
            self.prev,
            self.best,
            self.idx,
            self.before,
            self.after,
            self.amin,
            self.coded,
            np.float32(1.0 / self.floor if self.floor is not None else 1.0),
        )

    def finish(
        self,
        *,
        z_um: Sequence[float] | np.ndarray | None,
        min_confidence: float,
        release: bool = False,
        fill: bool = False,
        extra_floor: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth (frames, or um when ``z_um`` is given) and confidence.

        Pixels whose confidence is below ``min_confidence`` are NaN, or with ``fill`` take
        the depth of the confident pixels around them (:func:`fill_depth`, weighted by
        confidence; NaN only when no pixel is confident). ``extra_floor`` is added to the
        activities (in their units, not the codes') before their logs are taken: the
        estimate's own floor, which may differ from the fusion's. With ``release`` the tracker's
        maps are freed as soon as they have been read (the tracker takes no more frames
        afterwards).
        """
        if self.count < 2:
            depth = np.full(self.full_shape, np.nan, np.float32)
            return depth, np.zeros(self.full_shape, np.float32)
        from . import _depth_kernels

        frac = np.empty(self.shape, np.float32)
        conf = np.empty(self.shape, np.float32)
        _depth_kernels.depth_estimate(
            self.idx,
            self.before,
            self.best,
            self.after,
            self.amin,
            self.coded,
            float(extra_floor / self.floor if self.floor is not None else extra_floor),
            float(np.log(CONTRAST_NOISE)),
            float(np.log(CONTRAST_FULL)),
            frac,
            conf,
        )
        if release:
            self.release()
        # the Gaussian smoothing (scipy.ndimage.gaussian_filter's values, mode "mirror") of
        # the weights, the weighted estimates and their squares (for their spread), in one
        # sweep over the maps
        wsum, fsum, qsum = (np.empty(self.shape, np.float32) for _ in range(3))
        tmp = np.empty((3, *self.shape), np.float32)
        _depth_kernels.smooth_sums(
            conf, frac, _gaussian_half_kernel(SMOOTH_PX), tmp, wsum, fsum, qsum
        )
        del tmp
        shown = conf.copy()  # the confidence reported; the fill and NaN follow ``conf``
        _depth_kernels.discount_spread(shown, wsum, fsum, qsum, SPREAD_LO, SPREAD_HI)
        del qsum
        _depth_kernels.normalize_depth(frac, wsum, fsum, float(self.count - 1))
        del wsum, fsum
        if fill:
            sure = conf >= min_confidence
            if sure.any():
                frac = fill_depth(frac, np.where(sure, conf, 0.0))
            else:  # nothing in focus anywhere: no depth to fill from
                frac[...] = np.nan
        depth = np.empty(self.full_shape, np.float32)
        conf_full = np.empty(self.full_shape, np.float32)
        _depth_kernels.upsample_depth(
            frac,
            conf,
            shown,
            float(2**self.level),
            -1.0 if fill else float(min_confidence),
            depth,
            conf_full,
        )
        if z_um is not None:  # NaN (unsure) stays NaN
            from ._zmap_kernels import index_to_z

            # = np.interp(depth, arange(n), z) bit for bit, in parallel (numpy's binary
            # search took most of the result's time on large frames)
            z = np.ascontiguousarray(z_um, dtype=np.float64)
            if z.ndim == 1 and z.size >= 2:
                index_to_z(depth, z, depth)  # in place: each pixel is read, then written
            else:
                grid = np.arange(z.size, dtype=np.float64)
                depth = np.interp(depth, grid, z).astype(np.float32)
        return depth, conf_full
