"""Named specimen kinds for focus and range tests: flat, tilted, bump, two layers, sparse, ...

:func:`specimen_of_kind` builds a :class:`~nanoro_optics.hardware.specimen.Specimen` of
one of :data:`SPECIMEN_KINDS` from a seed, with its lowest point at ``base_um`` and its
relief ``relief_um``; the textures are those of :meth:`Specimen.synthetic` (``1/f``
detail down to ``feature_px``).

=================== =====================================================================
kind                what it is
=================== =====================================================================
``"flat"``          the texture on a plane at ``base_um`` (no relief)
``"tilted"``        a tilted plane: the top in one corner, the bottom in the opposite one
``"bump"``          a flat base with one Gaussian hill ``relief_um`` tall (sigma 20-30 %
                    of the field)
``"hills"``         :meth:`Specimen.synthetic`'s tilted plane with three hills
``"two_layers"``    the hills with a semi-transparent fibre layer ``relief_um / 5`` above
``"sparse"``        sparse fluorescence: bright spots (3 % of the field) on a dark
                    background, on a gently tilted plane
``"low_contrast"``  the hills with a tenth of the texture's contrast
``"blank"``         a uniform field (nothing to focus on)
=================== =====================================================================
"""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_finite_real, check_int, check_positive
from .specimen import Specimen, _smooth_noise

__all__ = ["SPECIMEN_KINDS", "specimen_of_kind"]

#: Kinds :func:`specimen_of_kind` makes (see the module table).
SPECIMEN_KINDS = (
    "flat",
    "tilted",
    "bump",
    "hills",
    "two_layers",
    "sparse",
    "low_contrast",
    "blank",
)


def specimen_of_kind(
    kind: str,
    shape: tuple[int, int] = (128, 128),
    *,
    relief_um: float = 10.0,
    base_um: float = 0.0,
    feature_px: float = 2.0,
    seed: int = 0,
) -> Specimen:
    """Make a specimen of one of :data:`SPECIMEN_KINDS`.

    Parameters
    ----------
    kind : str
        One of :data:`SPECIMEN_KINDS`.
    shape : (int, int)
        Rows and columns (each >= 8).
    relief_um : float, keyword-only
        Height from the lowest to the highest point (>= 0; unused by "flat" and "blank").
    base_um : float, keyword-only
        Height of the lowest point.
    feature_px : float, keyword-only
        Smallest texture feature (px, >= 1).
    seed : int, keyword-only
        Random seed.

    Returns
    -------
    Specimen

    Examples
    --------
    >>> s = specimen_of_kind("tilted", (32, 32), relief_um=4.0, base_um=1.0)
    >>> round(s.bottom_um, 6), round(s.top_um, 6)
    (1.0, 5.0)
    """
    kind = check_choice(kind, "kind", SPECIMEN_KINDS)
    relief = check_positive(relief_um, "relief_um", allow_zero=True)
    base = check_finite_real(base_um, "base_um")
    seed = check_int(seed, "seed", 0)
    rows, cols = shape
    hills = Specimen.synthetic(
        shape,
        relief_um=relief,
        base_um=base,
        feature_px=feature_px,
        second_layer=kind == "two_layers",
        seed=seed,
    )
    rng = np.random.default_rng(seed + 7919)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    yy /= max(rows - 1, 1)
    xx /= max(cols - 1, 1)
    if kind in ("hills", "two_layers"):
        return hills
    if kind == "low_contrast":
        return Specimen(0.5 + 0.1 * (hills.texture - 0.5), hills.height_um)
    if kind == "blank":
        return Specimen(np.full((rows, cols), 0.5), np.full((rows, cols), base))
    if kind == "flat":
        return Specimen(hills.texture, np.full((rows, cols), base))
    if kind == "tilted":
        a, b = rng.uniform(0.3, 1.0, size=2) * rng.choice((-1.0, 1.0), size=2)
        plane = a * xx + b * yy
    elif kind == "bump":
        cy, cx = rng.uniform(0.3, 0.7, size=2)
        w = rng.uniform(0.2, 0.3)
        plane = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w**2))
    else:  # sparse
        field = _smooth_noise(rng, (rows, cols), max(1.0, feature_px))
        spots = np.clip((field - np.quantile(field, 0.97)) / (field.max() * 0.5), 0.0, 1.0)
        texture = 0.02 + 0.9 * spots
        plane = 0.7 * xx + 0.3 * yy
        plane = (plane - plane.min()) / np.ptp(plane)
        return Specimen(texture, base + relief * plane)
    plane = plane - plane.min()
    height = base + relief * plane / max(float(plane.max()), 1e-12)
    return Specimen(hills.texture, height)
