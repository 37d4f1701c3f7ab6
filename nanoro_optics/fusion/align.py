"""Alignment of focus stacks: focus breathing (magnification change) and drift.

Each frame is registered to its neighbour (frame k to frame k-1), where the two differ least in
focus, and the neighbour transforms are composed into a transform to the reference frame. A pair
is registered on downsampled, band-passed luminance images: phase correlation [1]_ gives the
translation to start from, then an inverse-compositional Gauss-Newton (Lucas-Kanade) refinement
[2]_ [3]_ estimates the full parametric warp to a few thousandths of a pixel, coarse to fine over
two levels. Frames are warped into the reference's pixel grid with cubic B-spline (or
bilinear) interpolation; pixels that fall outside a frame take the nearest edge value, and
``valid_bbox`` gives the rectangle that every frame covers.

Models (parameters of the frame -> reference map ``x' = A x + t``):

``"translation"``
    ``A = I`` (2 parameters): drift only.
``"similarity"``
    ``A = s I`` (3 parameters): translation and isotropic scale, the geometry of focus
    breathing (a magnification change about the optical axis) plus drift. With
    ``rotation=True``, ``A = s R(theta)`` (4 parameters). Rotation is off by default: focus
    steps do not rotate the image, and a free rotation picks up a bias of ~1e-4 rad per step
    from the moving in-focus band, which chaining accumulates.
``"affine"``
    General ``A`` (6 parameters): adds anisotropic scale and shear.

Transforms are 2x3 float64 matrices acting on homogeneous pixel coordinates ``(x, y, 1)`` with
``x`` the column and ``y`` the row index, pixel centres at integers (the OpenCV / scikit-image
``AffineTransform`` convention), mapping a frame's pixel to the reference frame's pixel.

References
----------
.. [1] C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method",
   Proc. IEEE Int. Conf. Cybernetics and Society, 163-165 (1975); subpixel refinement by
   M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, Opt. Lett. 33, 156-158 (2008),
   doi:10.1364/OL.33.000156 (``skimage.registration.phase_cross_correlation``).
.. [2] B. D. Lucas and T. Kanade, "An iterative image registration technique with an
   application to stereo vision", Proc. IJCAI, 674-679 (1981).
.. [3] S. Baker and I. Matthews, "Lucas-Kanade 20 years on: a unifying framework",
   Int. J. Comput. Vis. 56, 221-255 (2004), doi:10.1023/B:VISI.0000011205.11775.fd
   (the inverse compositional algorithm, section 3.2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_bool, check_choice, check_int

__all__ = [
    "MODELS",
    "AlignResult",
    "FrameAligner",
    "align_stack",
    "reference_transform",
]

#: The motion models and their number of parameters.
MODELS: dict[str, int] = {"translation": 2, "similarity": 4, "affine": 6}

#: Downsampled frames are made about this many pixels on their longer side by default.
TARGET_SIZE_PX = 512
#: Gaussian low-pass (sigma, pixels of the downsampled frame) applied to both frames of a pair:
#: it suppresses noise and narrows the blur difference between neighbours.
_LOWPASS_SIGMA_PX = 2.0
#: High-pass (twice a box of this width, pixels of the downsampled frame, ~Gaussian sigma 17):
#: removes shading and vignetting.
_HIGHPASS_BOX_PX = 41
#: Gauss-Newton stops when the update moves no pixel of the frame by more than this (px).
_CONVERGED_PX = 1e-3
_MAX_ITERATIONS = 40
_FINE_ORDER = 3
#: a pixel whose sample lies this close outside a frame still counts as covered by it in
#: ``valid_bbox``: the registration is no more precise (identical frames register to within
#: ~1e-7 px, which cost the box a row and a column on each side with a 1e-9 tolerance)
_BOX_TOLERANCE_PX = _CONVERGED_PX
#: A pair with less texture than this (mean squared band-passed gradient, in units of the
#: frame's own band-passed variance) cannot be registered; the previous step is reused.
_MIN_TEXTURE = 1e-4


def _as_matrix3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = m
    return out


def _scale_matrix(d: int) -> np.ndarray:
    """Downsampled -> full-resolution pixel coordinates for block-mean downsampling by ``d``."""
    c = (d - 1) / 2.0
    return np.array([[d, 0.0, c], [0.0, d, c], [0.0, 0.0, 1.0]])


def _luminance(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame.astype(np.float32, copy=False)
    if frame.shape[2] >= 3:
        w = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        return np.tensordot(frame[..., :3].astype(np.float32, copy=False), w, axes=([2], [0]))
    return frame[..., 0].astype(np.float32, copy=False)


def _block_mean(img: np.ndarray, d: int) -> np.ndarray:
    if d == 1:
        return img.astype(np.float32, copy=True)
    h, w = (img.shape[0] // d) * d, (img.shape[1] // d) * d
    v = img[:h, :w].reshape(h // d, d, w // d, d)
    return v.mean(axis=(1, 3), dtype=np.float32)


def _prepare(frame: np.ndarray, d: int) -> np.ndarray:
    """Downsampled, band-passed, unit-variance luminance of ``frame``."""
    from scipy import ndimage

    if d > 1 and frame.dtype.kind in "uif" and frame.dtype.itemsize <= 4:
        from . import _align_kernels

        # in one pass: the luminance is linear, so its block means are those of the frame
        frame3 = frame[..., None] if frame.ndim == 2 else frame
        if frame3.shape[2] >= 3:
            weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)
            frame3 = frame3[..., :3]
        else:
            weights = np.ones(1, dtype=np.float64)
            frame3 = frame3[..., :1]
        small = np.empty((frame.shape[0] // d, frame.shape[1] // d), np.float32)
        _align_kernels.luminance_block_mean(frame3, weights, d, small)
    else:
        small = _block_mean(_luminance(frame), d)
    low = ndimage.gaussian_filter(small, _LOWPASS_SIGMA_PX, mode="nearest")
    background = ndimage.uniform_filter(small, _HIGHPASS_BOX_PX, mode="nearest")
    band = low - ndimage.uniform_filter(background, _HIGHPASS_BOX_PX, mode="nearest")
    std = float(band.std())
    return band / std if std > 0 else band


def _jacobian(gx: np.ndarray, gy: np.ndarray, u: np.ndarray, v: np.ndarray, model: str) -> Any:
    """Steepest-descent images ``grad T . dW/dp`` (one column per parameter)."""
    if model == "translation":
        cols = [gx, gy]
    elif model == "scale":
        cols = [gx, gy, gx * u + gy * v]
    elif model == "similarity":
        cols = [gx, gy, gx * u + gy * v, -gx * v + gy * u]
    else:
        cols = [gx, gy, gx * u, gx * v, gy * u, gy * v]
    return np.stack(cols, axis=1)


def _param_matrix(p: np.ndarray, model: str, centre: np.ndarray, radius: float) -> np.ndarray:
    """3x3 warp ``x -> x + t + L (x - c) / radius`` for parameters ``p``."""
    lin = np.zeros((2, 2))
    if model == "scale":
        lin = np.array([[p[2], 0.0], [0.0, p[2]]])
    elif model == "similarity":
        lin = np.array([[p[2], -p[3]], [p[3], p[2]]])
    elif model == "affine":
        lin = np.array([[p[2], p[3]], [p[4], p[5]]])
    lin = lin / radius
    m = np.eye(3)
    m[:2, :2] += lin
    m[:2, 2] = p[:2] - lin @ centre
    return m


def _project(m: np.ndarray, model: str) -> np.ndarray:
    """Closest matrix of ``model``'s family (keeps a composed warp inside the model)."""
    out = m.copy()
    if model == "translation":
        out[:2, :2] = np.eye(2)
    elif model == "scale":
        a = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        out[:2, :2] = [[a, 0.0], [0.0, a]]
    elif model == "similarity":
        a = 0.5 * (m[0, 0] + m[1, 1])
        b = 0.5 * (m[1, 0] - m[0, 1])
        out[:2, :2] = [[a, -b], [b, a]]
    return out


