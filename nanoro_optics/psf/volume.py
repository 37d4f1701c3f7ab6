"""3-D vectorial PSF of a focus through a planar index-mismatched interface.

The PSF is the intensity of the focused field for a fixed nominal focal position (NFP),
sampled on a regular (z, y, x) grid whose origin is the nominal focus: plane ``k`` lies at
``z = z_center_um + (k - nz // 2) dz`` from the nominal focus (actual depth ``nfp_um + z``),
pixel ``(j, i)`` at ``y = (j - ny // 2) dy``, ``x = (i - nx // 2) dx`` from the optical axis
(the ``numpy.fft.fftshift`` centre). By reciprocity the same function describes the
detection PSF of a point source at depth ``nfp_um + z`` seen with the focus at ``nfp_um``.

Speed: the intensity depends on ``x, y`` only through ``r`` (and, for polarised light, the
azimuth). The integrals are evaluated once per distinct pixel radius -- about ``(ny/2)(nx/2)/2``
radii instead of ``ny nx`` pixels -- as one matrix product ``J_m(k n1 r sin t1) g_m(t1) @
exp(i Psi(z, t1))`` per Bessel order, then gathered onto the grid. Nothing is interpolated:
every pixel gets the same Gauss-Legendre value a direct evaluation would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import (
    INDEX_RANGE,
    as_float_array,
    check_choice,
    check_int,
    check_range,
)
from ._integrals import (
    _MAX_NODES,
    Optics,
    auto_nodes,
    bessel_012,
    check_depth,
    check_length,
    check_optics,
    check_scalar_length,
    pupil,
)
from .focal import _interface_norm

__all__ = ["POLARIZATIONS", "focal_scan_psf", "psfmodels_to_nominal", "vectorial_psf"]

#: Accepted values of ``polarization``.
POLARIZATIONS = ("unpolarized", "x", "y")


def _spacing(spacing_um: Any) -> tuple[float, float, float]:
    arr = check_length(spacing_um, "spacing_um", nonnegative=True)
    if np.any(arr <= 0):
        raise ValueError(f"spacing_um must be > 0, got {spacing_um!r}")
    if arr.ndim == 0:
        s = float(arr)
        return s, s, s
    if arr.shape == (2,):
        return float(arr[0]), float(arr[1]), float(arr[1])
    if arr.shape == (3,):
        return float(arr[0]), float(arr[1]), float(arr[2])
    raise ValueError(
        f"spacing_um must be a number, (dz, dxy) or (dz, dy, dx), got shape {arr.shape}"
    )


#: largest side and number of voxels of a PSF volume (refused before any allocation)
_MAX_SIDE = 65536
_MAX_VOXELS = 2**28


def _shape(shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a sequence of 3 integers (nz, ny, nx), got {shape!r}")
    if len(shape) != 3:
        raise ValueError(f"shape must have 3 entries (nz, ny, nx), got {tuple(shape)!r}")
    nz, ny, nx = (check_int(v, f"shape[{i}]", 1, _MAX_SIDE) for i, v in enumerate(shape))
    if nz * ny * nx > _MAX_VOXELS:
        raise ValueError(
            f"shape {(nz, ny, nx)!r} holds {nz * ny * nx} voxels, more than the limit "
            f"{_MAX_VOXELS} (2 GB of float64)"
        )
    return nz, ny, nx


def _field_tables(
    opt: Optics, n_nodes: int, nfp: np.ndarray, z: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """I0, I1, I2 of shape (len(r), n_planes) by three matrix products.

    Plane ``k`` is the field focused at ``nfp[k]``, evaluated at ``z[k]`` from that focus.
    """
    p = pupil(opt, n_nodes)
    phase = opt.n_sample * np.multiply.outer(p.cos_t2, z) - np.multiply.outer(p.dn_cos, nfp)
    e = np.exp(1j * opt.k * phase)
    j0, j1, j2 = bessel_012(opt.k * opt.n_immersion * np.multiply.outer(r, p.sin_t1))
    return (j0 * p.g0) @ e, (j1 * p.g1) @ e, (j2 * p.g2) @ e


def _abs2(a: np.ndarray) -> np.ndarray:
    return np.asarray(a.real * a.real + a.imag * a.imag)


def _gather(profile: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Profile (n_radii, nz) -> volume (nz, ny, nx) through the pixel -> radius index."""
    flat = np.take(np.ascontiguousarray(profile.T), index.ravel(), axis=1)
    return flat.reshape(profile.shape[1], *index.shape)


