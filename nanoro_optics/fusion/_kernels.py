"""numba kernels of the focus fuser (private; imported lazily by the public functions).

Layouts: the pyramid kernels read level 0 either interleaved ``(rows, cols, channels)`` as
given or planar in the frame's dtype; the fusion kernel reads planar only (the fuser copies
colour frames to planar first: the inner loops then run along contiguous rows and
vectorise); every other image here is planar ``(channels, rows, cols)`` float32.
Single-channel maps are ``(rows, cols)``. The Burt-Adelson generating kernel is the 5-tap
binomial ``[1, 4, 6, 4, 1] / 16``; borders are mirrored without repeating the edge sample
("reflect-101"), on every level, in both REDUCE and EXPAND, so the Laplacian pyramid
``L_k = G_k - EXPAND(G_{k+1})`` reconstructs ``G_k`` exactly (up to float32 rounding)
whatever the image size.

Parallel kernels are thin ``prange`` loops over a plain ``@njit`` row or band function: numba
compiles that much faster than one large parallel body. The loop index is passed on as
``np.int64``: numba's parallel loops hand out signed or unsigned indices, and each kind would
compile the row function once more.

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit

from ._codes import CODE_MAX, CODE_ONE, CODE_UNKNOWN

#: rows per parallel band in the fusion kernel (even: a band maps onto whole rows of the
#: next, half-size level)
BAND_ROWS = 64
#: largest activity (noise energies) the fusion kernel holds: energies of frames ~2**50
#: times their noise (frames of very different scales in one stack) saturate here instead
#: of overflowing float32 to inf; ordinary stacks stay below 2**50 noise energies
ACTIVITY_MAX = 2.0**100


@njit()
def _refl(i, n):
    """Mirror index ``i`` into ``[0, n)`` without repeating the edge (reflect-101)."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * n - 2 - i
    return i


@njit()
def _root(x, p):
    """``x ** (1 / p)`` for ``x`` in ``[1, 2]``: square roots for a power of two ``p``."""
    if p == 1:
        return x
    q = p
    while q % 2 == 0:
        x = np.sqrt(x)
        q //= 2
    if q == 1:
        return x
    return x ** np.float32(1.0 / q)


@njit()
def _pw(x, p):
    """``x ** p`` for a small non-negative integer ``p`` without a pow call."""
    if p == 4:
        x2 = x * x
        return x2 * x2
    if p == 2:
        return x * x
    if p == 1:
        return x
    result = np.float32(1.0)
    base = x
    while p > 0:
        if p & 1:
            result *= base
        base *= base
        p >>= 1
    return result


# ---------------------------------------------------------------------------------------
# 16-bit activity codes
# ---------------------------------------------------------------------------------------
# (the format and its constants are described in the numba-free ``_codes``, so that
# allocating a fuser's maps does not import numba)


@njit()
def _encode_row(a, inv_floor, fbuf, keys):
    """Codes of the activities ``a`` (floor ``1 / inv_floor``), as float32 into ``keys``.

    ``fbuf`` is float32 scratch of the row's length. Values below the floor take the
    floor's code (0); the fuser's activities never are (they include the floor).
    """
    ubuf = fbuf.view(np.uint32)
    one = np.float32(1.0)
    for j in range(a.shape[0]):
        fbuf[j] = max(a[j] * inv_floor, one)
    for j in range(a.shape[0]):
        code = (ubuf[j] - np.uint32(CODE_ONE) + np.uint32(0x800)) >> np.uint32(12)
        keys[j] = np.float32(min(code, np.uint32(CODE_MAX)))


@njit()
def _log_code(code):
    """Natural log of ``a / floor`` for a code of :func:`_encode_row` (NaN if unknown)."""
    c = np.uint32(code)
    if c >= CODE_UNKNOWN:
        return np.float32(np.nan)
    e = np.float32(c >> np.uint32(11))
    m = np.float32(c & np.uint32(0x7FF)) * np.float32(1.0 / 2048.0)
    return e * np.float32(np.log(2.0)) + np.log1p(m)