class _Pair:
    """Inverse-compositional Lucas-Kanade registration against one template image.

    The template's pixels inside a margin (about 3 % of the size) are used, so a moderate
    warp keeps every sample inside the moving image and no per-iteration mask is needed.
    """

    def __init__(self, template: np.ndarray, model: str) -> None:
        from scipy import ndimage

        self.model = model
        self.template = template
        h, w = template.shape
        self.centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        self.radius = 0.5 * math.hypot(w, h)
        m = max(3, round(0.03 * max(h, w)))
        self.box = (m, h - m, m, w - m)
        gy, gx = np.gradient(template)
        sl = (slice(m, h - m), slice(m, w - m))
        yy, xx = np.mgrid[m : h - m, m : w - m]
        self.xx = xx.ravel().astype(np.float64)
        self.yy = yy.ravel().astype(np.float64)
        u = (self.xx - self.centre[0]) / self.radius
        v = (self.yy - self.centre[1]) / self.radius
        self.tpl = template[sl].ravel().astype(np.float64)
        self.jac = _jacobian(gx[sl].ravel(), gy[sl].ravel(), u, v, model).astype(np.float64)
        self.hess = self.jac.T @ self.jac
        self.texture = float(np.mean(gx[sl] ** 2 + gy[sl] ** 2))
        self._ndimage = ndimage

    def refine(
        self, image: np.ndarray, warp: np.ndarray, *, order: int, tol_px: float = _CONVERGED_PX
    ) -> tuple[np.ndarray, bool, int]:
        """Refine ``warp`` (template coords -> image coords) so that image(warp x) ~ template(x).

        Returns the refined warp, whether it converged, and the number of iterations.
        """
        h, w = image.shape
        cubic = order == 3
        if cubic:  # the numba warp's coefficients (edge-extended as scipy's "nearest")
            from . import _align_kernels

            coeffs = np.empty((1, h + 2 * _SPLINE_PAD, w + 2 * _SPLINE_PAD), np.float32)
            _align_kernels.spline_coefficients(image[:, :, None], _SPLINE_PAD, coeffs)
            y0, y1, x0, x1 = self.box
            sampled32 = np.empty((y1 - y0, x1 - x0, 1), np.float32)
        else:
            coeffs = self._ndimage.spline_filter(image, order=order) if order > 1 else image
        corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
        for it in range(1, _MAX_ITERATIONS + 1):
            xs = warp[0, 0] * self.xx + warp[0, 1] * self.yy + warp[0, 2]
            ys = warp[1, 0] * self.xx + warp[1, 1] * self.yy + warp[1, 2]
            inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
            frac = float(inside.mean())
            if frac < 0.25:
                return warp, False, it
            if cubic:
                # the template box is a grid, so the points are an affine map of it:
                # image (row, col) = (w10 x + w11 y + w12, w00 x + w01 y + w02) at
                # (y, x) = (y0 + r, x0 + j)
                _align_kernels.warp_cubic_frame(
                    coeffs,
                    _SPLINE_PAD,
                    float(warp[1, 1]),
                    float(warp[1, 0]),
                    float(warp[0, 1]),
                    float(warp[0, 0]),
                    float(warp[1, 2] + warp[1, 0] * x0 + warp[1, 1] * y0),
                    float(warp[0, 2] + warp[0, 0] * x0 + warp[0, 1] * y0),
                    False,
                    0.0,
                    0.0,
                    sampled32,
                )
                sampled = sampled32.ravel().astype(np.float64)
            else:
                sampled = self._ndimage.map_coordinates(
                    coeffs, [ys, xs], order=order, prefilter=False, mode="nearest"
                )
            err = sampled - self.tpl
            if frac < 1.0:
                jac = self.jac[inside]
                hess = jac.T @ jac
                grad = jac.T @ err[inside]
            else:
                hess = self.hess
                grad = self.jac.T @ err
            try:
                dp = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                return warp, False, it
            step = _param_matrix(dp, self.model, self.centre, self.radius)
            warp = _project(warp @ np.linalg.inv(step), self.model)
            # the largest displacement the update causes at the frame's corners
            moved = float(np.abs((step - np.eye(3)) @ corners).max())
            if moved < tol_px:
                return warp, True, it
        return warp, False, _MAX_ITERATIONS