def vectorial_psf(
    shape: Sequence[int],
    *,
    spacing_um: float | Sequence[float],
    nfp_um: float,
    na: float,
    n_immersion: float,
    n_sample: float,
    wavelength_um: float,
    emission_wavelength_um: float | None = None,
    polarization: str = "unpolarized",
    z_center_um: float = 0.0,
    n_nodes: int | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """3-D intensity PSF (z, y, x) of a focus through a planar index-mismatched interface.

    Widefield: ``|E|^2`` with, for unpolarised light (the default, azimuthal average),
    ``|I0|^2 + 2|I1|^2 + |I2|^2`` and, for x-polarised light, ``|I0|^2 + |I2|^2 +
    2 Re(I0 I2*) cos 2phi + 4 |I1|^2 cos^2 phi`` (``phi`` from the x axis; "y" rotates it by
    90 degrees) [1]_ [2]_. Confocal with a point detector when ``emission_wavelength_um`` is
    given: the excitation intensity (with ``polarization``) times the unpolarised emission
    intensity at the emission wavelength.

    The grid and its origin are described in :mod:`nanoro_optics.psf.volume`: plane ``k``
    at ``z_center_um + (k - nz // 2) dz`` from the nominal focus, pixel ``(j, i)`` at
    ``((j - ny // 2) dy, (i - nx // 2) dx)`` from the axis. To centre the stack on the
    apparent focus pass ``z_center_um = afp_um - nfp_um`` (:func:`apparent_focal_position`).
    Stacks in psfmodels' convention convert with :func:`psfmodels_to_nominal`.

    Parameters
    ----------
    shape : sequence of 3 int
        ``(nz, ny, nx)``, each >= 1.
    spacing_um : float or sequence of float
        Voxel size (um): one number, ``(dz, dxy)`` or ``(dz, dy, dx)``.
    nfp_um : float
        Nominal focal position, depth below the interface (um, >= 0).
    na : float
        Numerical aperture, ``0 < na < n_immersion`` (``na > n_sample`` is allowed).
    n_immersion, n_sample : float
        Refractive indices of the immersion (design) medium and of the sample.
    wavelength_um : float
        Vacuum wavelength (um): the excitation wavelength for a confocal PSF.
    emission_wavelength_um : float, optional
        Vacuum emission wavelength (um): gives the confocal PSF.
    polarization : {"unpolarized", "x", "y"}, optional
        Polarisation of the (excitation) light in the pupil.
    z_center_um : float, optional
        Axial position of plane ``nz // 2`` from the nominal focus (um), default 0.
    n_nodes : int, optional
        Gauss-Legendre nodes over the aperture; chosen from the local oscillation by default.
    normalize : bool, optional
        Scale the maximum to 1. By default the intensity is relative to the interface
        focus (``NFP = 0, z = 0``) in the same media, as :func:`axial_intensity`.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(nz, ny, nx)``.

    Raises
    ------
    ValueError
        On an empty or non-3-D shape, non-positive spacing, non-finite values,
        ``na >= n_immersion``, negative ``nfp_um`` or, when ``n_immersion != n_sample``,
        planes above the interface (``nfp_um + z < 0``; with matched indices there is no
        interface and every plane is allowed, e.g. a bead on the coverslip at ``nfp_um=0``).
    TypeError
        If ``shape`` is not a sequence of integers.

    References
    ----------
    .. [1] B. Richards and E. Wolf, Proc. R. Soc. Lond. A 253, 358-379 (1959),
       doi:10.1098/rspa.1959.0200
    .. [2] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.
       (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20

    Examples
    --------
    >>> h = vectorial_psf((5, 33, 33), spacing_um=(0.1, 0.05), nfp_um=2.0, na=1.2,
    ...                   n_immersion=1.33, n_sample=1.33, wavelength_um=0.5)
    >>> h.shape, round(float(h[2, 16, 16]), 9)
    ((5, 33, 33), 1.0)
    """
    nz, ny, nx = _shape(shape)
    dz, dy, dx = _spacing(spacing_um)
    opts = _optics_list(na, n_immersion, n_sample, wavelength_um, emission_wavelength_um)
    nfp = check_scalar_length(nfp_um, "nfp_um", nonnegative=True)
    zc = check_scalar_length(z_center_um, "z_center_um")
    z = zc + (np.arange(nz) - nz // 2) * dz
    try:
        check_depth(z, nfp, opts[0])
    except ValueError as exc:  # the planes come from z_center_um and spacing_um
        raise ValueError(
            f"the {nz} planes of spacing_um={dz!r} around z_center_um={zc!r}: {exc}"
        ) from exc
    return _volume(opts, polarization, np.full(nz, nfp), z, (ny, nx), (dy, dx), n_nodes, normalize)


def focal_scan_psf(
    shape: Sequence[int],
    *,
    spacing_um: float | Sequence[float],
    depth_um: float,
    nfp_center_um: float,
    na: float,
    n_immersion: float,
    n_sample: float,
    wavelength_um: float,
    emission_wavelength_um: float | None = None,
    polarization: str = "unpolarized",
    n_nodes: int | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Image stack (z, y, x) of a point source at a fixed depth, scanned through focus.

    This is what a z-stack of a sub-resolution bead records: the source sits at
    ``depth_um`` below the interface and plane ``k`` is taken with the nominal focus at
    ``NFP_k = nfp_center_um + (k - nz // 2) dz``. By reciprocity plane ``k`` equals the
    field focused at ``NFP_k`` (:func:`vectorial_psf`) evaluated at the source,
    ``z = depth_um - NFP_k``; with index mismatch the spherical aberration changes from
    plane to plane, so the stack differs from a fixed-NFP PSF. Lateral axes, intensity
    definitions and normalisation are those of :func:`vectorial_psf`. psfmodels' stacks
    are of this kind: ``depth_um = pz`` and ``NFP_k`` from :func:`psfmodels_to_nominal`.

    Parameters
    ----------
    shape : sequence of 3 int
        ``(nz, ny, nx)``, each >= 1.
    spacing_um : float or sequence of float
        ``dz`` (step of the nominal focus) and pixel size, as in :func:`vectorial_psf`.
    depth_um : float
        Depth of the point source below the interface (um, >= 0).
    nfp_center_um : float
        Nominal focal position of plane ``nz // 2`` (um); every plane's NFP must be >= 0.
    na, n_immersion, n_sample, wavelength_um, emission_wavelength_um, polarization, \
n_nodes, normalize
        As in :func:`vectorial_psf`.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(nz, ny, nx)``.

    Raises
    ------
    ValueError
        As :func:`vectorial_psf`; also if a plane's NFP is negative.

    References
    ----------
    .. [1] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.
       (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
    .. [2] F. Aguet, "Super-resolution fluorescence microscopy based on physical models",
       EPFL thesis 4418 (2009), doi:10.5075/epfl-thesis-4418

    Examples
    --------
    >>> h = focal_scan_psf((21, 15, 15), spacing_um=(0.2, 0.06), depth_um=10.0,
    ...                    nfp_center_um=12.2, na=1.3, n_immersion=1.518, n_sample=1.33,
    ...                    wavelength_um=0.52)
    >>> int(np.argmax(h[:, 7, 7]))
    10
    """
    nz, ny, nx = _shape(shape)
    dz, dy, dx = _spacing(spacing_um)
    opts = _optics_list(na, n_immersion, n_sample, wavelength_um, emission_wavelength_um)
    depth = check_scalar_length(depth_um, "depth_um", nonnegative=True)
    center = check_scalar_length(nfp_center_um, "nfp_center_um")
    nfp = center + (np.arange(nz) - nz // 2) * dz
    if nfp.min() < -1e-9:
        raise ValueError(
            f"every plane's nominal focal position must be >= 0: nfp_center_um={center!r} "
            f"with {nz} planes of spacing_um={dz!r} gives {float(nfp.min())!r}"
        )
    nfp = np.maximum(nfp, 0.0)
    return _volume(opts, polarization, nfp, depth - nfp, (ny, nx), (dy, dx), n_nodes, normalize)


def _optics_list(
    na: Any, n_immersion: Any, n_sample: Any, wavelength_um: Any, emission_wavelength_um: Any
) -> list[Optics]:
    opts = [check_optics(na, n_immersion, n_sample, wavelength_um)]
    if emission_wavelength_um is not None:
        opts.append(
            check_optics(
                na, n_immersion, n_sample, emission_wavelength_um, "emission_wavelength_um"
            )
        )
    return opts


def _scalar(value: Any, name: str) -> float:
    arr = as_float_array(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a number, got an array of shape {arr.shape}")
    return float(arr)


def _volume(
    opts: list[Optics],
    polarization: str,
    nfp: np.ndarray,
    z: np.ndarray,
    lateral_shape: tuple[int, int],
    lateral_spacing: tuple[float, float],
    n_nodes: int | None,
    normalize: bool,
) -> np.ndarray:
    """Intensity of planes (nfp[k], z[k]) on a (ny, nx) grid centred on the axis."""
    pol = check_choice(polarization, "polarization", POLARIZATIONS)
    if n_nodes is not None:
        n_nodes = check_int(n_nodes, "n_nodes", 2, _MAX_NODES)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    ny, nx = lateral_shape
    dy, dx = lateral_spacing

    # distinct radii: |offsets| in y and x, unordered when the grid is square
    ay = np.abs(np.arange(ny) - ny // 2)
    ax = np.abs(np.arange(nx) - nx // 2)
    square = dy == dx
    if square:
        lo = np.minimum.outer(ay, ax)
        hi = np.maximum.outer(ay, ax)
        m = max(ay.max(), ax.max()) + 1
        key = lo * m + hi
    else:
        m = ax.max() + 1
        key = ay[:, None] * m + ax[None, :]
    uniq, index = np.unique(key, return_inverse=True)
    index = index.reshape(ny, nx)
    if square:
        r = dx * np.hypot(uniq // m, uniq % m)
    else:
        r = np.hypot(dy * (uniq // m), dx * (uniq % m))
    r_max = float(r.max())

    out: np.ndarray | float = 1.0
    for count, o in enumerate(opts):
        nodes = n_nodes or auto_nodes(o, nfp, z, z, r_max)
        i0, i1, i2 = _field_tables(o, nodes, nfp, z, r)
        norm = _interface_norm(o)
        if pol == "unpolarized" or count > 0:
            prof = (_abs2(i0) + 2.0 * _abs2(i1) + _abs2(i2)) / norm
            out *= _gather(prof, index)
            continue
        yy = ((np.arange(ny) - ny // 2) * dy)[:, None]
        xx = ((np.arange(nx) - nx // 2) * dx)[None, :]
        r2 = xx * xx + yy * yy
        with np.errstate(invalid="ignore", divide="ignore"):
            cos2 = np.where(r2 > 0, (xx * xx - yy * yy) / r2, 1.0)
        if pol == "y":
            cos2 = -cos2
        cos_sq = 0.5 * (1.0 + cos2)
        a = _gather((_abs2(i0) + _abs2(i2)) / norm, index)
        b = _gather(2.0 * (i0 * np.conj(i2)).real / norm, index)
        c = _gather(4.0 * _abs2(i1) / norm, index)
        out *= a + b * cos2 + c * cos_sq
    out = np.asarray(out)
    if normalize:
        peak = out.max()
        if peak > 0:
            out /= peak
    return out


def psfmodels_to_nominal(
    zv_um: Any, *, pz_um: float, n_immersion: float, n_sample: float
) -> tuple[Any, Any]:
    """Convert psfmodels' focal-scan coordinates to (nominal focal position, z).

    psfmodels (Aguet's model) renders a point source at depth ``pz`` above the coverslip
    imaged with the focal plane at ``zv`` (um from the coverslip), where ``zv`` is measured
    on an axis pre-shifted by the paraxial focal shift ``pz (ni/ns - 1)``. In this
    package's terms the plane at ``zv`` is the field focused at
    ``NFP = zv + pz (n_immersion / n_sample - 1)`` evaluated at the source depth, i.e. at
    ``z = pz - NFP`` from the nominal focus (REFERENCES; checked numerically).

    Parameters
    ----------
    zv_um : array_like
        psfmodels' z positions (um).
    pz_um : float
        psfmodels' source depth above the coverslip (um, >= 0).
    n_immersion, n_sample : float
        psfmodels' ``ni`` (= ``ni0``) and ``ns``.

    Returns
    -------
    nfp_um, z_um : float or numpy.ndarray
        Nominal focal position of each plane and the source's position from it.

    Notes
    -----
    The mapping was checked numerically against psfmodels 0.3.3 (``benchmarks/bench_psf.py``
    prints the residual). psfmodels includes a coverslip; with ``ng = ng0 = ni`` and
    ``tg = tg0`` it drops out.

    Examples
    --------
    >>> psfmodels_to_nominal(10.0, pz_um=10.0, n_immersion=1.5, n_sample=1.25)
    (12.0, -2.0)
    """
    n1 = check_range(n_immersion, "n_immersion", *INDEX_RANGE)
    n2 = check_range(n_sample, "n_sample", *INDEX_RANGE)
    pz = check_scalar_length(pz_um, "pz_um", nonnegative=True)
    zv = check_length(zv_um, "zv_um")
    nfp = zv + pz * (n1 / n2 - 1.0)
    z = pz - nfp
    if np.ndim(zv_um) == 0 and not isinstance(zv_um, np.ndarray):
        return float(nfp), float(z)
    return nfp, z
