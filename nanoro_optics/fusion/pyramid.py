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
from collections.abc import Sequence
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
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) < 2:
        raise TypeError(f"shape must be a sequence (rows, cols, ...), got {shape!r}")
    short = min(check_int(shape[0], "shape[0]", 1), check_int(shape[1], "shape[1]", 1))
    if short < 2 * MIN_TOP_PX:
        return 1
    return 1 + math.floor(math.log2(short / MIN_TOP_PX))


def _as_image3(image: Any, name: str = "image") -> tuple[np.ndarray, bool]:
    try:
        arr = np.asarray(image)
    except ValueError as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be an integer or float array: {exc}") from exc
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


def _planar_gaussian(img: np.ndarray, n: int) -> list[np.ndarray]:
    """Planar levels ``G_1 .. G_{n-1}`` of an interleaved image (C-contiguous)."""
    from . import _pyramid_kernels

    h, w, c = img.shape
    out: list[np.ndarray] = []
    src, interleaved = img, True
    for _ in range(n - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        nxt = np.empty((c, h, w), dtype=np.float32)
        _pyramid_kernels.reduce_level(src, interleaved, nxt, 1.0, False)
        out.append(nxt)
        src, interleaved = nxt, False
    return out


def _interleave(planar: np.ndarray, grey: bool) -> np.ndarray:
    return planar[0].copy() if grey else np.ascontiguousarray(np.moveaxis(planar, 0, -1))


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
    img, grey = _as_image3(image)
    n = _check_levels(levels, img.shape)
    g0 = img.astype(np.float32)
    rest = _planar_gaussian(g0, n)
    return [g0[:, :, 0] if grey else g0] + [_interleave(p, grey) for p in rest]


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
    from . import _pyramid_kernels

    img, grey = _as_image3(image)
    n = _check_levels(levels, img.shape)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    if n == 1:
        return [img.astype(np.float32)[:, :, 0] if grey else img.astype(np.float32)]
    gauss: list[np.ndarray] = [img, *_planar_gaussian(img, n)]
    out = []
    for k in range(n - 1):
        c, h, w = gauss[k + 1].shape[0], *(gauss[k].shape[:2] if k == 0 else gauss[k].shape[1:])
        lap = np.empty((c, h, w), dtype=np.float32)
        _pyramid_kernels.laplacian_level(gauss[k], k == 0, gauss[k + 1], lap)
        out.append(lap)
    out.append(gauss[-1])
    return [_interleave(p, grey) for p in out]


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
    from . import _pyramid_kernels

    if isinstance(pyramid, (str, bytes, np.ndarray)) or not isinstance(pyramid, Sequence):
        raise TypeError(f"pyramid must be a list of levels, got {type(pyramid).__name__}")
    if len(pyramid) == 0:
        raise ValueError("pyramid must have at least one level, got an empty list")
    grey = np.ndim(pyramid[0]) == 2
    levels: list[np.ndarray] = []
    for k, p in enumerate(pyramid):
        try:
            arr = np.asarray(p, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"pyramid level {k} is not a numeric array: {exc}") from exc
        if arr.ndim != (2 if grey else 3):
            raise ValueError(
                f"pyramid level {k} has shape {arr.shape}; every level must be 2-D (grey) "
                f"or 3-D (rows, cols, channels) like level 0"
            )
        arr = arr[None] if grey else np.moveaxis(arr, -1, 0)
        levels.append(np.ascontiguousarray(arr))
    for k in range(1, len(levels)):
        hp, wp = int(levels[k - 1].shape[1]), int(levels[k - 1].shape[2])
        if levels[k].shape[1:] != ((hp + 1) // 2, (wp + 1) // 2):
            raise ValueError(
                f"pyramid level {k} has shape {levels[k].shape[1:]}, expected "
                f"{((hp + 1) // 2, (wp + 1) // 2)} (half of level {k - 1})"
            )
    out_dtype = np.dtype(dtype)
    is_int = out_dtype.kind in "ui"
    lo, hi = (float(np.iinfo(out_dtype).min), float(np.iinfo(out_dtype).max)) if is_int else (0, 0)
    if is_int and int(hi) > np.iinfo(out_dtype).max:  # float64 of a 64-bit maximum rounds up
        hi = float(np.nextafter(hi, 0.0))  # (a value above it would wrap when stored)
    if len(levels) == 1:
        img = np.moveaxis(levels[0], 0, -1)
        if is_int:
            img = np.clip(np.rint(img.astype(np.float64)), lo, hi)  # (float32: hi rounds up)
        img = np.ascontiguousarray(img, dtype=out_dtype)
        return img[:, :, 0] if grey else img
    cur = levels[-1]
    for k in range(len(levels) - 2, 0, -1):
        nxt = np.empty_like(levels[k])
        _pyramid_kernels.expand_add(levels[k], np.float32(1.0), cur, nxt, False, False, 0.0, 0.0)
        cur = nxt
    c, h, w = levels[0].shape
    out = np.empty((h, w, c), dtype=out_dtype if is_int else np.float32)
    one = np.float32(1.0)
    _pyramid_kernels.expand_add(levels[0], one, cur, out, True, is_int, float(lo), float(hi))
    img = out if is_int else out.astype(out_dtype, copy=False)
    return img[:, :, 0] if grey else img
