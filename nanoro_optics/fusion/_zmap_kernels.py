"""numba kernels of the depth map's z axis: frame index to z, and z relabelled (private).

``index_to_z`` gives exactly what ``np.interp(depth, np.arange(n), z_um)`` gives (then
rounded to float32), pixel for pixel, but runs in parallel without numpy's binary search:
on the frame-index grid ``0, 1, ..., n - 1`` the interval of a value ``x`` is ``floor(x)``.
At 2048 x 2048 numpy's ``interp`` took 0.1 to 0.3 s (one thread), most of a live group's
result time. The arithmetic is numpy's (``numpy/_core/src/multiarray/compiled_base.c``,
``arr_interp``): ``slope * (x - x_j) + f_j`` in float64, ``f_j`` itself where ``x`` is
a grid point, the end values outside the grid, NaN for NaN; numba compiles it without
fast-math, so no operation is fused or reordered. The test compares the two bit for bit.

``relabel`` maps a depth map in um through a piecewise-linear function given at knots (the
index-mismatch correction of :class:`nanoro_optics.mmcore.LiveFusion`: nominal stage z to
actual height, known at the frames' z positions): a binary search per pixel, as
``np.interp`` does, in parallel.

Kept apart from ``_kernels.py`` so that they compile on their own (two small kernels).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit


@njit()
def _index_to_z_row(src, z, out, r):
    n = z.shape[0]
    last = np.float64(n - 1)
    for j in range(src.shape[1]):
        x = np.float64(src[r, j])
        if np.isnan(x):
            out[r, j] = np.float32(np.nan)
        elif x < 0.0:
            out[r, j] = np.float32(z[0])
        elif x >= last:  # numpy: the right value beyond, f_{n-1} on the last point
            out[r, j] = np.float32(z[n - 1])
        else:
            k = int(x)  # floor, x >= 0
            xk = np.float64(k)
            if xk == x:
                out[r, j] = np.float32(z[k])
            else:
                slope = (z[k + 1] - z[k]) / (np.float64(k + 1) - xk)
                out[r, j] = np.float32(slope * (x - xk) + z[k])


@njit(parallel=True)
def index_to_z(src, z, out):
    """Write ``np.interp(src, arange(len(z)), z)`` as float32 into ``out`` (``len(z) >= 2``)."""
    for r in prange(src.shape[0]):
        _index_to_z_row(src, z, out, np.int64(r))


@njit()
def _relabel_row(src, xk, yk, out, r):
    n = xk.shape[0]
    for j in range(src.shape[1]):
        x = np.float64(src[r, j])
        if np.isnan(x):
            out[r, j] = np.float32(np.nan)
        elif x <= xk[0]:
            out[r, j] = np.float32(yk[0])
        elif x >= xk[n - 1]:
            out[r, j] = np.float32(yk[n - 1])
        else:
            lo, hi = 0, n - 1
            while hi - lo > 1:  # xk[lo] < x < xk[hi]
                mid = (lo + hi) // 2
                if xk[mid] <= x:
                    lo = mid
                else:
                    hi = mid
            t = (x - xk[lo]) / (xk[hi] - xk[lo])
            out[r, j] = np.float32(yk[lo] + t * (yk[hi] - yk[lo]))


@njit(parallel=True)
def relabel(src, xk, yk, out):
    """Write the piecewise-linear map through ``(xk, yk)`` of ``src`` into ``out`` (float32).

    ``xk`` strictly increasing (at least 2 knots); values beyond the knots take the end
    values, NaN stays NaN (``np.interp(src, xk, yk)`` up to rounding).
    """
    for r in prange(src.shape[0]):
        _relabel_row(src, xk, yk, out, np.int64(r))
