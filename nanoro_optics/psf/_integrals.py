"""Vectorial diffraction integrals I0, I1, I2 for focusing through a planar interface.

The objective is designed for a medium of index ``n1 = n_immersion`` and focuses into a
sample of index ``n2 = n_sample`` whose planar surface (the interface) is normal to the
optical axis. ``nfp_um`` is the nominal focal position: the depth below the interface at
which the focus would lie if the sample had index ``n1``. ``z_um`` is measured from the
nominal focus along the optical axis, positive deeper into the sample, so the actual depth
below the interface is ``nfp_um + z_um``. ``r_um`` is the distance from the optical axis.

With ``k = 2 pi / lambda0``, ``NA = n1 sin(alpha)`` and ``n1 sin t1 = n2 sin t2`` [1]_ [2]_::

    tau_s = 2 n1 cos t1 / (n1 cos t1 + n2 cos t2)       (Fresnel, s)
    tau_p = 2 n1 cos t1 / (n2 cos t1 + n1 cos t2)       (Fresnel, p)
    Psi   = k (-NFP (n1 cos t1 - n2 cos t2) + n2 z cos t2)
    I0 = int_0^alpha sqrt(cos t1) sin t1 (tau_s + tau_p cos t2) J0(k n1 r sin t1) e^{i Psi} dt1
    I1 = int_0^alpha sqrt(cos t1) sin t1 (tau_p sin t2)         J1(k n1 r sin t1) e^{i Psi} dt1
    I2 = int_0^alpha sqrt(cos t1) sin t1 (tau_s - tau_p cos t2) J2(k n1 r sin t1) e^{i Psi} dt1

``sqrt(cos t1)`` is the sine-condition (aplanatic) apodisation. When ``NA > n2`` the rays
beyond the critical angle ``asin(n2 / n1)`` give an imaginary ``cos t2 = i sqrt(sin^2 t2 - 1)``
(root with positive imaginary part): their field decays away from the interface
(evanescent waves), and the Fresnel coefficients become complex. The quadrature interval is
split at the critical angle so that both pieces have a smooth integrand inside.

The integrals are evaluated by Gauss-Legendre quadrature over ``t1``; the number of nodes is
chosen from the fastest local oscillation of the integrand (``Psi`` plus the Bessel
argument) unless given. With ``n1 = n2`` they reduce to the Richards-Wolf integrals.

References
----------
.. [1] P. Torok, P. Varga, Z. Laczik and G. R. Booker, "Electromagnetic diffraction of light
   focused through a planar interface between materials of mismatched refractive indices:
   an integral representation", J. Opt. Soc. Am. A 12, 325-332 (1995),
   doi:10.1364/JOSAA.12.000325
.. [2] A. Egner and S. W. Hell, "Aberrations in confocal and multi-photon fluorescence
   microscopy induced by refractive index mismatch", in *Handbook of Biological Confocal
   Microscopy*, 3rd ed., Springer (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
.. [3] B. Richards and E. Wolf, "Electromagnetic diffraction in optical systems II",
   Proc. R. Soc. Lond. A 253, 358-379 (1959), doi:10.1098/rspa.1959.0200
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import (
    INDEX_RANGE,
    LENGTH_MAX_UM,
    NA_MIN,
    WAVELENGTH_RANGE_UM,
    as_float_array_in,
    check_int,
    check_range,
)

__all__ = ["Optics", "check_optics", "vectorial_integrals"]

#: Fewest Gauss-Legendre nodes per piece of the aperture.
_MIN_NODES = 48
#: Nodes per radian of phase advance over one local node spacing: Gauss-Legendre reaches
#: 1e-11 relative at about 0.23-0.24 (measured at NFP 100 and 2000 um in water); 0.28 leaves
#: a margin.
_NODES_PER_RADIAN = 0.28
_MAX_NODES = 100_000
#: Largest single Gauss-Legendre rule; more nodes are spread over equal panels.
_PANEL_NODES = 2048


@dataclass(frozen=True)
class Optics:
    """Validated optical parameters shared by the PSF functions (lengths in um)."""

    na: float
    n_immersion: float
    n_sample: float
    wavelength_um: float

    @property
    def k(self) -> float:
        """Vacuum wavenumber ``2 pi / lambda0`` (rad/um)."""
        return 2.0 * math.pi / self.wavelength_um

    @property
    def alpha(self) -> float:
        """Aperture half-angle in the immersion medium (rad)."""
        return math.asin(self.na / self.n_immersion)

    @property
    def critical_angle(self) -> float | None:
        """Immersion-side angle beyond which the sample field is evanescent, or None."""
        if self.n_sample >= self.n_immersion:
            return None
        tc = math.asin(self.n_sample / self.n_immersion)
        return tc if tc < self.alpha else None


def check_length(value: Any, name: str, *, nonnegative: bool = False) -> np.ndarray:
    """Return a length (array) in um within ``[0 or -LENGTH_MAX_UM, LENGTH_MAX_UM]``.

    (Longer ones overflowed the phases or the node counts; the integrals refuse depths
    whose phase needs more than ``_MAX_NODES`` nodes, naming them.)
    """
    lo = 0.0 if nonnegative else -LENGTH_MAX_UM
    return as_float_array_in(value, name, lo, LENGTH_MAX_UM, "um")


def check_scalar_length(value: Any, name: str, *, nonnegative: bool = False) -> float:
    """Return :func:`check_length` of a single number as a float."""
    arr = check_length(value, name, nonnegative=nonnegative)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a number, got an array of shape {arr.shape}")
    return float(arr)


def check_optics(
    na: Any, n_immersion: Any, n_sample: Any, wavelength_um: Any, name: str = "wavelength_um"
) -> Optics:
    """Validate scalar optics arguments; ``na`` must be below ``n_immersion``."""
    n1 = check_range(n_immersion, "n_immersion", *INDEX_RANGE)
    n2 = check_range(n_sample, "n_sample", *INDEX_RANGE)
    a = check_range(na, "na", NA_MIN)
    lam = check_range(wavelength_um, name, *WAVELENGTH_RANGE_UM)
    if a >= n1:
        raise ValueError(
            f"na must be smaller than n_immersion (NA = n_immersion sin(alpha) < n_immersion); "
            f"got na={a!r} >= n_immersion={n1!r}"
        )
    return Optics(a, n1, n2, lam)


@lru_cache(maxsize=64)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre rule with ~n nodes on [-1, 1].

    Up to ``_PANEL_NODES`` nodes it is the plain rule; beyond, panels of at most that many
    nodes each, graded towards the ends like the nodes of a single rule. Building one rule of
    many thousands of nodes costs seconds (O(n^2)); a few graded panels of high order converge
    as well (checked by doubling the nodes).
    """
    from scipy.special import roots_legendre

    panels = max(1, math.ceil(n / _PANEL_NODES))
    m = math.ceil(n / panels)
    x, w = roots_legendre(m)
    # panel edges cluster towards both ends like the nodes of a single rule (density
    # ~ 1/sqrt(1 - x^2)): the integrand oscillates fastest near the aperture edge
    edges = -np.cos(np.pi * np.arange(panels + 1) / panels)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


