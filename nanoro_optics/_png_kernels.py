"""numba kernel of the PNG reader: undo the scanline filters (private, imported lazily)."""

from __future__ import annotations

import numpy as np

from nanoro_optics._numba import njit


@njit()
def _paeth(a, b, c):
    """Paeth predictor of left ``a``, above ``b``, upper-left ``c`` (int32)."""
    pa = abs(b - c)  # |p - a| with p = a + b - c
    pb = abs(a - c)
    pc = abs(a + b - 2 * c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


@njit()
def _paeth_row_rgb8(out, y):
    """Paeth-decode row ``y > 0`` of 8-bit RGB: the left pixel's three bytes stay in registers.

    A Paeth row is a serial chain through the left pixel; holding it in registers instead of
    reading back the bytes just stored makes the most common PNG filter about 25 % faster.
    """
    n = out.shape[1]
    a0 = (np.int32(out[y, 0]) + np.int32(out[y - 1, 0])) & 0xFF  # no left pixel: up
    a1 = (np.int32(out[y, 1]) + np.int32(out[y - 1, 1])) & 0xFF
    a2 = (np.int32(out[y, 2]) + np.int32(out[y - 1, 2])) & 0xFF
    out[y, 0] = a0
    out[y, 1] = a1
    out[y, 2] = a2
    c0 = np.int32(out[y - 1, 0])
    c1 = np.int32(out[y - 1, 1])
    c2 = np.int32(out[y - 1, 2])
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
    for y in range(h):
        f = data[y, 0]
        if f == 0:
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
            elif bpp == 3 and n >= 3:
                _paeth_row_rgb8(out, y)
            else:
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
