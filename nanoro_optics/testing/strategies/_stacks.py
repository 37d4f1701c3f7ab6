"""Strategies for synthetic focus stacks with their ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ._common import (
    _DEFAULT,
    _as_strategy,
    _floats,
)

__all__ = ["FocusStackExample", "focus_stacks"]


@dataclass(frozen=True, eq=False)
class FocusStackExample:
    """A small synthetic focus stack with its ground truth (see :func:`focus_stacks`).

    Attributes
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` grey or ``(N, H, W, C)`` colour frames, frame 0 first.
    truth : numpy.ndarray
        The all-in-focus image ``(H, W[, C])``, same dtype as ``frames``.
    depth : numpy.ndarray
        float64 ``(H, W)``: the frame index (fractional) at which each pixel is in focus,
        ``0 <= depth <= N - 1``.
    blur_px_per_frame : float
        Growth of the blur sigma (px) per frame of defocus beyond half a frame.
    seed : int
        Seed of the texture and depth map.
    """

    frames: np.ndarray
    truth: np.ndarray
    depth: np.ndarray
    blur_px_per_frame: float
    seed: int

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])

    def sharp_mask(self, k: int) -> np.ndarray:
        """Pixels within half a frame of focus in frame ``k``: there ``frames[k] == truth``."""
        return np.abs(self.depth - k) <= 0.5

    def depth_um(self, *, spacing_um: float, start_um: float = 0.0) -> np.ndarray:
        """Return the true depth in um for frames ``spacing_um`` apart, frame 0 at ``start_um``."""
        return start_um + self.depth * spacing_um


#: Blur sigmas (px) rendered exactly; sigmas in between are interpolated linearly.
_SIGMA_GRID = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])


def _render_stack(
    shape: tuple[int, int],
    n_frames: int,
    dtype: np.dtype,
    channels: int,
    blur_px_per_frame: float,
    seed: int,
) -> FocusStackExample:
    """White-noise texture on a random tilted plane plus a bump, blurred per pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = shape
    full = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
    tex = rng.random((h, w) if channels == 1 else (h, w, channels)) * full
    truth = (np.rint(tex) if dtype.kind in "ui" else tex).astype(dtype)
    truth_f = truth.astype(np.float64)

    y = (np.arange(h) + 0.5)[:, None] / h
    x = (np.arange(w) + 0.5)[None, :] / w
    ax, ay, amp = rng.uniform(-1.0, 1.0, 3)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    d = ax * x + ay * y + amp * np.exp(-0.5 * (((y - cy) ** 2 + (x - cx) ** 2) / 0.04))
    span = float(d.max() - d.min())
    d = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    depth = d * (n_frames - 1)

    sig_max = blur_px_per_frame * max(0.0, n_frames - 1.5)
    grid = _SIGMA_GRID[: int(np.searchsorted(_SIGMA_GRID, sig_max)) + 1]
    blurred = [
        truth_f
        if s == 0.0
        else ndimage.gaussian_filter(
            truth_f, (s, s) if channels == 1 else (s, s, 0.0), mode="mirror", truncate=3.0
        )
        for s in grid
    ]
    stacked = np.stack(blurred)
    yy, xx = np.indices((h, w))
    frames = np.empty((n_frames, *truth.shape), dtype=dtype)
    for k in range(n_frames):
        sig = blur_px_per_frame * np.maximum(0.0, np.abs(depth - k) - 0.5)
        pos = np.interp(sig, grid, np.arange(grid.size, dtype=np.float64))
        i0 = np.minimum(np.floor(pos).astype(np.intp), grid.size - 1)
        i1 = np.minimum(i0 + 1, grid.size - 1)
        t = pos - i0
        if channels > 1:
            t = t[..., None]
        img = stacked[i0, yy, xx] * (1.0 - t) + stacked[i1, yy, xx] * t
        frames[k] = np.rint(img) if dtype.kind in "ui" else img
    return FocusStackExample(frames, truth, depth, float(blur_px_per_frame), int(seed))


def _check_shape(shape: Any) -> None:
    ok = isinstance(shape, tuple) and len(shape) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 4 for v in shape):
        raise ValueError(f"shape must be a tuple of two ints >= 4, got {shape!r}")


def _check_n_frames(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n!r}")


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a numpy dtype, got {dtype!r}") from exc
    if dt.kind not in "uif":
        raise ValueError(f"dtype must be an integer or float dtype, got {dt}")
    return dt


def _check_channels(channels: Any) -> None:
    if channels not in (1, 3, 4) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}")


def _check_blur(blur: Any) -> None:
    if not (isinstance(blur, (int, float)) and math.isfinite(blur) and blur > 0):
        raise ValueError(f"blur_px_per_frame must be finite and > 0, got {blur!r}")


def _eager(value: Any, check: Any) -> None:
    """Validate an option given as a fixed value now, not at the first draw."""
    if value is not _DEFAULT and not isinstance(value, SearchStrategy):
        check(value)


@st.composite
def _focus_stacks(
    draw: st.DrawFn,
    shape: SearchStrategy[tuple[int, int]],
    dtype: SearchStrategy[Any],
    n_frames: SearchStrategy[int],
    channels: SearchStrategy[int],
    blur_px_per_frame: SearchStrategy[float],
) -> FocusStackExample:
    shp = draw(shape)
    _check_shape(shp)
    h, w = shp
    n = draw(n_frames)
    dt = draw(dtype)
    ch = draw(channels)
    blur = draw(blur_px_per_frame)
    seed = draw(st.integers(0, 2**32 - 1))
    _check_shape((h, w))
    _check_n_frames(n)
    dt = _check_dtype(dt)
    _check_channels(ch)
    _check_blur(blur)
    return _render_stack((h, w), n, dt, ch, blur, seed)


def focus_stacks(
    *,
    shape: Any = _DEFAULT,
    dtype: Any = _DEFAULT,
    n_frames: Any = _DEFAULT,
    channels: Any = _DEFAULT,
    blur_px_per_frame: Any = _DEFAULT,
) -> SearchStrategy[FocusStackExample]:
    """Draw small synthetic focus stacks with a known depth map and all-in-focus image.

    A white-noise texture (the truth) lies on a random tilted plane plus a Gaussian bump
    spanning the whole stack (``0 <= depth <= n_frames - 1``, in frame units). Frame ``k``
    shows each pixel blurred by a Gaussian of standard deviation
    ``blur_px_per_frame * max(0, |depth - k| - 0.5)`` px (sigma, not FWHM), rendered at a
    grid of sigmas and interpolated linearly, the defocus model of synthetic
    shape-from-focus benchmarks [1]_. A pixel is *exactly* the truth in every frame within
    half a frame of its depth (:meth:`FocusStackExample.sharp_mask`). A stack costs about
    a millisecond, so properties can draw thousands.

    (nanoro_optics.fusion.synthetic_stack makes the same kind of stack from a photographic
    texture; it costs tens of milliseconds a stack, too slow for thousands of examples.)

    Parameters
    ----------
    shape : (int, int) or strategy, keyword-only
        Frame ``(rows, cols)``; default 16 to 48 px each.
    dtype : dtype or strategy, keyword-only
        Default: uint8, uint16, float32 or float64 (floats on a 0-1 scale).
    n_frames : int or strategy, keyword-only
        Default 1 to 8; ``n_frames=1`` for single-frame stacks.
    channels : int or strategy, keyword-only
        1 gives ``(N, H, W)`` frames, 3 or 4 gives ``(N, H, W, C)``; default 1 or 3.
    blur_px_per_frame : float or strategy, keyword-only
        Default 0.5 to 2.0.

    Returns
    -------
    SearchStrategy[FocusStackExample]

    References
    ----------
    .. [1] S. Pertuz, D. Puig and M. A. Garcia, "Analysis of focus measure operators for
       shape-from-focus", Pattern Recognit. 46(5), 1415-1432 (2013),
       https://doi.org/10.1016/j.patcog.2012.11.011

    Examples
    --------
    >>> from hypothesis import find
    >>> ex = find(focus_stacks(n_frames=3, shape=(16, 20), channels=1), lambda ex: True)
    >>> ex.frames.shape, ex.truth.shape
    ((3, 16, 20), (16, 20))
    """
    for value, check in (
        (shape, _check_shape),
        (dtype, _check_dtype),
        (n_frames, _check_n_frames),
        (channels, _check_channels),
        (blur_px_per_frame, _check_blur),
    ):
        _eager(value, check)
    return _focus_stacks(
        _as_strategy(shape, st.tuples(st.integers(16, 48), st.integers(16, 48))),
        _as_strategy(dtype, st.sampled_from(("uint8", "uint16", "float32", "float64"))),
        # sampled_from, not integers: alongside the shape and seed draws, hypothesis gives
        # st.integers(1, 8) its lower bound in most examples (60 % single-frame stacks)
        _as_strategy(n_frames, st.sampled_from(range(1, 9))),
        _as_strategy(channels, st.sampled_from((1, 3))),
        _as_strategy(blur_px_per_frame, _floats(0.5, 2.0)),
    )
