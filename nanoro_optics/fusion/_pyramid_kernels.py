"""numba kernels of the Laplacian pyramids: REDUCE, EXPAND and their steps (private).

Imported lazily by :mod:`.pyramid` and the fuser (:mod:`.stack`), never at package import.
Level 0 is read either interleaved ``(rows, cols, channels)`` as given or planar in the
frame's dtype; every other image here is planar ``(channels, rows, cols)`` float32 (or the
fuser's int16 fixed point). The Burt-Adelson generating kernel is the 5-tap binomial
``[1, 4, 6, 4, 1] / 16``; borders are mirrored without repeating the edge sample
("reflect-101"), on every level, in both REDUCE and EXPAND, so the Laplacian pyramid
``L_k = G_k - EXPAND(G_{k+1})`` reconstructs ``G_k`` exactly (up to float32 rounding)
whatever the image size.

Parallel kernels are thin ``prange`` loops over a plain ``@kernel()`` row function: numba
compiles that much faster than one large parallel body. The loop index is passed on as
``np.int64``: numba's parallel loops hand out signed or unsigned indices, and each kind would
compile the row function once more.

Every kernel is compiled by :func:`._kernel_common.kernel` (numpy's error model: no
zero-divisor test in the loops).

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._kernel_common import _range_row, _refl, kernel


# ---------------------------------------------------------------------------------------
# REDUCE and EXPAND
# ---------------------------------------------------------------------------------------
@kernel()
def _reduce_row(src, interleaved, dst, i, tmp, ev, od, gain, to_int):
    """Row ``i`` of every channel of ``gain * REDUCE(src)`` into planar ``dst``.

    ``tmp``, ``ev`` and ``od`` are float32 scratch rows of ``W``, ``ceil(W / 2)`` and
    ``W // 2`` samples at least.
    """
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
        # even and odd columns apart: the loop below then reads contiguous rows (strided
        # reads keep it from vectorising)
        for jo in range(w // 2):
            ev[jo] = tmp[2 * jo]
            od[jo] = tmp[2 * jo + 1]
        if w % 2 == 1:
            ev[w // 2] = tmp[w - 1]
        out = dst[c, i]
        for jo in range(1, wo - 1):
            v = (ev[jo - 1] + ev[jo + 1] + f4 * (od[jo - 1] + od[jo]) + f6 * ev[jo]) * k
            out[jo] = np.rint(v) if to_int else v
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


@kernel(parallel=True)
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
    nchunk = min(ho, 16)  # runs of rows, each with its scratch row (2 * W floats)
    step = (ho + nchunk - 1) // nchunk
    for b in prange(nchunk):
        buf = np.empty(2 * w + 2, dtype=np.float32)
        tmp, ev, od = buf[:w], buf[w : w + w // 2 + 1], buf[w + w // 2 + 1 :]
        for i in range(b * step, min(b * step + step, ho)):
            _reduce_row(src, interleaved, dst, np.int64(i), tmp, ev, od, g, to_int)


@kernel()
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


@kernel()
def _expand_edge(vtmp, wg, j, out):
    m = j // 2
    if j % 2 == 0:
        out[j] = (
            vtmp[_refl(m - 1, wg)] + vtmp[_refl(m + 1, wg)] + np.float32(6.0) * vtmp[_refl(m, wg)]
        ) * np.float32(0.125)
    else:
        out[j] = (vtmp[_refl(m, wg)] + vtmp[_refl(m + 1, wg)]) * np.float32(0.5)


@kernel()
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


@kernel(parallel=True)
def laplacian_level(g, interleaved, gn, out):
    """Planar ``out = g - EXPAND(gn)``; ``g`` interleaved (any dtype) or planar float32."""
    h = out.shape[1]
    for r in prange(h):
        vtmp = np.empty(gn.shape[2], dtype=np.float32)
        erow = np.empty(out.shape[2], dtype=np.float32)
        _laplacian_row(g, interleaved, gn, out, np.int64(r), vtmp, erow)


@kernel()
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


@kernel(parallel=True)
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


@kernel(parallel=True)
def scale_into(acc, scale, out):
    """Planar float32 ``out = acc * scale`` (the coarsest level of the fused pyramid)."""
    nc, h, w = acc.shape
    for r in prange(h):
        for c in range(nc):
            for j in range(w):
                out[c, r, j] = np.float32(acc[c, r, j]) * scale


@kernel()
def _intake_rows(
    s, r0, r1, src, plane, copy, lo, hi, keep_range, first, gn, reduce, gain, to_int, scr
):
    """Rows ``r0`` to ``r1`` of :func:`intake` (one worker of its parallel loop)."""
    h, w, nc = src.shape
    tmp, ev, od = scr[s, 0], scr[s, 1], scr[s, 2]
    i = r0 // 2  # the next row of gn (rows 2i in [r0, r1) are this worker's)
    i_end = min((r1 + 1) // 2, gn.shape[1]) if reduce else i
    # a grey frame past the first: the copy and the range in one loop, the range on the
    # frame's own values (integer min and max for integer frames, no float round trip)
    grey_range = nc == 1 and keep_range and not first and copy
    for r in range(r0, r1):
        if not copy:  # (the plane is the frame itself)
            pass
        elif nc == 3:  # RGB: one loop reading the row's pixels in order (vectorises)
            p0, p1, p2 = plane[0, r], plane[1, r], plane[2, r]
            row = src[r]
            for j in range(w):
                p0[j] = row[j, 0]
                p1[j] = row[j, 1]
                p2[j] = row[j, 2]
        elif grey_range:
            p0, lo0, hi0 = plane[0, r], lo[0, r], hi[0, r]
            for j in range(w):
                v = src[r, j, 0]
                p0[j] = v
                lo0[j] = min(lo0[j], v)
                hi0[j] = max(hi0[j], v)
        else:
            for c in range(nc):
                for j in range(w):
                    plane[c, r, j] = src[r, j, c]
        if keep_range and not grey_range:
            _range_row(plane, lo, hi, r, first)
        # the rows of gn whose five (mirrored) rows are now in the plane; those that need
        # rows of another worker are left to intake, once every row is in
        while i < i_end:
            if _other_rows(i, h, r0, r1):
                i += 1
            elif _last_row(i, h) <= r:
                _reduce_row(plane, False, gn, np.int64(i), tmp, ev, od, gain, to_int)
                i += 1
            else:
                break


@kernel()
def _last_row(i, h):
    """Return the last row of the plane that row ``i`` of REDUCE reads (mirrored)."""
    return max(_refl(2 * i + 1, h), _refl(2 * i + 2, h), _refl(2 * i, h))


@kernel()
def _other_rows(i, h, r0, r1):
    """Row ``i`` of REDUCE reads a row of the plane outside ``[r0, r1)``."""
    first_row = min(_refl(2 * i - 2, h), _refl(2 * i - 1, h), _refl(2 * i, h))
    return first_row < r0 or _last_row(i, h) >= r1


@kernel(parallel=True)
def intake(src, plane, copy, lo, hi, keep_range, first, gn, reduce, gain, to_int, scr, workers):
    """Take a frame in: copy, range and first REDUCE in one sweep over its rows.

    Copies the interleaved ``(H, W, C)`` frame ``src`` (any strides) into planar ``(C, H,
    W)`` ``plane`` (the level-0 kernels read planar rows about twice as fast as interleaved
    pixels) when ``copy``; without it ``plane`` is the frame itself (a grey frame's planar
    view) and only read; with ``keep_range`` folds it into the per-pixel minimum ``lo`` and maximum
    ``hi`` (planar; set to it when ``first``); with ``reduce`` writes ``gain * REDUCE`` of
    it into ``gn`` as :func:`reduce_level` does (the same values), each row while the five
    rows it filters are still in the cache (the few that read rows of two workers after
    the parallel sweep). ``scr`` is float32 scratch, ``(S, >= 3, >= W)``,
    one slice per worker; ``workers`` (at most ``S``) runs of rows are taken in parallel.
    """
    h = src.shape[0]
    nw = max(1, min(workers, scr.shape[0], (h + 1) // 2))
    step = ((h + nw - 1) // nw + 1) // 2 * 2  # even: a run maps onto whole rows of gn
    nw = (h + step - 1) // step
    g = np.float32(gain)
    for s in prange(nw):
        r0 = s * step
        _intake_rows(
            np.int64(s),
            np.int64(r0),
            np.int64(min(r0 + step, h)),
            src,
            plane,
            copy,
            lo,
            hi,
            keep_range,
            first,
            gn,
            reduce,
            g,
            to_int,
            scr,
        )
    if reduce:  # the rows of gn at the runs' borders, from the plane now whole
        ho = gn.shape[1]
        tmp, ev, od = scr[0, 0], scr[0, 1], scr[0, 2]
        for b in range(nw):
            b0 = b * step
            b1 = min(b0 + step, h)
            for i in range(b0 // 2, min((b1 + 1) // 2, ho)):
                if _other_rows(i, h, b0, b1):
                    _reduce_row(plane, False, gn, np.int64(i), tmp, ev, od, g, to_int)
