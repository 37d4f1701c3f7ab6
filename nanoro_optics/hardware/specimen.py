"""Synthetic specimens for the simulated camera: a texture on a height map, optionally layered.

A :class:`Specimen` holds what :class:`~nanoro_optics.hardware.SimulatedCamera` images: a
reflectance texture in [0, 1], the height (um) of every pixel, and optionally a flat,
semi-transparent second layer. :meth:`Specimen.synthetic` makes a deterministic one from a
seed: ``1/f`` texture (detail at every scale down to a chosen size, as natural and
biological textures have [1]_) on a tilted plane with Gaussian hills.

References
----------
.. [1] D. J. Field, "Relations between the statistics of natural images and the response
   properties of cortical cells", J. Opt. Soc. Am. A 4, 2379-2394 (1987),
   doi:10.1364/JOSAA.4.002379
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_finite_real, check_int, check_positive, check_range

__all__ = ["Specimen"]


def _band_noise(
    rng: np.random.Generator, shape: tuple[int, int], *, slope: float, lo_px: float
) -> np.ndarray:
    """Random field with a ``1/f^slope`` amplitude spectrum, zero mean, unit std."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f0 = 1.0 / lo_px
    amp = 1.0 / np.power(np.maximum(f, f0), slope)
    field = np.fft.irfft2(np.fft.rfft2(white) * amp, s=shape)
    field -= field.mean()
    return field / field.std()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    g = np.exp(-2.0 * (math.pi * scale_px) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * g, s=shape)
    field -= field.mean()
    return field / field.std()