@dataclass(frozen=True)
class Pupil:
    """Quadrature nodes over ``t1`` with the angular factors of the three integrands."""

    sin_t1: np.ndarray  # (n,)
    cos_t1: np.ndarray
    cos_t2: np.ndarray  # complex
    g0: np.ndarray  # weight * sqrt(cos t1) sin t1 (tau_s + tau_p cos t2), complex
    g1: np.ndarray  # weight * sqrt(cos t1) sin t1 tau_p sin t2
    g2: np.ndarray  # weight * sqrt(cos t1) sin t1 (tau_s - tau_p cos t2)
    # n1 cos t1 - n2 cos t2 (complex): the depth phase per um of NFP, divided by k
    dn_cos: np.ndarray


def _angles(opt: Optics, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights over [0, alpha], split at the critical angle.

    Near the critical angle ``cos t2`` behaves like the square root of the distance to it,
    which Gauss-Legendre integrates poorly; the substitutions ``t = tc (1 - u^2)`` below and
    ``t = tc + (alpha - tc) u^2`` above make the integrand smooth in ``u``.
    """
    tc = opt.critical_angle
    if tc is None:
        n = max(_MIN_NODES, n_nodes)
        x, w = _gauss_legendre(n)
        half = 0.5 * opt.alpha
        return half * (x + 1.0), half * w
    nodes, weights = [], []
    for lo, hi in ((0.0, tc), (tc, opt.alpha)):
        n = max(_MIN_NODES, math.ceil(n_nodes * (hi - lo) / opt.alpha))
        x, w = _gauss_legendre(n)
        u = 0.5 * (x + 1.0)
        wu = 0.5 * w
        if lo == 0.0:  # t = tc (1 - u^2), dt = -2 tc u du
            nodes.append(tc * (1.0 - u * u))
            weights.append(2.0 * tc * u * wu)
        else:  # t = tc + (alpha - tc) u^2
            nodes.append(tc + (hi - lo) * u * u)
            weights.append(2.0 * (hi - lo) * u * wu)
    return np.concatenate(nodes), np.concatenate(weights)


def pupil(opt: Optics, n_nodes: int) -> Pupil:
    """Angular factors of the integrands at the quadrature nodes."""
    t1, w = _angles(opt, n_nodes)
    n1, n2 = opt.n_immersion, opt.n_sample
    s1, c1 = np.sin(t1), np.cos(t1)
    s2 = n1 * s1 / n2
    # principal root: imaginary part >= 0 beyond the critical angle -> decaying field
    c2 = np.sqrt((1.0 - s2**2).astype(np.complex128))
    tau_s = 2.0 * n1 * c1 / (n1 * c1 + n2 * c2)
    tau_p = 2.0 * n1 * c1 / (n2 * c1 + n1 * c2)
    common = w * np.sqrt(c1) * s1
    return Pupil(
        sin_t1=s1,
        cos_t1=c1,
        cos_t2=c2,
        g0=common * (tau_s + tau_p * c2),
        g1=common * (tau_p * s2),
        g2=common * (tau_s - tau_p * c2),
        dn_cos=n1 * c1 - n2 * c2,
    )


def auto_nodes(opt: Optics, nfp_um: Any, z_lo_um: Any, z_hi_um: Any, r_max_um: float = 0.0) -> int:
    """Choose the number of Gauss-Legendre nodes from the integrand's local frequency.

    The phase ``Psi(t1)`` (plus the Bessel argument) oscillates fastest near the aperture
    edge, where Gauss-Legendre nodes are densest: a rule of ``n`` nodes on ``[0, alpha]``
    has a local spacing ``pi alpha sqrt(1 - x^2) / (2 n)`` (``x`` the node in [-1, 1]).
    ``n`` is chosen so that the phase advances by at most ``1 / _NODES_PER_RADIAN`` rad per
    local spacing. ``nfp_um``, ``z_lo_um`` and ``z_hi_um`` may be arrays (one entry per
    plane): the worst case over them is used.
    """
    t1 = np.linspace(0.0, opt.alpha, 2049)
    x = 2.0 * t1 / opt.alpha - 1.0
    n1, n2 = opt.n_immersion, opt.n_sample
    c2 = np.sqrt((1.0 - (n1 * np.sin(t1) / n2) ** 2).astype(np.complex128)).real
    dn = n1 * np.cos(t1) - n2 * c2
    nfp = np.atleast_1d(np.asarray(nfp_um, dtype=np.float64))
    bessel_rate = opt.k * n1 * r_max_um * np.cos(t1)
    local = 0.0
    for z in (z_lo_um, z_hi_um):
        zz = np.broadcast_to(np.atleast_1d(np.asarray(z, dtype=np.float64)), nfp.shape)
        phase = opt.k * (np.multiply.outer(zz, n2 * c2) - np.multiply.outer(nfp, dn))
        rate = np.abs(np.gradient(phase, t1, axis=-1)) + bessel_rate
        local = max(local, float(np.max(rate * np.sqrt(1.0 - x * x))))
    n = _MIN_NODES + math.ceil(_NODES_PER_RADIAN * 0.5 * math.pi * opt.alpha * local)
    if n > _MAX_NODES:
        raise ValueError(
            f"the integrand oscillates too fast (depth nfp_um={float(nfp.max())!r} um and the "
            f"z/r range need {n} quadrature nodes, more than the limit {_MAX_NODES}): "
            "reduce nfp_um or the range of z_um / r_um"
        )
    return n


def bessel_012(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """J0, J1, J2 of ``x >= 0``; J2 by the recurrence ``2 J1 / x - J0`` (series near 0)."""
    from scipy import special

    j0 = special.j0(x)
    j1 = special.j1(x)
    small = x < 1e-2
    safe = np.where(small, 1.0, x)
    j2 = 2.0 * j1 / safe
    j2 -= j0
    if np.any(small):
        # the recurrence loses digits near 0: J2(x) = q/2 (1 - q/3 + q^2/24 - ...), q = x^2/4
        q = x[small] ** 2 / 4.0
        j2[small] = q / 2.0 * (1.0 - q / 3.0 + q * q / 24.0)
    return j0, j1, j2


def vectorial_integrals(
    r_um: npt.ArrayLike,
    z_um: npt.ArrayLike,
    *,
    nfp_um: float,
    na: float,
    n_immersion: float,
    n_sample: float,
    wavelength_um: float,
    n_nodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate the vectorial integrals I0, I1, I2 at points ``(r_um, z_um)``.

    The integrals are those of Torok et al. and Egner & Hell (module docstring), without
    constant prefactors; they are evaluated by Gauss-Legendre quadrature, vectorised over
    the broadcast shape of ``r_um`` and ``z_um``.

    Parameters
    ----------
    r_um : array_like
        Distance from the optical axis (um, >= 0).
    z_um : array_like
        Axial position from the nominal focus (um, positive deeper); the depth below the
        interface ``nfp_um + z_um`` must be >= 0.
    nfp_um : float
        Nominal focal position: depth of the nominal focus below the interface (um, >= 0).
    na : float
        Numerical aperture, ``0 < na < n_immersion``. ``na > n_sample`` is allowed
        (evanescent components).
    n_immersion, n_sample : float
        Refractive indices of the immersion medium (design) and of the sample.
    wavelength_um : float
        Vacuum wavelength (um).
    n_nodes : int, optional
        Gauss-Legendre nodes over the aperture; chosen from the integrand's local
        oscillation by default.

    Returns
    -------
    I0, I1, I2 : numpy.ndarray
        Complex arrays of the broadcast shape.

    Raises
    ------
    ValueError
        On non-finite values, ``na >= n_immersion``, negative ``r_um`` or ``nfp_um``, or
        points above the interface.

    References
    ----------
    .. [1] P. Torok et al., J. Opt. Soc. Am. A 12, 325-332 (1995),
       doi:10.1364/JOSAA.12.000325
    .. [2] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.
       (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20

    Examples
    --------
    >>> i0, i1, i2 = vectorial_integrals(0.0, 0.0, nfp_um=0.0, na=1.2, n_immersion=1.33,
    ...                                  n_sample=1.33, wavelength_um=0.5)
    >>> bool(abs(i1) < 1e-15 and abs(i2) < 1e-15)
    True
    """
    opt = check_optics(na, n_immersion, n_sample, wavelength_um)
    nfp = check_scalar_length(nfp_um, "nfp_um", nonnegative=True)
    r = check_length(r_um, "r_um", nonnegative=True)
    z = check_length(z_um, "z_um")
    check_depth(z, nfp, opt)
    if n_nodes is None:
        n_nodes = auto_nodes(opt, nfp, float(z.min()), float(z.max()), float(r.max()))
    else:
        n_nodes = check_int(n_nodes, "n_nodes", 2, _MAX_NODES)
    r_b, z_b = np.broadcast_arrays(r, z)
    return _evaluate(opt, pupil(opt, n_nodes), nfp, r_b.ravel(), z_b.ravel(), r_b.shape)


def check_depth(z: np.ndarray, nfp: float, opt: Optics | None = None) -> None:
    """Refuse points above the interface (depth ``nfp + z < 0``), outside the model.

    With matched indices (``opt.n_immersion == opt.n_sample``) there is no interface: the
    field is the aberration-free focus of one medium, defined on both sides, and every ``z``
    is accepted.
    """
    if opt is not None and opt.n_immersion == opt.n_sample:
        return
    # a tolerance of a femtometre absorbs the rounding of z = -nfp
    bad = nfp + z < -1e-9
    if np.any(bad):
        zb = float(np.asarray(z)[bad].min()) if np.ndim(z) else float(z)
        raise ValueError(
            f"z_um must be >= -nfp_um = {-nfp!r}: with n_immersion != n_sample, points above "
            f"the interface (depth nfp_um + z_um < 0, in the immersion medium) are outside the "
            f"model; got z_um={zb!r}. For a bead at depth d imaged through focus use "
            "focal_scan_psf(depth_um=d, ...); with matched indices any z_um is allowed"
        )


def _evaluate(
    opt: Optics, p: Pupil, nfp: float, r: np.ndarray, z: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadrature over the nodes in chunks: phase (m, n) times angular factors (n,)."""
    k = opt.k
    out = [np.empty(r.size, np.complex128) for _ in range(3)]
    base = np.exp(-1j * k * nfp * p.dn_cos)  # (n,)
    chunk = max(1, 2_000_000 // max(1, p.sin_t1.size))
    for s in range(0, r.size, chunk):
        rr, zz = r[s : s + chunk], z[s : s + chunk]
        e = base * np.exp(1j * k * opt.n_sample * np.multiply.outer(zz, p.cos_t2))
        if np.any(rr > 0):
            j0, j1, j2 = bessel_012(k * opt.n_immersion * np.multiply.outer(rr, p.sin_t1))
            out[0][s : s + chunk] = (e * j0) @ p.g0
            out[1][s : s + chunk] = (e * j1) @ p.g1
            out[2][s : s + chunk] = (e * j2) @ p.g2
        else:
            out[0][s : s + chunk] = e @ p.g0
            out[1][s : s + chunk] = 0.0
            out[2][s : s + chunk] = 0.0
    return out[0].reshape(shape), out[1].reshape(shape), out[2].reshape(shape)


def on_axis_field(opt: Optics, p: Pupil, nfp: float, z: np.ndarray) -> np.ndarray:
    """I0 on the axis at positions ``z`` (1-D), a single matrix-vector product."""
    e = np.exp(1j * opt.k * (opt.n_sample * np.multiply.outer(z, p.cos_t2) - nfp * p.dn_cos))
    return np.asarray(e @ p.g0)
