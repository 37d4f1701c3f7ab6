"""numba kernels of the aligner (private; imported lazily by :mod:`.align`).

The cubic B-spline prefilter and coefficients of a frame, its warp under an affine map and
the block-mean luminance the registration reads. Frames are ``(rows, cols, channels)`` of any
real dtype; spline coefficients are planar float32.

The slow, obvious numpy (scipy) versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit


# ---------------------------------------------------------------------------------------
# the aligner's warp
# ---------------------------------------------------------------------------------------
@njit()
def _cubic_bspline_weights(f):
    """Weights of the cubic B-spline at taps ``-1, 0, 1, 2`` for an offset ``f`` in [0, 1)."""
    one = np.float32(1.0)
    sixth = np.float32(1.0 / 6.0)
    g = one - f
    w0 = g * g * g * sixth
    w3 = f * f * f * sixth
    w1 = np.float32(2.0 / 3.0) - f * f + np.float32(0.5) * f * f * f
    return w0, w1, one - w0 - w1 - w3, w3


#: pole of the cubic B-spline prefilter, sqrt(3) - 2, and its gain (1 - z)(1 - 1/z) = 6
_Z3 = np.sqrt(3.0) - 2.0
#: samples of the causal initial sum: |z| ** 24 < 2e-14
_Z3_TERMS = 24


@njit()
def _prefilter_block(cols):
    """Cubic B-spline prefilter, in place, down axis 0 of float64 ``cols`` (n, m).

    The recursive filter of Unser et al. (1993) [1]_ with mirrored ("reflect-101")
    boundaries, as ``scipy.ndimage.spline_filter1d(..., mode="mirror")``, on ``m`` lines
    side by side (the inner, vectorised loop runs across them; a single line's recursion
    would wait on its own latency): a causal pass from ``c+[0] = sum_k z**k c[k]`` over
    the mirrored line and an anti-causal pass from the exact mirrored end value, with the
    filter's gain of 6 (a line of one sample is its own coefficient).

    References
    ----------
    .. [1] M. Unser, A. Aldroubi and M. Eden, "B-spline signal processing: Part II --
       efficient design and applications", IEEE Trans. Signal Process. 41(2), 834-848
       (1993). https://doi.org/10.1109/78.193221
    """
    n, m = cols.shape
    z = _Z3
    if n < 2:
        return
    first = np.empty(m, dtype=np.float64)
    if n > _Z3_TERMS:
        for j in range(m):
            first[j] = cols[0, j]
        zk = z
        for k in range(1, _Z3_TERMS):
            for j in range(m):
                first[j] += zk * cols[k, j]
            zk *= z
    else:
        zn1 = z ** (n - 1)
        for j in range(m):
            first[j] = cols[0, j] + zn1 * cols[n - 1, j]
        zk = z
        for k in range(1, n - 1):
            for j in range(m):
                first[j] += zk * (cols[k, j] + zn1 * cols[n - 1 - k, j])
            zk *= z
        for j in range(m):
            first[j] /= 1.0 - zn1 * zn1
    # the causal pass, applying the gain as it goes
    for j in range(m):
        cols[0, j] = 6.0 * first[j]
    for r in range(1, n):
        for j in range(m):
            cols[r, j] = 6.0 * cols[r, j] + z * cols[r - 1, j]
    for j in range(m):
        cols[n - 1, j] = (z * cols[n - 2, j] + cols[n - 1, j]) * z / (z * z - 1.0)
    for r in range(n - 2, -1, -1):
        for j in range(m):
            cols[r, j] = z * (cols[r + 1, j] - cols[r, j])


#: lines filtered side by side by :func:`_prefilter_block`: rows per group in the row pass
#: (eight float64 lines fill two AVX2 registers), columns per block in the column pass
_ROW_GROUP = 8
_COLUMN_BLOCK = 64


@njit(parallel=True)
def spline_coefficients(frame, pad, out):
    """Cubic B-spline coefficients of every channel of ``frame``, edge-extended by ``pad``.

    ``frame`` is ``(H, W, C)`` of any real dtype (any strides); ``out`` is float32
    ``(C, H + 2 pad, W + 2 pad)``. The frame is extended by its edge values and prefiltered
    along both axes with mirrored boundaries: what scipy's ``affine_transform(...,
    order=3, mode="nearest")`` does before it samples (there with float64 and one thread).
    The filter runs in float64 on groups of lines side by side (:func:`_prefilter_block`).
    """
    h, w, nc = frame.shape
    hp, wp = out.shape[1], out.shape[2]
    # rows: a group of extended rows, transposed into a buffer whose lines are columns
    ng = (hp + _ROW_GROUP - 1) // _ROW_GROUP
    for q in prange(nc * ng):
        c = q // ng
        r0 = (q % ng) * _ROW_GROUP
        g = min(_ROW_GROUP, hp - r0)
        buf = np.empty((wp, g), dtype=np.float64)
        for i in range(g):
            rr = min(max(r0 + i - pad, 0), h - 1)
            for j in range(wp):
                buf[j, i] = frame[rr, min(max(j - pad, 0), w - 1), c]
        _prefilter_block(buf)
        for i in range(g):
            for j in range(wp):
                out[c, r0 + i, j] = buf[j, i]
    # columns: a block of adjacent columns at a time, the recursion running down the rows
    nb = (wp + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for q in prange(nc * nb):
        c = q // nb
        j0 = (q % nb) * _COLUMN_BLOCK
        j1 = min(j0 + _COLUMN_BLOCK, wp)
        cols = np.empty((hp, j1 - j0), dtype=np.float64)
        for r in range(hp):
            for j in range(j1 - j0):
                cols[r, j] = out[c, r, j0 + j]
        _prefilter_block(cols)
        for r in range(hp):
            for j in range(j1 - j0):
                out[c, r, j0 + j] = cols[r, j]


@njit(parallel=True)
def _warp_cubic_separable(coeffs, pad, ay, ax, oy, ox, rounding, lo, hi, out):
    """Evaluate :func:`warp_cubic_frame` for ``y = ay r + oy``, ``x = ax j + ox``.

    Separable: per output row, a column pass (four rows of coefficients combined), then a
    row pass along it; about seven times faster than the general affine evaluation.
    """
    nc, hp, wp = coeffs.shape
    ho, wo = out.shape[0], out.shape[1]
    ix = np.empty(wo, dtype=np.int64)
    wx = np.empty((wo, 4), dtype=np.float32)
    for j in range(wo):
        x = min(max(ax * j + ox + pad, 1.0), wp - 3.0)
        ix[j] = int(x) - 1
        w0, w1, w2, w3 = _cubic_bspline_weights(np.float32(x - int(x)))
        wx[j, 0] = w0
        wx[j, 1] = w1
        wx[j, 2] = w2
        wx[j, 3] = w3
    for r in prange(ho):
        y = min(max(ay * r + oy + pad, 1.0), hp - 3.0)
        q = int(y) - 1
        wy0, wy1, wy2, wy3 = _cubic_bspline_weights(np.float32(y - int(y)))
        tmp = np.empty(wp, dtype=np.float32)
        for c in range(nc):
            for k in range(wp):
                tmp[k] = (
                    wy0 * coeffs[c, q, k]
                    + wy1 * coeffs[c, q + 1, k]
                    + wy2 * coeffs[c, q + 2, k]
                    + wy3 * coeffs[c, q + 3, k]
                )
            for j in range(wo):
                k = ix[j]
                v = (
                    wx[j, 0] * tmp[k]
                    + wx[j, 1] * tmp[k + 1]
                    + wx[j, 2] * tmp[k + 2]
                    + wx[j, 3] * tmp[k + 3]
                )
                if rounding:
                    v = min(max(np.rint(v), np.float32(lo)), np.float32(hi))
                out[r, j, c] = v


@njit(parallel=True)
def warp_cubic_frame(coeffs, pad, a00, a01, a10, a11, o0, o1, rounding, lo, hi, out):
    """Evaluate the cubic B-splines ``coeffs`` (C, H + 2 pad, W + 2 pad) under an affine map.

    Output pixel ``(r, j)`` of every channel takes the spline's value at input
    ``(y, x) = (a00 r + a01 j + o0, a10 r + a11 j + o1)``. Points outside the frame take the
    spline of the edge-extended frame (scipy's ``mode="nearest"``), moved in to ``pad - 3``
    samples outside, where it is the edge value. ``out`` is ``(H', W', C)``, rounded half to
    even and clipped to ``[lo, hi]`` when ``rounding`` (integer output).
    """
    nc, hp, wp = coeffs.shape
    ho, wo = out.shape[0], out.shape[1]
    if a01 == 0.0 and a10 == 0.0:  # scale and shift (focus breathing): separable
        _warp_cubic_separable(coeffs, pad, a00, a11, o0, o1, rounding, lo, hi, out)
        return
    for r in prange(ho):
        for j in range(wo):
            y = min(max(a00 * r + a01 * j + o0 + pad, 1.0), hp - 3.0)
            x = min(max(a10 * r + a11 * j + o1 + pad, 1.0), wp - 3.0)
            iy = int(y)
            ix = int(x)
            wy0, wy1, wy2, wy3 = _cubic_bspline_weights(np.float32(y - iy))
            wx0, wx1, wx2, wx3 = _cubic_bspline_weights(np.float32(x - ix))
            k = ix - 1
            q = iy - 1
            for c in range(nc):
                v = (
                    wy0
                    * (
                        wx0 * coeffs[c, q, k]
                        + wx1 * coeffs[c, q, k + 1]
                        + wx2 * coeffs[c, q, k + 2]
                        + wx3 * coeffs[c, q, k + 3]
                    )
                    + wy1
                    * (
                        wx0 * coeffs[c, q + 1, k]
                        + wx1 * coeffs[c, q + 1, k + 1]
                        + wx2 * coeffs[c, q + 1, k + 2]
                        + wx3 * coeffs[c, q + 1, k + 3]
                    )
                    + wy2
                    * (
                        wx0 * coeffs[c, q + 2, k]
                        + wx1 * coeffs[c, q + 2, k + 1]
                        + wx2 * coeffs[c, q + 2, k + 2]
                        + wx3 * coeffs[c, q + 2, k + 3]
                    )
                    + wy3
                    * (
                        wx0 * coeffs[c, q + 3, k]
                        + wx1 * coeffs[c, q + 3, k + 1]
                        + wx2 * coeffs[c, q + 3, k + 2]
                        + wx3 * coeffs[c, q + 3, k + 3]
                    )
                )
                v32 = np.float32(v)  # integer output: the float32 value, rounded
                if rounding:
                    v32 = min(max(np.rint(v32), np.float32(lo)), np.float32(hi))
                out[r, j, c] = v32


@njit(parallel=True)
def luminance_block_mean(frame, weights, d, out):
    """Block means over ``d x d`` pixels of the luminance ``sum_c weights[c] frame[..., c]``.

    ``frame`` is ``(H, W, C)`` of any real dtype; ``out`` is float32 ``(H // d, W // d)``
    (the incomplete blocks at the bottom and right are left out). One pass over the frame,
    instead of a float32 copy of it and a luminance image.
    """
    ho, wo = out.shape
    nc = weights.shape[0]
    inv = 1.0 / (d * d)
    for i in prange(ho):
        row = np.zeros(wo, dtype=np.float64)
        for y in range(i * d, i * d + d):
            for jo in range(wo):
                s = 0.0
                for x in range(jo * d, jo * d + d):
                    for c in range(nc):
                        s += weights[c] * frame[y, x, c]
                row[jo] += s
        for jo in range(wo):
            out[i, jo] = row[jo] * inv
