"""numba kernel of the index-mismatch correction: a depth map relabelled (private).

``relabel`` maps a depth map in um through a piecewise-linear function given at knots
(:class:`~nanoro_optics.psf.IndexMismatch`: nominal stage z to actual height, known at the
frames' z positions): a binary search per pixel, as ``np.interp`` does, in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit


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
