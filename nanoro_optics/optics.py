"""Closed-form microscope optics: depth of field, resolution, Gaussian beams and light sheets.

Every function broadcasts like a ufunc: scalars in give a Python float out, arrays in give an
array of the broadcast shape out. All lengths are in micrometres. ``na`` is the numerical
aperture ``n sin(alpha)`` of the objective, ``n`` the refractive index of the medium between
the specimen and the front lens, and ``wavelength_um`` is always the *vacuum* wavelength
(``lambda0``); the wavelength in the medium is ``lambda0 / n``.

Several quantities go by the same everyday name with different definitions. Each has its own
function here, and each docstring says which definition it uses:

=============================== ===============================================================
function                        definition
=============================== ===============================================================
:func:`depth_of_field`          total depth of field, wave-optical + geometric (detector) term
:func:`wave_optical_depth`      wave-optical term only, ``lambda0 n / NA^2``
:func:`berek_depth_of_field`    Berek's visual depth of field
:func:`inoue_axial_depth`       Inoue's axial (Rayleigh-type) depth, ``2 lambda0 n / NA^2``
:func:`axial_resolution`        non-paraxial first zero of the on-axis intensity
:func:`axial_fwhm`              FWHM of the on-axis intensity, widefield or confocal
:func:`lateral_resolution`      Rayleigh criterion, ``0.61 lambda0 / NA``
:func:`beam_waist`              Gaussian-beam 1/e^2 intensity radius at the waist
:func:`rayleigh_range`          one-sided Rayleigh range with the medium's index
:func:`confocal_parameter`      two-sided Rayleigh range, ``2 zR``
=============================== ===============================================================

References
----------
.. [1] Nikon MicroscopyU, "Depth of Field and Depth of Focus",
   https://www.microscopyu.com/microscopy-basics/depth-of-field-and-depth-of-focus
.. [2] S. Inoue and K. R. Spring, *Video Microscopy*, 2nd ed., Plenum (1997), ch. 2.
.. [3] C. J. R. Sheppard, "Depth of field in optical microscopy", J. Microsc. 149, 73-75
   (1988), doi:10.1111/j.1365-2818.1988.tb04563.x
.. [4] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.
.. [5] B. E. A. Saleh and M. C. Teich, *Fundamentals of Photonics*, Wiley (1991), ch. 3.
.. [6] S. F. Gibson and F. Lanni / A. Egner and S. W. Hell, "Aberrations in confocal and
   multi-photon fluorescence microscopy induced by refractive index mismatch", in *Handbook
   of Biological Confocal Microscopy*, 3rd ed., Springer (2006), ch. 20,
   doi:10.1007/978-0-387-45524-2_20
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from ._validation import (
    INDEX_RANGE,
    LENGTH_MAX_UM,
    NA_MIN,
    WAVELENGTH_RANGE_UM,
    as_float_array_in,
    check_choice,
    check_range,
    return_like,
)

__all__ = [
    "DEFAULT_DETECTOR_UM",
    "DEFAULT_WAVELENGTH_UM",
    "OBJECTIVES",
    "OIL_INDEX",
    "Objective",
    "axial_fwhm",
    "axial_resolution",
    "beam_radius",
    "beam_waist",
    "berek_depth_of_field",
    "confocal_parameter",
    "defocus_blur_radius",
    "depth_of_field",
    "effective_na",
    "focal_shift_ratio",
    "gouy_phase",
    "inoue_axial_depth",
    "lateral_resolution",
    "light_sheet_field_of_view",
    "light_sheet_thickness",
    "rayleigh_range",
    "wave_optical_depth",
]

#: Vacuum wavelength (um) that reproduces the depth of field of :data:`OBJECTIVES`.
DEFAULT_WAVELENGTH_UM = 0.70
#: Smallest distance the detector resolves in the image plane (um), as in :data:`OBJECTIVES`.
DEFAULT_DETECTOR_UM = 1.5
#: Refractive index of immersion oil used for :data:`OBJECTIVES`.
OIL_INDEX = 1.51

# Axial FWHM factors: the on-axis intensity of a uniform pupil is sinc^2 (widefield) or
# sinc^4 (ideal confocal, equal wavelengths) of u = z (n - sqrt(n^2 - NA^2)) / lambda0,
# with its first zero at u = 1. The half-maximum points are at u = 0.44295 and 0.31890.
_FWHM_WIDEFIELD = 0.885893
_FWHM_CONFOCAL = 0.637801
#: Berek's visual accommodation term (um), see [1]_ of :func:`berek_depth_of_field`.
_BEREK_ACCOMMODATION_UM = 340.0


#: magnifications (lateral, or total visual) the formulas take
_MAGNIFICATION_RANGE = (1e-3, 1e6)


def _na(na: npt.ArrayLike) -> np.ndarray:
    return as_float_array_in(na, "na", NA_MIN, INDEX_RANGE[1], "numerical aperture")


def _index(n: npt.ArrayLike, name: str) -> np.ndarray:
    return as_float_array_in(n, name, *INDEX_RANGE, "refractive index")


def _wavelength(wavelength_um: npt.ArrayLike) -> np.ndarray:
    return as_float_array_in(
        wavelength_um, "wavelength_um", *WAVELENGTH_RANGE_UM, "vacuum wavelength in um"
    )


def _positive_in(value: npt.ArrayLike, name: str, lo: float, hi: float) -> np.ndarray:
    return as_float_array_in(value, name, lo, hi)


def _na_and_index(na: npt.ArrayLike, n: npt.ArrayLike, n_name: str = "n") -> tuple[Any, Any]:
    na_arr = _na(na)
    n_arr = _index(n, n_name)
    bad = na_arr > n_arr
    if np.any(bad):
        na_b, n_b = np.broadcast_arrays(na_arr, n_arr)
        idx = np.argwhere(np.broadcast_to(bad, na_b.shape))[0] if na_b.ndim else ()
        raise ValueError(
            f"na must not be greater than the refractive index {n_name} "
            f"(NA = n sin(alpha) <= n); got na={float(na_b[tuple(idx)])!r} > "
            f"{n_name}={float(n_b[tuple(idx)])!r}"
        )
    return na_arr, n_arr


def wave_optical_depth(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Wave-optical depth of field, ``lambda0 n / NA^2`` (um).

    The diffraction term of the total depth of field [1]_; total width (from one limit to
    the other), not one-sided.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium between specimen and front lens (1.0 for air).

    Returns
    -------
    float or numpy.ndarray
        Depth in um.

    References
    ----------
    .. [1] Nikon MicroscopyU, "Depth of Field and Depth of Focus".

    Examples
    --------
    >>> round(wave_optical_depth(0.25, wavelength_um=0.7), 3)
    11.2
    """
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    return return_like(lam * n_arr / na_arr**2, na, wavelength_um, n)


