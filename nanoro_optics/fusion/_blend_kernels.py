"""numba kernels of the focus fuser's blend: one frame's level folded into the fused one.

Private; imported lazily by the fuser (:mod:`.stack`) and :mod:`.frame_range`, never at
package import. :func:`fuse_level` reads planar ``(channels, rows, cols)`` levels only (the
fuser copies colour frames to planar first, :func:`._pyramid_kernels.intake`: the inner
loops then run along contiguous rows and vectorise); single-channel maps are ``(rows,
cols)``. It calls EXPAND from :mod:`._pyramid_kernels`, the activity codes from
:mod:`._kernel_common` and the depth tracker's row update from :mod:`._depth_kernels`.
Also here: the frames' per-pixel range (:func:`update_range`, :func:`clamp_to_range`) and
the check of a float frame (:func:`finite_absmax`).

The parallel kernel is a thin ``prange`` loop over a plain ``@kernel()`` function that sweeps
one contiguous run of rows (numba compiles that much faster than one large parallel body):
each row's coefficients, energy and activity are computed once, kept in rings of rows in
the fuser's scratch (they stay in the cache), and the row is blended as soon as its window
is complete. The loop index is passed on as ``np.int64``: numba's parallel loops hand out
signed or unsigned indices, and each kind would compile the row function once more.

Every kernel is compiled by :func:`._kernel_common.kernel` (numpy's error model: no
zero-divisor test in the loops).

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._codes import CODE_ONE, CODE_UNKNOWN
from ._depth_kernels import _track_row, _track_row_codes
from ._kernel_common import (
    _code_of_ratio,
    _code_of_sum,
    _encode_row,
    _range_row,
    _refl,
    _sum_of_code,
    kernel,
)
from ._pyramid_kernels import _expand_row

#: largest activity (noise energies) the fusion kernel holds: energies of frames ~2**50
#: times their noise (frames of very different scales in one stack) saturate here instead
#: of overflowing float32 to inf; ordinary stacks stay below 2**50 noise energies
ACTIVITY_MAX = 2.0**100


@kernel()
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


@kernel()
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


@kernel(inline=True)
def _soft4(a, m):
    """Return the soft rule's step for ``power`` 4: ``(norm, share)`` of a new activity ``a``.

    ``m`` is the norm of the activities so far, ``(sum a_k ** 4) ** (1 / 4)`` (0 before
    the first); the new norm includes ``a``, and ``share = (a / norm) ** 4`` is the new
    coefficient's weight in the running mean. Written with the larger of the two
    factored out, so that nothing overflows or underflows.
    """
    one = np.float32(1.0)
    mx = max(a, m)
    q = min(a, m) / mx
    q2 = q * q
    norm = mx * np.sqrt(np.sqrt(one + q2 * q2))
    q = a / norm
    q2 = q * q
    return norm, q2 * q2


@kernel(inline=True)
def _soft4_sum(x, total):
    """Return the soft rule's step for ``power`` 4 on integer frames: ``(new total, share)``.

    ``x`` is the activity over the floor (>= 1) and ``total`` the sum of the fourth
    powers of the earlier ones (0 before the first); the new total includes ``x``. The share
    ``x**4 / sum`` is the new coefficient's weight in the running mean: what
    :func:`_soft4` gives from the norm ``sum ** (1 / 4)``, without its roots and with one
    division instead of two. The sum saturates at ``2**126`` a step (activities of
    ``2**31.5`` times the floor, beyond the codes' range).
    """
    x2 = x * x
    x4 = min(x2 * x2, np.float32(2.0**126))
    total = max(total + x4, np.float32(1.0))
    return total, x4 / total


@kernel(inline=True)
def _soft4_blend(a, j, lrow, acc_r, wn_r, inv_eps):
    """Blend pixel ``j`` of a grey row (activity ``a``) into ``acc_r``; update its sum code.

    The default soft rule on integer frames (:func:`_soft4_sum`): ``wn_r`` holds the codes
    of the sums of fourth powers so far, ``acc_r`` the running mean, ``lrow`` the new
    coefficients.
    """
    total, share = _soft4_sum(a * inv_eps, _sum_of_code(wn_r[j]))
    old = acc_r[j]
    acc_r[j] = old + (lrow[j] - old) * share
    wn_r[j] = _code_of_sum(total)


@kernel(inline=True)
def _blend_shares(acc, r, lrows, scb, quant, qscale, inv_q):
    """Move row ``r`` of the running means ``acc`` towards ``lrows`` by the shares ``scb``."""
    nc, w = acc.shape[0], acc.shape[2]
    for c in range(nc):
        for j in range(w):
            if quant:
                old = np.float32(acc[c, r, j]) * inv_q
                acc[c, r, j] = np.rint((old + (lrows[c, j] - old) * scb[j]) * qscale)
            else:
                old = acc[c, r, j]
                acc[c, r, j] = old + (lrows[c, j] - old) * scb[j]


@kernel(parallel=True)
def update_range(plane, lo, hi, first):
    """Per-pixel running minimum ``lo`` and maximum ``hi`` of planar frames (in place)."""
    for r in prange(plane.shape[1]):
        _range_row(plane, lo, hi, r, first)


@kernel(parallel=True)
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
@kernel()
def _fuse_rows(
    s,
    r0,
    r1,
    scr,
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
    """Rows ``r0`` to ``r1`` of :func:`fuse_level` (one worker of its parallel loop).

    One sweep down the rows: coefficient row ``q`` (and its windowed energy) is computed
    once, the activity of row ``q - rad`` then has its whole window, that row is blended
    and, every other row, a row of the reduced activity is written. Rows before ``r0`` and
    after ``r1`` are the halo of the window and of the ``[1, 2, 1]`` decimation (mirrored at
    the image's borders); the rows live in rings in ``scr[s]`` (``scratch_rows`` of them,
    each at least ``W + 2 * radius`` long) that stay in the cache.
    """
    nc, h, w = acc.shape
    measure = measure and not top
    rad = radius if measure else 0
    win = np.float32(1.0 / ((2 * rad + 1) * (2 * rad + 1)))
    nl = rad + 1  # coefficient rows: row t is blended rad rows after it is computed
    nh = 2 * rad + 1  # energy rows of one activity row's window
    oh = nl * nc
    oa = oh + nh
    orow = oa + 3
    vtmp = scr[s, orow]
    erow = scr[s, orow + 1]
    ypad = scr[s, orow + 2]
    kbuf = scr[s, orow + 3, :w]
    mrow = scr[s, orow + 4, :w]
    fbuf = scr[s, orow + 5, :w]
    scb = scr[s, orow + 6]
    ubuf = fbuf.view(np.uint32)
    inv_eps = np.float32(1.0) / eps
    amax = np.float32(ACTIVITY_MAX)
    unknown = np.float32(CODE_UNKNOWN) if coded else np.float32(np.nan)
    inv_q = np.float32(1.0) / qscale
    base = r0 - 1 - rad  # the first (virtual, mirrored) row of the sweep
    hn = reduced_out.shape[0]
    wr = reduced_out.shape[1]
    two = np.float32(2.0)
    k16 = np.float32(1.0 / 16.0)
    # the default soft rule on a grey integer frame, past the first, on a level the depth
    # tracker does not follow: the row's activity is blended as it is summed (see below)
    fused = coded and power == 4 and nc == 1 and not (quant or first or hard or write_act)
    for q in range(base, r1 + rad + 1):
        # -- coefficient row q and the box sum along it of its channels' weighted energy
        rr = _refl(q, h)
        lq = ((q - base) % nl) * nc
        if top:
            for c in range(nc):
                lrow = scr[s, lq + c]
                for j in range(w):
                    lrow[j] = np.float32(g[c, rr, j]) * g_scale
        else:
            # the channels' weighted energy goes straight into the padded row's middle (a
            # view: an offset index would not vectorise)
            yin = ypad[rad : rad + w]
            for c in range(nc):
                _expand_row(gn[c], rr, w, vtmp, erow)
                lrow = scr[s, lq + c]
                lc = lum[c]
                if measure and nc == 1:  # a grey frame: the band and its energy in one loop
                    for j in range(w):
                        v = np.float32(g[c, rr, j]) * g_scale - erow[j] * gn_scale
                        lrow[j] = v
                        yin[j] = lc * (v * v)
                    continue
                for j in range(w):
                    lrow[j] = np.float32(g[c, rr, j]) * g_scale - erow[j] * gn_scale
                if not measure:
                    continue
                # (the first channel's term is 0 + its own)
                if c == 0:
                    for j in range(w):
                        yin[j] = lc * (lrow[j] * lrow[j])
                else:
                    for j in range(w):
                        yin[j] += lc * (lrow[j] * lrow[j])
            if measure:
                # mirrored by rad samples at both ends, then the box sum (left to right),
                # kept times the window's weight: each energy row is read by 2 * rad + 1
                # activity rows, which then add it as it is (the same float32 products)
                for d in range(1, rad + 1):
                    ypad[rad - d] = ypad[rad + _refl(-d, w)]
                    ypad[rad + w - 1 + d] = ypad[rad + _refl(w - 1 + d, w)]
                hrow = scr[s, oh + (q - base) % nh]
                if rad == 2 and fused and r0 <= q - rad < r1:
                    pass  # summed with row q - rad's activity and blend, below
                elif rad == 2:  # the default window, in one loop
                    for j in range(w):
                        y = ypad[j] + ypad[j + 1] + ypad[j + 2] + ypad[j + 3] + ypad[j + 4]
                        hrow[j] = win * y
                elif rad == 1:
                    for j in range(w):
                        hrow[j] = win * (ypad[j] + ypad[j + 1] + ypad[j + 2])
                else:
                    for j in range(w):
                        hrow[j] = ypad[j]
                    for d in range(1, 2 * rad + 1):
                        for j in range(w):
                            hrow[j] += ypad[j + d]
                    for j in range(w):
                        hrow[j] = win * hrow[j]
        t = q - rad
        if t < r0 - 1:
            continue
        # -- activity of row t: its window is complete
        arow = scr[s, oa + (t - r0 + 1) % 3, :w]
        rt = _refl(t, h)
        # (summed in the order eps, inherited, window rows: the same float32 result as
        # adding them one by one)
        if measure and rad == 2:  # the default window, in one loop
            h0 = scr[s, oh + (t - 2 - base) % nh]
            h1 = scr[s, oh + (t - 1 - base) % nh]
            h2 = scr[s, oh + (t - base) % nh]
            h3 = scr[s, oh + (t + 1 - base) % nh]
            h4 = scr[s, oh + (t + 2 - base) % nh]
            if fused and r0 <= t < r1:
                # one sweep sums the last energy row of the window (row q, h4), the
                # activity, and blends the row with it, the steps of the box sum above and
                # of _blend_row's loop for this case (the same operations, bit for bit):
                # the sums run while the large maps stream in
                lrow = scr[s, ((t - base) % nl) * nc]
                acc_t = acc[0, t]
                wn_t = wnorm[t]
                if has_inh:
                    inh_t = inherited[rt]
                    for j in range(w):
                        e = win * (ypad[j] + ypad[j + 1] + ypad[j + 2] + ypad[j + 3] + ypad[j + 4])
                        h4[j] = e
                        v = eps + inherit_gain * inh_t[j] + h0[j] + h1[j]
                        a = min(v + h2[j] + h3[j] + e, amax)
                        arow[j] = a
                        _soft4_blend(a, j, lrow, acc_t, wn_t, inv_eps)
                else:
                    for j in range(w):
                        e = win * (ypad[j] + ypad[j + 1] + ypad[j + 2] + ypad[j + 3] + ypad[j + 4])
                        h4[j] = e
                        a = min(eps + h0[j] + h1[j] + h2[j] + h3[j] + e, amax)
                        arow[j] = a
                        _soft4_blend(a, j, lrow, acc_t, wn_t, inv_eps)
            elif has_inh:
                for j in range(w):
                    v = eps + inherit_gain * inherited[rt, j] + h0[j] + h1[j]
                    v = v + h2[j] + h3[j] + h4[j]
                    arow[j] = min(v, amax)  # saturate, never inf (whose ratios are NaN)
            else:
                for j in range(w):
                    v = eps + h0[j] + h1[j] + h2[j] + h3[j] + h4[j]
                    arow[j] = min(v, amax)
        else:
            for j in range(w):
                arow[j] = eps
            if has_inh:
                for j in range(w):
                    arow[j] += inherit_gain * inherited[rt, j]
            if measure:
                for d in range(2 * rad + 1):
                    hrow = scr[s, oh + (t - rad + d - base) % nh]
                    for j in range(w):
                        arow[j] += hrow[j]
            for j in range(w):  # saturate, never inf (whose ratios are NaN weights)
                arow[j] = min(arow[j], amax)
        if r0 <= t < r1 and not (fused and measure and rad == 2):
            _blend_row(
                t,
                scr[s, ((t - base) % nl) * nc : ((t - base) % nl) * nc + nc],
                arow,
                acc,
                wnorm,
                prev,
                best,
                idx,
                before,
                after,
                amin,
                k,
                coded,
                first,
                eps,
                inv_eps,
                power,
                hard,
                write_act,
                quant,
                qscale,
                inv_q,
                kbuf,
                mrow,
                fbuf,
                ubuf,
                scb,
                unknown,
            )
        # -- reduced row i from activity rows 2i - 1, 2i, 2i + 1
        if write_reduced and (t - r0) % 2 == 1 and t >= r0 + 1 and (t - 1) // 2 < hn:
            i = (t - 1) // 2
            a0 = scr[s, oa + (t - 2 - r0 + 1) % 3]
            a1 = scr[s, oa + (t - 1 - r0 + 1) % 3]
            # the rows' [1, 2, 1] sum first, even and odd columns apart (contiguous loops
            # vectorise, strided ones do not), then the columns' (mirrored at both ends)
            ev = vtmp
            od = erow
            for jj in range(w // 2):
                cb = 2 * jj
                ev[jj] = a0[cb] + two * a1[cb] + arow[cb]
                od[jj] = a0[cb + 1] + two * a1[cb + 1] + arow[cb + 1]
            if w % 2 == 1:
                ev[w // 2] = a0[w - 1] + two * a1[w - 1] + arow[w - 1]
            out = reduced_out[i]
            for jj in range(1, (w - 1) // 2):
                out[jj] = (od[jj - 1] + two * ev[jj] + od[jj]) * k16
            for jj in (0, (w - 1) // 2, wr - 1):
                if 0 <= jj < wr:
                    ca = _refl(2 * jj - 1, w)
                    cc = _refl(2 * jj + 1, w)
                    ya = ev[ca // 2] if ca % 2 == 0 else od[ca // 2]
                    yc = ev[cc // 2] if cc % 2 == 0 else od[cc // 2]
                    out[jj] = (ya + two * ev[jj] + yc) * k16


@kernel()
def _blend_row(
    r,
    lrows,
    arow,
    acc,
    wnorm,
    prev,
    best,
    idx,
    before,
    after,
    amin,
    k,
    coded,
    first,
    eps,
    inv_eps,
    power,
    hard,
    write_act,
    quant,
    qscale,
    inv_q,
    kbuf,
    mrow,
    fbuf,
    ubuf,
    scb,
    unknown,
):
    """Fold row ``r`` (coefficients ``lrows``, ``(C, >= W)``; activity ``arow``) into the fusion.

    ``acc`` holds the weighted mean of the coefficients, as float32 or (``quant``) as int16
    in steps of ``1 / qscale``.
    """
    nc, w = acc.shape[0], acc.shape[2]
    if quant:  # the coefficients as they will be stored
        for c in range(nc):
            for j in range(w):
                lrows[c, j] = np.rint(lrows[c, j] * qscale) * inv_q
    keys = arow
    if coded and (hard or write_act):  # integer-valued float32 keys: exact compares
        _encode_row(arow, inv_eps, kbuf)
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
                        if lrows[c, j] != old:
                            if lrows[c, j] > old:
                                scb[j] = np.float32(1.0)
                            break
        for c in range(nc):
            for j in range(w):
                if quant:
                    new = np.rint(lrows[c, j] * qscale)
                    acc[c, r, j] = new if scb[j] > 0.0 else acc[c, r, j]
                else:
                    acc[c, r, j] = lrows[c, j] if scb[j] > 0.0 else acc[c, r, j]
    elif power == 4 and nc == 1 and not quant and not first:
        # the default soft rule on a grey frame: one sweep computes the weight, blends and
        # keeps the new sum, so that the arithmetic runs while the maps stream in. The same
        # operations as the general loops below, bit for bit.
        lrow = lrows[0]
        if coded:
            acc_r = acc[0, r]
            wn_r = wnorm[r]
            for j in range(w):
                _soft4_blend(arow[j], j, lrow, acc_r, wn_r, inv_eps)
        else:
            for j in range(w):
                a = arow[j]
                m = wnorm[r, j]
                norm, share = _soft4(a, m)
                wnorm[r, j] = norm
                old = acc[0, r, j]
                acc[0, r, j] = old + (lrow[j] - old) * share
    elif power == 4 and coded:
        # the default rule on integer frames: the sums of fourth powers so far (0 before the
        # first frame) decoded, the shares computed and the new sums encoded in one loop
        # (the bits move between float and integer in registers), so that it vectorises
        for j in range(w):
            total = np.float32(0.0) if first else _sum_of_code(wnorm[r, j])
            total, scb[j] = _soft4_sum(arow[j] * inv_eps, total)
            wnorm[r, j] = _code_of_sum(total)
        _blend_shares(acc, r, lrows, scb, quant, qscale, inv_q)
    else:
        # the norms so far (0 before the first frame); stored as codes, they are decoded
        # into fbuf's bits (read as fbuf * eps below) and the new ones encoded from there
        # (the steps of _encode_row, in the weights' loop and the one after it); one loop
        # for each case, so that each vectorises
        one = np.float32(1.0)
        if coded:
            if first:
                for j in range(w):
                    fbuf[j] = np.float32(0.0)
            else:
                for j in range(w):
                    ubuf[j] = (np.uint32(wnorm[r, j]) << np.uint32(12)) + np.uint32(CODE_ONE)
        elif first:
            for j in range(w):
                mrow[j] = np.float32(0.0)
        else:
            for j in range(w):
                mrow[j] = wnorm[r, j]
        if power == 4:
            for j in range(w):
                a = arow[j]
                m = mrow[j]
                mrow[j], scb[j] = _soft4(a, m)
        else:
            for j in range(w):
                # wnorm is the p-norm of the activities so far, (sum a_k ** p) ** (1/p):
                # it has the range of one activity (no overflow for any p), and the new
                # frame's weight in the mean is a ** p / sum(a_k ** p) = (a / norm) ** p
                a = arow[j]
                m = fbuf[j] * eps if coded else mrow[j]
                mx = max(a, m)
                norm = mx * _root(one + _pw(min(a, m) / mx, power), power)
                if coded:
                    fbuf[j] = max(norm * inv_eps, one)
                else:
                    mrow[j] = norm
                scb[j] = _pw(a / norm, power)  # the new coefficient's share of the mean
        if coded:  # the new norms back as codes (the weights above used them exact)
            for j in range(w):
                wnorm[r, j] = _code_of_ratio(fbuf[j])
        else:
            for j in range(w):
                wnorm[r, j] = mrow[j]
        _blend_shares(acc, r, lrows, scb, quant, qscale, inv_q)
    if write_act and coded:  # the depth tracker, as in depth_update
        _track_row_codes(keys, r, k, prev, best, idx, before, after, amin)
    elif write_act:
        _track_row(keys, r, k, prev, best, idx, before, after, amin, unknown)


@kernel(parallel=True)
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
    scratch,
    workers,
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
        neither overflows nor underflows for any ``power``. The default soft rule on
        integer frames (``coded``, ``power`` 4) keeps the sum itself,
        ``sum (a_k / eps) ** 4``, as codes of 7 exponent and 9 mantissa bits
        (:func:`._kernel_common._code_typer`, the norm's precision): the share is then
        one division, with no roots (:func:`_soft4_sum`).
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
        frame's weight with the exact new norm (sum, for ``power`` 4) and stores it rounded
        to its code.
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
    scratch : (S, rows, >= W + 2 * radius) float32
        Work rows of the parallel workers, one slice each (``stack._scratch_shape``): the
        rows of coefficients, energy and activity a worker's sweep keeps in the cache.
    workers : int
        Parallel runs of rows to split the level into (numba's thread count; at most ``S``).
        The result does not depend on it.
    """
    h, w = acc.shape[1], acc.shape[2]
    # one contiguous run of rows per worker (even: a run maps onto whole rows of the next,
    # half-size level), each with its own scratch
    nw = max(1, min(workers, scratch.shape[0], (h + 1) // 2))
    step = ((h + nw - 1) // nw + 1) // 2 * 2
    nw = (h + step - 1) // step
    # a (1, 1) placeholder stands for "nothing inherited" (level 0)
    has_inh = inherited.shape[0] == h and inherited.shape[1] == w and inherit_gain != 0.0
    for s in prange(nw):
        r0 = s * step
        _fuse_rows(
            np.int64(s),  # one compiled signature (prange indices may be signed or not)
            np.int64(r0),
            np.int64(min(r0 + step, h)),
            scratch,
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


@kernel(parallel=True)
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


@kernel(parallel=True)
def int_max(rows):
    """Return the largest value of a C-contiguous 2-D integer array (non-empty), in parallel."""
    h, w = rows.shape
    nchunk = min(64, h)
    top = np.empty(nchunk, dtype=rows.dtype)
    step = (h + nchunk - 1) // nchunk
    for t in prange(nchunk):
        r0 = min(t * step, h - 1)
        m = rows[r0, 0]
        for r in range(r0, min(h, r0 + step)):
            for j in range(w):
                v = rows[r, j]
                m = v if v > m else m
        top[t] = m
    return top.max()
