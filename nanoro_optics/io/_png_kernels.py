"""numba kernel of the PNG reader: undo the scanline filters (private, imported lazily)."""

from __future__ import annotations

import numpy as np

from .._numba import njit


@njit(inline="always")
def _paeth(a, b, c):
    """Paeth predictor of left ``a``, above ``b``, upper-left ``c`` (int32), without branches."""
    bc = b - c
    ac = a - c
    pa = abs(bc)  # |p - a| with p = a + b - c
    pb = abs(ac)  # |p - b|
    pc = abs(ac + bc)  # |p - c|
    other = b if pb <= pc else c
    return a if (pa <= pb) & (pa <= pc) else other


@njit()
def _paeth_two_rows_rgb8(out, y):
    """Paeth-decode rows ``y > 0`` and ``y + 1`` of 8-bit RGB together.

    A Paeth row is a serial chain through the left pixel, held here in registers. Pixel
    ``x`` of row ``y + 1`` needs only pixels ``x - 1`` and ``x`` of row ``y``, so the two
    rows' chains advance side by side in one loop: the processor overlaps them, and two
    rows take about two thirds of the time of one after the other.
    """
    n = out.shape[1]
    a0 = (np.int32(out[y, 0]) + np.int32(out[y - 1, 0])) & 0xFF  # no left pixel: up
    a1 = (np.int32(out[y, 1]) + np.int32(out[y - 1, 1])) & 0xFF
    a2 = (np.int32(out[y, 2]) + np.int32(out[y - 1, 2])) & 0xFF
    out[y, 0] = a0
    out[y, 1] = a1
    out[y, 2] = a2
    e0 = (np.int32(out[y + 1, 0]) + a0) & 0xFF
    e1 = (np.int32(out[y + 1, 1]) + a1) & 0xFF
    e2 = (np.int32(out[y + 1, 2]) + a2) & 0xFF
    out[y + 1, 0] = e0
    out[y + 1, 1] = e1
    out[y + 1, 2] = e2
    c0 = np.int32(out[y - 1, 0])  # upper-left of row y
    c1 = np.int32(out[y - 1, 1])
    c2 = np.int32(out[y - 1, 2])
    d0 = a0  # upper-left of row y + 1
    d1 = a1
    d2 = a2
    for x in range(3, n - 2, 3):
        b0 = np.int32(out[y - 1, x])
        b1 = np.int32(out[y - 1, x + 1])
        b2 = np.int32(out[y - 1, x + 2])
        a0 = (np.int32(out[y, x]) + _paeth(a0, b0, c0)) & 0xFF
        a1 = (np.int32(out[y, x + 1]) + _paeth(a1, b1, c1)) & 0xFF
        a2 = (np.int32(out[y, x + 2]) + _paeth(a2, b2, c2)) & 0xFF
        out[y, x] = a0
        out[y, x + 1] = a1
        out[y, x + 2] = a2
        c0 = b0
        c1 = b1
        c2 = b2
        e0 = (np.int32(out[y + 1, x]) + _paeth(e0, a0, d0)) & 0xFF
        e1 = (np.int32(out[y + 1, x + 1]) + _paeth(e1, a1, d1)) & 0xFF
        e2 = (np.int32(out[y + 1, x + 2]) + _paeth(e2, a2, d2)) & 0xFF
        out[y + 1, x] = e0
        out[y + 1, x + 1] = e1
        out[y + 1, x + 2] = e2
        d0 = a0
        d1 = a1
        d2 = a2


@njit()
def unfilter(data, bpp):
    """Undo, in place, the PNG filters of ``data`` (rows of filter byte + ``W * bpp`` bytes).

    Filter types (PNG spec section 7.3): 0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth; all
    arithmetic modulo 256, byte by byte, with the pixel ``bpp`` bytes to the left and the byte
    above (zero outside the image). Byte ``x`` of row ``y`` (``data[y, x + 1]``) is decoded
    where it stands: it depends only on bytes to its left and above, already decoded, and on
    its own filtered value. Returns -1, or the first row whose filter type is invalid (the
    data is then partly decoded).
    """
    out = data[:, 1:]
    h, n = out.shape
    y = -1
    while y + 1 < h:
        y += 1
        f = data[y, 0]
        if f == 4 and bpp == 3 and n >= 3 and 0 < y < h - 1 and data[y + 1, 0] == 4:
            _paeth_two_rows_rgb8(out, y)
            y += 1
        elif f == 0:
            pass
        elif f == 1:
            for x in range(n):
                left = out[y, x - bpp] if x >= bpp else 0
                out[y, x] = (out[y, x] + left) & 0xFF
        elif f == 2:
            if y > 0:
                for x in range(n):
                    out[y, x] = (out[y, x] + out[y - 1, x]) & 0xFF
        elif f == 3:
            for x in range(n):
                left = np.int32(out[y, x - bpp]) if x >= bpp else np.int32(0)
                up = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
                out[y, x] = (np.int32(out[y, x]) + ((left + up) >> 1)) & 0xFF
        elif f == 4:
            if y == 0:  # no row above: Paeth predicts the left byte
                for x in range(bpp, n):
                    out[y, x] = (out[y, x] + out[y, x - bpp]) & 0xFF
            else:  # (pairs of 8-bit RGB Paeth rows are decoded together, above)
                for x in range(min(bpp, n)):  # no pixel to the left: predicts the byte above
                    out[y, x] = (out[y, x] + out[y - 1, x]) & 0xFF
                for x in range(bpp, n):
                    pred = _paeth(
                        np.int32(out[y, x - bpp]),
                        np.int32(out[y - 1, x]),
                        np.int32(out[y - 1, x - bpp]),
                    )
                    out[y, x] = (np.int32(out[y, x]) + pred) & 0xFF
        else:
            return y
    return -1