def _downsample2(img: np.ndarray) -> np.ndarray:
    return _block_mean(img, 2)


def _register(
    ref: np.ndarray, mov: np.ndarray, model: str, guess: np.ndarray | None
) -> tuple[np.ndarray, bool]:
    """Return the 3x3 map mov -> ref (downsampled pixel coordinates) and whether it succeeded."""
    from skimage.registration import phase_cross_correlation

    if not (ref.any() and mov.any()):  # a flat frame: nothing to register
        return np.eye(3), False
    shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=8, normalization=None)
    dy, dx = float(shift[0]), float(shift[1])
    # initial warp ref -> mov, W(x) = L (x - c) + c - shift: the linear part of the previous
    # neighbour step (breathing changes little from step to step) and the measured shift
    h, w = ref.shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    lin = np.linalg.inv(guess)[:2, :2] if guess is not None else np.eye(2)
    init = np.eye(3)
    init[:2, :2] = lin
    init[:2, 2] = c - np.array([dx, dy]) - lin @ c
    init = _project(init, model)
    # coarse level first (twice smaller), then full level with cubic sampling
    coarse_ref, coarse_mov = _downsample2(ref), _downsample2(mov)
    s = _scale_matrix(2)
    warp = np.linalg.inv(s) @ init @ s
    if min(coarse_ref.shape) >= 32:
        pair = _Pair(coarse_ref, model)
        if pair.texture < _MIN_TEXTURE:
            return np.eye(3), False
        warp, _, _ = pair.refine(coarse_mov, warp, order=1, tol_px=0.01)
    warp = s @ warp @ np.linalg.inv(s)
    pair = _Pair(ref, model)
    if pair.texture < _MIN_TEXTURE:
        return np.eye(3), False
    warp, ok, _ = pair.refine(mov, warp, order=_FINE_ORDER)
    return np.linalg.inv(warp), ok


