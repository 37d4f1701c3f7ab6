"""numba kernel of the depth map's z axis: frame index to z (private).

``index_to_z`` gives exactly what ``np.interp(depth, np.arange(n), z_um)`` gives (then
rounded to float32), pixel for pixel, but runs in parallel without numpy's binary search:
on the frame-index grid ``0, 1, ..., n - 1`` the interval of a value ``x`` is ``floor(x)``.
At 2048 x 2048 numpy's ``interp`` took 0.1 to 0.3 s (one thread), most of a live group's
result time. The arithmetic is numpy's (``numpy/_core/src/multiarray/compiled_base.c``,
``arr_interp``): ``slope * (x - x_j) + f_j`` in float64, ``f_j`` itself where ``x`` is
a grid point, the end values outside the grid, NaN for NaN; numba compiles it without
fast-math, so no operation is fused or reordered. The slope's denominator on this grid is
exactly 1.0, so the division is left out (the same value). The test compares the two bit
for bit.

Kept apart from the other kernel modules so that it compiles on its own (a small kernel).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit


@njit()
def _index_to_z_row(src, z, out, r):
    # one loop of selects, no branch and no division, so that it vectorises: on the grid
    # 0, 1, ..., n - 1 numpy's slope (z_{k+1} - z_k) / ((k + 1) - k) divides by exactly 1.0
    n = z.shape[0]
    last = np.float64(n - 1)
    nan = np.float32(np.nan)
    for j in range(src.shape[1]):
        x = np.float64(src[r, j])
        # an index that is valid whatever x is (NaN and the ends are selected away below)
        xc = x if x > 0.0 else 0.0
        xc = xc if xc < last else last
        k = min(int(xc), n - 2)
        xk = np.float64(k)
        zk = z[k]
        v = (z[k + 1] - zk) * (xc - xk) + zk
        v = zk if xc == xk else v  # a grid point: z_k itself, as numpy gives it
        v = z[0] if x < 0.0 else v
        v = z[n - 1] if x >= last else v  # numpy: the right value beyond, f_{n-1} on it
        out[r, j] = nan if x != x else np.float32(v)


@njit(parallel=True)
def index_to_z(src, z, out):
    """Write ``np.interp(src, arange(len(z)), z)`` as float32 into ``out`` (``len(z) >= 2``)."""
    for r in prange(src.shape[0]):
        _index_to_z_row(src, z, out, np.int64(r))
