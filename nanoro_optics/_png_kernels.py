"""numba kernel of the PNG reader: undo the scanline filters (private, imported lazily)."""

from __future__ import annotations

import numpy as np

from nanoro_optics._numba import njit


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
            for x in range(n):
                a = np.int32(out[y, x - bpp]) if x >= bpp else np.int32(0)
                b = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
                c = np.int32(out[y - 1, x - bpp]) if (x >= bpp and y > 0) else np.int32(0)
                p = a + b - c
                pa = abs(p - a)
                pb = abs(p - b)
                pc = abs(p - c)
                if pa <= pb and pa <= pc:
                    pred = a
                elif pb <= pc:
                    pred = b
                else:
                    pred = c
                out[y, x] = (np.int32(out[y, x]) + pred) & 0xFF
        else:
            return y
    return -1
