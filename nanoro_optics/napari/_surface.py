"""A depth map as a height surface: a triangle mesh for napari's Surface layer.

The widget's *Show as height surface* turns the depth map (um) into a mesh whose vertex at
pixel ``(i, j)`` sits at ``(depth[i, j], ty + i * sy, tx + j * sx)`` in world um (z, y, x),
coloured by the fused image at that pixel, so the specimen can be turned in 3-D as in
ImageJ's EDF topography viewer. Large maps are sampled on a coarser grid (every ``step_px``-th
pixel, edges kept) so that the mesh stays small enough to draw; pixels without a depth (NaN)
leave holes (no triangle touches them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_SIDE", "HeightSurface", "height_surface"]

#: the most vertices along a side of the mesh (a 512 x 512 grid: 0.5 M triangles)
MAX_SIDE = 512


@dataclass(frozen=True)
class HeightSurface:
    """A height map as a mesh.

    Attributes
    ----------
    vertices : numpy.ndarray
        float32 ``(N, 3)``: (z, y, x) in world units (um for a depth in um and a pixel size
        in um).
    faces : numpy.ndarray
        int32 ``(M, 3)`` vertex indices of the triangles.
    values : numpy.ndarray or None
        float32 ``(N,)`` grey values of the image at the vertices (for a colormap), or None.
    colors : numpy.ndarray or None
        float32 ``(N, 4)`` RGBA in 0..1 of a colour image at the vertices, or None.
    step_px : int
        Pixels between two vertices along y and x (1: every pixel).
    """

    vertices: np.ndarray
    faces: np.ndarray
    values: np.ndarray | None
    colors: np.ndarray | None
    step_px: int


def _grid(n: int, step: int) -> np.ndarray:
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def height_surface(
    depth: Any,
    image: Any,
    *,
    scale_yx: Sequence[float] = (1.0, 1.0),
    translate_yx: Sequence[float] = (0.0, 0.0),
    contrast_limits: Sequence[float] | None = None,
    max_side: int = MAX_SIDE,
) -> HeightSurface:
    """Return the mesh of a depth map coloured by an image.

    Parameters
    ----------
    depth : array_like
        ``(H, W)`` real depth (height) per pixel; NaN where unknown.
    image : array_like
        ``(H, W)`` grey or ``(H, W, 3|4)`` colour image on the same grid (the fused image).
    scale_yx, translate_yx : pair of float, keyword-only
        Pixel size (> 0) and world position of pixel (0, 0), as a napari layer's.
    contrast_limits : pair of float, optional
        For a colour image: the values shown as black and full colour (default: 0 and the
        dtype's largest value for integers, the image's range for floats).
    max_side : int, optional
        The most vertices along a side, at least 2 (default :data:`MAX_SIDE`).

    Returns
    -------
    HeightSurface

    Raises
    ------
    ValueError
        A depth that is not a non-empty 2-D array or holds no finite value, an image of
        another height and width, a pixel size that is not positive and finite, or
        ``max_side`` below 2.
    TypeError
        ``max_side`` not an integer.

    Examples
    --------
    >>> s = height_surface(np.zeros((3, 4)), np.ones((3, 4)), scale_yx=(0.5, 0.5))
    >>> s.vertices.shape, s.faces.shape, float(s.vertices[:, 2].max())
    ((12, 3), (12, 3), 1.5)
    """
    d = np.asarray(depth, dtype=np.float64)
    img = np.asarray(image)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"depth must be a non-empty 2-D array, got shape {d.shape}")
    if img.shape[:2] != d.shape or img.ndim not in (2, 3):
        raise ValueError(
            f"image must be (H, W) or (H, W, C) with H, W = {d.shape}, got shape {img.shape}"
        )
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)):
        raise TypeError(f"max_side must be an integer, got {type(max_side).__name__}")
    if max_side < 2:
        raise ValueError(f"max_side must be at least 2, got {max_side}")
    sy, sx = (float(v) for v in scale_yx)
    ty, tx = (float(v) for v in translate_yx)
    if not (math.isfinite(sy) and math.isfinite(sx) and sy > 0 and sx > 0):
        raise ValueError(f"scale_yx must be positive and finite, got {tuple(scale_yx)}")
    finite = np.isfinite(d)
    if not finite.any():
        raise ValueError("depth has no finite value: there is no surface to show")
    h, w = d.shape
    step = max(1, math.ceil((max(h, w) - 1) / (int(max_side) - 1)))
    rows, cols = _grid(h, step), _grid(w, step)
    z = d[np.ix_(rows, cols)]
    ok = np.isfinite(z)
    z = np.where(ok, z, float(d[finite].min()))  # unused by any face; keeps the extent finite
    yy, xx = np.meshgrid(ty + rows * sy, tx + cols * sx, indexing="ij")
    vertices = np.column_stack([z.ravel(), yy.ravel(), xx.ravel()]).astype(np.float32)
    nr, nc = len(rows), len(cols)
    v00 = (np.arange(nr - 1)[:, None] * nc + np.arange(nc - 1)[None, :]).ravel()
    v01, v10 = v00 + 1, v00 + nc
    v11 = v10 + 1
    tri = np.concatenate(
        [np.column_stack([v00, v10, v01]), np.column_stack([v01, v10, v11])]
    ).astype(np.int32)
    flat_ok = ok.ravel()
    faces = tri[flat_ok[tri].all(axis=1)]
    sample = img[np.ix_(rows, cols)] if img.ndim == 2 else img[rows][:, cols]
    values = colors = None
    if img.ndim == 2:
        values = sample.astype(np.float32).ravel()
    else:
        rgb = sample[..., :3].astype(np.float64).reshape(-1, 3)
        if contrast_limits is not None:
            lo, hi = (float(v) for v in contrast_limits)
        elif img.dtype.kind in "ui":
            lo, hi = 0.0, float(np.iinfo(img.dtype).max)
        else:
            lo, hi = float(np.nanmin(rgb)), float(np.nanmax(rgb))
        rgb = np.clip((rgb - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        colors = np.column_stack([rgb, np.ones(len(rgb))]).astype(np.float32)
    return HeightSurface(vertices, faces, values, colors, step)