@dataclass(frozen=True, eq=False)
class Specimen:
    """A synthetic specimen: a texture on a height map, with an optional second layer.

    Attributes
    ----------
    texture : numpy.ndarray
        Reflectance/brightness in [0, 1], ``(rows, cols)`` grey or ``(rows, cols, 3)``.
    height_um : numpy.ndarray
        Height of the surface (um), ``(rows, cols)``.
    layer_texture : numpy.ndarray or None
        Texture of a flat, semi-transparent second layer (same shape as ``texture``).
    layer_alpha : numpy.ndarray or None
        Opacity of the second layer in [0, 1], ``(rows, cols)``.
    layer_height_um : float or None
        Height of the second layer (um).
    """

    texture: np.ndarray
    height_um: np.ndarray
    layer_texture: np.ndarray | None = None
    layer_alpha: np.ndarray | None = None
    layer_height_um: float | None = None

    def __post_init__(self) -> None:
        tex = np.asarray(self.texture, dtype=np.float64)
        h = np.asarray(self.height_um, dtype=np.float64)
        if tex.ndim not in (2, 3) or (tex.ndim == 3 and tex.shape[2] not in (1, 3, 4)):
            raise ValueError(f"texture must be (rows, cols) or (rows, cols, 3), got {tex.shape}")
        if min(tex.shape[:2]) < 8:
            raise ValueError(f"texture must be at least 8 x 8 pixels, got {tex.shape}")
        if h.shape != tex.shape[:2]:
            raise ValueError(f"height_um must have shape {tex.shape[:2]}, got {h.shape}")
        for name, arr in (("texture", tex), ("height_um", h)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite everywhere")
        if tex.min() < 0 or tex.max() > 1:
            raise ValueError(f"texture must lie in [0, 1], got [{tex.min()!r}, {tex.max()!r}]")
        layer = (self.layer_texture, self.layer_alpha, self.layer_height_um)
        if any(x is not None for x in layer) and not all(x is not None for x in layer):
            raise ValueError(
                "layer_texture, layer_alpha and layer_height_um must be given together"
            )
        if self.layer_texture is not None:
            lt = np.asarray(self.layer_texture, dtype=np.float64)
            la = np.asarray(self.layer_alpha, dtype=np.float64)
            if lt.shape != tex.shape:
                raise ValueError(f"layer_texture must have shape {tex.shape}, got {lt.shape}")
            if la.shape != tex.shape[:2]:
                raise ValueError(f"layer_alpha must have shape {tex.shape[:2]}, got {la.shape}")
            if not (np.all(np.isfinite(lt)) and lt.min() >= 0 and lt.max() <= 1):
                raise ValueError("layer_texture must be finite and lie in [0, 1]")
            if not (np.all(np.isfinite(la)) and la.min() >= 0 and la.max() <= 1):
                raise ValueError("layer_alpha must be finite and lie in [0, 1]")
            object.__setattr__(self, "layer_texture", lt)
            object.__setattr__(self, "layer_alpha", la)
            object.__setattr__(
                self, "layer_height_um", check_finite_real(self.layer_height_um, "layer_height_um")
            )
        object.__setattr__(self, "texture", tex)
        object.__setattr__(self, "height_um", h)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of an image of the specimen."""
        return tuple(self.texture.shape)

    @property
    def top_um(self) -> float:
        """Highest point (the second layer included)."""
        top = float(self.height_um.max())
        if self.layer_height_um is not None:
            top = max(top, self.layer_height_um)
        return top

    @property
    def bottom_um(self) -> float:
        """Lowest point (the second layer included)."""
        bottom = float(self.height_um.min())
        if self.layer_height_um is not None:
            bottom = min(bottom, self.layer_height_um)
        return bottom

    @classmethod
    def synthetic(
        cls,
        shape: tuple[int, int] = (256, 256),
        *,
        relief_um: float = 15.0,
        base_um: float = 0.0,
        feature_px: float = 4.0,
        colour: bool = False,
        second_layer: bool = False,
        seed: int = 0,
    ) -> Specimen:
        """Make a textured surface spanning ``[base_um, base_um + relief_um]``.

        The texture is a random field with a ``1/f`` amplitude spectrum (detail at every
        scale down to ``feature_px``), mapped smoothly into [0.1, 0.9]; the height map is a
        tilted plane plus three Gaussian hills, scaled to span exactly ``relief_um``. The
        optional second layer is a fibre network (40% opaque) floating ``relief_um / 5``
        above the top.

        Parameters
        ----------
        shape : (int, int)
            Rows and columns (each >= 8).
        relief_um : float, keyword-only
            Height difference between the lowest and highest point (>= 0).
        base_um : float, keyword-only
            Height of the lowest point.
        feature_px : float, keyword-only
            Smallest feature size of the texture in pixels (from 1 to the image's larger
            side).
        colour : bool, keyword-only
            Make an RGB texture.
        second_layer : bool, keyword-only
            Add the semi-transparent fibre layer.
        seed : int, keyword-only
            Random seed; the same seed gives the same specimen.

        Returns
        -------
        Specimen
        """
        try:
            rows, cols = (check_int(s, "shape", 8) for s in shape)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"shape must be two integers >= 8, got {shape!r}") from exc
        relief = check_positive(relief_um, "relief_um", allow_zero=True)
        base = check_finite_real(base_um, "base_um")
        feat = check_range(feature_px, "feature_px", 1.0, float(max(rows, cols)))
        check_int(seed, "seed", 0)
        rng = np.random.default_rng(seed)
        n_ch = 3 if colour else 1
        tex = np.empty((rows, cols, n_ch))
        common = _band_noise(rng, (rows, cols), slope=1.0, lo_px=feat)
        for c in range(n_ch):
            own = _band_noise(rng, (rows, cols), slope=1.0, lo_px=feat) if colour else 0.0
            field = common + 0.5 * own
            tex[..., c] = 0.5 + 0.4 * np.tanh(0.8 * field / np.std(field))
        texture = tex if colour else tex[..., 0]

        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
        yy /= rows
        xx /= cols
        surface = 0.6 * xx + 0.3 * yy
        for _ in range(3):
            cy, cx = rng.uniform(0.2, 0.8, size=2)
            width = rng.uniform(0.08, 0.2)
            surface += rng.uniform(0.5, 1.0) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2)
            )
        surface -= surface.min()
        height = base + relief * surface / surface.max()

        if not second_layer:
            return cls(texture, height)
        fibres = np.abs(_smooth_noise(rng, (rows, cols), max(rows, cols) / 24.0))
        alpha = 0.4 * np.exp(-((fibres / 0.08) ** 2))
        layer_tex = np.full_like(texture, 0.95)
        return cls(texture, height, layer_tex, alpha, base + 1.2 * relief)
