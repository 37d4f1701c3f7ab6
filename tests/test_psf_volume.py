"""Tests of nanoro_optics.psf.vectorial_psf against a slow direct quadrature and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from test_psf import slow_integral

from nanoro_optics import psf

OIL, WATER = 1.518, 1.33
# Fast 3-D PSF vs slow direct (adaptive) quadrature at sample points (issue 4: 1e-4).
DIRECT_REL_TOL = 1e-4
# Identities that hold to rounding.
ROUNDING_REL_TOL = 1e-10

MISMATCH = dict(nfp_um=8.0, na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)


def _slow_intensity(y: float, x: float, z: float, pol: str, **kw: float) -> float:
    r = float(np.hypot(y, x))
    args = dict(
        nfp=kw["nfp_um"],
        na=kw["na"],
        n1=kw["n_immersion"],
        n2=kw["n_sample"],
        lam=kw["wavelength_um"],
    )
    i0, i1, i2 = (slow_integral(m, r, z, **args) for m in range(3))
    norm = abs(slow_integral(0, 0.0, 0.0, **{**args, "nfp": 0.0})) ** 2
    if pol == "unpolarized":
        val = abs(i0) ** 2 + 2 * abs(i1) ** 2 + abs(i2) ** 2
    else:
        phi = np.arctan2(y, x)
        val = (
            abs(i0) ** 2
            + abs(i2) ** 2
            + 2 * (i0 * np.conj(i2)).real * np.cos(2 * phi)
            + 4 * abs(i1) ** 2 * np.cos(phi) ** 2
        )
    return float(val) / norm


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("pol", ["unpolarized", "x"])
def test_psf_matches_direct_quadrature(pol: str) -> None:
    shape, dz, dxy, zc = (5, 21, 19), 0.2, 0.07, -1.4
    h = psf.vectorial_psf(shape, spacing_um=(dz, dxy), z_center_um=zc, polarization=pol, **MISMATCH)
    assert h.shape == shape and h.dtype == np.float64
    for k, j, i in [(2, 10, 9), (1, 13, 9), (3, 10, 15), (0, 4, 3), (4, 17, 12)]:
        z = zc + (k - 2) * dz
        y, x = (j - 10) * dxy, (i - 9) * dxy
        ref = _slow_intensity(y, x, z, pol, **MISMATCH)
        assert h[k, j, i] == pytest.approx(ref, rel=DIRECT_REL_TOL, abs=1e-9 * h.max())


def test_centre_is_axial_intensity_and_confocal_is_product() -> None:
    kw = dict(spacing_um=(0.15, 0.06), z_center_um=-1.5, **MISMATCH)
    h = psf.vectorial_psf((7, 9, 9), **kw)
    z = -1.5 + (np.arange(7) - 3) * 0.15
    ax = psf.axial_intensity(z, **MISMATCH)
    np.testing.assert_allclose(h[:, 4, 4], ax, rtol=ROUNDING_REL_TOL)
    conf = psf.vectorial_psf((7, 9, 9), emission_wavelength_um=0.6, polarization="x", **kw)
    ex = psf.vectorial_psf((7, 9, 9), polarization="x", **kw)
    em = psf.vectorial_psf((7, 9, 9), **{**kw, "wavelength_um": 0.6})
    np.testing.assert_allclose(conf, ex * em, rtol=ROUNDING_REL_TOL)


def test_polarisations_average_to_unpolarised() -> None:
    afp = psf.apparent_focal_position(8.0, **{k: v for k, v in MISMATCH.items() if k != "nfp_um"})
    kw = dict(spacing_um=0.06, z_center_um=afp.afp_um - 8.0, **MISMATCH)
    hx = psf.vectorial_psf((3, 15, 15), polarization="x", **kw)
    hy = psf.vectorial_psf((3, 15, 15), polarization="y", **kw)
    hu = psf.vectorial_psf((3, 15, 15), **kw)
    np.testing.assert_allclose((hx + hy) / 2, hu, rtol=ROUNDING_REL_TOL)
    np.testing.assert_allclose(hx, np.swapaxes(hy, 1, 2), rtol=ROUNDING_REL_TOL)
    # in focus, the x-polarised spot is wider along x than along y (high NA)
    assert hx[1, 7, 10] > 1.05 * hx[1, 10, 7]
    np.testing.assert_allclose(hx, hx[:, ::-1, :], rtol=ROUNDING_REL_TOL)
    np.testing.assert_allclose(hx, hx[:, :, ::-1], rtol=ROUNDING_REL_TOL)


def test_matched_psf_symmetric_in_z() -> None:
    h = psf.vectorial_psf(
        (9, 11, 11),
        spacing_um=(0.1, 0.05),
        nfp_um=5.0,
        na=1.2,
        n_immersion=1.33,
        n_sample=1.33,
        wavelength_um=0.5,
    )
    np.testing.assert_allclose(h, h[::-1], rtol=ROUNDING_REL_TOL)
    assert h[4, 5, 5] == pytest.approx(1.0, rel=ROUNDING_REL_TOL)
    assert h.max() == h[4, 5, 5]


def test_rectangular_grid_and_spacing_forms() -> None:
    kw = dict(**MISMATCH)
    a = psf.vectorial_psf((3, 8, 12), spacing_um=(0.1, 0.05, 0.07), **kw)
    b = psf.vectorial_psf((3, 12, 8), spacing_um=(0.1, 0.07, 0.05), **kw)
    np.testing.assert_allclose(a, np.swapaxes(b, 1, 2), rtol=ROUNDING_REL_TOL)
    c = psf.vectorial_psf((3, 8, 8), spacing_um=0.05, **kw)
    d = psf.vectorial_psf((3, 8, 8), spacing_um=(0.05, 0.05, 0.05), **kw)
    np.testing.assert_array_equal(c, d)
    n = psf.vectorial_psf((3, 8, 8), spacing_um=0.05, normalize=True, **kw)
    assert n.max() == pytest.approx(1.0)


def test_psfmodels_convention() -> None:
    nfp, z = psf.psfmodels_to_nominal([9.0, 10.0], pz_um=10.0, n_immersion=OIL, n_sample=WATER)
    np.testing.assert_allclose(nfp + z, 10.0)  # every plane sees the source at pz
    np.testing.assert_allclose(np.diff(nfp), 1.0)
    assert psf.psfmodels_to_nominal(0.0, pz_um=0.0, n_immersion=OIL, n_sample=WATER) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(shape=(0, 8, 8)), ValueError, "shape"),
        (dict(shape=(4, 8)), ValueError, "shape"),
        (dict(shape=(4, 8, 8.0)), TypeError, "shape"),
        (dict(shape="abc"), TypeError, "shape"),
        (dict(spacing_um=-0.1), ValueError, "spacing_um"),
        (dict(spacing_um=(0.1, 0.1, 0.1, 0.1)), ValueError, "spacing_um"),
        (dict(nfp_um=-1.0), ValueError, "nfp_um"),
        (dict(nfp_um=0.0), ValueError, "z_um"),  # planes above the interface
        (dict(na=1.6), ValueError, "na"),
        (dict(n_sample=float("inf")), ValueError, "n_sample"),
        (dict(polarization="z"), ValueError, "polarization"),
        (dict(z_center_um=float("nan")), ValueError, "z_center_um"),
        (dict(n_nodes=1), ValueError, "n_nodes"),
    ],
)
def test_bad_input(kwargs: dict, exc: type, match: str) -> None:
    base = dict(shape=(4, 8, 8), spacing_um=0.1, **MISMATCH)
    with pytest.raises(exc, match=match):
        psf.vectorial_psf(**{**base, **kwargs})


def test_focal_scan_planes_are_fixed_nfp_fields() -> None:
    kw = dict(na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)
    scan = psf.focal_scan_psf(
        (5, 9, 9), spacing_um=(0.3, 0.07), depth_um=6.0, nfp_center_um=7.0, n_nodes=200, **kw
    )
    for k in range(5):
        nfp = 7.0 + (k - 2) * 0.3
        plane = psf.vectorial_psf(
            (1, 9, 9),
            spacing_um=(0.3, 0.07),
            nfp_um=nfp,
            z_center_um=6.0 - nfp,
            n_nodes=200,
            **kw,
        )
        np.testing.assert_allclose(scan[k], plane[0], rtol=ROUNDING_REL_TOL)


def test_focal_scan_matched_is_mirrored_field() -> None:
    kw = dict(na=1.2, n_immersion=1.33, n_sample=1.33, wavelength_um=0.5)
    scan = psf.focal_scan_psf(
        (7, 9, 9), spacing_um=(0.1, 0.05), depth_um=5.0, nfp_center_um=5.2, **kw
    )
    field = psf.vectorial_psf((7, 9, 9), spacing_um=(0.1, 0.05), nfp_um=5.2, z_center_um=-0.2, **kw)
    np.testing.assert_allclose(scan, field[::-1], rtol=1e-9)
    with pytest.raises(ValueError, match="nominal focal position"):
        psf.focal_scan_psf((7, 9, 9), spacing_um=(0.1, 0.05), depth_um=5.0, nfp_center_um=0.1, **kw)
    with pytest.raises(ValueError, match="depth_um"):
        psf.focal_scan_psf((7, 9, 9), spacing_um=0.1, depth_um=-1.0, nfp_center_um=1.0, **kw)


MATCHED = dict(na=1.2, n_immersion=1.33, n_sample=1.33, wavelength_um=0.5)


def test_matched_indices_allow_planes_on_both_sides_of_the_coverslip() -> None:
    # no interface: a bead on the coverslip (nfp 0) seen through focus, planes above it too
    kw = dict(shape=(9, 17, 17), spacing_um=(0.2, 0.05), **MATCHED)
    h0 = psf.vectorial_psf(**kw, nfp_um=0.0)
    # the aberration-free focus is symmetric about the focal plane (Richards & Wolf 1959)
    np.testing.assert_allclose(h0, h0[::-1], rtol=1e-9, atol=1e-12)
    assert int(np.argmax(h0[:, 8, 8])) == 4 and h0[4, 8, 8] == pytest.approx(1.0)
    # and the nominal depth does not matter without an interface
    np.testing.assert_allclose(h0, psf.vectorial_psf(**kw, nfp_um=5.0), rtol=1e-9, atol=1e-12)
    # the same holds for the axial profile
    z = np.linspace(-1.0, 1.0, 5)
    a = psf.axial_intensity(z, nfp_um=0.0, **MATCHED)
    np.testing.assert_allclose(a, a[::-1], rtol=1e-9)


def test_mismatch_above_the_interface_names_the_function_to_use() -> None:
    with pytest.raises(ValueError, match=r"focal_scan_psf\(depth_um=d"):
        psf.vectorial_psf((4, 8, 8), spacing_um=0.1, **{**MISMATCH, "nfp_um": 0.0})
