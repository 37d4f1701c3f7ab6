"""numba kernel of the depth map's z axis: frame index to z (private).

``index_to_z`` gives exactly what ``np.interp(depth, np.arange(n), z_um)`` gives (then
rounded to float32), pixel for pixel, but runs in parallel without numpy's binary search:
on the frame-index grid ``0, 1, ..., n - 1`` the interval of a value ``x`` is ``floor(x)``.
At 2048 x 2048 numpy's ``interp`` took 0.1 to 0.3 s (one thread), most of a live group's
result time. The arithmetic is numpy's (``numpy/_core/src/multiarray/compiled_base.c``,
``arr_interp``): ``slope * (x - x_j) + f_j`` in float64, ``f_j`` itself where ``x`` is
a grid point, the end values outside the grid, NaN for NaN; numba compiles it without
fast-math, so no operation is fused or reordered. The test compares the two bit for bit.

Kept apart from the other kernel modules so that it compiles on its own (a small kernel).
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
