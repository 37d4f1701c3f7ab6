"""Beam-tilt-induced image displacement (BTID) of a transmission electron microscope.

A beam tilted by the complex angle ``w = wx + i wy`` (rad) displaces the image by the gradient
of the wave aberration function. Up to third order [1]_ [2]_, in the notation of Krivanek
(``C1`` defocus, ``A1`` two-fold astigmatism, ``B2`` axial coma, ``A2`` three-fold
astigmatism, ``C3 = Cs`` spherical aberration; overbar = complex conjugate)::

    D(w) = C1 w + A1 conj(w) + B2 w^2 + 2 conj(B2) |w|^2 + A2 conj(w)^2 + C3 |w|^2 w

With ``C1 = z`` and ``C3 = Cs`` along one axis this is the Leginon formula
``d = z a + Cs a^3`` [3]_. A symmetric pair of tilts ``u + t`` and ``u - t`` (``u`` = beam-tilt
misalignment, zero for a coma-free aligned column) cancels the even terms:
``D(u+t) - D(u-t) = 2 [C1' t + A1' conj(t) + C3 |t|^2 t]``, so the apparent defocus is
``z + Cs |t|^2``: the "Cs t^2 offset".

Conventions used throughout the package
---------------------------------------
* Tilts are complex numbers in mrad (``tilt_mrad``), ``x`` real and ``y`` imaginary, in the
  image frame (``x`` along columns, ``y`` down the rows). Two-element sequences ``(tx, ty)``
  are accepted where a single tilt is expected.
* ``defocus_um`` > 0 is overfocus, < 0 underfocus (Krivanek's ``C1``; SerialEM's sign).
* Aberration coefficients are in um except ``cs_mm``; complex ones (``astigmatism_um``,
  ``coma_um``, ``three_fold_um``) carry their azimuth in their argument.
* Displacements are complex numbers in um at the specimen, converted to pixels with
  :func:`displacement_px`, which returns ``(dy, dx)`` = ``(Im, Re) / pixel`` rotated by the
  image rotation, the same convention as :func:`~nanoro_optics.beamtilt.measure_shift`.

References
----------
.. [1] O. L. Krivanek, N. Dellby and A. R. Lupini, "Towards sub-A electron beams",
   Ultramicroscopy 78, 1-11 (1999), doi:10.1016/S0304-3991(99)00013-3 (aberration notation).
.. [2] F. Zemlin, K. Weiss, P. Schiske, W. Kunath and K.-H. Herrmann, "Coma-free alignment
   of high resolution electron microscopes with the aid of optical diffractograms",
   Ultramicroscopy 3, 49-60 (1978), doi:10.1016/S0304-3991(78)80006-0; A. J. Koster,
   A. van den Bos and K. D. van der Mast, "An autofocus method for a TEM",
   Ultramicroscopy 21, 209-222 (1987), doi:10.1016/0304-3991(87)90146-2 (BTID autofocus).
.. [3] A. Cheng, "Optimizing Autofocus", Leginon documentation.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import (
    as_float_array,
    as_float_array_in,
    check_finite_real,
    check_range,
    return_like,
)

__all__ = [
    "apparent_defocus",
    "btid_displacement",
    "defocus_error_budget",
    "displacement_px",
    "tilt_pair_displacement",
]

_MRAD = 1e-3
_MM_IN_UM = 1e3

#: Magnitudes the model takes (beyond them its products overflow float64 or describe no
#: electron microscope): beam tilts up to 1 rad, aberration coefficients and defocus up to
#: 1 m, Cs up to 10 m, displacements up to 1 m, pixels from 1e-6 nm to 1 m.
TILT_MAX_MRAD = 1e3
ABERRATION_MAX_UM = 1e6
CS_MAX_MM = 1e4
PIXEL_SIZE_RANGE_NM = (1e-6, 1e9)
#: ... measured image shifts up to 1e12 px, tilts of a fit at least 1e-6 mrad
SHIFT_MAX_PX = 1e12
TILT_MIN_MRAD = 1e-6


def as_complex_array(value: Any, name: str, limit: float | None = None) -> np.ndarray:
    """Complex128 array from real or complex numbers; refuses bools, strings, non-finite.

    With ``limit``, also every element of magnitude above it (naming the limit).
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real or complex number, got bool {value!r}")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be a number or array, got {value!r}") from exc
    if arr.dtype.kind not in "iufc":
        raise TypeError(f"{name} must be real or complex numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.complex128, copy=False)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got an array of shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
        raise ValueError(f"{name} must be finite, got {complex(arr[idx])!r} at index {idx}")
    if limit is not None:
        big = np.abs(arr) > limit
        if big.any():
            idx = tuple(int(i) for i in np.argwhere(big)[0]) if arr.ndim else ()
            raise ValueError(
                f"{name} must be at most {limit!r} in magnitude, got {complex(arr[idx])!r}"
                f"{f' at index {idx}' if idx else ''}"
            )
    return arr


def _real(value: Any, name: str, limit: float) -> np.ndarray:
    return as_float_array_in(value, name, -limit, limit)


def as_tilt(value: Any, name: str = "tilt_mrad") -> complex:
    """One tilt as a complex number (mrad) from a complex or an ``(x, y)`` pair."""
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        return complex(as_complex_array(value, name))
    arr = as_float_array(value, name)
    if arr.shape != (2,):
        raise ValueError(
            f"{name} must be a complex number or an (x, y) pair, got shape {arr.shape}"
        )
    return complex(arr[0], arr[1])


def _like(result: np.ndarray, *inputs: Any) -> Any:
    if all(np.ndim(x) == 0 and not isinstance(x, np.ndarray) for x in inputs):
        return complex(result)
    return result


def btid_displacement(
    tilt_mrad: npt.ArrayLike,
    *,
    defocus_um: npt.ArrayLike = 0.0,
    astigmatism_um: npt.ArrayLike = 0.0,
    coma_um: npt.ArrayLike = 0.0,
    three_fold_um: npt.ArrayLike = 0.0,
    cs_mm: npt.ArrayLike = 0.0,
) -> Any:
    """Image displacement (um at the specimen, complex ``x + i y``) for a beam tilt.

    ``D(w) = C1 w + A1 conj(w) + B2 w^2 + 2 conj(B2) |w|^2 + A2 conj(w)^2 + C3 |w|^2 w``
    with ``w`` in rad.

    Parameters
    ----------
    tilt_mrad : complex or array_like of complex
        Beam tilt ``wx + i wy`` (mrad), measured from the coma-free axis.
    defocus_um : float or array_like
        ``C1`` (um), > 0 overfocus.
    astigmatism_um, coma_um, three_fold_um : complex or array_like
        ``A1``, ``B2``, ``A2`` (um).
    cs_mm : float or array_like
        ``C3`` = spherical aberration coefficient (mm), >= 0 for an uncorrected lens.

    Returns
    -------
    complex or numpy.ndarray
        Displacement (um); complex scalar when every input is scalar.

    References
    ----------
    Krivanek et al. 1999, doi:10.1016/S0304-3991(99)00013-3; Koster et al. 1987,
    doi:10.1016/0304-3991(87)90146-2.

    Examples
    --------
    >>> d = btid_displacement(5.0, defocus_um=-1.0, cs_mm=2.7)
    >>> round(d.real * 1e3, 4)  # nm: z a + Cs a^3 = -5 nm + 0.3375 nm
    -4.6625
    """
    w = as_complex_array(tilt_mrad, "tilt_mrad", 2 * TILT_MAX_MRAD) * _MRAD
    c1 = _real(defocus_um, "defocus_um", ABERRATION_MAX_UM)
    a1 = as_complex_array(astigmatism_um, "astigmatism_um", ABERRATION_MAX_UM)
    b2 = as_complex_array(coma_um, "coma_um", ABERRATION_MAX_UM)
    a2 = as_complex_array(three_fold_um, "three_fold_um", ABERRATION_MAX_UM)
    c3 = _real(cs_mm, "cs_mm", CS_MAX_MM) * _MM_IN_UM
    wc = np.conj(w)
    w2 = (w * wc).real
    out = c1 * w + a1 * wc + b2 * w * w + 2.0 * np.conj(b2) * w2 + a2 * wc * wc + c3 * w2 * w
    return _like(out, tilt_mrad, defocus_um, astigmatism_um, coma_um, three_fold_um, cs_mm)


def tilt_pair_displacement(
    tilt_mrad: npt.ArrayLike,
    *,
    misalignment_mrad: npt.ArrayLike = 0.0,
    **aberrations: npt.ArrayLike,
) -> Any:
    """Displacement of the ``+t`` image relative to the ``-t`` image (um, complex).

    ``D(u + t) - D(u - t)``; for ``u = 0`` this is ``2 [C1 t + A1 conj(t) + C3 |t|^2 t]``
    (the even-order terms, coma and three-fold astigmatism, cancel).

    Parameters
    ----------
    tilt_mrad : complex or array_like
        Half the tilt separation ``t`` (mrad): the images are taken at ``u - t`` and ``u + t``.
    misalignment_mrad : complex or array_like
        Beam-tilt misalignment ``u`` from the coma-free axis (mrad).
    **aberrations
        ``defocus_um``, ``astigmatism_um``, ``coma_um``, ``three_fold_um``, ``cs_mm`` as in
        :func:`btid_displacement`.

    Returns
    -------
    complex or numpy.ndarray
        Displacement (um).

    Examples
    --------
    >>> round(tilt_pair_displacement(5.0, defocus_um=-1.0).real * 1e3, 6)  # nm
    -10.0
    """
    t = as_complex_array(tilt_mrad, "tilt_mrad", TILT_MAX_MRAD)
    u = as_complex_array(misalignment_mrad, "misalignment_mrad", TILT_MAX_MRAD)
    out = np.asarray(btid_displacement(u + t, **aberrations)) - np.asarray(
        btid_displacement(u - t, **aberrations)
    )
    return _like(out, tilt_mrad, misalignment_mrad, *aberrations.values())


def displacement_px(
    displacement_um: npt.ArrayLike,
    *,
    pixel_size_nm: float,
    image_rotation_deg: float = 0.0,
) -> np.ndarray:
    """Convert complex displacements (um) to ``(dy, dx)`` pixels, last axis of length 2.

    Parameters
    ----------
    displacement_um : complex or array_like of complex
        Displacement at the specimen (um), ``x + i y``.
    pixel_size_nm : float
        Pixel size at the specimen (nm).
    image_rotation_deg : float, optional
        Rotation of the image relative to the tilt frame (degrees, counter-clockwise in
        ``x + i y``).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., 2)``: ``(dy, dx)`` in pixels.
    """
    d = as_complex_array(displacement_um, "displacement_um", ABERRATION_MAX_UM)
    px = check_range(pixel_size_nm, "pixel_size_nm", *PIXEL_SIZE_RANGE_NM)
    rot = np.exp(1j * math.radians(check_finite_real(image_rotation_deg, "image_rotation_deg")))
    z = d * rot * (1e3 / px)
    return np.stack([z.imag, z.real], axis=-1)


def apparent_defocus(
    defocus_um: npt.ArrayLike, *, tilt_mrad: npt.ArrayLike, cs_mm: npt.ArrayLike
) -> Any:
    """Defocus seen by a symmetric tilt pair, ``z + Cs |t|^2`` (um).

    Parameters
    ----------
    defocus_um : float or array_like
        True defocus (um).
    tilt_mrad : float, complex or array_like
        Half the tilt separation (mrad); only ``|t|`` matters.
    cs_mm : float or array_like
        Spherical aberration (mm).

    Returns
    -------
    float or numpy.ndarray
        Apparent defocus (um).

    Examples
    --------
    >>> round(apparent_defocus(0.0, tilt_mrad=5.0, cs_mm=2.7) * 1e3, 2)  # nm
    67.5
    """
    z = _real(defocus_um, "defocus_um", ABERRATION_MAX_UM)
    t = np.abs(as_complex_array(tilt_mrad, "tilt_mrad", TILT_MAX_MRAD)) * _MRAD
    cs = _real(cs_mm, "cs_mm", CS_MAX_MM) * _MM_IN_UM
    return return_like(z + cs * t * t, defocus_um, np.abs(np.asarray(tilt_mrad)), cs_mm)


def defocus_error_budget(
    shift_error_px: npt.ArrayLike,
    *,
    pixel_size_nm: npt.ArrayLike,
    tilt_difference_mrad: npt.ArrayLike,
) -> Any:
    """Defocus error (um) caused by a shift error: ``error_px * pixel / tilt difference``.

    Parameters
    ----------
    shift_error_px : float or array_like
        Error of the measured shift (px).
    pixel_size_nm : float or array_like
        Pixel size at the specimen (nm).
    tilt_difference_mrad : float or array_like
        Tilt difference between the two images (mrad), ``2 |t|`` for a symmetric pair.

    Returns
    -------
    float or numpy.ndarray
        Defocus error (um).

    Examples
    --------
    >>> round(defocus_error_budget(0.1, pixel_size_nm=0.5, tilt_difference_mrad=10.0), 6)
    0.005
    """
    e = as_float_array(shift_error_px, "shift_error_px")
    p = as_float_array_in(pixel_size_nm, "pixel_size_nm", *PIXEL_SIZE_RANGE_NM)
    dt = as_float_array_in(tilt_difference_mrad, "tilt_difference_mrad", 1e-6, 2 * TILT_MAX_MRAD)
    return return_like(
        e * p * 1e-3 / (dt * _MRAD), shift_error_px, pixel_size_nm, tilt_difference_mrad
    )
