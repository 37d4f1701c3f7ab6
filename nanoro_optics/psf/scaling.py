"""Axial scaling factors: from a nominal (stage) depth to the actual depth in the sample.

An objective designed for index ``n1`` focusing into a sample of index ``n2`` puts its focus
at the actual focal position ``AFP = SF x NFP`` instead of the nominal ``NFP`` (the stage
displacement below the interface). Many constant factors ``SF`` have been proposed; none
holds at every depth, because the spherical aberration grows with depth and moves the
intensity maximum (REFERENCES: wave optics gives 0.741 ... 0.852 for oil -> water at NA 1.3
between 2 and 100 um). :func:`axial_scaling_factor` offers them side by side:

============ ====================================================================== =========
model        SF                                                                     depends
============ ====================================================================== =========
carlsson     ``n2 / n1`` (paraxial)                                                 --
visser       ``tan(asin(NA/n1)) / tan(asin(NA/n2))`` (marginal ray)                 --
diel_median  ``tan(asin(NA/(2 n1))) / tan(asin(NA/(2 n2)))``                        --
diel_mean    mean over ``k = 1..100`` of ``tan(asin(k NA/(100 n1))) /              --
             tan(asin(k NA/(100 n2)))``
stallinga    ``(<f1^2> - <f1>^2) / (<f1 f2> - <f1><f2>)``, ``f = sqrt(n^2 - NA^2     --
             rho^2)`` averaged over a uniform pupil
lyakin       ``sqrt(4 (n2^2 - n1^2) + (n1 + s1)^2) / (n1 + s1)``, ``s1 = sqrt(n1^2 -  --
             NA^2)``
critical     ``(n1 - sqrt(n1^2 - NA^2)) / (n2 - sqrt(n2^2 - NA^2))``               --
loginov      depth-dependent, bounded by ``critical`` near the interface            NFP, λ
wave         ``AFP / NFP`` of the vectorial focus (:func:`apparent_focal_position`) NFP, λ
============ ====================================================================== =========

References
----------
.. [1] K. Carlsson, "The influence of specimen refractive index, detector signal integration,
   and non-uniform scan speed on the imaging properties in confocal microscopy",
   J. Microsc. 163, 167-178 (1991), doi:10.1111/j.1365-2818.1991.tb03169.x
.. [2] T. D. Visser, J. L. Oud and G. J. Brakenhoff, "Refractive index and axial distance
   measurements in 3-D microscopy", Optik 90, 17-19 (1992).
.. [3] E. E. Diel, J. W. Lichtman and D. S. Richardson, "Tutorial: avoiding and correcting
   sample-induced spherical aberration artifacts in 3D fluorescence microscopy",
   Nat. Protoc. 15, 2773-2784 (2020), doi:10.1038/s41596-020-0360-2
.. [4] S. Stallinga, "Axial focus position and spherical aberration for layered media",
   Appl. Opt. 44, 849-858 (2005), doi:10.1364/AO.44.000849
.. [5] D. V. Lyakin, L. I. Konopaltseva and V. P. Ryabukho, "Axial displacement of the
   focus of a lens under refractive index mismatch", Opt. Spectrosc. 123, 448-455 (2017),
   doi:10.1134/S0030400X17090235
.. [6] S. V. Loginov, D. B. Boltje, M. N. F. Hensgens, J. P. Hoogenboom and E. B. van der
   Wee, "Depth-dependent scaling of axial distances in light microscopy", Optica 11,
   553-568 (2024), doi:10.1364/OPTICA.520595; the authors' code,
   https://github.com/hoogenboom-group/SF (``scaling_factor_from_nfp``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import (
    INDEX_RANGE,
    NA_MIN,
    WAVELENGTH_RANGE_UM,
    as_float_array_in,
    check_choice,
    check_range,
)
from ._integrals import check_length
from .focal import apparent_focal_position

__all__ = ["SCALING_MODELS", "actual_depth_um", "axial_scaling_factor"]

#: Names accepted by :func:`axial_scaling_factor`, constant models first.
SCALING_MODELS = (
    "carlsson",
    "visser",
    "diel_median",
    "diel_mean",
    "stallinga",
    "lyakin",
    "critical",
    "loginov",
    "wave",
)
_DEPTH_MODELS = ("loginov", "wave")
# models whose formula needs every ray to enter the sample (asin(NA/n2) real)
_NEEDS_NA_LE_N2 = ("visser", "diel_mean", "stallinga", "critical", "loginov")
#: Number of rays of Diel et al.'s mean model (their paper uses 100).
DIEL_RAYS = 100


def _carlsson(na: Any, n1: Any, n2: Any) -> Any:
    return n2 / n1 + 0.0 * na


def _visser(na: Any, n1: Any, n2: Any) -> Any:
    return np.tan(np.arcsin(na / n1)) / np.tan(np.arcsin(na / n2))


def _diel_median(na: Any, n1: Any, n2: Any) -> Any:
    return _visser(0.5 * na, n1, n2)


def _diel_mean(na: Any, n1: Any, n2: Any) -> Any:
    k = np.arange(1, DIEL_RAYS + 1) / DIEL_RAYS
    na_k = np.multiply.outer(na, k)
    return np.mean(_visser(na_k, n1[..., None], n2[..., None]), axis=-1)


def _pupil_mean_f(n: Any, na: Any) -> Any:
    """<sqrt(n^2 - NA^2 rho^2)> over a uniform circular pupil."""
    return 2.0 * (n**3 - (n * n - na * na) ** 1.5) / (3.0 * na * na)


def _stallinga(na: Any, n1: Any, n2: Any) -> Any:
    """Stallinga's least-squares focus: closed-form pupil averages (his eqs. for <f1 f2>)."""
    s1 = np.sqrt(n1 * n1 - na * na)
    s2 = np.sqrt(n2 * n2 - na * na)
    f1, f2 = _pupil_mean_f(n1, na), _pupil_mean_f(n2, na)
    ff1 = n1 * n1 - na * na / 2.0
    same = np.abs(n1 - n2) < 1e-9
    dn = np.where(same, 1.0, n1 - n2)
    log_term = np.log(np.where(same, 1.0, (s1 - s2) / dn))
    f1f2 = (
        n1 * n2**3
        + n2 * n1**3
        - (n1 * n1 + n2 * n2 - 2.0 * na * na) * s1 * s2
        - (n1 * n1 - n2 * n2) ** 2 * log_term
    ) / (4.0 * na * na)
    with np.errstate(invalid="ignore", divide="ignore"):
        sf = (ff1 - f1 * f1) / (f1f2 - f1 * f2)
    return np.where(same, 1.0, sf)


