"""numba kernels of the depth map (private; imported lazily by :mod:`.depth` and the fuser).

The depth tracker's per-pixel update (:func:`depth_update`; the fusion kernel calls its row
function, :func:`_track_row`, as it blends), the sub-frame estimate and its confidence, the
discount of spread estimates, the normalisation of the smoothing and the upsampling. Maps
are ``(rows, cols)``, float32 activities or their 16-bit codes (:mod:`._kernel_common`).

Every kernel is compiled by :func:`._kernel_common.kernel` (numpy's error model: no
zero-divisor test in the loops).

The slow, obvious numpy versions these kernels are checked against live in the tests.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._codes import CODE_UNKNOWN
from ._kernel_common import _encode_row, _log_code, _refl, kernel


@kernel(inline=True)
def _track_step(a, b, i, p, bf, af, m, kk, km1, unknown):
    """One pixel of the tracker: the new ``(best, idx, before, after, amin)``.

    Selects instead of branches, so that the loops calling it vectorise: a new best
    ``a > b`` takes frame ``kk`` and the previous frame's activity ``p`` as its "before";
    else frame ``kk`` is the "after" of a best at ``km1``.
    """
    gt = a > b
    return (
        a if gt else b,
        kk if gt else i,
        p if gt else bf,
        unknown if gt else (a if i == km1 else af),
        a if a < m else m,
    )


@kernel()
def _track_row(act_row, r, k, prev, best, idx, before, after, amin, unknown):
    """Fold row ``r`` of frame ``k``'s activity into the depth tracker's maps.

    ``act_row`` holds activities, or their codes when the maps are uint16 codes;
    ``unknown`` marks a neighbour not yet seen (NaN, or :data:`CODE_UNKNOWN`).
    """
    w = act_row.shape[0]
    if k == 0:
        for j in range(w):
            a = act_row[j]
            best[r, j] = a
            idx[r, j] = 0
            before[r, j] = unknown
            after[r, j] = unknown
            amin[r, j] = a
            prev[r, j] = a
        return
    # selects instead of branches, so that the loop vectorises: a new best takes frame k
    # and the previous frame's activity as its "before"; else frame k is the "after" of a
    # best at k - 1
    # (the maps' values taken as float32, exact for codes too: the compares and selects
    # then run on float32 vectors instead of float64 ones; the frame index in idx's type)
    km1 = idx.dtype.type(k - 1)
    kk = idx.dtype.type(k)
    # 0, but not to the compiler: see _track_row_codes (activities are positive, so
    # ``max(p, zero)`` is p itself)
    zero = np.float32(k >> 48)
    for j in range(w):
        a = np.float32(act_row[j])
        b, i, bf, af, m = _track_step(
            a,
            np.float32(best[r, j]),
            idx[r, j],
            max(np.float32(prev[r, j]), zero),
            np.float32(before[r, j]),
            np.float32(after[r, j]),
            np.float32(amin[r, j]),
            kk,
            km1,
            unknown,
        )
        best[r, j], idx[r, j], before[r, j], after[r, j], amin[r, j] = b, i, bf, af, m
        prev[r, j] = a


@kernel()
def _track_row_codes(keys, r, k, prev, best, idx, before, after, amin):
    """:func:`_track_row` for maps of uint16 codes, in integer lanes.

    ``keys`` holds the row's activity codes as float32 (exact); the compares and selects
    run on uint16 values, twice as many a vector as float32 ones, and nothing is converted
    back. The same maps as :func:`_track_row` with ``unknown`` :data:`CODE_UNKNOWN`.
    """
    w = keys.shape[0]
    if k == 0:  # the maps set to the first frame (codes are stored exactly from float32)
        _track_row(keys, r, k, prev, best, idx, before, after, amin, np.float32(CODE_UNKNOWN))
        return
    unknown = np.uint16(CODE_UNKNOWN)
    km1 = idx.dtype.type(k - 1)
    kk = idx.dtype.type(k)
    # 0, but not to the compiler: "p if gt else before" of two plain loads is compiled as
    # one load from a selected address, a gather that keeps the loop from vectorising
    # (about 40 % more time); ``max(p, zero)`` is p itself. (The kernel is also typed for
    # float32 maps, on a path that never calls it.)
    zero = prev.dtype.type(k >> 48)
    for j in range(w):
        a = np.uint16(keys[j])
        p = max(prev[r, j], zero)
        b, i, bf, af, m = _track_step(
            a, best[r, j], idx[r, j], p, before[r, j], after[r, j], amin[r, j], kk, km1, unknown
        )
        best[r, j], idx[r, j], before[r, j], after[r, j], amin[r, j] = b, i, bf, af, m
        prev[r, j] = a


@kernel(parallel=True)
def depth_update(act, k, prev, best, idx, before, after, amin, coded, inv_floor):
    """Track, per pixel, the frame of largest activity and its neighbours' activities.

    Frames are assumed to arrive in focus order. ``before``/``after`` hold the activity of
    frames ``idx - 1``/``idx + 1`` (NaN, or :data:`CODE_UNKNOWN`, while unknown), ``prev``
    the previous frame's activity (``act`` once this returns) and ``amin`` the smallest
    activity seen. With ``coded`` the maps hold 16-bit codes of ``act * inv_floor``.
    """
    w = act.shape[1]
    unknown = np.float32(np.nan)  # (the codes' tracker marks its own)
    for r in prange(act.shape[0]):
        if coded:
            row = np.empty(w, np.float32)
            _encode_row(act[r], inv_floor, row)
            _track_row_codes(row, np.int64(r), k, prev, best, idx, before, after, amin)
        else:
            _track_row(act[r], np.int64(r), k, prev, best, idx, before, after, amin, unknown)


# ---------------------------------------------------------------------------------------
# depth map
# ---------------------------------------------------------------------------------------
@kernel(parallel=True)
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
    # coded maps: the log of every one of the 2**16 codes, once (four transcendental calls a
    # pixel took most of a result's time; the table gives the same float32 values)
    ncode = 1 << 16 if coded else 1
    logs = np.empty(ncode, np.float32)
    for c in prange(ncode):
        logs[c] = np.log(np.exp(_log_code(c)) + ex)
    for r in prange(h):
        for j in range(w):
            # float32 logs: activities are float32, their log differences need no more
            if coded:
                y0 = logs[np.int64(best[r, j])]
                ym = logs[np.int64(before[r, j])]
                yp = logs[np.int64(after[r, j])]
                ymin = logs[np.int64(amin[r, j])]
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


@kernel(parallel=True)
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


@kernel(parallel=True)
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


@kernel(parallel=True)
def upsample_depth(frac, conf, shown, factor, min_conf, depth_out, conf_out):
    """Upsample the depth and the confidence ``shown`` bilinearly by ``factor``.

    Input sample ``i`` sits at output ``factor * i``; ``depth_out`` is NaN where the
    upsampled ``conf`` (which may differ from ``shown``) is below ``min_conf``.
    """
    h, w = frac.shape
    ho, wo = depth_out.shape
    inv = 1.0 / factor
    lim = np.float32(min_conf)
    nan = np.float32(np.nan)
    # factor 2 (the depth's level 1): output columns 2m and 2m + 1 sit at m and m + 1/2,
    # both between input columns m and m + 1; those pairs are computed from contiguous
    # loads (the same arithmetic as the general loop, which does the rest of the row)
    pairs = min(w - 1, wo // 2) if factor == 2.0 else 0
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for r in prange(ho):
        y = min(r * inv, h - 1.0)
        y0 = min(int(y), h - 1)
        y1 = min(y0 + 1, h - 1)
        ty = np.float32(y - y0)
        for m in range(pairs):
            c = _bilinear(conf, y0, y1, m, m + 1, zero, ty)
            conf_out[r, 2 * m] = _bilinear(shown, y0, y1, m, m + 1, zero, ty)
            d = _bilinear(frac, y0, y1, m, m + 1, zero, ty)
            depth_out[r, 2 * m] = d if c >= lim else nan
            c = _bilinear(conf, y0, y1, m, m + 1, half, ty)
            conf_out[r, 2 * m + 1] = _bilinear(shown, y0, y1, m, m + 1, half, ty)
            d = _bilinear(frac, y0, y1, m, m + 1, half, ty)
            depth_out[r, 2 * m + 1] = d if c >= lim else nan
        for j in range(2 * pairs, wo):
            x = min(j * inv, w - 1.0)
            x0 = min(int(x), w - 1)
            x1 = min(x0 + 1, w - 1)
            tx = np.float32(x - x0)
            c = _bilinear(conf, y0, y1, x0, x1, tx, ty)
            conf_out[r, j] = _bilinear(shown, y0, y1, x0, x1, tx, ty)
            d = _bilinear(frac, y0, y1, x0, x1, tx, ty)
            depth_out[r, j] = d if c >= lim else nan


@kernel(inline=True)
def _bilinear(a, y0, y1, x0, x1, tx, ty):
    """Return ``a`` sampled bilinearly between rows ``y0, y1`` and columns ``x0, x1``."""
    one = np.float32(1.0)
    top = a[y0, x0] * (one - tx) + a[y0, x1] * tx
    bot = a[y1, x0] * (one - tx) + a[y1, x1] * tx
    return top * (one - ty) + bot * ty


@kernel(parallel=True)
def smooth_sums(conf, frac, wts, tmp, wsum, fsum, qsum):
    """Smooth the confidence-weighted depth's three sums as ``scipy.ndimage`` would.

    ``wsum``, ``fsum`` and ``qsum`` receive the separable Gaussian filtering (``wts``: the
    float64 half kernel, centre first; borders mirrored without repeating the edge, scipy's
    ``mode="mirror"``) of ``conf``, ``frac * conf`` and ``frac * conf * frac`` (float32
    products). Each axis accumulates in float64 in scipy's order (the centre tap, then the
    symmetric pairs from the outermost in) and rounds to float32 between the axes (``tmp``,
    ``(3, H, W)`` float32): the same values as three ``gaussian_filter`` calls, in one sweep
    over the inputs.
    """
    h, w = conf.shape
    rad = wts.shape[0] - 1
    w0 = wts[0]
    for r in prange(h):
        ac = np.empty(w, np.float64)
        af = np.empty(w, np.float64)
        aq = np.empty(w, np.float64)
        for j in range(w):
            c = conf[r, j]
            f = frac[r, j] * c
            ac[j] = np.float64(c) * w0
            af[j] = np.float64(f) * w0
            aq[j] = np.float64(f * frac[r, j]) * w0
        for k in range(rad, 0, -1):
            a = _refl(r - k, h)
            b = _refl(r + k, h)
            wk = wts[k]
            for j in range(w):
                ca = conf[a, j]
                cb = conf[b, j]
                fa = frac[a, j] * ca
                fb = frac[b, j] * cb
                ac[j] += (np.float64(ca) + np.float64(cb)) * wk
                af[j] += (np.float64(fa) + np.float64(fb)) * wk
                aq[j] += (np.float64(fa * frac[a, j]) + np.float64(fb * frac[b, j])) * wk
        for j in range(w):
            tmp[0, r, j] = ac[j]
            tmp[1, r, j] = af[j]
            tmp[2, r, j] = aq[j]
    for r in prange(h):
        pad = np.empty(w + 2 * rad, np.float64)
        acc = np.empty(w, np.float64)
        for m in range(3):
            out = wsum if m == 0 else (fsum if m == 1 else qsum)
            for j in range(-rad, w + rad):
                pad[j + rad] = tmp[m, r, _refl(j, w)]
            mid = pad[rad : rad + w]
            for j in range(w):
                acc[j] = mid[j] * w0
            for k in range(rad, 0, -1):
                lo = pad[rad - k : rad - k + w]
                hi = pad[rad + k : rad + k + w]
                wk = wts[k]
                for j in range(w):
                    acc[j] += (lo[j] + hi[j]) * wk
            for j in range(w):
                out[r, j] = acc[j]


@kernel()
def block_mean(a, out):
    """Means over 2 x 2 blocks of ``a`` into ``out`` (an odd last row or column alone).

    A block's samples are added in float32 in the order (0, 0), (0, 1), (1, 0), (1, 1),
    then divided by their count.
    """
    h, w = a.shape
    h2, w2 = out.shape
    one = np.float32(1.0)
    for i in range(h2):
        for j in range(w2):
            s = np.float32(0.0)
            n = np.float32(0.0)
            for dy in range(2):
                y = 2 * i + dy
                if y < h:
                    for dx in range(2):
                        x = 2 * j + dx
                        if x < w:
                            s += a[y, x]
                            n += one
            out[i, j] = s / n


@kernel()
def pull_level(est, w, f, final, out, tmp):
    """Run one "pull" step of ``depth.fill_depth`` (the coarser estimate upsampled by 2).

    ``out = f / w`` where ``w > 0`` (``f`` itself when ``final``), else ``est``
    bilinearly upsampled by 2. ``out``, ``w`` and ``f`` are ``(H, W)``; ``est`` is the
    level above, ``tmp`` float32 scratch ``(H, est.shape[1])``. Along each axis a fine
    sample ``2i`` is ``0.75 x[i] + 0.25 x[i - 1]`` and ``2i + 1`` is
    ``0.75 x[i] + 0.25 x[i + 1]`` (edge samples repeated); rows first, then columns.
    """
    hc, wc = est.shape
    h, wd = out.shape
    c3 = np.float32(0.75)
    c1 = np.float32(0.25)
    for r in range(h):
        i = r // 2
        nb = i - 1 if r % 2 == 0 else i + 1
        nb = min(max(nb, 0), hc - 1)
        for j in range(wc):
            tmp[r, j] = c3 * est[i, j] + c1 * est[nb, j]
    for r in range(h):
        for c in range(wd):
            i = c // 2
            nb = i - 1 if c % 2 == 0 else i + 1
            nb = min(max(nb, 0), wc - 1)
            up = c3 * tmp[r, i] + c1 * tmp[r, nb]
            own = f[r, c] if final else f[r, c] / w[r, c]
            out[r, c] = own if w[r, c] > 0 else up