def depth_of_field(
    na: npt.ArrayLike,
    *,
    wavelength_um: npt.ArrayLike,
    n: npt.ArrayLike = 1.0,
    magnification: npt.ArrayLike | None = None,
    detector_um: npt.ArrayLike | None = None,
) -> Any:
    """Total depth of field (um): ``lambda0 n / NA^2 + n e / (M NA)``.

    The sum of the wave-optical term and the geometric term set by the detector's smallest
    resolvable distance ``e`` in the image plane at lateral magnification ``M`` [1]_. This is
    the definition behind the objective table of Urwin (2021), :data:`OBJECTIVES`
    (reproduced with ``wavelength_um=0.70``, ``detector_um=1.5`` and ``n=1.51`` for oil).
    It is a *total* depth: the distance a specimen point can travel from one limit to the
    other and remain in focus. Without
    ``magnification`` and ``detector_um`` only the wave-optical term is returned.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium between specimen and front lens (1.0 for air).
    magnification : array_like, optional
        Lateral magnification ``M`` of the objective (> 0). Give it with ``detector_um``.
    detector_um : array_like, optional
        Smallest distance ``e`` the detector resolves in the image plane, in um (> 0),
        e.g. about the pixel pitch of a camera.

    Returns
    -------
    float or numpy.ndarray
        Total depth of field in um.

    Raises
    ------
    ValueError
        For non-positive or non-finite values, ``na > n``, or only one of
        ``magnification`` and ``detector_um``.

    References
    ----------
    .. [1] Nikon MicroscopyU, "Depth of Field and Depth of Focus",
       https://www.microscopyu.com/microscopy-basics/depth-of-field-and-depth-of-focus

    Examples
    --------
    >>> round(depth_of_field(0.25, wavelength_um=0.7, magnification=10, detector_um=1.5), 2)
    11.8
    """
    if (magnification is None) != (detector_um is None):
        raise ValueError(
            "magnification and detector_um go together: got "
            f"magnification={magnification!r}, detector_um={detector_um!r}"
        )
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    total = lam * n_arr / na_arr**2
    if magnification is not None and detector_um is not None:
        mag = _positive_in(magnification, "magnification", *_MAGNIFICATION_RANGE)
        e = _positive_in(detector_um, "detector_um", 1e-6, LENGTH_MAX_UM)
        total = total + n_arr * e / (mag * na_arr)
        return return_like(total, na, wavelength_um, n, magnification, detector_um)
    return return_like(total, na, wavelength_um, n)