def _lyakin(na: Any, n1: Any, n2: Any) -> Any:
    a = n1 + np.sqrt(n1 * n1 - na * na)
    return np.sqrt(4.0 * (n2 * n2 - n1 * n1) + a * a) / a


def _critical(na: Any, n1: Any, n2: Any) -> Any:
    # (n - sqrt(n^2 - NA^2)) written as NA^2 / (n + sqrt(n^2 - NA^2)): no cancellation
    d1 = na * na / (n1 + np.sqrt(n1 * n1 - na * na))
    d2 = na * na / (n2 + np.sqrt(n2 * n2 - na * na))
    return d1 / d2


def _loginov(na: Any, n1: Any, n2: Any, nfp: Any, lam: Any) -> Any:
    """Loginov et al.'s depth-dependent factor as a function of the nominal depth.

    With ``delta = +- lambda0 / (4 n1 NFP)`` (sign of ``n2 - n1``) and ``m = sqrt(n2^2 -
    n1^2)`` the universal factor is ``(n2/n1)(1 + delta) + (m/n1) sqrt(delta (2 + delta))``
    (real in both cases: for ``n2 < n1`` both roots are imaginary); it tends to ``n2/n1``
    deep in the sample and is bounded by the critical factor near the interface
    (``max`` for ``n2 < n1``, ``min`` for ``n2 > n1``), as in the authors' code.
    """
    crit = _critical(na, n1, n2)
    up = n2 > n1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        delta = np.where(up, 1.0, -1.0) * lam / (4.0 * n1 * nfp)
        root = np.sqrt(np.abs(n2 * n2 - n1 * n1)) * np.sqrt(np.abs(delta * (2.0 + delta)))
        # n2 < n1: m = i sqrt(n1^2 - n2^2); for -2 < delta < 0 the second root is imaginary
        # too (i*i = -1); for delta < -2 (NFP < lambda0 / (8 n1)) the term is imaginary and,
        # as in the authors' code, only the real part is kept
        sign = np.where(up, 1.0, np.where(delta * (2.0 + delta) < 0, -1.0, 0.0))
        univ = (n2 / n1) * (1.0 + delta) + sign * root / n1
    univ = np.where(nfp == 0, crit, univ)  # NFP -> 0: the universal factor leaves any bound
    # fmin/fmax: at NFP ~ 1e-300 the universal factor overflows to nan; the bound applies
    sf = np.where(up, np.fmin(univ, crit), np.fmax(univ, crit))
    return np.where(n1 == n2, 1.0, sf)