# ---------------------------------------------------------------------------------------
# REDUCE and EXPAND
# ---------------------------------------------------------------------------------------
@njit()
def _reduce_row(src, interleaved, dst, i, tmp, gain, to_int):
    """Row ``i`` of every channel of ``gain * REDUCE(src)`` into planar ``dst``."""
    if interleaved:
        h, w, nc = src.shape
    else:
        nc, h, w = src.shape
    wo = dst.shape[2]
    r0 = _refl(2 * i - 2, h)
    r1 = _refl(2 * i - 1, h)
    r2 = _refl(2 * i, h)
    r3 = _refl(2 * i + 1, h)
    r4 = _refl(2 * i + 2, h)
    f4 = np.float32(4.0)
    f6 = np.float32(6.0)
    k16 = np.float32(1.0 / 16.0)
    for c in range(nc):
        if interleaved:
            for j in range(w):
                tmp[j] = (
                    np.float32(src[r0, j, c])
                    + np.float32(src[r4, j, c])
                    + f4 * (np.float32(src[r1, j, c]) + np.float32(src[r3, j, c]))
                    + f6 * np.float32(src[r2, j, c])
                )
        else:
            for j in range(w):
                tmp[j] = (
                    np.float32(src[c, r0, j])
                    + np.float32(src[c, r4, j])
                    + f4 * (np.float32(src[c, r1, j]) + np.float32(src[c, r3, j]))
                    + f6 * np.float32(src[c, r2, j])
                )
        k = k16 * k16 * gain
        for jo in range(1, wo - 1):
            j = 2 * jo
            v = (tmp[j - 2] + tmp[j + 2] + f4 * (tmp[j - 1] + tmp[j + 1]) + f6 * tmp[j]) * k
            dst[c, i, jo] = np.rint(v) if to_int else v
        for jo in (0, wo - 1):
            if jo < 0:
                continue
            j = 2 * jo
            v = (
                tmp[_refl(j - 2, w)]
                + tmp[_refl(j + 2, w)]
                + f4 * (tmp[_refl(j - 1, w)] + tmp[_refl(j + 1, w)])
                + f6 * tmp[j]
            ) * k
            dst[c, i, jo] = np.rint(v) if to_int else v


@njit(parallel=True)
def reduce_level(src, interleaved, dst, gain, to_int):
    """Burt-Adelson REDUCE: 5-tap binomial blur, then every other row and column.

    ``src`` is ``(H, W, C)`` when ``interleaved``, else planar ``(C, H, W)``, of any real
    dtype; ``dst`` is planar ``(C, ceil(H/2), ceil(W/2))`` and receives ``gain`` times the
    result: float32, or (``to_int``) an integer type, then rounded half to even (the fuser's
    fixed-point Gaussian levels).
    """
    ho = dst.shape[1]
    w = src.shape[1] if interleaved else src.shape[2]
    g = np.float32(gain)
    for i in prange(ho):
        tmp = np.empty(w, dtype=np.float32)
        _reduce_row(src, interleaved, dst, np.int64(i), tmp, g, to_int)


@njit()
def _expand_row(gc, r, out_w, vtmp, out):
    """Row ``r`` of EXPAND(gc) for one planar channel ``gc`` (rows, cols) into ``out[:out_w]``.

    EXPAND inserts zeros between samples and filters with twice the generating kernel, so an
    even output sample is ``(g[n-1] + 6 g[n] + g[n+1]) / 8`` and an odd one
    ``(g[n] + g[n+1]) / 2`` along each axis.
    """
    hg, wg = gc.shape
    n = r // 2
    f6 = np.float32(6.0)
    k8 = np.float32(0.125)
    half = np.float32(0.5)
    if r % 2 == 0:
        a = _refl(n - 1, hg)
        b = _refl(n, hg)
        d = _refl(n + 1, hg)
        for j in range(wg):
            vtmp[j] = (np.float32(gc[a, j]) + np.float32(gc[d, j]) + f6 * np.float32(gc[b, j])) * k8
    else:
        b = _refl(n, hg)
        d = _refl(n + 1, hg)
        for j in range(wg):
            vtmp[j] = (np.float32(gc[b, j]) + np.float32(gc[d, j])) * half
    for m in range(1, wg - 1):
        out[2 * m] = (vtmp[m - 1] + vtmp[m + 1] + f6 * vtmp[m]) * k8
        out[2 * m + 1] = (vtmp[m] + vtmp[m + 1]) * half
    lo = min(2, out_w)
    hi = max(2 * (wg - 1), lo)
    for j in range(lo):
        _expand_edge(vtmp, wg, j, out)
    for j in range(hi, out_w):
        _expand_edge(vtmp, wg, j, out)


@njit()
def _expand_edge(vtmp, wg, j, out):
    m = j // 2
    if j % 2 == 0:
        out[j] = (
            vtmp[_refl(m - 1, wg)] + vtmp[_refl(m + 1, wg)] + np.float32(6.0) * vtmp[_refl(m, wg)]
        ) * np.float32(0.125)
    else:
        out[j] = (vtmp[_refl(m, wg)] + vtmp[_refl(m + 1, wg)]) * np.float32(0.5)


