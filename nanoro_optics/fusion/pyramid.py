"""Burt-Adelson Gaussian and Laplacian pyramids (numba kernels, grey or colour).

The generating kernel is the 5-tap binomial ``w = [1, 4, 6, 4, 1] / 16`` (Burt & Adelson's
``a = 0.375``). ``REDUCE`` blurs with ``w`` along each axis and keeps every other sample;
``EXPAND`` inserts zeros and blurs with ``2 w``. A level of the Laplacian pyramid is
``L_k = G_k - EXPAND(G_{k+1})`` and the last level is the low-pass residual ``G_{n-1}``, so
collapsing ``G_k = L_k + EXPAND(G_{k+1})`` gives the image back exactly, up to float32 rounding
(well under half a DN of 16-bit data). Borders are mirrored without repeating the edge sample.

References
----------
.. [1] P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
   IEEE Trans. Commun. 31(4), 532-540 (1983). https://doi.org/10.1109/TCOM.1983.1095851
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nanoro_optics._validation import check_int

__all__ = ["auto_levels", "collapse_pyramid", "gaussian_pyramid", "laplacian_pyramid"]

#: the coarsest level of an automatic pyramid has at least this many samples on its short side
MIN_TOP_PX = 8


def auto_levels(shape: tuple[int, ...]) -> int:
    """Return the number of pyramid levels for an image of ``shape`` (rows, cols, ...).

    Halves the short side while it stays at least :data:`MIN_TOP_PX` samples long, so the
    low-pass residual is coarse enough to carry only the image's slow shading.

    Examples
    --------
    >>> auto_levels((1024, 1024))
    8
    >>> auto_levels((5, 7))
    1
    """
    short = min(int(shape[0]), int(shape[1]))
    if short < 2 * MIN_TOP_PX:
        return 1
    return 1 + math.floor(math.log2(short / MIN_TOP_PX))


def _as_image3(image: Any, name: str = "image") -> tuple[np.ndarray, bool]:
    arr = np.asarray(image)
    if arr.dtype.kind not in "uif" or arr.dtype.itemsize > 8:
        raise TypeError(f"{name} must be an integer or float array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return np.ascontiguousarray(arr)[:, :, None], True
    if arr.ndim == 3:
        return np.ascontiguousarray(arr), False
    raise ValueError(f"{name} must be 2-D (grey) or 3-D (rows, cols, channels), got {arr.shape}")


def _check_levels(levels: int | None, shape: tuple[int, ...]) -> int:
    if levels is None:
        return auto_levels(shape)
    return check_int(levels, "levels", 1, 32)


def gaussian_pyramid(image: Any, *, levels: int | None = None) -> list[np.ndarray]:
    """Gaussian pyramid ``[G_0, ..., G_{levels-1}]`` of a grey or colour image.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Integer or float image.
    levels : int, optional
        Number of levels (default :func:`auto_levels`).

    Returns
    -------
    list of numpy.ndarray
        ``G_0`` is the image as float32; each next level has ``ceil(n / 2)`` rows and columns.

    References
    ----------
    .. [1] Burt & Adelson (1983), https://doi.org/10.1109/TCOM.1983.1095851
    """
    from . import _kernels

    img, grey = _as_image3(image)
    n = _check_levels(levels, img.shape)
    out = [img.astype(np.float32)]
    for _ in range(n - 1):
        h, w, c = out[-1].shape
        nxt = np.empty(((h + 1) // 2, (w + 1) // 2, c), dtype=np.float32)
        _kernels.reduce_image(out[-1], nxt)
        out.append(nxt)
    return [g[:, :, 0] for g in out] if grey else out


def laplacian_pyramid(image: Any, *, levels: int | None = None) -> list[np.ndarray]:
    """Laplacian pyramid ``[L_0, ..., L_{levels-2}, G_{levels-1}]`` (float32).

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Integer or float image.
    levels : int, optional
        Number of levels including the low-pass residual (default :func:`auto_levels`).

    Returns
    -------
    list of numpy.ndarray
        Band-pass levels ``L_k = G_k - EXPAND(G_{k+1})`` and the residual ``G_{levels-1}``.

    References
    ----------
    .. [1] Burt & Adelson (1983), https://doi.org/10.1109/TCOM.1983.1095851

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    >>> pyr = laplacian_pyramid(img, levels=3)
    >>> [p.shape for p in pyr]
    [(64, 48), (32, 24), (16, 12)]
    >>> bool(np.array_equal(collapse_pyramid(pyr, dtype=np.uint16), img))
    True
    """
    from . import _kernels

    img, grey = _as_image3(image)
    n = _check_levels(levels, img.shape)
    gauss = gaussian_pyramid(img, levels=n)
    out = []
    for k in range(n - 1):
        lap = np.empty_like(gauss[k])
        _kernels.laplacian_level(gauss[k], gauss[k + 1], lap)
        out.append(lap)
    out.append(gauss[-1])
    return [p[:, :, 0] for p in out] if grey else out


def collapse_pyramid(pyramid: list[np.ndarray], *, dtype: Any = np.float32) -> np.ndarray:
    """Rebuild an image from a Laplacian pyramid (inverse of :func:`laplacian_pyramid`).

    Parameters
    ----------
    pyramid : list of numpy.ndarray
        ``[L_0, ..., L_{n-2}, G_{n-1}]``, each level ``ceil(n / 2)`` the size of the previous.
    dtype : numpy dtype, optional
        Output dtype. Integer output is rounded half to even and clipped to the dtype's range
        (fusion may overshoot by a fraction of a DN next to a sharp edge).

    Returns
    -------
    numpy.ndarray
        The image, with the shape of ``pyramid[0]``.

    References
    ----------
    .. [1] Burt & Adelson (1983), https://doi.org/10.1109/TCOM.1983.1095851
    """
    from . import _kernels

    if len(pyramid) == 0:
        raise ValueError("pyramid must have at least one level, got an empty list")
    grey = np.ndim(pyramid[0]) == 2
    levels: list[np.ndarray] = [
        np.ascontiguousarray(np.asarray(p, dtype=np.float32)).reshape(
            np.shape(p) + ((1,) if grey else ())
        )
        for p in pyramid
    ]
    for k in range(1, len(levels)):
        hp, wp = int(levels[k - 1].shape[0]), int(levels[k - 1].shape[1])
        if levels[k].shape[:2] != ((hp + 1) // 2, (wp + 1) // 2):
            raise ValueError(
                f"pyramid level {k} has shape {levels[k].shape[:2]}, expected "
                f"{((hp + 1) // 2, (wp + 1) // 2)} (half of level {k - 1})"
            )
    out_dtype = np.dtype(dtype)
    cur = levels[-1]
    for k in range(len(levels) - 2, -1, -1):
        ones = np.ones(levels[k].shape[:2], dtype=np.float32)
        if k == 0 and out_dtype.kind in "ui":
            img = np.empty(levels[0].shape, dtype=out_dtype)
            info = np.iinfo(out_dtype)
            _kernels.expand_add_round(levels[0], ones, cur, img, float(info.min), float(info.max))
            return img[:, :, 0] if grey else img
        nxt = np.empty(levels[k].shape, dtype=np.float32)
        _kernels.expand_add(levels[k], ones, cur, nxt)
        cur = nxt
    if out_dtype.kind in "ui":
        info = np.iinfo(out_dtype)
        cur = np.clip(np.rint(cur), info.min, info.max)
    img = cur.astype(out_dtype)
    return img[:, :, 0] if grey else img
