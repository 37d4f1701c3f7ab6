"""numba kernels of the focus fuser's blend: one frame's level folded into the fused one.

Private; imported lazily by the fuser (:mod:`.stack`) and :mod:`.frame_range`, never at
package import. :func:`fuse_level` reads planar ``(channels, rows, cols)`` levels only (the
fuser copies colour frames to planar first, :func:`._pyramid_kernels.to_planar`: the inner
loops then run along contiguous rows and vectorise); single-channel maps are ``(rows,
cols)``. It calls EXPAND from :mod:`._pyramid_kernels`, the activity codes from
:mod:`._kernel_common` and the depth tracker's row update from :mod:`._depth_kernels`.
Also here: the frames' per-pixel range (:func:`update_range`, :func:`clamp_to_range`) and
the check of a float frame (:func:`finite_absmax`).

The parallel kernel is a thin ``prange`` loop over a plain ``@njit`` band function: numba
compiles that much faster than one large parallel body. The loop index is passed on as
``np.int64``: numba's parallel loops hand out signed or unsigned indices, and each kind would
compile the band function once more.

Every kernel is compiled with numba's ``error_model="numpy"``: a division then does not test
its divisor for zero to raise ``ZeroDivisionError`` (that branch keeps the inner loops from
vectorising; it halved the time of ``StackFuser.add``, ``benchmarks/bench_add_profile.py``).
No divisor here can be zero and the results are the same bit for bit.

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from nanoro_optics._numba import njit

from ._codes import CODE_ONE, CODE_UNKNOWN
from ._depth_kernels import _track_row
from ._kernel_common import _encode_row, _refl
from ._pyramid_kernels import _expand_row

#: rows per parallel band in the fusion kernel (even: a band maps onto whole rows of the
#: next, half-size level)
BAND_ROWS = 64
#: largest activity (noise energies) the fusion kernel holds: energies of frames ~2**50
#: times their noise (frames of very different scales in one stack) saturate here instead
#: of overflowing float32 to inf; ordinary stacks stay below 2**50 noise energies
ACTIVITY_MAX = 2.0**100


@njit(error_model="numpy")
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


@njit(error_model="numpy")
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


@njit(parallel=True, error_model="numpy")
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


@njit(parallel=True, error_model="numpy")
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


# ---------------------------------------------------------------------------------------
# the fusion rule
# ---------------------------------------------------------------------------------------
@njit(error_model="numpy")
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


@njit(parallel=True, error_model="numpy")
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


@njit(parallel=True, error_model="numpy")
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