_CONSTANT = {
    "carlsson": _carlsson,
    "visser": _visser,
    "diel_median": _diel_median,
    "diel_mean": _diel_mean,
    "stallinga": _stallinga,
    "lyakin": _lyakin,
    "critical": _critical,
}


def axial_scaling_factor(
    na: npt.ArrayLike,
    *,
    n_immersion: npt.ArrayLike,
    n_sample: npt.ArrayLike,
    model: str,
    nfp_um: npt.ArrayLike | None = None,
    wavelength_um: float | None = None,
) -> Any:
    """Axial scaling factor ``SF = AFP / NFP`` of an index-mismatched sample.

    See the module docstring for the formula of each model and its source.

    Parameters
    ----------
    na : array_like
        Numerical aperture, ``0 < na < n_immersion``; models built on rays entering the
        sample (``visser``, ``diel_mean``, ``stallinga``, ``critical``, ``loginov``) also
        need ``na <= n_sample``.
    n_immersion, n_sample : array_like
        Refractive indices of the immersion (design) medium ``n1`` and the sample ``n2``.
    model : str
        One of :data:`SCALING_MODELS`.
    nfp_um : array_like, optional
        Nominal focal position (um, depth below the interface); required by the
        depth-dependent models ``loginov`` (>= 0; at 0 it returns its near-interface limit,
        the critical factor) and ``wave`` (> 0), ignored (with a warning) by the others.
    wavelength_um : float, optional
        Vacuum wavelength (um), required by ``loginov`` and ``wave``.

    Returns
    -------
    float or numpy.ndarray
        The factor, broadcast over the array arguments (scalars in, float out).

    Raises
    ------
    ValueError
        On an unknown model, invalid indices or NA, a missing ``nfp_um`` or
        ``wavelength_um`` for a depth-dependent model, or ``na > n_sample`` for a model
        that needs every ray to enter the sample.

    References
    ----------
    See the module docstring (Carlsson 1991, Visser 1992, Diel 2020, Stallinga 2005,
    Lyakin 2017, Loginov 2024).

    Examples
    --------
    >>> round(axial_scaling_factor(1.3, n_immersion=1.518, n_sample=1.33, model="critical"), 3)
    0.7
    >>> round(axial_scaling_factor(0.85, n_immersion=1.0, n_sample=1.33, model="stallinga"), 3)
    1.522
    """
    import warnings

    check_choice(model, "model", SCALING_MODELS)
    na_a = as_float_array_in(na, "na", NA_MIN, INDEX_RANGE[1], "numerical aperture")
    n1 = as_float_array_in(n_immersion, "n_immersion", *INDEX_RANGE, "refractive index")
    n2 = as_float_array_in(n_sample, "n_sample", *INDEX_RANGE, "refractive index")
    _check_na(na_a, n1, "n_immersion", strict=True)
    if model in _NEEDS_NA_LE_N2:
        _check_na(na_a, n2, "n_sample", strict=False, model=model)
    if model not in _DEPTH_MODELS:
        if nfp_um is not None or wavelength_um is not None:
            warnings.warn(
                f"nfp_um and wavelength_um are ignored by the constant model {model!r}",
                stacklevel=2,
            )
        na_b, n1_b, n2_b = np.broadcast_arrays(na_a, n1, n2)
        out = _CONSTANT[model](na_b, n1_b, n2_b)
        return _like(out, na, n_immersion, n_sample)
    if nfp_um is None:
        raise ValueError(f"model {model!r} depends on depth: nfp_um is required, got None")
    if wavelength_um is None:
        raise ValueError(f"model {model!r} needs wavelength_um, got None")
    lam = check_range(wavelength_um, "wavelength_um", *WAVELENGTH_RANGE_UM)
    nfp = check_length(nfp_um, "nfp_um", nonnegative=True)
    if model == "loginov":
        na_b, n1_b, n2_b, nfp_b = np.broadcast_arrays(na_a, n1, n2, nfp)
        out = _loginov(na_b, n1_b, n2_b, nfp_b, lam)
        return _like(out, na, n_immersion, n_sample, nfp_um)
    # wave: one vectorial focus search per distinct (na, n1, n2)
    if np.any(nfp <= 0):
        raise ValueError(
            "nfp_um must be > 0 for model 'wave' (AFP / NFP is undefined at the interface), "
            f"got {float(nfp.min())!r}"
        )
    na_b, n1_b, n2_b, nfp_b = np.broadcast_arrays(na_a, n1, n2, nfp)
    out = np.empty(na_b.shape)
    for idx in np.ndindex(na_b.shape):
        afp = apparent_focal_position(
            float(nfp_b[idx]),
            na=float(na_b[idx]),
            n_immersion=float(n1_b[idx]),
            n_sample=float(n2_b[idx]),
            wavelength_um=lam,
        ).afp_um
        out[idx] = afp / float(nfp_b[idx])
    return _like(out, na, n_immersion, n_sample, nfp_um)