@njit()
def _laplacian_row(g, interleaved, gn, out, r, vtmp, erow):
    nc = gn.shape[0]
    w = out.shape[2]
    for c in range(nc):
        _expand_row(gn[c], r, w, vtmp, erow)
        if interleaved:
            for j in range(w):
                out[c, r, j] = np.float32(g[r, j, c]) - erow[j]
        else:
            for j in range(w):
                out[c, r, j] = np.float32(g[c, r, j]) - erow[j]


@njit(parallel=True)
def laplacian_level(g, interleaved, gn, out):
    """Planar ``out = g - EXPAND(gn)``; ``g`` interleaved (any dtype) or planar float32."""
    h = out.shape[1]
    for r in prange(h):
        vtmp = np.empty(gn.shape[2], dtype=np.float32)
        erow = np.empty(out.shape[2], dtype=np.float32)
        _laplacian_row(g, interleaved, gn, out, np.int64(r), vtmp, erow)


@njit()
def _expand_add_row(acc, scale, gn, out, r, interleaved_out, rounding, lo, hi, vtmp, erow):
    nc, w = acc.shape[0], acc.shape[2]
    for c in range(nc):
        _expand_row(gn[c], r, w, vtmp, erow)
        for j in range(w):
            v = np.float32(acc[c, r, j]) * scale + erow[j]
            if interleaved_out:
                if rounding:
                    x = np.rint(np.float64(v))
                    if x < lo:
                        x = lo
                    elif x > hi:
                        x = hi
                    out[r, j, c] = x
                else:
                    out[r, j, c] = v
            else:
                out[c, r, j] = v


@njit(parallel=True)
def expand_add(acc, scale, gn, out, interleaved_out, rounding, lo, hi):
    """One step of collapsing a pyramid: ``out = acc * scale + EXPAND(gn)``.

    ``acc`` (float32, or int16 fixed point with ``scale`` its step) and ``gn`` are planar;
    ``out`` is planar float32, or interleaved ``(H, W, C)`` when ``interleaved_out``, then
    optionally rounded half to even and clipped to ``[lo, hi]`` (fusion can overshoot the
    input range by a fraction of a DN next to a sharp edge; the overshoot is clipped to the
    dtype's range when the image is stored).
    """
    h = acc.shape[1]
    for r in prange(h):
        vtmp = np.empty(gn.shape[2], dtype=np.float32)
        erow = np.empty(acc.shape[2], dtype=np.float32)
        _expand_add_row(
            acc, scale, gn, out, np.int64(r), interleaved_out, rounding, lo, hi, vtmp, erow
        )


@njit(parallel=True)
def update_range(plane, lo, hi, first):
    """Per-pixel running minimum ``lo`` and maximum ``hi`` of planar frames (in place)."""
    nc, h, w = plane.shape
    for r in prange(h):
        for c in range(nc):
            if first:
                for j in range(w):
                    lo[c, r, j] = plane[c, r, j]
                    hi[c, r, j] = plane[c, r, j]
            else:
                for j in range(w):
                    v = plane[c, r, j]
                    lo[c, r, j] = min(lo[c, r, j], v)
                    hi[c, r, j] = max(hi[c, r, j], v)


@njit(parallel=True)
def clamp_to_range(img, lo, hi):
    """Clamp an interleaved image ``(H, W, C)`` to planar per-pixel bounds ``(C, H, W)``."""
    h, w, nc = img.shape
    for r in prange(h):
        for j in range(w):
            for c in range(nc):
                v = img[r, j, c]
                a = lo[c, r, j]
                b = hi[c, r, j]
                img[r, j, c] = a if v < a else (b if v > b else v)


@njit(parallel=True)
def scale_into(acc, scale, out):
    """Planar float32 ``out = acc * scale`` (the coarsest level of the fused pyramid)."""
    nc, h, w = acc.shape
    for r in prange(h):
        for c in range(nc):
            for j in range(w):
                out[c, r, j] = np.float32(acc[c, r, j]) * scale


