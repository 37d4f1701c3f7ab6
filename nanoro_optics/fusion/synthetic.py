"""Synthetic focus stacks with ground truth (all-in-focus image and depth).

The texture is scikit-image's ``immunohistochemistry`` image (a stained tissue section),
mirror-tiled to the requested size. The true depth, in frame units, is a tilted plane plus a
Gaussian bump scaled to span the whole stack, ``0 <= depth <= n_frames - 1``. Frame ``k`` shows
each pixel blurred by a Gaussian of standard deviation

``sigma = blur_px_per_frame * max(0, |depth - k| - 0.5)`` px,

so a pixel is sharp in the frame nearest its depth and blurs linearly with defocus beyond
half a frame (a frame spacing equal to the depth of field). The per-pixel blur is rendered by
blurring the texture at a grid of sigmas and interpolating linearly between the two nearest.
Optional Gaussian read noise (``noise_dn``, in DN of the output dtype) and focus breathing
(magnification ``1 + breathing * (2 k / (n - 1) - 1)`` about the image centre, so the middle
frame has magnification 1, the geometry of ``truth`` and ``depth``).

This is the benchmark stack of the focus fuser; tests, the simulated camera and the testing
kit reuse it.

References
----------
.. [1] S. Pertuz, D. Puig and M. A. Garcia, "Analysis of focus measure operators for
   shape-from-focus", Pattern Recognit. 46(5), 1415-1432 (2013) (synthetic stacks from a
   texture, a depth map and a defocus model). https://doi.org/10.1016/j.patcog.2012.11.011
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nanoro_optics._validation import check_int, check_positive, check_range

__all__ = ["SyntheticStack", "synthetic_stack"]

#: blur grid (px) at which the texture is pre-blurred; per-pixel sigma interpolates between
_SIGMA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


@dataclass(frozen=True)
class SyntheticStack:
    """A synthetic focus stack and its ground truth.

    Attributes
    ----------
    frames : numpy.ndarray
        ``(N, H, W, C)`` (or ``(N, H, W)`` grey) in the requested dtype.
    truth : numpy.ndarray
        The all-in-focus image ``(H, W[, C])`` in the same dtype, in the geometry of
        magnification 1 (the middle frame when there is breathing).
    depth : numpy.ndarray
        float32 ``(H, W)``: true depth in frame units (0 = first frame).
    magnification : numpy.ndarray
        float64 ``(N,)``: magnification of every frame about the image centre.
    blur_px_per_frame : float
        Growth of the blur sigma (px) per frame of defocus.
    noise_dn : float
        Standard deviation of the added Gaussian noise, in DN of ``frames``' dtype.
    """

    frames: np.ndarray
    truth: np.ndarray
    depth: np.ndarray
    magnification: np.ndarray
    blur_px_per_frame: float
    noise_dn: float

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])


def _tiled_texture(shape: tuple[int, int], channels: int) -> np.ndarray:
    """Return the IHC texture (float64, 0-255) mirror-tiled to ``shape``."""
    import skimage.data

    tex = skimage.data.immunohistochemistry().astype(np.float64)
    h, w = shape
    reps_y = -(-h // tex.shape[0])
    reps_x = -(-w // tex.shape[1])
    rows = [tex if i % 2 == 0 else tex[::-1] for i in range(reps_y)]
    col = np.concatenate(rows, axis=0)
    cols = [col if j % 2 == 0 else col[:, ::-1] for j in range(reps_x)]
    full = np.concatenate(cols, axis=1)[:h, :w]
    if channels == 1:
        return full @ np.array([0.2126, 0.7152, 0.0722])
    return full


def _true_depth(shape: tuple[int, int], n_frames: int) -> np.ndarray:
    h, w = shape
    y = (np.arange(h) + 0.5)[:, None] / h
    x = (np.arange(w) + 0.5)[None, :] / w
    plane = 0.6 * x + 0.4 * y
    r2 = ((y - 0.45) / 0.18) ** 2 + ((x - 0.55) / 0.18) ** 2
    d = plane + 0.6 * np.exp(-0.5 * r2)
    d = (d - d.min()) / (d.max() - d.min())
    return (d * (n_frames - 1)).astype(np.float64)


def _magnify(img: np.ndarray, mag: float, order: int) -> np.ndarray:
    """Resample ``img`` as seen at magnification ``mag`` about its centre."""
    if mag == 1.0:
        return img
    from scipy import ndimage

    h, w = img.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.array([cy + (yy - cy) / mag, cx + (xx - cx) / mag])
    if img.ndim == 2:
        return ndimage.map_coordinates(img, coords, order=order, mode="mirror")
    return np.stack(
        [
            ndimage.map_coordinates(img[..., c], coords, order=order, mode="mirror")
            for c in range(img.shape[2])
        ],
        axis=-1,
    )


def _to_dtype(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(img), info.min, info.max).astype(dtype)
    return img.astype(dtype)


def synthetic_stack(
    shape: tuple[int, int],
    n_frames: int,
    *,
    dtype: Any = np.uint8,
    noise_dn: float = 0.0,
    breathing: float = 0.0,
    seed: int = 0,
    blur_px_per_frame: float = 1.0,
    channels: int = 3,
) -> SyntheticStack:
    """Make a synthetic focus stack with known all-in-focus image and depth.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of a frame, each at least 8 px.
    n_frames : int
        Number of frames, 1 to 200.
    dtype : numpy dtype, optional
        ``uint8``, ``uint16`` (the texture gains sub-8-bit detail so 16-bit precision
        matters) or a float dtype (0-1 scale).
    noise_dn : float, optional
        Standard deviation of Gaussian noise added to every frame, in DN of ``dtype``
        (fraction of full scale for float).
    breathing : float, optional
        Relative magnification change from the middle frame to either end (0.014 for
        +-1.4 %), 0 to 0.2.
    seed : int, optional
        Seed of the noise (and of the 16-bit detail).
    blur_px_per_frame : float, optional
        Blur sigma in px per frame of defocus beyond half a frame (> 0).
    channels : int, optional
        3 for RGB, 1 for grey (Rec. 709 luminance of the texture).

    Returns
    -------
    SyntheticStack
        Frames, truth image, true depth (frames), magnifications.

    References
    ----------
    .. [1] Pertuz, Puig & Garcia (2013), https://doi.org/10.1016/j.patcog.2012.11.011

    Examples
    --------
    >>> s = synthetic_stack((64, 80), 5, seed=0)
    >>> s.frames.shape, s.frames.dtype, s.truth.shape
    ((5, 64, 80, 3), dtype('uint8'), (64, 80, 3))
    >>> float(s.depth.min()), float(s.depth.max())
    (0.0, 4.0)
    """
    from scipy import ndimage

    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (rows, cols), got {shape!r}")
    h = check_int(shape[0], "shape[0]", 8, 20000)
    w = check_int(shape[1], "shape[1]", 8, 20000)
    n = check_int(n_frames, "n_frames", 1, 200)
    noise = check_range(noise_dn, "noise_dn", 0.0, None)
    breath = check_range(breathing, "breathing", 0.0, 0.2)
    alpha = check_positive(blur_px_per_frame, "blur_px_per_frame")
    nch = check_int(channels, "channels", 1, 3)
    if nch == 2:
        raise ValueError("channels must be 1 (grey) or 3 (RGB), got 2")
    seed = check_int(seed, "seed", 0)
    out_dtype = np.dtype(dtype)
    if out_dtype.kind not in "uif":
        raise TypeError(f"dtype must be an integer or float dtype, got {out_dtype}")
    rng = np.random.default_rng(seed)

    tex = _tiled_texture((h, w), nch)  # 0-255
    if out_dtype.kind in "ui":
        full = float(np.iinfo(out_dtype).max)
    else:
        full = 1.0
    truth_f = tex * (full / 255.0)
    if out_dtype.kind in "ui" and out_dtype.itemsize > 1:
        # detail below one 8-bit step, so that 16-bit precision is visible in the truth
        truth_f = truth_f + rng.uniform(-0.5, 0.5, truth_f.shape) * (full / 255.0)
        truth_f = np.clip(truth_f, 0.0, full)
    truth = _to_dtype(truth_f, out_dtype)
    truth_f = truth.astype(np.float32)
    depth = _true_depth((h, w), n)

    grid = np.array(_SIGMA_GRID + tuple(10.0 * 1.5 ** np.arange(1, 12)))
    sig_max = alpha * max(0.0, n - 1 - 0.5)
    grid = grid[: int(np.searchsorted(grid, sig_max)) + 1]

    def blurred(s: float) -> np.ndarray:
        if s == 0.0:
            return truth_f
        sig = (s, s) if nch == 1 else (s, s, 0.0)
        return ndimage.gaussian_filter(truth_f, sig, mode="mirror")

    cache: dict[int, np.ndarray] = {}
    cache_ok = truth_f.nbytes * len(grid) < 3e9
    mags = 1.0 + breath * (2.0 * np.arange(n) / max(n - 1, 1) - 1.0)
    frames = np.empty((n, *truth.shape), dtype=out_dtype)
    for k in range(n):
        sig = alpha * np.maximum(0.0, np.abs(depth - k) - 0.5)
        pos = np.interp(sig, grid, np.arange(grid.size))
        lo = np.floor(pos).astype(np.intp)
        lo = np.minimum(lo, grid.size - 1)
        t = pos - lo
        img = np.zeros_like(truth_f)
        for i in np.unique(lo):
            sel = lo == i
            if not cache_ok:
                cache.clear()
            for j in (int(i), min(int(i) + 1, grid.size - 1)):
                if j not in cache:
                    cache[j] = blurred(float(grid[j]))
            a = cache[int(i)]
            b = cache[min(int(i) + 1, grid.size - 1)]
            tt = t[sel] if nch == 1 else t[sel][:, None]
            img[sel] = a[sel] * (1.0 - tt) + b[sel] * tt
        img = _magnify(img, float(mags[k]), order=3)
        if noise > 0:
            img = img + rng.normal(0.0, noise, img.shape)
        frames[k] = _to_dtype(img, out_dtype)
    return SyntheticStack(
        frames=frames,
        truth=truth,
        depth=depth.astype(np.float32),
        magnification=mags,
        blur_px_per_frame=alpha,
        noise_dn=noise,
    )
