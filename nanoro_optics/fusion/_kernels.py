"""numba kernels of the focus fuser (private; imported lazily by the public functions).

Every array here is C-contiguous and has a channel axis: images are ``(rows, cols, channels)``
(a grey image has one channel), single-channel maps are ``(rows, cols)``. The Burt-Adelson
generating kernel is the 5-tap binomial ``[1, 4, 6, 4, 1] / 16``; borders are mirrored without
repeating the edge sample ("reflect-101"), on every level, in both REDUCE and EXPAND, so the
Laplacian pyramid ``L_k = G_k - EXPAND(G_{k+1})`` reconstructs ``G_k`` exactly (up to float32
rounding) whatever the image size.

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit

#: rows per parallel band in the fusion kernel (even: a band maps onto whole rows of the
#: next, half-size level)
BAND_ROWS = 16


@njit()
def _refl(i: int, n: int) -> int:
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
def _ipow(x: float, p: int) -> float:
    """``x ** p`` for a non-negative integer ``p`` by repeated squaring (no pow call)."""
    result = 1.0
    base = x
    while p > 0:
        if p & 1:
            result *= base
        base *= base
        p >>= 1
    return result


@njit(parallel=True)
def reduce_image(src, dst):
    """Burt-Adelson REDUCE: 5-tap binomial blur then keep every other row and column.

    ``src`` is ``(H, W, C)`` of any real dtype, ``dst`` is float32
    ``((H + 1) // 2, (W + 1) // 2, C)``.
    """
    h, w, nc = src.shape
    ho, wo = dst.shape[0], dst.shape[1]
    for i in prange(ho):
        tmp = np.empty((w, nc), dtype=np.float32)
        r0 = _refl(2 * i - 2, h)
        r1 = _refl(2 * i - 1, h)
        r2 = _refl(2 * i, h)
        r3 = _refl(2 * i + 1, h)
        r4 = _refl(2 * i + 2, h)
        for j in range(w):
            for c in range(nc):
                tmp[j, c] = (
                    np.float32(src[r0, j, c])
                    + np.float32(src[r4, j, c])
                    + np.float32(4.0) * (np.float32(src[r1, j, c]) + np.float32(src[r3, j, c]))
                    + np.float32(6.0) * np.float32(src[r2, j, c])
                ) * np.float32(1.0 / 16.0)
        for jo in range(wo):
            c0 = _refl(2 * jo - 2, w)
            c1 = _refl(2 * jo - 1, w)
            c2 = _refl(2 * jo, w)
            c3 = _refl(2 * jo + 1, w)
            c4 = _refl(2 * jo + 2, w)
            for c in range(nc):
                dst[i, jo, c] = (
                    tmp[c0, c]
                    + tmp[c4, c]
                    + np.float32(4.0) * (tmp[c1, c] + tmp[c3, c])
                    + np.float32(6.0) * tmp[c2, c]
                ) * np.float32(1.0 / 16.0)


@njit()
def _expand_row(g, r, out_w, vtmp, out):
    """Row ``r`` of EXPAND(g) (length ``out_w``) into ``out[:out_w, :]``.

    EXPAND inserts zeros between samples and filters with twice the generating kernel, so an
    even output sample is ``(g[n-1] + 6 g[n] + g[n+1]) / 8`` and an odd one
    ``(g[n] + g[n+1]) / 2`` along each axis.
    """
    hg, wg, nc = g.shape
    n = r // 2
    if r % 2 == 0:
        a = _refl(n - 1, hg)
        b = _refl(n, hg)
        d = _refl(n + 1, hg)
        for j in range(wg):
            for c in range(nc):
                vtmp[j, c] = (g[a, j, c] + g[d, j, c] + np.float32(6.0) * g[b, j, c]) * np.float32(
                    0.125
                )
    else:
        b = _refl(n, hg)
        d = _refl(n + 1, hg)
        for j in range(wg):
            for c in range(nc):
                vtmp[j, c] = (g[b, j, c] + g[d, j, c]) * np.float32(0.5)
    for j in range(out_w):
        m = j // 2
        if j % 2 == 0:
            a = _refl(m - 1, wg)
            b = _refl(m, wg)
            d = _refl(m + 1, wg)
            for c in range(nc):
                out[j, c] = (vtmp[a, c] + vtmp[d, c] + np.float32(6.0) * vtmp[b, c]) * np.float32(
                    0.125
                )
        else:
            b = _refl(m, wg)
            d = _refl(m + 1, wg)
            for c in range(nc):
                out[j, c] = (vtmp[b, c] + vtmp[d, c]) * np.float32(0.5)


@njit(parallel=True)
def laplacian_level(g, gn, out):
    """``out = g - EXPAND(gn)`` (float32), ``g`` of any real dtype."""
    h, w, nc = g.shape
    for r in prange(h):
        vtmp = np.empty((gn.shape[1], nc), dtype=np.float32)
        row = np.empty((w, nc), dtype=np.float32)
        _expand_row(gn, r, w, vtmp, row)
        for j in range(w):
            for c in range(nc):
                out[r, j, c] = np.float32(g[r, j, c]) - row[j, c]


@njit(parallel=True)
def expand_add(lap, wsum, gn, out):
    """``out = lap / wsum + EXPAND(gn)`` in float32 (one step of collapsing a pyramid).

    ``wsum`` is ``(h, w)``; pass an all-ones map for an unweighted Laplacian level.
    """
    h, w, nc = lap.shape
    for r in prange(h):
        vtmp = np.empty((gn.shape[1], nc), dtype=np.float32)
        row = np.empty((w, nc), dtype=np.float32)
        _expand_row(gn, r, w, vtmp, row)
        for j in range(w):
            inv = np.float32(1.0) / wsum[r, j]
            for c in range(nc):
                out[r, j, c] = lap[r, j, c] * inv + row[j, c]


@njit(parallel=True)
def expand_add_round(lap, wsum, gn, out, lo, hi):
    """Like :func:`expand_add` but writes an integer image, rounded half to even, clipped.

    Fusion can overshoot the input range by a fraction of a DN next to a sharp edge; the
    overshoot is clipped to ``[lo, hi]`` (the dtype's range) when the image is stored.
    """
    h, w, nc = lap.shape
    for r in prange(h):
        vtmp = np.empty((gn.shape[1], nc), dtype=np.float32)
        row = np.empty((w, nc), dtype=np.float32)
        _expand_row(gn, r, w, vtmp, row)
        for j in range(w):
            inv = np.float32(1.0) / wsum[r, j]
            for c in range(nc):
                v = np.rint(np.float64(lap[r, j, c] * inv + row[j, c]))
                if v < lo:
                    v = lo
                elif v > hi:
                    v = hi
                out[r, j, c] = v


@njit(parallel=True)
def divide_into(acc, wsum, out):
    """``out = acc / wsum`` (the coarsest level of the fused pyramid)."""
    h, w, nc = acc.shape
    for r in prange(h):
        for j in range(w):
            inv = np.float32(1.0) / wsum[r, j]
            for c in range(nc):
                out[r, j, c] = acc[r, j, c] * inv


@njit()
def _wins_tie(lrow, acc, r, j, nc):
    """Deterministic tie-break of the hard rule: the larger coefficient vector wins."""
    for c in range(nc):
        if lrow[c] > acc[r, j, c]:
            return True
        if lrow[c] < acc[r, j, c]:
            return False
    return False


@njit()
def _fuse_band(
    b,
    g,
    gn,
    inherited,
    acc,
    wsum,
    wmax,
    reduced_out,
    act_out,
    lum,
    radius,
    inherit_gain,
    eps,
    power,
    hard,
    top,
    write_act,
    write_reduced,
    has_inh,
):
    """One band of rows of :func:`fuse_level` (the parallel loop's body)."""
    h, w, nc = g.shape
    win = np.float32(1.0 / ((2 * radius + 1) * (2 * radius + 1)))
    rad = 0 if top else radius
    wn = gn.shape[1]
    r0 = b * BAND_ROWS
    r1 = min(r0 + BAND_ROWS, h)
    nrow = r1 - r0
    # activity rows r0-1 .. r1 (one halo row each side for the [1,2,1] decimation);
    # coefficient rows r0-1-rad .. r1+rad for the energy window
    na = nrow + 2
    ext = na + 2 * rad
    lbuf = np.empty((ext, w, nc), dtype=np.float32)
    hbuf = np.empty((ext, w), dtype=np.float32)
    abuf = np.empty((na, w), dtype=np.float32)
    vtmp = np.empty((max(wn, 1), nc), dtype=np.float32)
    erow = np.empty((w, nc), dtype=np.float32)
    ybuf = np.empty(w, dtype=np.float32)
    # pass 1: Laplacian coefficients and box-summed squared luminance
    for q in range(ext):
        rr = _refl(r0 - 1 - rad + q, h)
        if top:
            for j in range(w):
                for c in range(nc):
                    lbuf[q, j, c] = np.float32(g[rr, j, c])
            continue
        _expand_row(gn, rr, w, vtmp, erow)
        for j in range(w):
            y = np.float32(0.0)
            for c in range(nc):
                v = np.float32(g[rr, j, c]) - erow[j, c]
                lbuf[q, j, c] = v
                y += lum[c] * v
            ybuf[j] = y * y
        for j in range(w):
            s = np.float32(0.0)
            for d in range(-rad, rad + 1):
                s += ybuf[_refl(j + d, w)]
            hbuf[q, j] = s
    # pass 2: activity (band plus halo rows)
    for t in range(na):
        rr = _refl(r0 - 1 + t, h)
        for j in range(w):
            a = eps
            if has_inh:
                a += inherit_gain * inherited[rr, j]
            if not top:
                e = np.float32(0.0)
                for d in range(2 * rad + 1):
                    e += hbuf[t + d, j]
                a += e * win
            abuf[t, j] = np.float32(a)
    # pass 3: the running fusion of the band's own rows
    for t in range(1, nrow + 1):
        r = r0 - 1 + t
        for j in range(w):
            a = abuf[t, j]
            m = wmax[r, j]
            lq = lbuf[t + rad, j]
            if hard:
                if a > m or (a == m and _wins_tie(lq, acc, r, j, nc)):
                    wmax[r, j] = a
                    wsum[r, j] = np.float32(1.0)
                    for c in range(nc):
                        acc[r, j, c] = lq[c]
                continue
            if a > m:
                scale = np.float32(_ipow(m / a, power))
                wmax[r, j] = a
                wsum[r, j] = wsum[r, j] * scale + np.float32(1.0)
                for c in range(nc):
                    acc[r, j, c] = acc[r, j, c] * scale + lq[c]
            else:
                wgt = np.float32(_ipow(a / m, power))
                wsum[r, j] += wgt
                for c in range(nc):
                    acc[r, j, c] += wgt * lq[c]
        if write_act:
            for j in range(w):
                act_out[r, j] = abuf[t, j]
    if write_reduced:
        hn = reduced_out.shape[0]
        wr = reduced_out.shape[1]
        for i in range((r0 + 1) // 2, min((r1 + 1) // 2, hn)):
            t = 2 * i - r0  # abuf row of image row 2i - 1
            for jj in range(wr):
                ca = _refl(2 * jj - 1, w)
                cb = 2 * jj
                cc = _refl(2 * jj + 1, w)
                s0 = abuf[t, ca] + np.float32(2.0) * abuf[t, cb] + abuf[t, cc]
                s1 = abuf[t + 1, ca] + np.float32(2.0) * abuf[t + 1, cb] + abuf[t + 1, cc]
                s2 = abuf[t + 2, ca] + np.float32(2.0) * abuf[t + 2, cb] + abuf[t + 2, cc]
                reduced_out[i, jj] = (s0 + np.float32(2.0) * s1 + s2) * np.float32(1.0 / 16.0)


@njit(parallel=True)
def fuse_level(
    g,
    gn,
    inherited,
    acc,
    wsum,
    wmax,
    reduced_out,
    act_out,
    lum,
    radius,
    inherit_gain,
    eps,
    power,
    hard,
    top,
    write_act,
    write_reduced,
):
    """Fold one frame's Laplacian level into the running fused level.

    Arrays are C-contiguous float32 unless said otherwise.

    g : (H, W, C), any real dtype
        This frame's Gaussian level ``G_k``.
    gn : (H', W', C)
        This frame's next Gaussian level ``G_{k+1}`` (ignored when ``top``).
    inherited : (H, W) or (1, 1)
        Activity handed down from the finer level; a (1, 1) placeholder at level 0.
    acc, wsum, wmax : (H, W, C), (H, W), (H, W)
        Running weighted sum of coefficients, sum of weights and the largest activity seen,
        which is the reference of the weights: weights are ``(a / wmax) ** power``, and the
        sums are rescaled when a larger activity arrives, as in an online softmax.
    reduced_out : (ceil(H/2), ceil(W/2))
        Receives this level's activity filtered by ``[1, 2, 1] / 4`` along each axis and
        decimated (the next level's ``inherited``) when ``write_reduced``.
    act_out : (H, W)
        Receives this level's activity when ``write_act`` (the depth tracker reads it).
    lum : (C,)
        Luminance weights: activity is measured on the luminance of the coefficients and
        all channels are selected together.
    radius : int
        Half-width of the square window of the local energy.
    inherit_gain, eps : float
        Weight of the inherited activity; activity floor (keeps weights defined when flat).
    power : int
        Exponent of the soft rule (ignored when ``hard``).
    hard : bool
        Keep only the coefficient of largest activity (ties: the larger coefficient vector).
    top : bool
        Coarsest level: the coefficients are ``G_k`` itself, the activity only the inherited.
    """
    h, w = g.shape[0], g.shape[1]
    nb = (h + BAND_ROWS - 1) // BAND_ROWS
    # a (1, 1) placeholder stands for "nothing inherited" (level 0)
    has_inh = inherited.shape[0] == h and inherited.shape[1] == w and inherit_gain != 0.0
    for b in prange(nb):
        _fuse_band(
            b,
            g,
            gn,
            inherited,
            acc,
            wsum,
            wmax,
            reduced_out,
            act_out,
            lum,
            radius,
            inherit_gain,
            eps,
            power,
            hard,
            top,
            write_act,
            write_reduced,
            has_inh,
        )


@njit(parallel=True)
def depth_update(act, k, prev, best, idx, before, after, amin):
    """Track, per pixel, the frame of largest activity and its neighbours' activities.

    Frames are assumed to arrive in focus order. ``before``/``after`` hold the activity of
    frames ``idx - 1``/``idx + 1`` (NaN while unknown), ``prev`` the previous frame's
    activity and ``amin`` the smallest activity seen.
    """
    h, w = act.shape
    nan = np.float32(np.nan)
    for r in prange(h):
        for j in range(w):
            a = act[r, j]
            if k == 0:
                best[r, j] = a
                idx[r, j] = 0
                before[r, j] = nan
                after[r, j] = nan
                amin[r, j] = a
            else:
                if a > best[r, j]:
                    best[r, j] = a
                    idx[r, j] = k
                    before[r, j] = prev[r, j]
                    after[r, j] = nan
                elif idx[r, j] == k - 1:
                    after[r, j] = a
                if a < amin[r, j]:
                    amin[r, j] = a
            prev[r, j] = a


@njit(parallel=True)
def has_nan(img):
    """Index (flat) of the first NaN or infinity in a float image, or -1."""
    flat = img.ravel()
    n = flat.size
    nchunk = 64
    found = np.full(nchunk, -1, dtype=np.int64)
    step = (n + nchunk - 1) // nchunk
    for t in prange(nchunk):
        lo = t * step
        hi = min(lo + step, n)
        for i in range(lo, hi):
            if not np.isfinite(flat[i]):
                found[t] = i
                break
    for t in range(nchunk):
        if found[t] >= 0:
            return found[t]
    return -1
