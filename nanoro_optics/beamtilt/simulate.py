"""Simulated beam-tilted image series for tests, examples and benchmarks.

The specimen is a Gaussian random texture (white noise low-passed by a Gaussian of standard
deviation ``feature_size_px``, the look of amorphous carbon at moderate magnification). Each
image is the texture displaced by the BTID model of :mod:`.model` for its tilt (plus drift),
rendered by a Fourier phase ramp on a larger periodic canvas and then cropped, so the crops
are *not* periodic and the sub-pixel shift is exact for the band-limited texture. Intensity is
``dose * exp(contrast * texture - contrast^2 / 2)`` (mean ``dose``, always positive), with
Poisson shot noise when a dose is given.

What the simulation leaves out: the change of the contrast transfer with tilt (which makes
real pairs differ by more than a shift, see the Leginon notes on coma), magnification and
rotation changes with defocus, and camera MTF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import (
    as_float_array_in,
    check_int,
    check_positive,
    check_range,
)
from .model import (
    PIXEL_SIZE_RANGE_NM,
    SHIFT_MAX_PX,
    TILT_MAX_MRAD,
    as_complex_array,
    btid_displacement,
    displacement_px,
)

#: largest electron dose per pixel simulated (Poisson noise beyond it is negligible)
_DOSE_MAX_E_PER_PX = 1e12

__all__ = ["TiltPair", "TiltSeries", "simulate_tilt_pair", "simulate_tilt_series"]


@dataclass(frozen=True)
class TiltSeries:
    """Images of one field at several beam tilts, with the truth used to make them.

    Attributes
    ----------
    images : tuple of numpy.ndarray
        float64 images in acquisition order.
    tilts_mrad : tuple of complex
        Beam tilt of each image (mrad), misalignment not included.
    shifts_px : numpy.ndarray
        ``(n, 2)`` true ``(dy, dx)`` of each image's content relative to the undisplaced
        specimen (BTID plus drift), in pixels.
    defocus_um, astigmatism_um, coma_um, three_fold_um, cs_mm, misalignment_mrad
        The aberrations used.
    pixel_size_nm : float
        Pixel size (nm).
    image_rotation_deg : float
        Rotation of the image relative to the tilt frame.
    drift_px : tuple of float
        Drift per shot ``(dy, dx)`` (px).
    """

    images: tuple[np.ndarray, ...]
    tilts_mrad: tuple[complex, ...]
    shifts_px: np.ndarray = field(repr=False)
    defocus_um: float
    astigmatism_um: complex
    coma_um: complex
    three_fold_um: complex
    cs_mm: float
    misalignment_mrad: complex
    pixel_size_nm: float
    image_rotation_deg: float
    drift_px: tuple[float, float]

    def shift_between(self, i: int, j: int) -> tuple[float, float]:
        """Return the true shift (px) of image ``j`` relative to image ``i``."""
        d = self.shifts_px[j] - self.shifts_px[i]
        return (float(d[0]), float(d[1]))


@dataclass(frozen=True)
class TiltPair:
    """A ``-t`` / ``+t`` image pair and its truth.

    Attributes
    ----------
    reference, moving : numpy.ndarray
        Images at tilt ``u - t`` and ``u + t``.
    shift_px : tuple of float
        True shift ``(dy, dx)`` of ``moving`` relative to ``reference`` (px).
    tilt_mrad : complex
        Half the tilt separation ``t`` (mrad).
    defocus_um : float
        True defocus.
    apparent_defocus_um : float
        ``defocus_um + Cs |t|^2``, what a pair measurement without Cs correction returns.
    series : TiltSeries
        The underlying series (all the aberrations).
    """

    reference: np.ndarray
    moving: np.ndarray
    shift_px: tuple[float, float]
    tilt_mrad: complex
    defocus_um: float
    apparent_defocus_um: float
    series: TiltSeries = field(repr=False)


def _texture_spectrum(
    canvas: tuple[int, int], feature_size_px: float, rng: np.random.Generator
) -> np.ndarray:
    import scipy.fft as sfft

    noise = rng.standard_normal(canvas)
    spec = sfft.rfft2(noise, workers=-1)
    fy = sfft.fftfreq(canvas[0])[:, None]
    fx = sfft.rfftfreq(canvas[1])[None, :]
    spec *= np.exp(-2.0 * (math.pi * feature_size_px) ** 2 * (fy * fy + fx * fx))
    spec[0, 0] = 0.0
    # unit variance of the texture over the canvas (Parseval on the half spectrum)
    w = np.full(spec.shape[1], 2.0)
    w[0] = 1.0
    if canvas[1] % 2 == 0:
        w[-1] = 1.0
    var = float(np.sum(w * np.abs(spec) ** 2)) / (canvas[0] * canvas[1]) ** 2
    return spec / math.sqrt(var)


def simulate_tilt_series(
    *,
    tilts_mrad: npt.ArrayLike,
    shape: tuple[int, int] = (256, 256),
    pixel_size_nm: float = 0.5,
    defocus_um: float = 0.0,
    astigmatism_um: complex = 0j,
    coma_um: complex = 0j,
    three_fold_um: complex = 0j,
    cs_mm: float = 0.0,
    misalignment_mrad: complex = 0j,
    image_rotation_deg: float = 0.0,
    drift_px: tuple[float, float] = (0.0, 0.0),
    dose_e_per_px: float | None = None,
    contrast: float = 0.3,
    feature_size_px: float = 1.5,
    seed: int | np.random.Generator | None = None,
) -> TiltSeries:
    """Render one textured field at several beam tilts.

    Parameters
    ----------
    tilts_mrad : array_like of complex
        Beam tilt of each image (mrad), in acquisition order.
    shape : tuple of int
        Image shape (rows, columns), each >= 16.
    pixel_size_nm : float
        Pixel size at the specimen (nm).
    defocus_um, astigmatism_um, coma_um, three_fold_um, cs_mm
        Aberrations (see :func:`~nanoro_optics.beamtilt.btid_displacement`).
    misalignment_mrad : complex
        Beam-tilt misalignment added to every tilt (mrad).
    image_rotation_deg : float
        Rotation of the image frame relative to the tilt frame (degrees).
    drift_px : tuple of float
        Specimen drift per shot ``(dy, dx)`` (px): image ``k`` is displaced by ``k * drift``.
    dose_e_per_px : float, optional
        Mean electrons per pixel; Poisson noise is added when given, noise-free otherwise.
    contrast : float
        Standard deviation of the log-intensity texture, in ``(0, 2]``.
    feature_size_px : float
        Gaussian smoothing of the texture (px), in ``[0.5, 50]``.
    seed : int or numpy.random.Generator, optional
        Randomness for the texture and the noise.

    Returns
    -------
    TiltSeries
        Images and truth.

    Examples
    --------
    >>> s = simulate_tilt_series(tilts_mrad=[-5, 5], shape=(64, 64), defocus_um=-1.0, seed=1)
    >>> [round(v, 3) for v in s.shift_between(0, 1)]  # 2 z t / pixel = -20 px along x
    [0.0, -20.0]
    """
    tilts = np.atleast_1d(as_complex_array(tilts_mrad, "tilts_mrad", TILT_MAX_MRAD))
    if tilts.ndim != 1:
        raise ValueError(f"tilts_mrad must be a 1-D sequence, got shape {tilts.shape}")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be (rows, columns), got {shape!r}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (rows, columns), got {shape!r}")
    ny = check_int(shape[0], "shape[0]", 16, 16384)
    nx = check_int(shape[1], "shape[1]", 16, 16384)
    px = check_range(pixel_size_nm, "pixel_size_nm", *PIXEL_SIZE_RANGE_NM)
    drift = as_float_array_in(drift_px, "drift_px", -SHIFT_MAX_PX, SHIFT_MAX_PX)
    if drift.shape != (2,):
        raise ValueError(f"drift_px must be (dy, dx), got shape {drift.shape}")
    c = check_range(contrast, "contrast", 0.0, 2.0, lo_inclusive=False)
    feat = check_range(feature_size_px, "feature_size_px", 0.5, 50.0)
    dose = None if dose_e_per_px is None else check_positive(dose_e_per_px, "dose_e_per_px")
    if dose is not None and dose > _DOSE_MAX_E_PER_PX:
        raise ValueError(f"dose_e_per_px must be <= {_DOSE_MAX_E_PER_PX!r}, got {dose!r}")
    if seed is not None and not isinstance(seed, np.random.Generator):
        seed = check_int(seed, "seed", 0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rot = check_range(image_rotation_deg, "image_rotation_deg", -360.0, 360.0)
    u = complex(as_complex_array(misalignment_mrad, "misalignment_mrad", TILT_MAX_MRAD))

    d_um = np.asarray(
        btid_displacement(
            tilts + u,
            defocus_um=defocus_um,
            astigmatism_um=astigmatism_um,
            coma_um=coma_um,
            three_fold_um=three_fold_um,
            cs_mm=cs_mm,
        )
    )
    shifts = displacement_px(d_um, pixel_size_nm=px, image_rotation_deg=rot)
    shifts = shifts + np.arange(len(tilts))[:, None] * drift[None, :]
    reach = float(np.max(np.abs(shifts))) if shifts.size else 0.0
    if reach > 4 * max(ny, nx):
        raise ValueError(
            f"the simulated displacement reaches {reach:.0f} px, more than 4 image sides "
            f"({4 * max(ny, nx)} px); reduce tilts_mrad, misalignment_mrad, defocus_um, "
            f"the other aberrations (astigmatism_um, coma_um, three_fold_um, cs_mm) or "
            f"drift_px, or raise pixel_size_nm or shape"
        )

    import scipy.fft as sfft

    margin = math.ceil(reach + 4.0 * feat) + 8
    canvas = (sfft.next_fast_len(ny + 2 * margin), sfft.next_fast_len(nx + 2 * margin))
    spec = _texture_spectrum(canvas, feat, rng)
    fy = sfft.fftfreq(canvas[0])[:, None]
    fx = sfft.rfftfreq(canvas[1])[None, :]
    oy = (canvas[0] - ny) // 2
    ox = (canvas[1] - nx) // 2
    images = []
    for dy, dx in shifts:
        ramp = np.exp(-2j * math.pi * (fy * dy + fx * dx))
        tex = sfft.irfft2(spec * ramp, s=canvas, workers=-1)[oy : oy + ny, ox : ox + nx]
        img = np.exp(c * tex - 0.5 * c * c)
        if dose is not None:
            img = rng.poisson(dose * img).astype(np.float64)
        images.append(img)
    return TiltSeries(
        images=tuple(images),
        tilts_mrad=tuple(complex(t) for t in tilts),
        shifts_px=shifts,
        defocus_um=float(defocus_um),
        astigmatism_um=complex(astigmatism_um),
        coma_um=complex(coma_um),
        three_fold_um=complex(three_fold_um),
        cs_mm=float(cs_mm),
        misalignment_mrad=u,
        pixel_size_nm=px,
        image_rotation_deg=rot,
        drift_px=(float(drift[0]), float(drift[1])),
    )


def simulate_tilt_pair(*, tilt_mrad: Any, **options: Any) -> TiltPair:
    """Render a ``-t`` / ``+t`` pair (see :func:`simulate_tilt_series` for the options).

    Parameters
    ----------
    tilt_mrad : complex or (x, y)
        Half the tilt separation ``t`` (mrad).
    **options
        Keyword options of :func:`simulate_tilt_series` except ``tilts_mrad``.

    Returns
    -------
    TiltPair
        ``reference`` at ``-t``, ``moving`` at ``+t`` and the true shift and defocus.

    Examples
    --------
    >>> p = simulate_tilt_pair(tilt_mrad=5.0, shape=(64, 64), defocus_um=-1.0, cs_mm=2.7)
    >>> round(p.apparent_defocus_um, 4)
    -0.9325
    """
    from .model import as_tilt

    if "tilts_mrad" in options:
        raise TypeError("simulate_tilt_pair takes tilt_mrad (half the separation), not tilts_mrad")
    t = as_tilt(tilt_mrad)
    if abs(t) > TILT_MAX_MRAD:
        raise ValueError(f"tilt_mrad must be at most {TILT_MAX_MRAD!r} in magnitude, got {t!r}")
    series = simulate_tilt_series(tilts_mrad=[-t, t], **options)
    cs_um = series.cs_mm * 1e3
    return TiltPair(
        reference=series.images[0],
        moving=series.images[1],
        shift_px=series.shift_between(0, 1),
        tilt_mrad=t,
        defocus_um=series.defocus_um,
        apparent_defocus_um=series.defocus_um + cs_um * abs(t * 1e-3) ** 2,
        series=series,
    )
