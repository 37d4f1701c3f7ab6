"""numba kernels of :mod:`.correlation` (imported lazily, never at package import).

Each kernel fuses several whole-image numpy passes into one pass; the tests compare every
kernel with the obvious numpy expression. They are serial on purpose: these passes are
memory-bound, and a parallel region on a shared, oversubscribed machine waits a whole
scheduler slice for its slowest thread (measured: 16 ms instead of 0.2 ms per 1024^2 pass).
"""

from __future__ import annotations

import numpy as np

from .._numba import njit


@njit()
def bin_mean(a, b):
    """``b x b`` mean binning to float32 (trailing rows/columns that do not fill a bin dropped).

    Rows are accumulated contiguously into a float64 line, then summed in groups of ``b``.
    """
    ny = a.shape[0] // b
    nx = a.shape[1] // b
    w = nx * b
    out = np.empty((ny, nx), dtype=np.float32)
    line = np.empty(w, dtype=np.float64)
    scale = 1.0 / (b * b)
    for i in range(ny):
        for j in range(w):
            line[j] = a[i * b, j]
        for u in range(1, b):
            for j in range(w):
                line[j] += a[i * b + u, j]
        for j in range(nx):
            s = 0.0
            for v in range(b):
                s += line[j * b + v]
            out[i, j] = s * scale
    return out


@njit()
def taper(a, mean, wy, wx, out):
    """Write ``(a - mean) * wy[:, None] * wx[None, :]`` into the float32 array ``out``."""
    m = np.float32(mean)
    for i in range(a.shape[0]):
        wi = wy[i]
        for j in range(a.shape[1]):
            out[i, j] = (np.float32(a[i, j]) - m) * wi * wx[j]
    return out


@njit()
def cross_block(fa, fb, rows, ncols, filt, power, wya, wxa, ma, wyb, wxb, mb):
    """Band block of ``conj(A) B / (|.| + eps)**power * filt`` (complex64).

    ``A = fa - ma * outer(wya, wxa)`` removes the window-weighted mean ``ma`` from the
    spectrum of a tapered image (``wya``/``wxa`` are the 1-D spectra of its window on the
    kept rows/columns); likewise ``B``. ``eps`` is 1e-6 of the largest magnitude in the block.
    Returns the block and that largest magnitude (0: no common frequency in the band).
    """
    n = rows.size
    out = np.empty((n, ncols), dtype=np.complex64)
    top2 = 0.0
    for r in range(n):
        i = rows[r]
        for j in range(ncols):
            va = fa[i, j] - ma * wya[r] * wxa[j]
            vb = fb[i, j] - mb * wyb[r] * wxb[j]
            v = np.conj(va) * vb
            out[r, j] = v
            m2 = v.real * v.real + v.imag * v.imag
            if m2 > top2:
                top2 = m2
    top = np.sqrt(top2)
    if top == 0.0 or power == 0.0:
        for r in range(n):
            for j in range(ncols):
                out[r, j] = out[r, j] * filt[r, j]
        return out, top
    eps = np.float32(1e-6 * top)
    for r in range(n):
        for j in range(ncols):
            v = out[r, j]
            m = np.sqrt(v.real * v.real + v.imag * v.imag) + eps
            if power == 1.0:
                out[r, j] = v * (filt[r, j] / m)
            else:
                out[r, j] = v * (filt[r, j] / m**power)
    return out, top