def berek_depth_of_field(
    na: npt.ArrayLike,
    *,
    wavelength_um: npt.ArrayLike,
    total_magnification: npt.ArrayLike,
    n: npt.ArrayLike = 1.0,
) -> Any:
    """Berek's visual depth of field (um): ``n (lambda0 / (2 NA^2) + 340 um / (NA M))``.

    The depth an observer perceives through the eyepieces, including the eye's
    accommodation [1]_; ``total_magnification`` is the visual magnification (objective x
    eyepiece). Total width, not one-sided.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    total_magnification : array_like
        Total visual magnification (> 0).
    n : array_like, optional
        Refractive index of the object-side medium.

    Returns
    -------
    float or numpy.ndarray
        Depth in um.

    References
    ----------
    .. [1] M. Berek, "Grundlagen der Tiefenwahrnehmung im Mikroskop", Marburg Sitzungs
       Berichte 62, 189-223 (1927); as given in Nikon MicroscopyU, "Depth of Field and
       Depth of Focus".
    """
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    mag = _positive_in(total_magnification, "total_magnification", *_MAGNIFICATION_RANGE)
    out = n_arr * (lam / (2 * na_arr**2) + _BEREK_ACCOMMODATION_UM / (na_arr * mag))
    return return_like(out, na, wavelength_um, total_magnification, n)


