"""On-axis intensity and apparent focal position in an index-mismatched sample.

Conventions (see :mod:`nanoro_optics.psf._integrals`): ``nfp_um`` is the nominal focal
position (depth of the nominal focus below the interface), ``z_um`` is measured from the
nominal focus, positive deeper, so the actual depth is ``nfp_um + z_um``. The apparent (or
actual) focal position AFP is the depth of the intensity maximum on the optical axis.

Intensity normalisation used throughout :mod:`nanoro_optics.psf`: intensities are divided by
the on-axis intensity at the interface focus, ``z = 0`` with ``NFP = 0``, in the same media
and at the same wavelength(s). For a confocal intensity (excitation x emission) both
factors are normalised this way. Without evanescent light (``NA <= n_sample``) this is the
peak of the PSF focused at the interface; a value of 0.4 therefore means the peak has lost
60% to the depth-induced spherical aberration.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ._integrals import (
    Optics,
    auto_nodes,
    check_depth,
    check_length,
    check_optics,
    check_scalar_length,
    on_axis_field,
    pupil,
)

__all__ = ["ApparentFocus", "apparent_focal_position", "axial_intensity"]

#: Coarse-search step as a fraction of the non-paraxial axial resolution in the sample.
_COARSE_STEP_FRACTION = 1.0 / 10.0
#: Half-width of the margin added around the geometric bracket, in axial resolutions.
_MARGIN_RESOLUTIONS = 3.0
#: Absolute tolerance of the bounded refinement (um): 0.01 nm.
_XATOL_UM = 1e-5


class ApparentFocus(NamedTuple):
    """Apparent focal position and its peak intensity.

    Attributes
    ----------
    afp_um : float or numpy.ndarray
        Apparent focal position: depth below the interface of the on-axis intensity maximum.
    peak_intensity : float or numpy.ndarray
        The on-axis intensity there, relative to the interface focus (``NFP = 0, z = 0``)
        in the same media (module docstring).
    """

    afp_um: Any
    peak_intensity: Any


def _setups(
    na: Any,
    n_immersion: Any,
    n_sample: Any,
    wavelength_um: Any,
    emission_wavelength_um: Any,
) -> list[Optics]:
    opts = [check_optics(na, n_immersion, n_sample, wavelength_um)]
    if emission_wavelength_um is not None:
        opts.append(
            check_optics(
                na, n_immersion, n_sample, emission_wavelength_um, "emission_wavelength_um"
            )
        )
    return opts


def _interface_norm(opt: Optics) -> float:
    """|I0(r=0, z=0)|^2 at NFP = 0: the normalising intensity."""
    p = pupil(opt, 64)
    return float(abs(p.g0.sum()) ** 2)


class _AxialModel:
    """On-axis intensity at one NFP for one or two wavelengths, normalised."""

    def __init__(self, opts: list[Optics], nfp: float, z_lo: float, z_hi: float) -> None:
        self.opts = opts
        self.nfp = nfp
        self.pupils = [pupil(o, auto_nodes(o, nfp, z_lo, z_hi)) for o in opts]
        self.norms = [_interface_norm(o) for o in opts]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.ones(z.shape)
        for o, p, n in zip(self.opts, self.pupils, self.norms, strict=True):
            out *= np.abs(on_axis_field(o, p, self.nfp, z.ravel()).reshape(z.shape)) ** 2 / n
        return out


def axial_intensity(
    z_um: npt.ArrayLike,
    *,
    nfp_um: float,
    na: float,
    n_immersion: float,
    n_sample: float,
    wavelength_um: float,
    emission_wavelength_um: float | None = None,
) -> Any:
    """On-axis intensity of the focus through a planar index-mismatched interface.

    Widefield (one wavelength): ``|I0(0, z)|^2``. Confocal with a point detector (when
    ``emission_wavelength_um`` is given): ``|I0_exc(0, z)|^2 |I0_em(0, z)|^2``. On the axis
    ``I1 = I2 = 0``, so the polarisation does not matter.

    Parameters
    ----------
    z_um : array_like
        Axial position from the nominal focus (um, positive deeper); ``nfp_um + z_um >= 0``.
    nfp_um : float
        Nominal focal position, depth below the interface (um, >= 0).
    na : float
        Numerical aperture, ``0 < na < n_immersion``.
    n_immersion, n_sample : float
        Refractive indices of the immersion (design) medium and of the sample.
    wavelength_um : float
        Vacuum wavelength (um): the excitation wavelength in the confocal case.
    emission_wavelength_um : float, optional
        Vacuum emission wavelength (um); gives the confocal intensity.

    Returns
    -------
    float or numpy.ndarray
        Intensity relative to the interface focus (``NFP = 0, z = 0``) in the same media,
        see the module docstring. Scalar in, float out.

    Raises
    ------
    ValueError
        On non-finite or out-of-range values, ``na >= n_immersion``, a negative ``nfp_um``,
        or points above the interface.

    References
    ----------
    .. [1] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.
       (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
    .. [2] P. Torok et al., J. Opt. Soc. Am. A 12, 325-332 (1995),
       doi:10.1364/JOSAA.12.000325

    Examples
    --------
    >>> round(axial_intensity(0.0, nfp_um=0.0, na=1.3, n_immersion=1.518, n_sample=1.33,
    ...                       wavelength_um=0.52), 12)
    1.0
    """
    opts = _setups(na, n_immersion, n_sample, wavelength_um, emission_wavelength_um)
    nfp = check_scalar_length(nfp_um, "nfp_um", nonnegative=True)
    z = check_length(z_um, "z_um")
    check_depth(z, nfp, opts[0])
    model = _AxialModel(opts, nfp, float(z.min()), float(z.max()))
    return _return(model(z), z_um)


def _return(result: np.ndarray, like: Any) -> Any:
    if np.ndim(like) == 0 and not isinstance(like, np.ndarray):
        return float(result)
    return result


def _geometric_bracket(opt: Optics, nfp: float) -> tuple[float, float, float]:
    """Search interval for z (from the nominal focus) and the coarse step (um).

    The apparent focus lies between the paraxial estimate ``NFP n2/n1`` (deep, Carlsson)
    and the near-interface marginal estimate ``NFP (n1 - s1)/(n2 - s2)`` (Hoffman's and
    Loginov's critical ratio); a margin of a few axial resolutions is added on both sides.
    """
    n1, n2 = opt.n_immersion, opt.n_sample
    na_eff = min(opt.na, n2)
    d1 = n1 - math.sqrt(n1 * n1 - na_eff * na_eff)
    d2 = n2 - math.sqrt(max(n2 * n2 - na_eff * na_eff, 0.0))
    ratios = (d1 / d2, n2 / n1)
    dz = opt.wavelength_um / d2  # non-paraxial axial resolution in the sample
    margin = _MARGIN_RESOLUTIONS * dz
    lo = nfp * (min(ratios) - 1.0) - margin
    hi = nfp * (max(ratios) - 1.0) + margin
    return max(lo, -nfp), hi, dz * _COARSE_STEP_FRACTION


def _find_peak(opts: list[Optics], nfp: float) -> tuple[float, float]:
    from scipy import optimize

    lo, hi, step = _geometric_bracket(opts[0], nfp)
    for o in opts[1:]:
        lo2, hi2, step2 = _geometric_bracket(o, nfp)
        lo, hi, step = min(lo, lo2), max(hi, hi2), min(step, step2)
    model = _AxialModel(opts, nfp, lo, hi)  # (refuses a depth too deep to integrate)
    n = max(16, math.ceil((hi - lo) / step) + 1)
    grid = np.linspace(lo, hi, n)
    values = model(grid)
    i = int(np.argmax(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)]
    res = optimize.minimize_scalar(
        lambda t: -float(model(np.array([t]))[0]),
        bounds=(float(a), float(b)),
        method="bounded",
        options={"xatol": _XATOL_UM},
    )
    z_best, v_best = float(res.x), -float(res.fun)
    if values[i] > v_best:  # the maximum is the grid point itself (e.g. at the interface)
        z_best, v_best = float(grid[i]), float(values[i])
    return nfp + z_best, v_best


def apparent_focal_position(
    nfp_um: npt.ArrayLike,
    *,
    na: float,
    n_immersion: float,
    n_sample: float,
    wavelength_um: float,
    emission_wavelength_um: float | None = None,
) -> ApparentFocus:
    """Apparent (actual) focal position for a nominal focal position in a mismatched sample.

    The on-axis intensity (:func:`axial_intensity`) is sampled on a coarse grid (a tenth of
    the axial resolution ``lambda0 / (n2 - sqrt(n2^2 - NA^2))``) over the interval between
    the two geometric estimates, ``NFP n2/n1`` (paraxial) and ``NFP (n1 - sqrt(n1^2 -
    NA^2)) / (n2 - sqrt(n2^2 - NA^2))`` (marginal, near the interface), widened by three
    axial resolutions and cut at the interface; the best grid point is then refined by a
    bounded scalar search (Brent) to 0.01 nm. This follows the procedure of Hoffman [2]_, with a
    bracket that holds at any depth.

    Parameters
    ----------
    nfp_um : array_like
        Nominal focal position(s), depth below the interface (um, >= 0).
    na : float
        Numerical aperture, ``0 < na < n_immersion``.
    n_immersion, n_sample : float
        Refractive indices of the immersion (design) medium and of the sample.
    wavelength_um : float
        Vacuum wavelength (um), the excitation wavelength for a confocal microscope.
    emission_wavelength_um : float, optional
        Vacuum emission wavelength (um): the focus of the confocal (excitation x emission)
        intensity is found instead of the widefield one.

    Returns
    -------
    ApparentFocus
        ``(afp_um, peak_intensity)``: depth of the on-axis maximum below the interface, and
        the intensity there relative to the interface focus (``NFP = 0, z = 0``) in the same
        media (see the module docstring). Floats for a scalar ``nfp_um``, arrays otherwise.

    Raises
    ------
    ValueError
        On non-finite or negative ``nfp_um``, ``na >= n_immersion`` or invalid indices.

    References
    ----------
    .. [1] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.
       (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
    .. [2] D. P. Hoffman, "Oh no, I squished my OTF!",
       https://david-hoffman.github.io/post/otf-squishing/

    Examples
    --------
    >>> afp, peak = apparent_focal_position(10.0, na=1.3, n_immersion=1.518, n_sample=1.473,
    ...                                     wavelength_um=0.514, emission_wavelength_um=0.59)
    >>> round(afp - 10.0, 2)
    -0.55
    """
    opts = _setups(na, n_immersion, n_sample, wavelength_um, emission_wavelength_um)
    nfp = check_length(nfp_um, "nfp_um", nonnegative=True)
    afp = np.empty(nfp.shape)
    peak = np.empty(nfp.shape)
    for idx in np.ndindex(nfp.shape):
        afp[idx], peak[idx] = _find_peak(opts, float(nfp[idx]))
    if np.ndim(nfp_um) == 0 and not isinstance(nfp_um, np.ndarray):
        return ApparentFocus(float(afp), float(peak))
    return ApparentFocus(afp, peak)