# ---------------------------------------------------------------------------------------
# the fusion rule
# ---------------------------------------------------------------------------------------
@njit()
def _fuse_band(
    b,
    g,
    gn,
    inherited,
    acc,
    wnorm,
    reduced_out,
    prev,
    best,
    idx,
    before,
    after,
    amin,
    k,
    coded,
    first,
    lum,
    radius,
    inherit_gain,
    eps,
    power,
    hard,
    top,
    measure,
    write_act,
    write_reduced,
    has_inh,
    quant,
    qscale,
    g_scale,
    gn_scale,
):
    """One band of rows of :func:`fuse_level` (the parallel loop's body)."""
    nc, h, w = acc.shape
    measure = measure and not top
    rad = radius if measure else 0
    win = np.float32(1.0 / ((2 * rad + 1) * (2 * rad + 1)))
    r0 = b * BAND_ROWS
    r1 = min(r0 + BAND_ROWS, h)
    nrow = r1 - r0
    # activity rows r0-1 .. r1 (one halo row each side for the [1,2,1] decimation);
    # coefficient rows r0-1-rad .. r1+rad for the energy window
    na = nrow + 2
    ext = na + 2 * rad
    lbuf = np.empty((nc, ext, w), dtype=np.float32)
    hbuf = np.empty((ext, w), dtype=np.float32)
    abuf = np.empty((na, w), dtype=np.float32)
    vtmp = np.empty(max(gn.shape[2], 1), dtype=np.float32)
    erow = np.empty(w, dtype=np.float32)
    ybuf = np.empty(w, dtype=np.float32)
    ypad = np.empty(w + 2 * rad, dtype=np.float32)
    # activity keys (their codes when ``coded``), the norms of a row decoded, code scratch
    kbuf = np.empty(w if coded else 0, dtype=np.float32)
    mrow = np.empty(w, dtype=np.float32)
    fbuf = np.empty(w if coded else 0, dtype=np.float32)
    ubuf = fbuf.view(np.uint32)
    inv_eps = np.float32(1.0) / eps
    amax = np.float32(ACTIVITY_MAX)
    unknown = np.float32(CODE_UNKNOWN) if coded else np.float32(np.nan)
    # pass 1: Laplacian coefficients and the box sum of their channels' weighted energy
    for q in range(ext):
        rr = _refl(r0 - 1 - rad + q, h)
        if top:
            for c in range(nc):
                for j in range(w):
                    lbuf[c, q, j] = np.float32(g[c, rr, j]) * g_scale
            continue
        for j in range(w):
            ybuf[j] = np.float32(0.0)
        for c in range(nc):
            _expand_row(gn[c], rr, w, vtmp, erow)
            lc = lum[c]
            for j in range(w):
                v = np.float32(g[c, rr, j]) * g_scale - erow[j] * gn_scale
                lbuf[c, q, j] = v
                ybuf[j] += lc * (v * v)
        if not measure:
            continue
        # the channels' weighted energy, mirrored by rad samples at both ends, then a box sum
        for j in range(w):
            ypad[j + rad] = ybuf[j]
        for d in range(1, rad + 1):
            ypad[rad - d] = ypad[rad + _refl(-d, w)]
            ypad[rad + w - 1 + d] = ypad[rad + _refl(w - 1 + d, w)]
        hrow = hbuf[q]
        for j in range(w):
            hrow[j] = ypad[j]
        for d in range(1, 2 * rad + 1):
            for j in range(w):
                hrow[j] += ypad[j + d]
    # pass 2: activity of the band plus its halo rows
    for t in range(na):
        rr = _refl(r0 - 1 + t, h)
        for j in range(w):
            abuf[t, j] = eps
        if has_inh:
            for j in range(w):
                abuf[t, j] += inherit_gain * inherited[rr, j]
        if measure:
            for d in range(2 * rad + 1):
                for j in range(w):
                    abuf[t, j] += win * hbuf[t + d, j]
        for j in range(w):  # saturate, never inf (whose ratios are NaN weights)
            abuf[t, j] = min(abuf[t, j], amax)
    # pass 3: the running fusion of the band's own rows; ``acc`` holds the weighted mean of
    # the coefficients, as float32 or (``quant``) as int16 in steps of ``1 / qscale``
    inv_q = np.float32(1.0) / qscale
    scb = np.empty(w, dtype=np.float32)
    for t in range(1, nrow + 1):
        r = r0 - 1 + t
        lq = t + rad
        if quant:  # the coefficients as they will be stored
            for c in range(nc):
                for j in range(w):
                    lbuf[c, lq, j] = np.rint(lbuf[c, lq, j] * qscale) * inv_q
        keys = abuf[t]
        if coded and (hard or write_act):  # integer-valued float32 keys: exact compares
            _encode_row(abuf[t], inv_eps, fbuf, kbuf)
            keys = kbuf
        if hard:
            ties = 0
            if first:  # nothing to compare with yet
                for j in range(w):
                    scb[j] = np.float32(1.0)
                    wnorm[r, j] = keys[j]
            else:
                for j in range(w):  # branch-free, so that it vectorises; ties resolved below
                    a = keys[j]
                    m = np.float32(wnorm[r, j])
                    scb[j] = np.float32(1.0) if a > m else np.float32(0.0)
                    ties += 1 if a == m else 0
                    wnorm[r, j] = max(a, m)
            if ties > 0:  # equal activity: the larger coefficient vector, whatever the order
                for j in range(w):
                    if keys[j] == np.float32(wnorm[r, j]) and scb[j] == 0.0:
                        for c in range(nc):
                            old = np.float32(acc[c, r, j]) * inv_q if quant else acc[c, r, j]
                            if lbuf[c, lq, j] != old:
                                if lbuf[c, lq, j] > old:
                                    scb[j] = np.float32(1.0)
                                break
            for c in range(nc):
                for j in range(w):
                    if quant:
                        new = np.rint(lbuf[c, lq, j] * qscale)
                        acc[c, r, j] = new if scb[j] > 0.0 else acc[c, r, j]
                    else:
                        acc[c, r, j] = lbuf[c, lq, j] if scb[j] > 0.0 else acc[c, r, j]
        else:
            # the norms so far (0 before the first frame), decoded when stored as codes
            if first:
                for j in range(w):
                    mrow[j] = np.float32(0.0)
            elif coded:
                for j in range(w):
                    ubuf[j] = (np.uint32(wnorm[r, j]) << np.uint32(12)) + np.uint32(CODE_ONE)
                for j in range(w):
                    mrow[j] = fbuf[j] * eps
            else:
                for j in range(w):
                    mrow[j] = wnorm[r, j]
            if power == 4:  # the default, written out so that the loop vectorises
                for j in range(w):
                    a = abuf[t, j]
                    m = mrow[j]
                    mx = max(a, m)
                    q = min(a, m) / mx
                    q2 = q * q
                    norm = mx * np.sqrt(np.sqrt(np.float32(1.0) + q2 * q2))
                    mrow[j] = norm
                    q = a / norm
                    q2 = q * q
                    scb[j] = q2 * q2
            else:
                for j in range(w):
                    # wnorm is the p-norm of the activities so far, (sum a_k ** p) ** (1/p):
                    # it has the range of one activity (no overflow for any p), and the new
                    # frame's weight in the mean is a ** p / sum(a_k ** p) = (a / norm) ** p
                    a = abuf[t, j]
                    m = mrow[j]
                    mx = max(a, m)
                    norm = mx * _root(np.float32(1.0) + _pw(min(a, m) / mx, power), power)
                    mrow[j] = norm
                    scb[j] = _pw(a / norm, power)  # the new coefficient's share of the mean
            if coded:  # the new norms back as codes (the weights above used them exact)
                _encode_row(mrow, inv_eps, fbuf, mrow)
            for j in range(w):
                wnorm[r, j] = mrow[j]
            for c in range(nc):
                for j in range(w):
                    if quant:
                        old = np.float32(acc[c, r, j]) * inv_q
                        acc[c, r, j] = np.rint((old + (lbuf[c, lq, j] - old) * scb[j]) * qscale)
                    else:
                        old = acc[c, r, j]
                        acc[c, r, j] = old + (lbuf[c, lq, j] - old) * scb[j]
        if write_act:  # the depth tracker, as in depth_update
            _track_row(keys, r, k, prev, best, idx, before, after, amin, unknown)
    if write_reduced:
        hn = reduced_out.shape[0]
        wr = reduced_out.shape[1]
        two = np.float32(2.0)
        k16 = np.float32(1.0 / 16.0)
        for i in range((r0 + 1) // 2, min((r1 + 1) // 2, hn)):
            t = 2 * i - r0  # abuf row of image row 2i - 1
            # the rows' [1, 2, 1] sum first, then the columns' (mirrored at both ends)
            for j in range(w):
                ybuf[j] = abuf[t, j] + two * abuf[t + 1, j] + abuf[t + 2, j]
            for jj in range(1, (w - 1) // 2):
                cb = 2 * jj
                reduced_out[i, jj] = (ybuf[cb - 1] + two * ybuf[cb] + ybuf[cb + 1]) * k16
            for jj in (0, (w - 1) // 2, wr - 1):
                if 0 <= jj < wr:
                    ca = _refl(2 * jj - 1, w)
                    cb = 2 * jj
                    cc = _refl(2 * jj + 1, w)
                    reduced_out[i, jj] = (ybuf[ca] + two * ybuf[cb] + ybuf[cc]) * k16


@njit(parallel=True)
def fuse_level(
    g,
    gn,
    inherited,
    acc,
    wnorm,
    reduced_out,
    prev,
    best,
    idx,
    before,
    after,
    amin,
    k,
    coded,
    first,
    lum,
    radius,
    inherit_gain,
    eps,
    power,
    hard,
    top,
    measure,
    write_act,
    write_reduced,
    quant,
    qscale,
    g_scale,
    gn_scale,
):
    """Fold one frame's Laplacian level into the running fused level.

    g : (C, H, W) planar, the frame's dtype at level 0, else float32
        This frame's Gaussian level ``G_k``.
    gn : (C, H', W') float32, or int16 (see ``gn_scale``)
        This frame's next Gaussian level ``G_{k+1}`` (a placeholder when ``top``).
    inherited : (H, W) or (1, 1) float32
        Activity handed down from the finer level; a (1, 1) placeholder at level 0.
    acc, wnorm : (C, H, W), (H, W)
        Running weighted mean of the coefficients (float32, or int16 fixed point when
        ``quant``) and the norm of the activities seen (float32, or uint16 codes of
        ``norm / eps`` when ``coded``, see :func:`_encode_row`): their maximum with the hard
        rule, their ``power``-norm ``(sum a_k ** power) ** (1 / power)`` with the soft one,
        whose weights ``a_k ** power`` it normalises (frame ``k``'s share of the mean when it
        arrives is ``(a_k / norm_k) ** power``). One map holds what a sum of weights and a
        maximum to rescale it by would; the norm has the range of one activity, so it
        neither overflows nor underflows for any ``power``.
    reduced_out : (ceil(H/2), ceil(W/2)) float32
        Receives this level's activity filtered by ``[1, 2, 1] / 4`` along each axis and
        decimated (the next level's ``inherited``) when ``write_reduced``.
    prev, best, idx, before, after, amin, k : arrays (H, W) and int
        The maps of the :class:`~nanoro_optics.fusion.depth.DepthTracker`, updated in place
        with this level's activity as frame ``k`` when ``write_act`` (else placeholders).
    coded : bool
        ``wnorm`` and the tracker's activity maps hold uint16 codes (:func:`_encode_row`,
        floor ``eps``) instead of float32 activities. The hard rule and the tracker then
        compare codes (activities within a code step are ties); the soft rule computes this
        frame's weight with the exact new norm and stores the norm rounded to its code.
    first : bool
        This is the first frame (``wnorm`` holds nothing yet).
    lum : (C,) float32
        Channel weights of the energy: activity is ``sum_c lum[c] * coefficient_c ** 2``
        (``lum[c] = 1 / (C sigma_c**2)``: units of the noise energy), window-averaged; all
        channels are selected together.
    radius : int
        Half-width of the square window of the local energy.
    inherit_gain, eps : float32
        Weight of the inherited activity; activity floor (keeps weights defined when flat).
    power : int
        Exponent of the soft rule (ignored when ``hard``).
    hard : bool
        Keep only the coefficient of largest activity (ties: the larger coefficient vector).
    top : bool
        Coarsest level: the coefficients are ``G_k`` itself (planar), the activity only the
        inherited one.
    measure : bool
        Add this level's own (window-averaged) energy to its activity; without it the
        activity is the floor and the inherited activity only (the coarse levels).
    quant, qscale : bool, float32
        Store ``acc`` as int16 ``rint(mean * qscale)``; every coefficient is rounded to that
        step before it is compared or averaged, so the result does not depend on the frame
        order more than the float path does. ``qscale`` is 1 otherwise.
    g_scale, gn_scale : float32
        Factors that bring ``g`` and ``gn`` to the frame's units (the fuser keeps the
        Gaussian levels of uint8 frames as int16 in steps of ``1 / qscale``); 1 for float.
    """
    h, w = acc.shape[1], acc.shape[2]
    nb = (h + BAND_ROWS - 1) // BAND_ROWS
    # a (1, 1) placeholder stands for "nothing inherited" (level 0)
    has_inh = inherited.shape[0] == h and inherited.shape[1] == w and inherit_gain != 0.0
    for b in prange(nb):
        _fuse_band(
            np.int64(b),  # one compiled signature (prange indices may be signed or not)
            g,
            gn,
            inherited,
            acc,
            wnorm,
            reduced_out,
            prev,
            best,
            idx,
            before,
            after,
            amin,
            k,
            coded,
            first,
            lum,
            radius,
            inherit_gain,
            eps,
            power,
            hard,
            top,
            measure,
            write_act,
            write_reduced,
            has_inh,
            quant,
            qscale,
            g_scale,
            gn_scale,
        )


@njit(parallel=True)
def to_planar(src, dst):
    """Copy an interleaved ``(H, W, C)`` frame into planar ``(C, H, W)`` ``dst`` (any strides).

    The level-0 kernels read planar rows about twice as fast as interleaved pixels.
    """
    h, w, nc = src.shape
    for r in prange(h):
        for c in range(nc):
            for j in range(w):
                dst[c, r, j] = src[r, j, c]


@njit()
def _track_row(act_row, r, k, prev, best, idx, before, after, amin, unknown):
    """Fold row ``r`` of frame ``k``'s activity into the depth tracker's maps.

    ``act_row`` holds activities, or their codes when the maps are uint16 codes;
    ``unknown`` marks a neighbour not yet seen (NaN, or :data:`CODE_UNKNOWN`).
    """
    for j in range(act_row.shape[0]):
        a = act_row[j]
        if k == 0:
            best[r, j] = a
            idx[r, j] = 0
            before[r, j] = unknown
            after[r, j] = unknown
            amin[r, j] = a
        else:
            if a > best[r, j]:
                best[r, j] = a
                idx[r, j] = k
                before[r, j] = prev[r, j]
                after[r, j] = unknown
            elif idx[r, j] == k - 1:
                after[r, j] = a
            if a < amin[r, j]:
                amin[r, j] = a
        prev[r, j] = a


@njit(parallel=True)
def depth_update(act, k, prev, best, idx, before, after, amin, coded, inv_floor):
    """Track, per pixel, the frame of largest activity and its neighbours' activities.

    Frames are assumed to arrive in focus order. ``before``/``after`` hold the activity of
    frames ``idx - 1``/``idx + 1`` (NaN, or :data:`CODE_UNKNOWN`, while unknown), ``prev``
    the previous frame's activity (``act`` once this returns) and ``amin`` the smallest
    activity seen. With ``coded`` the maps hold 16-bit codes of ``act * inv_floor``.
    """
    w = act.shape[1]
    unknown = np.float32(CODE_UNKNOWN) if coded else np.float32(np.nan)
    for r in prange(act.shape[0]):
        row = act[r]
        if coded:
            row = np.empty(w, np.float32)
            _encode_row(act[r], inv_floor, np.empty(w, np.float32), row)
        _track_row(row, np.int64(r), k, prev, best, idx, before, after, amin, unknown)


@njit(parallel=True)
def finite_absmax(img):
    """Return the flat index of the first NaN or infinity in a float image and its range.

    ``(index, magnitude)``: the index is -1 if there is none; the magnitude is the
    largest of the finite pixels scanned (float64).
    """
    flat = img.ravel()
    n = flat.size
    nchunk = 64
    found = np.full(nchunk, -1, dtype=np.int64)
    top = np.zeros(nchunk, dtype=np.float64)
    step = (n + nchunk - 1) // nchunk
    for t in prange(nchunk):
        lo = t * step
        hi = min(lo + step, n)
        m = np.float64(0.0)
        for i in range(lo, hi):
            v = np.float64(abs(flat[i]))
            if not np.isfinite(v):
                found[t] = i
                break
            m = max(m, v)
        top[t] = m
    for t in range(nchunk):
        if found[t] >= 0:
            return found[t], top.max()
    return np.int64(-1), top.max()


# ---------------------------------------------------------------------------------------
# depth map
# ---------------------------------------------------------------------------------------
@njit(parallel=True)
def depth_estimate(idx, before, best, after, amin, coded, extra, log_noise, log_full, frac, conf):
    """Sub-frame depth (parabola vertex through log activities) and confidence per pixel.

    With ``y = log(activity + extra)``: ``frac = idx + delta`` with
    ``delta = (y- - y+) / (2 (y- - 2 y0 + y+))`` limited to ``[-0.5, 0.5]`` (0 when a
    neighbour is missing or the parabola is not concave);
    ``conf = clip((y0 - y_min - log_noise) / log_full, 0, 1)``. With ``coded`` the maps hold
    16-bit codes of ``activity / floor`` and ``extra`` is in units of the floor too.
    """
    h, w = idx.shape
    half = np.float32(0.5)
    zero = np.float32(0.0)
    ln = np.float32(log_noise)
    inv_full = np.float32(1.0 / log_full)
    ex = np.float32(extra)
    for r in prange(h):
        for j in range(w):
            # float32 logs: activities are float32, their log differences need no more
            if coded:
                y0 = np.log(np.exp(_log_code(best[r, j])) + ex)
                ym = np.log(np.exp(_log_code(before[r, j])) + ex)
                yp = np.log(np.exp(_log_code(after[r, j])) + ex)
                ymin = np.log(np.exp(_log_code(amin[r, j])) + ex)
            else:
                y0 = np.log(best[r, j] + ex)
                ym = np.log(before[r, j] + ex)
                yp = np.log(after[r, j] + ex)
                ymin = np.log(amin[r, j] + ex)
            den = ym - np.float32(2.0) * y0 + yp
            d = zero
            if np.isfinite(den) and den < zero:
                d = half * (ym - yp) / den
                d = min(max(d, -half), half)
            frac[r, j] = np.float32(idx[r, j]) + d
            c = (y0 - ymin - ln) * inv_full
            conf[r, j] = min(max(c, zero), np.float32(1.0))


@njit(parallel=True)
def discount_spread(conf, wsum, fsum, qsum, s_lo, s_hi):
    """In place: ``conf *= clip((s_hi - s) / (s_hi - s_lo), 0, 1)`` where ``wsum > 1e-6``.

    ``s = sqrt(qsum / wsum - (fsum / wsum) ** 2)`` is the weighted standard deviation of the
    estimates under the smoothing window (``wsum``, ``fsum``, ``qsum``: the window's sums of
    the weights, of the weighted estimates and of the weighted squares), computed in float64.
    """
    h, w = conf.shape
    tiny = 1e-6
    span = s_hi - s_lo
    for r in prange(h):
        for j in range(w):
            ws = np.float64(wsum[r, j])
            if ws > tiny:
                m = np.float64(fsum[r, j]) / ws
                s = np.sqrt(max(np.float64(qsum[r, j]) / ws - m * m, 0.0))
                f = min(max((s_hi - s) / span, 0.0), 1.0)
                conf[r, j] = np.float32(np.float64(conf[r, j]) * f)


@njit(parallel=True)
def normalize_depth(frac, wsum, fsum, hi):
    """In place: ``frac = fsum / wsum`` where ``wsum > 1e-6`` (else kept), clipped to ``[0, hi]``.

    The last step of the confidence-weighted (normalised-convolution) smoothing.
    """
    h, w = frac.shape
    tiny = np.float32(1e-6)
    top = np.float32(hi)
    for r in prange(h):
        for j in range(w):
            v = fsum[r, j] / wsum[r, j] if wsum[r, j] > tiny else frac[r, j]
            frac[r, j] = min(max(v, np.float32(0.0)), top)


@njit(parallel=True)
def upsample_depth(frac, conf, shown, factor, min_conf, depth_out, conf_out):
    """Upsample the depth and the confidence ``shown`` bilinearly by ``factor``.

    Input sample ``i`` sits at output ``factor * i``; ``depth_out`` is NaN where the
    upsampled ``conf`` (which may differ from ``shown``) is below ``min_conf``.
    """
    h, w = frac.shape
    ho, wo = depth_out.shape
    inv = 1.0 / factor
    one = np.float32(1.0)
    lim = np.float32(min_conf)
    nan = np.float32(np.nan)
    for r in prange(ho):
        y = min(r * inv, h - 1.0)
        y0 = min(int(y), h - 1)
        y1 = min(y0 + 1, h - 1)
        ty = np.float32(y - y0)
        for j in range(wo):
            x = min(j * inv, w - 1.0)
            x0 = min(int(x), w - 1)
            x1 = min(x0 + 1, w - 1)
            tx = np.float32(x - x0)
            top = conf[y0, x0] * (one - tx) + conf[y0, x1] * tx
            bot = conf[y1, x0] * (one - tx) + conf[y1, x1] * tx
            c = top * (one - ty) + bot * ty
            top = shown[y0, x0] * (one - tx) + shown[y0, x1] * tx
            bot = shown[y1, x0] * (one - tx) + shown[y1, x1] * tx
            conf_out[r, j] = top * (one - ty) + bot * ty
            top = frac[y0, x0] * (one - tx) + frac[y0, x1] * tx
            bot = frac[y1, x0] * (one - tx) + frac[y1, x1] * tx
            depth_out[r, j] = top * (one - ty) + bot * ty if c >= lim else nan


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
