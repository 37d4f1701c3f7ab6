"""Tests of nanoro_optics.optics against published values and independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from nanoro_optics import optics
from nanoro_optics.cli import main as cli_main

# Seed 000's table is printed to 2-3 significant figures: 1% covers the rounding.
TABLE_REL_TOL = 0.01
# REFERENCES section 3: scaling factors to 3 decimals.
THREE_DECIMALS = 5e-4
# Paraxial Gaussian beam vs exact angular-spectrum propagation (REFERENCES 2): ~1% at NA 0.3.
PARAXIAL_REL_TOL = 0.011
# Independent quadrature of the on-axis intensity.
QUADRATURE_REL_TOL = 1e-4

SEED_TABLE = [
    # name, table depth of field (um)
    ("Nikon MRP70101", 11.8),
    ("Nikon MRP70401", 1.7),
    ("Nikon 100x", 0.88),
    ("Nikon MRP71900", 0.695),
]


@pytest.mark.parametrize(("name", "table_um"), SEED_TABLE)
def test_seed_000_table(name: str, table_um: float) -> None:
    obj = optics.OBJECTIVES[name]
    assert obj.depth_of_field() == pytest.approx(table_um, rel=TABLE_REL_TOL)
    direct = optics.depth_of_field(
        obj.na,
        wavelength_um=0.70,
        n=1.51 if obj.immersion == "oil" else 1.0,
        magnification=obj.magnification,
        detector_um=1.5,
    )
    assert direct == pytest.approx(table_um, rel=TABLE_REL_TOL)


def test_issue_example_value() -> None:
    dof = optics.depth_of_field(0.25, wavelength_um=0.7, magnification=10, detector_um=1.5)
    assert dof == pytest.approx(11.8, rel=TABLE_REL_TOL)
    assert isinstance(dof, float)


def test_seed_table_working_distances() -> None:
    wd = [o.working_distance_um for o in optics.OBJECTIVES.values()]
    assert wd == [7000.0, 650.0, 260.0, 230.0]


def test_seed_003_water_vs_air_095() -> None:
    lam = 0.5
    lat_air = optics.lateral_resolution(0.95, wavelength_um=lam)
    lat_water = optics.lateral_resolution(0.95, wavelength_um=lam)
    assert lat_air == lat_water
    ax_air = optics.axial_resolution(0.95, wavelength_um=lam, n=1.0)
    ax_water = optics.axial_resolution(0.95, wavelength_um=lam, n=1.33)
    assert ax_water / ax_air > 1.70


@pytest.mark.parametrize("n", [1.0, 1.33, 1.515])
def test_axial_resolution_small_na_limit(n: float) -> None:
    na = 1e-3
    lam = 0.6
    exact = optics.axial_resolution(na, wavelength_um=lam, n=n)
    assert exact == pytest.approx(2 * n * lam / na**2, rel=1e-6)
    assert exact == pytest.approx(optics.inoue_axial_depth(na, wavelength_um=lam, n=n), rel=1e-6)


def _on_axis_intensity(z_um: float, *, na: float, n: float, lam: float) -> float:
    """Scalar on-axis intensity of a uniform pupil, by direct quadrature over the angle."""
    k = 2 * np.pi / lam
    alpha = math.asin(na / n)

    def re(t: float) -> float:
        return math.cos(k * n * z_um * math.cos(t)) * math.sin(t)

    def im(t: float) -> float:
        return math.sin(k * n * z_um * math.cos(t)) * math.sin(t)

    a = integrate.quad(re, 0, alpha, epsabs=1e-13, epsrel=1e-12)[0]
    b = integrate.quad(im, 0, alpha, epsabs=1e-13, epsrel=1e-12)[0]
    return a * a + b * b


@pytest.mark.parametrize(("na", "n"), [(0.5, 1.0), (0.95, 1.0), (1.2, 1.33), (1.4, 1.515)])
def test_axial_resolution_and_fwhm_by_quadrature(na: float, n: float) -> None:
    lam = 0.55
    i0 = _on_axis_intensity(0.0, na=na, n=n, lam=lam)
    res = optics.axial_resolution(na, wavelength_um=lam, n=n)
    # first zero of the on-axis intensity
    assert _on_axis_intensity(res, na=na, n=n, lam=lam) / i0 < 1e-12
    half_w = optimize.brentq(
        lambda z: _on_axis_intensity(z, na=na, n=n, lam=lam) / i0 - 0.5, 1e-6, res, xtol=1e-12
    )
    assert optics.axial_fwhm(na, wavelength_um=lam, n=n) == pytest.approx(
        2 * half_w, rel=QUADRATURE_REL_TOL
    )
    half_c = optimize.brentq(
        lambda z: (_on_axis_intensity(z, na=na, n=n, lam=lam) / i0) ** 2 - 0.5,
        1e-6,
        res,
        xtol=1e-12,
    )
    assert optics.axial_fwhm(na, wavelength_um=lam, n=n, mode="confocal") == pytest.approx(
        2 * half_c, rel=QUADRATURE_REL_TOL
    )


def test_lateral_resolution_value() -> None:
    assert optics.lateral_resolution(1.4, wavelength_um=0.5) == pytest.approx(0.61 * 0.5 / 1.4)


def test_berek_by_hand() -> None:
    got = optics.berek_depth_of_field(0.25, wavelength_um=0.55, total_magnification=100, n=1.0)
    assert got == pytest.approx(0.55 / (2 * 0.0625) + 340 / 25)


def test_effective_na() -> None:
    assert optics.effective_na(1.4, n_immersion=1.515, n_sample=1.33) == pytest.approx(1.33)
    assert optics.effective_na(1.2, n_immersion=1.515, n_sample=1.33) == pytest.approx(1.2)
    assert optics.effective_na(1.2, n_immersion=1.33, n_sample=1.515) == pytest.approx(1.2)
    assert optics.effective_na(0.95, n_immersion=1.0, n_sample=1.33) == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("na", "n1", "n2", "expected"),
    [(1.3, 1.518, 1.33, 0.700), (1.3, 1.518, 1.473, 0.941), (0.85, 1.0, 1.33, 1.541)],
)
def test_focal_shift_ratio_references(na: float, n1: float, n2: float, expected: float) -> None:
    got = optics.focal_shift_ratio(na, n_immersion=n1, n_sample=n2)
    assert got == pytest.approx(expected, abs=THREE_DECIMALS)


def test_focal_shift_ratio_refuses_total_internal_reflection() -> None:
    with pytest.raises(ValueError, match="n_sample"):
        optics.focal_shift_ratio(1.4, n_immersion=1.515, n_sample=1.33)


def test_gaussian_beam_index_dependence() -> None:
    lam, na = 0.488, 0.1
    assert optics.beam_waist(na, wavelength_um=lam) == pytest.approx(lam / (np.pi * na))
    z1 = optics.rayleigh_range(na, wavelength_um=lam, n=1.0)
    z133 = optics.rayleigh_range(na, wavelength_um=lam, n=1.33)
    assert z133 / z1 == pytest.approx(1.33)
    assert optics.confocal_parameter(na, wavelength_um=lam, n=1.33) == pytest.approx(2 * z133)
    assert optics.light_sheet_field_of_view(na, wavelength_um=lam, n=1.33) == pytest.approx(
        2 * z133
    )
    w0 = optics.beam_waist(na, wavelength_um=lam)
    assert optics.beam_radius(z133, na=na, wavelength_um=lam, n=1.33) == pytest.approx(
        math.sqrt(2) * w0
    )
    assert optics.gouy_phase(z133, na=na, wavelength_um=lam, n=1.33) == pytest.approx(np.pi / 4)


@pytest.mark.parametrize(
    ("na", "exact_ratio"), [(0.05, 1.4146), (0.1, 1.4157), (0.2, 1.4204), (0.3, 1.4286)]
)
def test_paraxial_beam_against_angular_spectrum(na: float, exact_ratio: float) -> None:
    """REFERENCES section 2: exact w(zR)/w0 in n = 1.33; the paraxial model is within ~1%."""
    lam, n = 0.5, 1.33
    zr = optics.rayleigh_range(na, wavelength_um=lam, n=n)
    ratio = optics.beam_radius(zr, na=na, wavelength_um=lam, n=n) / optics.beam_waist(
        na, wavelength_um=lam
    )
    assert ratio == pytest.approx(exact_ratio, rel=PARAXIAL_REL_TOL)


def test_light_sheet_thickness_definitions() -> None:
    lam, na = 0.5, 0.2
    assert optics.light_sheet_thickness(na, wavelength_um=lam) == pytest.approx(
        0.6366 * lam / na, rel=1e-3
    )
    assert optics.light_sheet_thickness(na, wavelength_um=lam, definition="fwhm") == (
        pytest.approx(0.3748 * lam / na, rel=1e-3)
    )


# ---------------------------------------------------------------- properties (hypothesis)

nas = st.floats(0.01, 0.99)
lams = st.floats(0.2, 2.0)
indices = st.floats(1.0, 1.6)


@settings(max_examples=300, deadline=None)
@given(na1=nas, na2=nas, lam=lams, n=indices)
def test_dof_decreasing_in_na(na1: float, na2: float, lam: float, n: float) -> None:
    lo, hi = sorted((na1, na2))
    if hi - lo < 1e-9:
        return
    kw = {"wavelength_um": lam, "n": n, "magnification": 20.0, "detector_um": 1.5}
    assert optics.depth_of_field(lo, **kw) > optics.depth_of_field(hi, **kw)


@settings(max_examples=300, deadline=None)
@given(na=nas, lam1=lams, lam2=lams, n1=indices, n2=indices)
def test_dof_increasing_in_wavelength_and_index(
    na: float, lam1: float, lam2: float, n1: float, n2: float
) -> None:
    (la, lb), (na_, nb) = sorted((lam1, lam2)), sorted((n1, n2))
    if lb - la > 1e-9:
        assert optics.depth_of_field(na, wavelength_um=la) < optics.depth_of_field(
            na, wavelength_um=lb
        )
    if nb - na_ > 1e-9:
        assert optics.depth_of_field(na, wavelength_um=0.5, n=na_) < optics.depth_of_field(
            na, wavelength_um=0.5, n=nb
        )
        assert optics.axial_resolution(na, wavelength_um=0.5, n=na_) < optics.axial_resolution(
            na, wavelength_um=0.5, n=nb
        )


BROADCASTING = [
    lambda na, lam: optics.depth_of_field(na, wavelength_um=lam),
    lambda na, lam: optics.depth_of_field(na, wavelength_um=lam, magnification=10, detector_um=2),
    lambda na, lam: optics.wave_optical_depth(na, wavelength_um=lam),
    lambda na, lam: optics.inoue_axial_depth(na, wavelength_um=lam),
    lambda na, lam: optics.berek_depth_of_field(na, wavelength_um=lam, total_magnification=100),
    lambda na, lam: optics.axial_resolution(na, wavelength_um=lam),
    lambda na, lam: optics.axial_fwhm(na, wavelength_um=lam, mode="confocal"),
    lambda na, lam: optics.lateral_resolution(na, wavelength_um=lam),
    lambda na, lam: optics.beam_waist(na, wavelength_um=lam),
    lambda na, lam: optics.rayleigh_range(na, wavelength_um=lam, n=1.33),
    lambda na, lam: optics.confocal_parameter(na, wavelength_um=lam),
    lambda na, lam: optics.light_sheet_thickness(na, wavelength_um=lam, definition="fwhm"),
    lambda na, lam: optics.light_sheet_field_of_view(na, wavelength_um=lam),
    lambda na, lam: optics.beam_radius(lam, na=na, wavelength_um=lam),
    lambda na, lam: optics.gouy_phase(lam, na=na, wavelength_um=lam),
    lambda na, lam: optics.effective_na(na, n_immersion=1.6, n_sample=lam + 1.0),
    lambda na, lam: optics.focal_shift_ratio(na, n_immersion=1.0, n_sample=1.0 + lam),
]

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@pytest.mark.parametrize("fn", BROADCASTING)
@settings(max_examples=25, deadline=None)
@given(shape_a=shapes, shape_b=shapes, data=st.data())
def test_broadcasting_like_numpy(fn, shape_a, shape_b, data) -> None:  # type: ignore[no-untyped-def]
    try:
        expected = np.broadcast_shapes(shape_a, shape_b)
    except ValueError:
        return
    na = np.full(shape_a, data.draw(st.floats(0.05, 0.95)))
    lam = np.full(shape_b, data.draw(st.floats(0.3, 1.0)))
    out = fn(na, lam)
    # numpy's own rule: 0-d arrays in give a numpy scalar out, like a ufunc
    assert np.shape(out) == expected
    assert isinstance(out, np.ndarray) or expected == ()
    scalar = fn(float(na.flat[0]), float(lam.flat[0]))
    assert isinstance(scalar, float)
    np.testing.assert_allclose(out, scalar, rtol=1e-12)


# ---------------------------------------------------------------- bad input

BAD = [
    (lambda: optics.depth_of_field(0, wavelength_um=0.5), "na"),
    (lambda: optics.depth_of_field(-0.3, wavelength_um=0.5), "na"),
    (lambda: optics.depth_of_field(float("nan"), wavelength_um=0.5), "na"),
    (lambda: optics.depth_of_field(float("inf"), wavelength_um=0.5), "na"),
    (lambda: optics.depth_of_field(1.2, wavelength_um=0.5), "1.2"),
    (lambda: optics.depth_of_field(0.5, wavelength_um=0.0), "wavelength_um"),
    (lambda: optics.depth_of_field(0.5, wavelength_um=-1), "wavelength_um"),
    (
        lambda: optics.depth_of_field(0.5, wavelength_um=0.5, magnification=0, detector_um=1),
        "magnification",
    ),
    (lambda: optics.depth_of_field(0.5, wavelength_um=0.5, magnification=10), "detector_um"),
    (lambda: optics.depth_of_field(0.5, wavelength_um=0.5, n=float("nan")), "n"),
    (lambda: optics.axial_resolution(1.4, wavelength_um=0.5, n=1.33), "1.4"),
    (lambda: optics.axial_resolution(np.array([0.5, 1.5]), wavelength_um=0.5), "1.5"),
    (lambda: optics.rayleigh_range(0.5, wavelength_um=np.array([0.5, np.nan])), "wavelength_um"),
    (lambda: optics.effective_na(1.6, n_immersion=1.515, n_sample=1.33), "n_immersion"),
    (lambda: optics.axial_fwhm(0.5, wavelength_um=0.5, mode="two-photon"), "mode"),
    (lambda: optics.light_sheet_thickness(0.5, wavelength_um=0.5, definition="hwhm"), "definition"),
    (lambda: optics.Objective("x", 10, 1.2, "air", 1.0, 100), "na"),
    (lambda: optics.Objective("x", -10, 0.2, "air", 1.0, 100), "magnification"),
    (lambda: optics.Objective("x", 10, 0.2, "air", 1.0, float("inf")), "working_distance_um"),
    (lambda: optics.OBJECTIVES["Nikon MRP71900"].with_immersion("air"), "na"),
]


@pytest.mark.parametrize(("call", "word"), BAD)
def test_bad_input_raises_value_error_naming_it(call, word: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize("value", [True, "0.5", 1 + 2j, [0.1, [0.2, 0.3]]])
def test_bad_types_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="na"):
        optics.depth_of_field(value, wavelength_um=0.5)  # type: ignore[arg-type]


def test_objective_is_frozen_and_replace_revalidates() -> None:
    obj = optics.OBJECTIVES["Nikon MRP70401"]
    with pytest.raises(AttributeError):
        obj.na = 0.8  # type: ignore[misc]
    oil = obj.with_immersion("oil")
    assert oil.n_immersion == optics.OIL_INDEX and oil.na == obj.na
    assert oil.depth_of_field() > obj.depth_of_field()
    with pytest.raises(ValueError, match="na"):
        obj.replace(na=2.0)


# ---------------------------------------------------------------- CLI


def test_cli_dof_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dof", "--objective", "Nikon MRP70101", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["depth_of_field_um"] == pytest.approx(11.8, rel=TABLE_REL_TOL)
    assert out["max_z_spacing_um"] <= out["depth_of_field_um"]
    assert out["lateral_resolution_um"] == pytest.approx(0.61 * 0.7 / 0.25)


def test_cli_dof_custom_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dof", "--na", "1.25", "--magnification", "100", "--n", "1.51"]
    assert cli_main(args) == 0
    assert "0.6946 um" in capsys.readouterr().out


def test_cli_dof_bad_input_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["dof", "--na", "1.4", "--n", "1.2"]) == 2
    err = capsys.readouterr().err
    assert "na" in err and "1.4" in err and "Traceback" not in err
    assert cli_main(["dof", "--objective", "Zeiss 63x"]) == 2


@pytest.mark.parametrize(("na", "dz_um"), [(0.3, 40.0), (0.5, -20.0), (0.8, 10.0), (0.95, 8.0)])
def test_defocus_blur_radius_bounds_the_vectorial_psf(na: float, dz_um: float) -> None:
    # an independent, wave-optical check: far from focus the widefield PSF fills the
    # geometric blur disc, so its light ends at the disc's rim (to within diffraction)
    from nanoro_optics.psf import vectorial_psf

    radius = float(optics.defocus_blur_radius(dz_um, na=na, n=1.0))
    assert radius == pytest.approx(abs(dz_um) * na / math.sqrt(1.0 - na**2), rel=1e-12)
    px = 0.25
    nx = 2 * int(1.6 * radius / px) + 1
    psf = vectorial_psf(
        (1, nx, nx),
        spacing_um=(1.0, px, px),
        nfp_um=0.0,
        na=na,
        n_immersion=1.0,
        n_sample=1.0,
        wavelength_um=0.55,
        z_center_um=dz_um,
    )[0]
    yy, xx = np.mgrid[:nx, :nx] - nx // 2
    r = np.hypot(yy, xx) * px
    inside = psf[r < (1 - BLUR_RIM_REL) * radius].sum() / psf.sum()
    within = psf[r < (1 + BLUR_RIM_REL) * radius].sum() / psf.sum()
    assert inside < 0.97 and within > 0.95, (inside, within)


#: the rim of the geometric blur disc holds to this share of its radius in the vectorial
#: PSF: 86-96 % of the light lies within 0.9 R and 96-99 % within 1.1 R for NA 0.3-0.95
#: (a radius 10 % off moves one of the two past its bound)
BLUR_RIM_REL = 0.1


@settings(max_examples=50, deadline=None)
@given(
    dz=st.floats(-1e3, 1e3, allow_nan=False),
    na=st.floats(0.01, 1.4),
    n=st.floats(1.0, 1.6),
)
def test_defocus_blur_radius_grows_with_defocus_and_aperture(
    dz: float, na: float, n: float
) -> None:
    if na >= n:
        with pytest.raises(ValueError, match="na must"):
            optics.defocus_blur_radius(dz, na=na, n=n)
        return
    r = optics.defocus_blur_radius(dz, na=na, n=n)
    assert r >= 0 and optics.defocus_blur_radius(2 * dz, na=na, n=n) == pytest.approx(2 * r)
    wider = min(na * 1.01, 0.999 * n)
    assert optics.defocus_blur_radius(dz, na=wider, n=n) >= r