def _check_na(
    na: np.ndarray, n: np.ndarray, n_name: str, *, strict: bool, model: str | None = None
) -> None:
    bad = na >= n if strict else na > n
    if np.any(bad):
        na_b, n_b = np.broadcast_arrays(na, n)
        idx = tuple(np.argwhere(np.broadcast_to(bad, na_b.shape))[0]) if na_b.ndim else ()
        limit = "smaller than" if strict else "at most"
        why = f" for model {model!r} (rays beyond the critical angle do not enter)" if model else ""
        raise ValueError(
            f"na must be {limit} {n_name}{why}; got na={float(na_b[idx])!r}, "
            f"{n_name}={float(n_b[idx])!r}"
        )


def _like(out: Any, *inputs: Any) -> Any:
    if all(np.ndim(x) == 0 and not isinstance(x, np.ndarray) for x in inputs):
        return float(out)
    return np.asarray(out, dtype=np.float64)


def actual_depth_um(
    nominal_um: npt.ArrayLike,
    *,
    na: float,
    n_immersion: float,
    n_sample: float,
    model: str = "wave",
    wavelength_um: float | None = None,
) -> Any:
    """Map nominal depths (stage positions below the interface) to actual depths (um).

    ``actual = SF(NFP) x NFP`` with the factor of ``model``; for the depth-dependent models
    the factor is evaluated at each nominal depth (``wave`` uses the apparent focal position
    directly, so ``0 -> 0``). Use it to relabel the z axis of a stack recorded through a
    mismatched interface, with ``nominal_um`` counted from the interface.

    Parameters
    ----------
    nominal_um : array_like
        Nominal depths (um, >= 0) below the interface.
    na, n_immersion, n_sample : float
        Numerical aperture and refractive indices, as for :func:`axial_scaling_factor`.
    model : str, optional
        One of :data:`SCALING_MODELS`, default ``"wave"``.
    wavelength_um : float, optional
        Vacuum wavelength (um), required by ``loginov`` and ``wave``.

    Returns
    -------
    float or numpy.ndarray
        Actual depths (um), same shape as ``nominal_um``.

    Raises
    ------
    ValueError
        As :func:`axial_scaling_factor`; also for negative ``nominal_um``.

    References
    ----------
    See :mod:`nanoro_optics.psf.scaling`.

    Examples
    --------
    >>> round(actual_depth_um(10.0, na=1.3, n_immersion=1.518, n_sample=1.33,
    ...                       model="carlsson"), 3)
    8.762
    """
    check_choice(model, "model", SCALING_MODELS)
    nominal = check_length(nominal_um, "nominal_um", nonnegative=True)
    if model == "wave":
        if wavelength_um is None:
            raise ValueError("model 'wave' needs wavelength_um, got None")
        try:
            afp = apparent_focal_position(
                nominal,
                na=na,
                n_immersion=n_immersion,
                n_sample=n_sample,
                wavelength_um=wavelength_um,
            ).afp_um
        except ValueError as exc:  # name the argument as the caller gave it
            raise ValueError(str(exc).replace("nfp_um", "nominal_um")) from exc
        out = np.asarray(afp, dtype=np.float64)
    elif model == "loginov":
        sf = axial_scaling_factor(
            na,
            n_immersion=n_immersion,
            n_sample=n_sample,
            model=model,
            nfp_um=nominal,
            wavelength_um=wavelength_um,
        )
        out = np.asarray(sf) * nominal
    else:
        if wavelength_um is not None:
            check_range(wavelength_um, "wavelength_um", *WAVELENGTH_RANGE_UM)
        sf = axial_scaling_factor(na, n_immersion=n_immersion, n_sample=n_sample, model=model)
        out = sf * nominal
    if np.ndim(nominal_um) == 0 and not isinstance(nominal_um, np.ndarray):
        return float(out)
    return out