def _default_downsample(shape: tuple[int, ...]) -> int:
    return max(1, round(max(shape[0], shape[1]) / TARGET_SIZE_PX))


def _valid_bbox_of(matrix: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Axis-aligned rectangle (y0, y1, x0, x1) inside the image of a frame under ``matrix``."""
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
    x, y = matrix[:2] @ corners
    return (max(y[0], y[1]), min(y[2], y[3]), max(x[0], x[2]), min(x[1], x[3]))


def _bbox_pixels(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, ...]:
    h, w = shape
    tol = _BOX_TOLERANCE_PX
    y0 = min(max(0, math.ceil(box[0] - tol)), h)
    y1 = max(min(h, math.floor(box[1] + tol) + 1), y0)
    x0 = min(max(0, math.ceil(box[2] - tol)), w)
    x1 = max(min(w, math.floor(box[3] + tol) + 1), x0)
    return (y0, y1, x0, x1)


def warp_frame(
    frame: np.ndarray,
    matrix: np.ndarray,
    *,
    order: int = 3,
    output_shape: tuple[int, int] | None = None,
    _scratch: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Resample ``frame`` into the reference grid given its frame -> reference ``matrix``.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``.
    matrix : array_like
        2x3 (or 3x3) frame -> reference map in ``(x, y)`` pixel coordinates.
    order : int, optional
        Spline order: 3 (cubic B-spline, default) or 1 (bilinear: faster, but it smooths the
        frame by a sub-pixel-phase-dependent amount). Integer output is rounded and, for
        order > 1, limited to the dtype's range, since a cubic spline overshoots at edges.
    output_shape : tuple of int, optional
        ``(H, W)`` of the output; the frame's own by default.

    Returns
    -------
    numpy.ndarray
        The warped frame, same dtype as ``frame``. Pixels that map outside the frame take the
        nearest edge value.
    """
    from scipy import ndimage

    order = check_int(order, "order", 0, 5)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"matrix must be 2x3 or 3x3, got shape {m.shape}")
    inv = np.linalg.inv(_as_matrix3(m[:2]))
    # scipy works in (row, col) = (y, x) order
    rc = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    offset = np.array([inv[1, 2], inv[0, 2]])
    shape = tuple(frame.shape[:2]) if output_shape is None else tuple(output_shape)
    planes = frame[..., None] if frame.ndim == 2 else frame
    if order == 3 and frame.dtype in _FAST_CUBIC_DTYPES:
        out = _warp_cubic(planes, rc, offset, shape, _scratch)
        return out[..., 0] if frame.ndim == 2 else out
    work = np.float32 if frame.dtype.itemsize <= 4 else np.float64
    out = np.empty((*shape, planes.shape[2]), dtype=frame.dtype)
    for c in range(planes.shape[2]):
        res = ndimage.affine_transform(
            planes[..., c].astype(work, copy=False),
            rc,
            offset=offset,
            output_shape=shape,
            output=work,
            order=order,
            mode="nearest",
        )
        if frame.dtype.kind in "iu":
            info = np.iinfo(frame.dtype)
            np.rint(res, out=res)
            if order > 1:
                np.clip(res, info.min, info.max, out=res)
        elif frame.dtype.kind == "b":
            res = res >= 0.5
        out[..., c] = res
    return out[..., 0] if frame.ndim == 2 else out