def inoue_axial_depth(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Inoue's axial (Rayleigh-type) depth, ``2 lambda0 n / NA^2`` (um).

    The paraxial distance from focus to the first zero of the on-axis intensity (one-sided),
    i.e. the small-NA limit of :func:`axial_resolution` [1]_.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the object-side medium.

    Returns
    -------
    float or numpy.ndarray
        Depth in um.

    References
    ----------
    .. [1] S. Inoue and K. R. Spring, *Video Microscopy*, 2nd ed., Plenum (1997), ch. 2.
    """
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    return return_like(2.0 * lam * n_arr / na_arr**2, na, wavelength_um, n)


def axial_resolution(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Non-paraxial axial resolution, ``lambda0 / (n - sqrt(n^2 - NA^2))`` (um).

    The distance from focus to the first zero of the on-axis intensity of a uniformly
    filled pupil in a medium of index ``n`` [1]_. For small NA it tends to
    ``2 n lambda0 / NA^2`` (:func:`inoue_axial_depth`). Unlike :func:`lateral_resolution`
    it depends on ``n``: a 0.95 NA water objective resolves laterally as well as a 0.95 NA
    air objective but axially much worse.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium the light is focused in.

    Returns
    -------
    float or numpy.ndarray
        Axial resolution in um.

    References
    ----------
    .. [1] C. J. R. Sheppard, "Depth of field in optical microscopy", J. Microsc. 149,
       73-75 (1988), doi:10.1111/j.1365-2818.1988.tb04563.x

    Examples
    --------
    >>> round(axial_resolution(0.95, wavelength_um=0.5), 3)
    0.727
    """
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    # n - sqrt(n^2 - NA^2) written as NA^2 / (n + sqrt(n^2 - NA^2)): no cancellation at small NA
    delta = na_arr**2 / (n_arr + np.sqrt(n_arr**2 - na_arr**2))
    return return_like(lam / delta, na, wavelength_um, n)


def axial_fwhm(
    na: npt.ArrayLike,
    *,
    wavelength_um: npt.ArrayLike,
    n: npt.ArrayLike = 1.0,
    mode: str = "widefield",
) -> Any:
    """Full width at half maximum of the on-axis intensity (um), widefield or confocal.

    ``0.8859 * axial_resolution`` for widefield (sinc^2 profile) and ``0.6378 *
    axial_resolution`` for an ideal point-detector confocal with equal excitation and
    emission wavelengths (sinc^4), both from the non-paraxial scalar on-axis intensity of a
    uniform pupil [1]_. Two-sided (the whole width).

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na <= n``.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium the light is focused in.
    mode : {"widefield", "confocal"}, optional
        Imaging mode.

    Returns
    -------
    float or numpy.ndarray
        FWHM in um.

    References
    ----------
    .. [1] C. J. R. Sheppard, "Depth of field in optical microscopy", J. Microsc. 149,
       73-75 (1988), doi:10.1111/j.1365-2818.1988.tb04563.x
    """
    check_choice(mode, "mode", ("widefield", "confocal"))
    factor = _FWHM_WIDEFIELD if mode == "widefield" else _FWHM_CONFOCAL
    res = axial_resolution(na, wavelength_um=wavelength_um, n=n)
    return return_like(np.asarray(factor * np.asarray(res)), na, wavelength_um, n)


def lateral_resolution(na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike) -> Any:
    """Rayleigh lateral resolution, ``0.61 lambda0 / NA`` (um).

    The radius of the first dark ring of the Airy pattern. It has no refractive index in
    it: the NA already carries ``n``.

    Parameters
    ----------
    na : array_like
        Numerical aperture (> 0).
    wavelength_um : array_like
        Vacuum wavelength in um.

    Returns
    -------
    float or numpy.ndarray
        Resolution in um.

    References
    ----------
    .. [1] Lord Rayleigh, "Investigations in optics, with special reference to the
       spectroscope", Phil. Mag. 8, 261-274 (1879), doi:10.1080/14786447908639684

    Examples
    --------
    >>> round(lateral_resolution(1.4, wavelength_um=0.5), 4)
    0.2179
    """
    na_arr = _na(na)
    lam = _wavelength(wavelength_um)
    return return_like(0.61 * lam / na_arr, na, wavelength_um)


def effective_na(na: npt.ArrayLike, *, n_immersion: npt.ArrayLike, n_sample: npt.ArrayLike) -> Any:
    """NA that reaches a sample of index ``n_sample``: ``min(NA, n_sample)`` if ``n_i > n_s``.

    Rays steeper than the critical angle are totally reflected at the interface into a
    lower-index sample, so the sample sees at most ``NA = n_sample``. When the
    sample's index is equal or higher the NA is unchanged.

    Parameters
    ----------
    na : array_like
        Objective NA, ``0 < na <= n_immersion``.
    n_immersion : array_like
        Refractive index of the immersion medium.
    n_sample : array_like
        Refractive index of the sample (> 0).

    Returns
    -------
    float or numpy.ndarray
        Effective NA.

    References
    ----------
    .. [1] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.,
       Springer (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
    """
    na_arr, n_i = _na_and_index(na, n_immersion, "n_immersion")
    n_s = _index(n_sample, "n_sample")
    out = np.where(n_i > n_s, np.minimum(na_arr, n_s), na_arr)
    return return_like(out, na, n_immersion, n_sample)


def defocus_blur_radius(defocus_um: npt.ArrayLike, *, na: npt.ArrayLike, n: npt.ArrayLike) -> Any:
    """Radius of a defocused point's geometric blur disc: ``|dz| tan(asin(NA / n))`` (um).

    In geometric optics the cone of light an objective of numerical aperture ``NA`` takes
    from a point in a medium of index ``n`` has the half-angle ``alpha = asin(NA / n)``;
    a distance ``dz`` from focus (along the axis, in that medium) it crosses the focal
    plane in a disc of radius ``|dz| tan(alpha)`` [1]_, in the specimen's units (divide by
    the pixel size at the specimen for pixels). The pillbox of that radius is the defocus
    PSF of ray optics, which the halo correction's PSF family starts from
    (:mod:`nanoro_optics.fusion.halo`); diffraction rounds its edge and dominates within
    about a depth of field of focus. Radius, not diameter; nominal (not index-mismatch
    corrected) defocus.

    Parameters
    ----------
    defocus_um : array_like
        Distance from focus (um, either sign), finite, ``|dz| <= 1e6``.
    na : array_like
        Numerical aperture, ``0 < na < n``.
    n : array_like
        Refractive index of the medium the defocus is measured in.

    Returns
    -------
    float or numpy.ndarray
        Radius of the blur disc (um, >= 0).

    Raises
    ------
    ValueError
        A defocus that is not finite or too large, ``na >= n``.

    References
    ----------
    .. [1] M. Born and E. Wolf, *Principles of Optics*, 7th ed., Cambridge University Press
       (1999), sec. 8.8 (the light distribution near focus and its geometrical shadow).
       doi:10.1017/CBO9781139644181

    Examples
    --------
    >>> round(float(defocus_blur_radius(10.0, na=0.5, n=1.0)), 4)  # 10 tan(30 deg)
    5.7735
    """
    na_arr, n_arr = _na_and_index(na, n)
    if np.any(na_arr >= n_arr):
        raise ValueError(
            f"na must be smaller than n for a blur disc of finite radius (NA = n gives a cone "
            f"of 90 degrees); got na={na!r}, n={n!r}"
        )
    dz = as_float_array_in(defocus_um, "defocus_um", -1e6, 1e6)
    out = np.abs(dz) * np.tan(np.arcsin(na_arr / n_arr))
    return return_like(out, defocus_um, na, n)


def focal_shift_ratio(
    na: npt.ArrayLike, *, n_immersion: npt.ArrayLike, n_sample: npt.ArrayLike
) -> Any:
    """Near-interface geometric focal-shift ratio ``AFP / NFP`` (dimensionless).

    ``(n1 - sqrt(n1^2 - NA^2)) / (n2 - sqrt(n2^2 - NA^2))`` with ``n1 = n_immersion`` and
    ``n2 = n_sample``: the ratio of the axial-resolution denominators in the two media
    (D. P. Hoffman, "Oh no, I squished my OTF!"), also the "critical" scaling factor of
    Loginov et al. that holds near the interface. Below 1 the focus lands shallower than
    nominal (an oil objective in water), above 1 deeper (an air objective in water or ice).

    Parameters
    ----------
    na : array_like
        Objective NA, ``0 < na <= n_immersion`` and ``na <= n_sample``.
    n_immersion : array_like
        Refractive index the objective is designed for.
    n_sample : array_like
        Refractive index of the sample.

    Returns
    -------
    float or numpy.ndarray
        The ratio of actual to nominal focal depth.

    Raises
    ------
    ValueError
        If ``na > n_sample``: rays beyond the critical angle do not enter the sample and
        the ratio is undefined; use :func:`effective_na` first.

    References
    ----------
    .. [1] I. N. Loginov et al., "Depth-dependent scaling of axial distances in light
       microscopy", Optica 11, 553-568 (2024), doi:10.1364/OPTICA.520595
    """
    na_arr, n1 = _na_and_index(na, n_immersion, "n_immersion")
    _, n2 = _na_and_index(na, n_sample, "n_sample")
    d1 = na_arr**2 / (n1 + np.sqrt(n1**2 - na_arr**2))
    d2 = na_arr**2 / (n2 + np.sqrt(n2**2 - na_arr**2))
    return return_like(d1 / d2, na, n_immersion, n_sample)


def beam_waist(na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike) -> Any:
    """Gaussian-beam waist radius ``w0 = lambda0 / (pi NA)`` (um, 1/e^2 intensity radius).

    Independent of the medium's index: ``NA = n sin(theta)`` and the wavelength in the
    medium is ``lambda0 / n``, so ``n`` cancels [1]_. ``NA`` here is the beam's
    far-field half-angle divergence times ``n`` (paraxial).

    Parameters
    ----------
    na : array_like
        Numerical aperture of the beam (> 0).
    wavelength_um : array_like
        Vacuum wavelength in um.

    Returns
    -------
    float or numpy.ndarray
        Waist radius in um.

    References
    ----------
    .. [1] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.

    Examples
    --------
    >>> round(beam_waist(0.1, wavelength_um=0.488), 4)
    1.5534
    """
    na_arr = _na(na)
    lam = _wavelength(wavelength_um)
    return return_like(lam / (np.pi * na_arr), na, wavelength_um)


def rayleigh_range(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Rayleigh range ``zR = n lambda0 / (pi NA^2)`` (um, one-sided).

    The distance from the waist at which the 1/e^2 radius has grown by ``sqrt(2)`` [1]_. It is
    proportional to the medium's index ``n``: the common form without ``n`` is the
    in-air special case and is 25% short in water (n = 1.33).

    Parameters
    ----------
    na : array_like
        Numerical aperture of the beam (> 0, ``<= n``).
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium the beam propagates in.

    Returns
    -------
    float or numpy.ndarray
        Rayleigh range in um.

    References
    ----------
    .. [1] B. E. A. Saleh and M. C. Teich, *Fundamentals of Photonics*, Wiley (1991), ch. 3.

    Examples
    --------
    >>> round(rayleigh_range(0.1, wavelength_um=0.488, n=1.33), 3)
    20.66
    """
    na_arr, n_arr = _na_and_index(na, n)
    lam = _wavelength(wavelength_um)
    return return_like(n_arr * lam / (np.pi * na_arr**2), na, wavelength_um, n)


def confocal_parameter(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Confocal parameter ``b = 2 zR = 2 n lambda0 / (pi NA^2)`` (um, two-sided).

    The full length over which a Gaussian beam stays within ``sqrt(2) w0`` [1]_.

    Parameters
    ----------
    na : array_like
        Numerical aperture of the beam (> 0, ``<= n``).
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium the beam propagates in.

    Returns
    -------
    float or numpy.ndarray
        Confocal parameter in um.

    References
    ----------
    .. [1] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.
    """
    zr = rayleigh_range(na, wavelength_um=wavelength_um, n=n)
    return return_like(np.asarray(2.0 * np.asarray(zr)), na, wavelength_um, n)


def beam_radius(
    z_um: npt.ArrayLike,
    *,
    na: npt.ArrayLike,
    wavelength_um: npt.ArrayLike,
    n: npt.ArrayLike = 1.0,
) -> Any:
    """Gaussian-beam 1/e^2 radius ``w(z) = w0 sqrt(1 + (z / zR)^2)`` (um).

    Parameters
    ----------
    z_um : array_like
        Distance from the waist along the beam in um (either sign).
    na : array_like
        Numerical aperture of the beam.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium.

    Returns
    -------
    float or numpy.ndarray
        Radius in um.

    References
    ----------
    .. [1] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.
    """
    z = as_float_array_in(z_um, "z_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    w0 = np.asarray(beam_waist(na, wavelength_um=wavelength_um))
    zr = np.asarray(rayleigh_range(na, wavelength_um=wavelength_um, n=n))
    return return_like(w0 * np.sqrt(1.0 + (z / zr) ** 2), z_um, na, wavelength_um, n)


def gouy_phase(
    z_um: npt.ArrayLike,
    *,
    na: npt.ArrayLike,
    wavelength_um: npt.ArrayLike,
    n: npt.ArrayLike = 1.0,
) -> Any:
    """Gouy phase ``atan(z / zR)`` of a Gaussian beam (radians).

    Parameters
    ----------
    z_um : array_like
        Distance from the waist in um.
    na : array_like
        Numerical aperture of the beam.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium.

    Returns
    -------
    float or numpy.ndarray
        Phase in radians.

    References
    ----------
    .. [1] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.
    """
    z = as_float_array_in(z_um, "z_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    zr = np.asarray(rayleigh_range(na, wavelength_um=wavelength_um, n=n))
    return return_like(np.arctan(z / zr), z_um, na, wavelength_um, n)


def light_sheet_thickness(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, definition: str = "1/e2"
) -> Any:
    """Thickness of a Gaussian light sheet at its waist (um).

    ``"1/e2"``: the full 1/e^2 intensity width ``2 w0 = 2 lambda0 / (pi NA)``;
    ``"fwhm"``: the full width at half maximum ``sqrt(2 ln 2) w0 = 0.375 lambda0 / NA`` [1]_.
    Both are two-sided and independent of the medium's index (see :func:`beam_waist`).

    Parameters
    ----------
    na : array_like
        Numerical aperture of the illumination (> 0).
    wavelength_um : array_like
        Vacuum wavelength in um.
    definition : {"1/e2", "fwhm"}, optional
        Which width.

    Returns
    -------
    float or numpy.ndarray
        Thickness in um.

    References
    ----------
    .. [1] B. E. A. Saleh and M. C. Teich, *Fundamentals of Photonics*, Wiley (1991), ch. 3.
    """
    check_choice(definition, "definition", ("1/e2", "fwhm"))
    w0 = np.asarray(beam_waist(na, wavelength_um=wavelength_um))
    factor = 2.0 if definition == "1/e2" else math.sqrt(2.0 * math.log(2.0))
    return return_like(factor * w0, na, wavelength_um)


def light_sheet_field_of_view(
    na: npt.ArrayLike, *, wavelength_um: npt.ArrayLike, n: npt.ArrayLike = 1.0
) -> Any:
    """Usable field of view of a Gaussian light sheet along its propagation (um).

    Taken as the confocal parameter ``2 zR = 2 n lambda0 / (pi NA^2)``: the length over which
    the sheet stays within ``sqrt(2)`` of its waist thickness [1]_. It grows with
    the medium's index ``n``.

    Parameters
    ----------
    na : array_like
        Numerical aperture of the illumination.
    wavelength_um : array_like
        Vacuum wavelength in um.
    n : array_like, optional
        Refractive index of the medium the sheet propagates in.

    Returns
    -------
    float or numpy.ndarray
        Field of view in um.

    References
    ----------
    .. [1] A. E. Siegman, *Lasers*, University Science Books (1986), ch. 17.
    """
    return confocal_parameter(na, wavelength_um=wavelength_um, n=n)


# --------------------------------------------------------------------------------------
# objectives
# --------------------------------------------------------------------------------------

_IMMERSION_INDEX = {"air": 1.0, "water": 1.333, "glycerol": 1.473, "silicone": 1.406}


@dataclass(frozen=True)
class Objective:
    """A microscope objective, as a frozen value.

    Parameters
    ----------
    name : str
        Catalogue name.
    magnification : float
        Lateral magnification (> 0).
    na : float
        Numerical aperture, ``0 < na <= n_immersion``.
    immersion : str
        Immersion medium ("air", "oil", "water", ...).
    n_immersion : float
        Refractive index of the immersion medium (>= 1).
    working_distance_um : float
        Free working distance in um (> 0).

    Examples
    --------
    >>> obj = OBJECTIVES["Nikon MRP70101"]
    >>> round(obj.depth_of_field(), 1)
    11.8
    """

    name: str
    magnification: float
    na: float
    immersion: str
    n_immersion: float
    working_distance_um: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.immersion, str) or not self.immersion:
            raise ValueError(f"immersion must be a non-empty string, got {self.immersion!r}")
        object.__setattr__(
            self,
            "magnification",
            check_range(self.magnification, "magnification", *_MAGNIFICATION_RANGE),
        )
        object.__setattr__(self, "na", check_range(self.na, "na", NA_MIN, INDEX_RANGE[1]))
        n_imm = check_range(self.n_immersion, "n_immersion", *INDEX_RANGE)
        object.__setattr__(self, "n_immersion", n_imm)
        if self.na > n_imm:
            raise ValueError(
                f"na must not be greater than n_immersion; got na={self.na!r} > "
                f"n_immersion={n_imm!r}"
            )
        wd = check_range(self.working_distance_um, "working_distance_um", 0.0, LENGTH_MAX_UM)
        if wd <= 0:
            raise ValueError(f"working_distance_um must be > 0, got {wd!r}")
        object.__setattr__(self, "working_distance_um", wd)

    def replace(self, **changes: Any) -> Objective:
        """Return a copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    def with_immersion(self, immersion: str, n_immersion: float | None = None) -> Objective:
        """Return the same lens (NA, magnification) used with another immersion medium.

        This is how Urwin (2021) derives a spacing limit: "the equivalent oil lens" is this
        objective with the oil index. ``n_immersion`` defaults to the medium's usual index
        (air 1.0, water 1.333, glycerol 1.473, silicone 1.406, oil :data:`OIL_INDEX`).
        The NA is kept, so it must not exceed the new index.
        """
        if n_immersion is None:
            table = {**_IMMERSION_INDEX, "oil": OIL_INDEX}
            if immersion not in table:
                raise ValueError(
                    f"no default index for immersion {immersion!r}; give n_immersion "
                    f"(known: {sorted(table)})"
                )
            n_immersion = table[immersion]
        return self.replace(immersion=immersion, n_immersion=n_immersion)

    def depth_of_field(
        self,
        *,
        wavelength_um: float = DEFAULT_WAVELENGTH_UM,
        detector_um: float = DEFAULT_DETECTOR_UM,
    ) -> float:
        """Total depth of field in um (see :func:`depth_of_field`), in the immersion medium."""
        return float(
            depth_of_field(
                self.na,
                wavelength_um=wavelength_um,
                n=self.n_immersion,
                magnification=self.magnification,
                detector_um=detector_um,
            )
        )

    def axial_resolution(self, *, wavelength_um: float = DEFAULT_WAVELENGTH_UM) -> float:
        """Axial resolution in um (see :func:`axial_resolution`) in the immersion medium."""
        return float(axial_resolution(self.na, wavelength_um=wavelength_um, n=self.n_immersion))

    def lateral_resolution(self, *, wavelength_um: float = DEFAULT_WAVELENGTH_UM) -> float:
        """Rayleigh lateral resolution in um (see :func:`lateral_resolution`)."""
        return float(lateral_resolution(self.na, wavelength_um=wavelength_um))


#: The objective table of I. Urwin, "Nanoro Microscope Focus Stacking", rev. 1 (2021)
#: (working distances from the table; depth of field by the Nikon MicroscopyU formula at
#: the defaults, :func:`depth_of_field`).
OBJECTIVES: Mapping[str, Objective] = MappingProxyType(
    {
        o.name: o
        for o in (
            Objective("Nikon MRP70101", 10.0, 0.25, "air", 1.0, 7000.0),
            Objective("Nikon MRP70401", 40.0, 0.65, "air", 1.0, 650.0),
            Objective("Nikon 100x", 100.0, 0.90, "air", 1.0, 260.0),
            Objective("Nikon MRP71900", 100.0, 1.25, "oil", OIL_INDEX, 230.0),
        )
    }
)
