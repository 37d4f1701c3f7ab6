"""The front layer's matte for the halo correction (:mod:`.halo`), from its own frame.

In the frame focused on an occluder (the front layer), the occluder is sharp and what
lies behind it blurred: ``I_f = F a + (1 - a) B_f``. :func:`front_matte` estimates the
matte ``a`` and ``F a`` from that frame, with the depth map's step as a first guess of
where the occluder is, and the background's frame as a witness of what is background;
:func:`extend` is the normalised convolution both modules use to carry colours over a
gap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["extend", "front_matte"]

#: half-width (px) of the zone around the depth map's step where the edge is looked for
ZONE_PX = 12
#: the zone's half-width (px) in a plate with holes whose background the depth map shows
#: nowhere farther than :data:`ZONE_PX` from the plate (only its larger holes, narrowed by
#: the focus measure's spread): there the first estimate takes the background from the
#: holes' cores
HOLES_ZONE_PX = 4
#: passes refining the matte with the background extended from near the front layer
MATTE_PASSES = 2
#: gap (px) between the front layer found so far and the pixels its background is taken from
MATTE_GAP_PX = 2
#: sigma (px) of the extension of the background and the front colour in those passes
MATTE_SIGMA_PX = 3.0
#: times the front layer's frame's detail from which the background's frame's marks a patch
#: of background
BEHIND_DETAIL = 1.25
#: contrast (noise standard deviations) between the layers' colours below which a pixel
#: is not taken for the front layer in the refining passes
MIN_CONTRAST_SIGMAS = 4.0
#: colour difference (share of the layers' contrast) between a part of the front layer
#: and its outline that makes it a hole
HOLE_GAP = 0.25
#: step of the matte (per px) from which the front layer's edge counts as sharp
SHARP_STEP = 0.35
#: weight (of the Gaussian's) below which the refining passes' local extension of the
#: front colour gives way to its mean over the window
NEAR_CORE_WEIGHT = 0.05
#: the same for the background, which gives way to the first pass's estimate (deep inside
#: a large front layer only)
NEAR_BACK_WEIGHT = 1e-6
#: smallest connected part (px) of the front layer kept (noise makes specks)
MIN_SPECK_PX = 8
#: weight of a normalised convolution's Gaussian below which a wider one takes over
EXTEND_FLOOR = 1e-3
#: side (px) of the windows the local detail is averaged over
DETAIL_WINDOW_PX = 9


def extend(
    values: np.ndarray, weight: np.ndarray, sigma: float, *, fill: bool = True
) -> np.ndarray:
    """Normalised convolution: ``values`` (C, H, W) known where ``weight`` > 0, extended.

    A Gaussian of ``sigma`` px; from 4 px on computed at half resolution, from 16 px on at
    a quarter (the fields it extends are smooth at that scale), and interpolated back.
    Where the Gaussian's weight falls below :data:`EXTEND_FLOOR` (far from every known
    value) the extension with a four times wider Gaussian takes over, and from half the
    window's size on the known values' mean (``fill``; without, the extension fades to 0
    there).
    """
    out, den = _extend_once(values, weight, sigma)
    if not fill:
        return np.asarray(out * (den / np.maximum(den, 1e-6))[None])
    if float(den.min()) >= EXTEND_FLOOR:
        return out
    if 4.0 * sigma <= max(values.shape[1:]) / 2:
        far = extend(values, weight, 4.0 * sigma)
    else:
        w = weight.astype(np.float64)
        mean = (values * w[None]).sum((1, 2)) / max(float(w.sum()), 1e-12)
        far = np.broadcast_to(mean[:, None, None], values.shape)
    near = (den / (den + EXTEND_FLOOR))[None]
    return np.asarray(near * out + (1.0 - near) * far)


def _extend_once(
    values: np.ndarray, weight: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the normalised convolution of :func:`extend` at one ``sigma``, its weight."""
    from scipy import ndimage

    w = weight.astype(np.float64)
    if sigma < 4.0:
        den = ndimage.gaussian_filter(w, sigma, mode="nearest")
        num = np.stack([ndimage.gaussian_filter(v * w, sigma, mode="nearest") for v in values])
        return num / np.maximum(den, 1e-12)[None], den
    c, h, wd = values.shape
    f = 2 if sigma < 16.0 else 4  # the fields extended are smooth at sigma / 2
    h2, w2 = -(-h // f), -(-wd // f)
    vw = np.pad(values * w[None], ((0, 0), (0, f * h2 - h), (0, f * w2 - wd)), mode="edge")
    ww = np.pad(w, ((0, f * h2 - h), (0, f * w2 - wd)), mode="edge")
    vw = vw.reshape(c, h2, f, w2, f).mean((2, 4))
    ww = ww.reshape(h2, f, w2, f).mean((1, 3))
    den = ndimage.gaussian_filter(ww, sigma / f, mode="nearest")
    num = np.stack([ndimage.gaussian_filter(v, sigma / f, mode="nearest") for v in vw])
    # back to full resolution (the weighted sums and the weight alike, so that a level
    # field stays level): each sample repeated over its f x f pixels, then an f x f mean
    # (linear weights between the samples)
    both = np.concatenate([num, den[None]])
    big = np.repeat(np.repeat(both, f, axis=1), f, axis=2)
    big = ndimage.uniform_filter(big, size=(1, f, f), mode="nearest", origin=(0, -1, -1))
    den_big = big[c, :h, :wd]
    return big[:c, :h, :wd] / np.maximum(den_big, 1e-12)[None], den_big


def _near_extend(
    values: np.ndarray, known: np.ndarray, far: np.ndarray, floor: float
) -> np.ndarray:
    """Return ``values`` (C, H, W) where ``known``, extended; ``far`` further away.

    Extended over :data:`MATTE_SIGMA_PX` px (normalised convolution), blended into ``far``
    as the extension's weight falls below ``floor``.
    """
    from scipy import ndimage

    w = known.astype(np.float64)
    den = ndimage.gaussian_filter(w, MATTE_SIGMA_PX, mode="nearest")
    num = np.stack([ndimage.gaussian_filter(v * w, MATTE_SIGMA_PX, mode="nearest") for v in values])
    near = den / (den + floor)
    return np.asarray(near * num / np.maximum(den, 1e-12) + (1.0 - near) * far)


def _drop_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its connected parts (8-connected) of fewer than ``min_px`` pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def _detail(img: np.ndarray) -> np.ndarray:
    """Return the local detail of ``img`` (C, H, W).

    Its high-pass (less a 1-px Gaussian) energy summed over the channels, averaged over
    :data:`DETAIL_WINDOW_PX` px.
    """
    from scipy import ndimage

    hp = img - ndimage.gaussian_filter(img, (0, 1.0, 1.0), mode="nearest")
    return np.asarray(ndimage.uniform_filter((hp**2).sum(0), DETAIL_WINDOW_PX, mode="nearest"))


def _sharp_front(
    a_raw: np.ndarray, cand: np.ndarray, behind: np.ndarray, img: np.ndarray, con2: np.ndarray
) -> np.ndarray:
    """Return the parts of ``cand`` (matte > 0.5) that a sharp edge bounds.

    The front layer is in focus in its frame: its matte steps within a pixel or two. A
    smooth swell of the blurred background that the matte's estimate takes for the front
    layer has no such edge. Kept: the candidate pixels next to a sharp step of the matte
    (gradient >= :data:`SHARP_STEP` per px; all of a thin layer), and the parts further
    inside that such pixels enclose (at least half of their outline) unless they look
    like the background (``behind``: the background's frame shows there more than
    :data:`BEHIND_DETAIL` times the detail of the front layer's: a patch of background
    between thin parts); specks of fewer than :data:`MIN_SPECK_PX` pixels are dropped.
    """
    from scipy import ndimage

    gy, gx = np.gradient(a_raw)
    sharp = np.hypot(gy, gx) >= SHARP_STEP
    rim = cand & ndimage.binary_dilation(sharp, iterations=1)
    rest = cand & ~rim
    lab, n = ndimage.label(rest, np.ones((3, 3), bool))
    keep = rim.copy()
    if n:
        ring = ndimage.binary_dilation(rest, np.ones((3, 3), bool)) & ~rest
        # each outline pixel's component: the largest label among its neighbours
        owner = ndimage.maximum_filter(lab, size=3)
        tot = np.bincount(owner[ring], minlength=n + 1)
        good = np.bincount(owner[ring & rim], minlength=n + 1)
        enclosed = good >= 0.5 * np.maximum(tot, 1)
        n_behind = np.bincount(lab.ravel(), behind.ravel().astype(np.float64), minlength=n + 1)
        share = n_behind / np.maximum(np.bincount(lab.ravel(), minlength=n + 1), 1)
        enclosed &= share < 0.5
        # nor a hole: a part whose colour (in ``img``) is not its outline's, by a share of
        # the layers' contrast (``con2``: squared)
        size = np.maximum(np.bincount(lab.ravel(), minlength=n + 1), 1)
        n_ring = np.maximum(tot, 1)
        gap2 = np.zeros(n + 1)
        for v in img:
            inside = np.bincount(lab.ravel(), v.ravel(), minlength=n + 1) / size
            outline = np.bincount(owner[ring], v[ring], minlength=n + 1) / n_ring
            gap2 += (inside - outline) ** 2
        c2 = np.bincount(lab.ravel(), con2.ravel(), minlength=n + 1) / size
        enclosed &= gap2 <= HOLE_GAP**2 * c2
        enclosed[0] = False
        keep |= enclosed[lab]
    return _drop_specks(keep, MIN_SPECK_PX)


def front_matte(
    i_f: np.ndarray,
    i_b: np.ndarray,
    front_depth: np.ndarray,
    fin: np.ndarray,
    sigma: np.ndarray,
    *,
    holes: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Return the front layer's mask, matte and colour ``F a`` from its frame ``i_f``.

    ``i_b`` is the background's frame (where the front layer is blurred). ``holes``: the
    depth map's background lies mostly in holes of ``front_depth`` (a plate with holes);
    where none of it is farther than :data:`ZONE_PX` from the plate, the zone narrows to
    :data:`HOLES_ZONE_PX`.

    A first estimate takes the background (blurred in that frame) from beyond the depth
    map's step and the colour from inside it; :data:`MATTE_PASSES` more take them from
    just outside and inside the front layer found so far (the depth map spreads a thin
    layer over many times its width), and look for it in the whole window. None when
    the front layer does not stand out.
    """
    from scipy import ndimage

    behind = _detail(i_b) > BEHIND_DETAIL * _detail(i_f)
    # where the front layer is, from its own frame: the depth map's boundary is only
    # known to within the blur (the focus measure spreads next to a sharp edge)
    u = ZONE_PX
    def_in = ndimage.distance_transform_edt(front_depth) > u
    def_out = ndimage.distance_transform_edt(~front_depth & fin) > u
    if def_out.sum() < 16 and holes:
        u = HOLES_ZONE_PX
        def_in = ndimage.distance_transform_edt(front_depth) > u
        def_out = ndimage.distance_transform_edt(~front_depth & fin) > u
    if def_out.sum() < 16:
        return None
    b_ext = extend(i_f, def_out.astype(np.float64), 0.75 * u)
    dev = i_f - b_ext
    zone = ~def_in & ~def_out
    if def_in.sum() >= 16:
        f_dir = extend(i_f, def_in.astype(np.float64), 0.75 * u) - b_ext
    else:  # a thin front layer: its colour from its most distinct pixels near the edge
        cand = zone & front_depth
        if cand.sum() < 8:
            return None
        mag = np.sqrt((dev**2).sum(0))
        strong = cand & (mag >= np.quantile(mag[cand], 0.75))
        f_dir = extend(i_f, strong.astype(np.float64), 0.75 * u) - b_ext
    con2 = (f_dir**2).sum(0)
    if float(np.median(con2[zone])) < 25.0 * float((sigma**2).sum()):
        return None  # the front layer does not stand out from the back: no matte
    a_raw = (dev * f_dir).sum(0) / np.maximum(con2, 1e-12)
    a_ls = np.clip(a_raw, 0.0, 1.0)
    # inside the front layer too: holes smaller than the depth map resolves (their
    # background is blurred in the front layer's frame, far from its colour)
    front = _sharp_front(a_raw, ~def_out & (a_ls > 0.5), behind & ~def_in, i_f, con2)
    if front.sum() < 8 or (~front).sum() < 8:
        return None
    for _ in range(MATTE_PASSES):
        # the blurred background varies over the zone: extend it again from the pixels
        # just outside the front layer found so far, its colour from just inside
        bg = fin & ~def_in & ~ndimage.binary_dilation(front, iterations=MATTE_GAP_PX)
        if bg.sum() < 16:
            break
        b_ext = _near_extend(i_f, bg, b_ext, NEAR_BACK_WEIGHT)
        dev = i_f - b_ext
        core = ndimage.binary_erosion(front, iterations=2)
        thin = front & ~ndimage.binary_dilation(core, iterations=2)
        if thin.any():  # the thin parts' colour from their most distinct half
            mag = np.sqrt((dev**2).sum(0))
            core |= thin & (mag >= np.quantile(mag[thin], 0.5))
        if core.sum() < 8:
            break
        # the colour near the front layer, its mean over the window further away
        f_far = np.broadcast_to(i_f[:, core].mean(1)[:, None, None], i_f.shape)
        f_dir = _near_extend(i_f, core, f_far, NEAR_CORE_WEIGHT) - b_ext
        con2 = (f_dir**2).sum(0)
        a_raw = (dev * f_dir).sum(0) / np.maximum(con2, 1e-12)
        a_ls = np.clip(a_raw, 0.0, 1.0)
        # anywhere in the window now: thin layers the depth map misses (their background's
        # detail outweighs them in the focus measure) have sharp edges too; not where the
        # colours are too close for the noise to leave a matte
        clear = con2 >= MIN_CONTRAST_SIGMAS**2 * float((sigma**2).sum())
        front = _sharp_front(a_raw, fin & clear & (a_ls > 0.5), behind & ~def_in, i_f, con2)
        if front.sum() < 8 or (~front).sum() < 8:
            return None
    inner1 = ndimage.binary_erosion(front, iterations=1)
    trans = ~inner1 & ~ndimage.binary_erosion(~front, iterations=1)
    # the edge's partial pixels: outside the front layer, only those that look like the
    # background's side of an edge (a matte below a half; more, and the tests above
    # rejected them: background, of matte 0)
    outer = np.where(a_ls < 0.5, a_ls, 0.0)
    alpha = np.where(trans, np.where(front, a_ls, outer), inner1.astype(np.float64))
    prem = np.where(alpha[None] > 0, i_f - (1.0 - alpha)[None] * b_ext, 0.0)  # F a

    return front, alpha, prem