#: samples added on every side before the spline prefilter (as scipy does for "nearest")
_SPLINE_PAD = 12
#: dtypes the numba cubic warp handles (float32 arithmetic is exact enough for them)
_FAST_CUBIC_DTYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16, np.float32)
)


def _warp_cubic(
    planes: np.ndarray,
    rc: np.ndarray,
    offset: np.ndarray,
    shape: tuple[int, ...],
    scratch: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Cubic B-spline affine resampling of ``planes`` (H, W, C) by numba kernels, in parallel.

    The same as scipy's ``affine_transform(..., order=3, mode="nearest")`` on each channel
    (to about 1e-4 of the range, float32 coefficients): the frame is extended by its edge
    values, prefiltered into B-spline coefficients with mirrored boundaries, and the spline
    is evaluated at the mapped points; integer output is rounded and clipped to its range.

    One channel at a time, through one float32 coefficient plane: ``scratch`` (a list, empty
    or holding that plane from an earlier call) lets a caller warping frame after frame
    reuse it rather than map fresh memory each time.
    """
    from . import _align_kernels

    h, w, nc = planes.shape
    size = (1, h + 2 * _SPLINE_PAD, w + 2 * _SPLINE_PAD)
    if scratch and scratch[0].shape == size:
        coeffs = scratch[0]
    else:
        coeffs = np.empty(size, np.float32)
        if scratch is not None:
            scratch[:] = [coeffs]
    out = np.empty((*shape, nc), planes.dtype)
    is_int = planes.dtype.kind in "iu"
    lo, hi = (
        (float(np.iinfo(planes.dtype).min), float(np.iinfo(planes.dtype).max))
        if is_int
        else (0.0, 0.0)
    )
    for c in range(nc):
        _align_kernels.spline_coefficients(planes[..., c : c + 1], _SPLINE_PAD, coeffs)
        _align_kernels.warp_cubic_frame(
            coeffs,
            _SPLINE_PAD,
            float(rc[0, 0]),
            float(rc[0, 1]),
            float(rc[1, 0]),
            float(rc[1, 1]),
            float(offset[0]),
            float(offset[1]),
            is_int,
            lo,
            hi,
            out[..., c : c + 1],
        )
    return out


class FrameAligner:
    """Align frames one at a time to the first frame, for streaming fusion.

    Each frame is registered to the previous one on downsampled frames and the neighbour
    transforms are composed, so only the previous frame's small, band-passed copy is kept.

    Parameters
    ----------
    model : {"translation", "similarity", "affine"}, optional
        The motion model, see the module documentation. ``"similarity"`` (default) is
        translation + isotropic scale.
    rotation : bool, optional
        With ``model="similarity"``, also estimate a rotation.
    downsample : int, optional
        Block-mean downsampling factor for the estimation; by default the one that brings the
        longer side to about :data:`TARGET_SIZE_PX` pixels.
    order : {1, 3}, optional
        Interpolation of the warped output: cubic B-spline (default) or bilinear (about twice
        as fast, but its smoothing costs ~6 dB PSNR in the fused image of a breathing stack).
    reference : array_like, optional
        2x3 matrix of the frame whose pixel grid the output takes, as this class estimates
        it (``transforms[m]`` of a first pass over the same frames, see
        :func:`reference_transform`). By default the first frame's grid.

    Attributes
    ----------
    transforms : list of numpy.ndarray
        One 2x3 float64 matrix per frame added, mapping the frame's pixel coordinates
        ``(x, y)`` into the output grid's (the first frame's, or the reference's).
    valid_bbox : tuple of int
        ``(y0, y1, x0, x1)``: the slice ``[y0:y1, x0:x1]`` of the output grid that every
        frame added so far covers.
    registered : list of bool
        Whether each frame's neighbour registration converged; where it did not (a frame with
        no usable texture), the previous step was reused and a warning issued.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> scene = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(160, 160)), 2)
    >>> aligner = FrameAligner(model="translation")
    >>> _ = aligner.add(scene[8:136, 8:136])
    >>> _ = aligner.add(scene[10:138, 5:133])  # frame 1 (x, y) is frame 0 (x - 3, y + 2)
    >>> np.round(aligner.transforms[1][:, 2], 1)
    array([-3.,  2.])
    """

    def __init__(
        self,
        *,
        model: str = "similarity",
        rotation: bool = False,
        downsample: int | None = None,
        order: int = 3,
        reference: Any = None,
    ) -> None:
        self.model = check_choice(model, "model", MODELS)
        self._rebase = np.eye(3)
        if reference is not None:
            ref = np.asarray(reference, dtype=np.float64)
            if ref.shape != (2, 3) or not np.isfinite(ref).all():
                raise ValueError(f"reference must be a finite 2x3 matrix, got {reference!r}")
            if abs(np.linalg.det(ref[:, :2])) < 1e-6:
                raise ValueError(f"reference must be invertible, got {ref.tolist()}")
            self._rebase = np.linalg.inv(_as_matrix3(ref))
        rotation = check_bool(rotation, "rotation")
        if rotation and self.model != "similarity":
            raise ValueError(
                f"rotation=True applies to model='similarity' only, got model={model!r} "
                "(translation has no rotation; affine always includes it)"
            )
        self.rotation = rotation
        self._fit = "similarity" if rotation else ("scale" if model == "similarity" else model)
        self.downsample = None if downsample is None else check_int(downsample, "downsample", 1)
        if check_int(order, "order", 1, 3) not in (1, 3):
            raise ValueError(f"order must be 1 or 3, got {order}")
        self.order = order
        self.transforms: list[np.ndarray] = []
        self.registered: list[bool] = []
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype[Any] | None = None
        self._prev: np.ndarray | None = None
        self._prev_step: np.ndarray | None = None  # last neighbour map, downsampled coords
        self._d = 1
        self._chain = np.eye(3)  # the last frame -> first frame map
        self._box = (-math.inf, math.inf, -math.inf, math.inf)
        self._scratch: list[np.ndarray] = []  # the warp's coefficient plane, kept

    @property
    def valid_bbox(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the area all frames cover, in the first frame's pixels."""
        if self._shape is None:
            raise ValueError("valid_bbox is undefined before the first frame is added")
        y0, y1, x0, x1 = _bbox_pixels(self._box, self._shape[:2])  # type: ignore[arg-type]
        return (y0, y1, x0, x1)

    def _check(self, frame: Any) -> np.ndarray:
        arr = np.asarray(frame)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"frame must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"frame must be (H, W) or (H, W, C), got shape {arr.shape}")
        k = len(self.transforms)
        if self._shape is not None and (arr.shape != self._shape or arr.dtype != self._dtype):
            raise ValueError(
                f"frame {k} has shape {arr.shape} and dtype {arr.dtype}, but frame 0 has "
                f"shape {self._shape} and dtype {self._dtype}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"frame {k}: pixel {bad} is {float(arr[bad])!r}; must be finite")
        return arr

    def estimate(self, frame: Any) -> np.ndarray:
        """Register ``frame`` and record its transform, without warping it.

        Returns
        -------
        numpy.ndarray
            The 2x3 frame -> first-frame matrix (also appended to :attr:`transforms`).
        """
        arr = self._check(frame)
        k = len(self.transforms)
        if self._shape is None:
            self._shape, self._dtype = arr.shape, arr.dtype
            self._d = self.downsample or _default_downsample(arr.shape)
            if min(arr.shape[0], arr.shape[1]) // self._d < 16:
                raise ValueError(
                    f"frame of shape {arr.shape} is too small to register with downsample="
                    f"{self._d}: need at least 16 px on the shorter side after downsampling"
                )
            total = np.eye(3)
            ok = True
            self._prev = _prepare(arr, self._d)
        else:
            assert self._prev is not None
            small = _prepare(arr, self._d)
            step, ok = _register(self._prev, small, self._fit, self._prev_step)
            if not ok:
                warnings.warn(
                    f"frame {k}: too little texture to register to frame {k - 1}; reused the "
                    "previous step's transform",
                    RuntimeWarning,
                    stacklevel=3,
                )
                step = self._prev_step if self._prev_step is not None else np.eye(3)
            self._prev_step = step
            self._prev = small
            s = _scale_matrix(self._d)
            full = s @ step @ np.linalg.inv(s)
            total = self._chain @ full
            total = _project(total, self._fit)
        self._chain = total
        total = self._rebase @ total  # into the output grid
        self.transforms.append(total[:2].copy())
        self.registered.append(ok)
        box = _valid_bbox_of(total, arr.shape[:2])
        self._box = (
            max(self._box[0], box[0]),
            min(self._box[1], box[1]),
            max(self._box[2], box[2]),
            min(self._box[3], box[3]),
        )
        return total[:2].copy()

    def add(self, frame: Any) -> np.ndarray:
        """Register ``frame`` to the previous one and return it warped into the first frame.

        Parameters
        ----------
        frame : array_like
            ``(H, W)`` or ``(H, W, C)``, the same shape and dtype as the first frame.

        Returns
        -------
        numpy.ndarray
            The frame resampled onto the first frame's pixel grid (same shape and dtype). The
            first frame is returned unchanged.

        Raises
        ------
        ValueError
            If the frame's shape or dtype differs from the first's, or it has NaN pixels.
        """
        matrix = self.estimate(frame)
        arr = np.asarray(frame)
        if np.array_equal(matrix, np.eye(3)[:2]):  # the first frame, on its own grid
            return arr
        return warp_frame(arr, matrix, order=self.order, _scratch=self._scratch)


def reference_transform(frames: Any, which: str | int = "middle", **options: Any) -> np.ndarray:
    """Estimate, in a first pass, the 2x3 matrix of a reference frame for ``reference=``.

    Parameters
    ----------
    frames : iterable of array_like
        The stack (read once, frame by frame; only the estimation runs, nothing is warped).
    which : "middle", "first" or int, optional
        The reference: ``N // 2``, 0, or a frame index.
    **options
        :class:`FrameAligner` options (``model``, ``rotation``, ``downsample``).

    Returns
    -------
    numpy.ndarray
        The reference's frame -> first-frame matrix, as :class:`FrameAligner` estimates it.
    """
    aligner = FrameAligner(**options)
    for frame in frames:
        aligner.estimate(frame)
    n = len(aligner.transforms)
    if n == 0:
        raise ValueError("frames is empty: a reference needs at least one frame")
    if which == "middle":
        k = n // 2
    elif which == "first":
        k = 0
    elif isinstance(which, (int, np.integer)) and not isinstance(which, bool) and 0 <= which < n:
        k = int(which)
    else:
        raise ValueError(
            f"which must be 'middle', 'first' or a frame index 0..{n - 1}, got {which!r}"
        )
    return aligner.transforms[k].copy()


@dataclass(frozen=True)
class AlignResult:
    """Result of :func:`align_stack`.

    Attributes
    ----------
    frames : numpy.ndarray
        ``(N, H, W[, C])`` aligned frames (cropped to ``valid_bbox`` if asked).
    transforms : numpy.ndarray
        ``(N, 2, 3)`` frame -> output-grid matrices in ``(x, y)`` pixel coordinates (they
        include the crop offset when cropped).
    valid_bbox : tuple of int
        ``(y0, y1, x0, x1)``: the area every frame covers, in the reference frame's pixels.
    reference : int
        Index of the reference frame.
    """

    frames: np.ndarray
    transforms: np.ndarray
    valid_bbox: tuple[int, int, int, int]
    reference: int


def align_stack(
    frames: Any,
    *,
    model: str = "similarity",
    rotation: bool = False,
    reference: str | int = "middle",
    crop: bool = False,
    downsample: int | None = None,
    order: int = 3,
) -> AlignResult:
    """Align every frame of a focus stack to a reference frame.

    Neighbouring frames are registered pairwise (on downsampled frames) and the transforms
    composed, which stays robust when the stack's end frames are heavily blurred: each pair
    differs by one focus step only.

    Parameters
    ----------
    frames : array_like or iterable of arrays
        ``(N, H, W[, C])`` or N frames of equal shape and dtype.
    model : {"translation", "similarity", "affine"}, optional
        Motion model (default ``"similarity"``: translation and isotropic scale).
    rotation : bool, optional
        With ``model="similarity"``, also estimate a rotation.
    reference : "middle" or int, optional
        The frame whose pixel grid the output uses; ``"middle"`` (default) is ``N // 2``,
        which halves the largest composed transform compared with an end frame.
    crop : bool, optional
        Crop the output to the area every frame covers (``valid_bbox``). By default the
        reference's size is kept and uncovered pixels take the nearest edge value.
    downsample : int, optional
        Downsampling factor for the estimation (see :class:`FrameAligner`).
    order : {1, 3}, optional
        Interpolation of the output: cubic B-spline (default) or bilinear.

    Returns
    -------
    AlignResult

    Raises
    ------
    ValueError
        Empty stack, frames of different shape or dtype (the frame index is named), NaN
        pixels, a reference index out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> scene = ndimage.gaussian_filter(np.random.default_rng(1).normal(size=(160, 160)), 2)
    >>> stack = np.stack([scene[10:138, 10 + k : 138 + k] for k in range(3)])
    >>> res = align_stack(stack, model="translation", crop=True)
    >>> np.round(res.transforms[:, 0, 2] + res.valid_bbox[2], 1)
    array([-1.,  0.,  1.])
    >>> res.reference, res.frames.shape[0], res.frames.dtype
    (1, 3, dtype('float64'))
    """
    model = check_choice(model, "model", MODELS)
    check_bool(crop, "crop")
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise ValueError(f"frames must be (N, H, W) or (N, H, W, C), got shape {frames.shape}")
        seq: list[np.ndarray] = list(frames)
    elif isinstance(frames, Iterable):
        seq = [np.asarray(f) for f in frames]
    else:
        raise TypeError(f"frames must be an array or an iterable of arrays, got {type(frames)}")
    n = len(seq)
    if n == 0:
        raise ValueError("empty stack: frames holds no frame")
    if reference == "middle":
        ref = n // 2
    elif isinstance(reference, str):
        raise ValueError(f"reference must be 'middle' or a frame index, got {reference!r}")
    else:
        ref = check_int(reference, "reference", -n, n - 1) % n
    aligner = FrameAligner(model=model, rotation=rotation, downsample=downsample, order=order)
    for f in seq:
        aligner.estimate(f)
    to_first = np.stack([_as_matrix3(t) for t in aligner.transforms])
    to_ref = np.linalg.inv(to_first[ref]) @ to_first
    shape = seq[0].shape[:2]
    box = (-math.inf, math.inf, -math.inf, math.inf)
    for m in to_ref:
        b = _valid_bbox_of(m, shape)
        box = (max(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), min(box[3], b[3]))
    y0, y1, x0, x1 = _bbox_pixels(box, shape)
    if crop:
        if y1 <= y0 or x1 <= x0:
            raise ValueError("the frames have no common area to crop to")
        shift = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]])
        to_out = shift @ to_ref
        out_shape = (y1 - y0, x1 - x0)
    else:
        to_out = to_ref
        out_shape = shape
    out = np.empty((n, *out_shape, *seq[0].shape[2:]), dtype=seq[0].dtype)
    for k, (f, m) in enumerate(zip(seq, to_out, strict=True)):
        if np.allclose(m, np.eye(3), atol=1e-12, rtol=0):
            out[k] = f[: out_shape[0], : out_shape[1]]
        else:
            out[k] = warp_frame(f, m, order=order, output_shape=out_shape)
    return AlignResult(
        frames=out,
        transforms=to_out[:, :2].copy(),
        valid_bbox=(y0, y1, x0, x1),
        reference=ref,
    )
