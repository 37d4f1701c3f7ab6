"""Tests of nanoro_optics.psf: integrals, on-axis intensity, focal position, scaling factors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from nanoro_optics import psf

OIL, GLYCEROL, WATER = 1.518, 1.473, 1.33

# Egner & Hell Table 20.1 acceptance (issue 4): glycerol within 3%, water within 10%.
GLYCEROL_REL_TOL = 0.03
WATER_REL_TOL = 0.10
# Seed 003's "99%": AFP/NFP within 2% of the critical ratio, air objective into ice.
ICE_REL_TOL = 0.02
# Scaling factors to 3 decimals. REFERENCES prints Stallinga oil->glycerol as 0.946; the
# formula gives 0.945490 (closed form and quadrature agree to 1e-14), a double rounding
# (0.94549 -> 0.9455 -> 0.946), so the tolerance allows half a unit plus 1e-4.
THREE_DECIMALS = 5e-4 + 1e-4
# Gauss-Legendre against adaptive quadrature (scipy.integrate.quad at rtol 1e-12).
QUADRATURE_REL_TOL = 1e-9
# Matched indices: AFP = NFP within 1 nm (issue 4).
MATCHED_AFP_TOL_UM = 1e-3
# Wave-optics AFP/NFP for oil -> water NA 1.3 (REFERENCES 3, 3 decimals, wavelength not
# stated there): agreement to a few 1e-3.
WAVE_TABLE_ABS_TOL = 5e-3
# Loginov's depth-dependent model tracks wave optics "within ~1-5%" (REFERENCES 3).
LOGINOV_REL_TOL = 0.06

EGNER_NFP = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 50.0)
EGNER_GLYCEROL = (-0.28, -0.55, -0.83, -1.10, -1.33, -1.54, -2.30)
EGNER_WATER = (-1.0, -1.83, -2.57, -3.3, -4.02, -4.72, -7.57)


def slow_integral(
    order: int, r: float, z: float, *, nfp: float, na: float, n1: float, n2: float, lam: float
) -> complex:
    """The obvious reference: the integrand of REFERENCES 3 by adaptive quadrature."""
    k = 2 * math.pi / lam
    alpha = math.asin(na / n1)

    def f(t: float) -> complex:
        s1, c1 = math.sin(t), math.cos(t)
        s2 = n1 * s1 / n2
        c2 = complex(1 - s2 * s2) ** 0.5
        ts = 2 * n1 * c1 / (n1 * c1 + n2 * c2)
        tp = 2 * n1 * c1 / (n2 * c1 + n1 * c2)
        ang = (ts + tp * c2, tp * s2, ts - tp * c2)[order]
        phase = k * (-nfp * (n1 * c1 - n2 * c2) + n2 * z * c2)
        return math.sqrt(c1) * s1 * ang * special.jv(order, k * n1 * r * s1) * np.exp(1j * phase)

    edges = [0.0, alpha]
    if n2 < n1 and math.asin(n2 / n1) < alpha:
        edges.insert(1, math.asin(n2 / n1))
    total = 0j
    for lo, hi in itertools.pairwise(edges):
        for part, unit in ((lambda t: f(t).real, 1), (lambda t: f(t).imag, 1j)):
            val = integrate.quad(part, lo, hi, limit=400, epsabs=0, epsrel=1e-12)[0]
            total += unit * val
    return total


CASES = [
    # na, n1, n2, lam, nfp, z, r
    (1.3, OIL, WATER, 0.52, 10.0, -2.0, 0.3),  # oil -> water
    (1.3, OIL, GLYCEROL, 0.514, 50.0, -2.3, 1.0),  # deep, off axis
    (0.85, 1.0, 1.3, 0.52, 5.0, 2.0, 0.4),  # air -> ice
    (1.45, OIL, WATER, 0.5, 2.0, 0.5, 0.2),  # evanescent: NA > n_sample
    (1.2, 1.33, 1.33, 0.5, 3.0, 0.7, 0.25),  # matched (Richards-Wolf)
]


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("case", CASES)
def test_integrals_match_adaptive_quadrature(case: tuple[float, ...]) -> None:
    na, n1, n2, lam, nfp, z, r = case
    fast = psf.vectorial_integrals(
        r, z, nfp_um=nfp, na=na, n_immersion=n1, n_sample=n2, wavelength_um=lam
    )
    scale = abs(slow_integral(0, 0.0, z, nfp=nfp, na=na, n1=n1, n2=n2, lam=lam))
    for order in range(3):
        ref = slow_integral(order, r, z, nfp=nfp, na=na, n1=n1, n2=n2, lam=lam)
        assert abs(complex(fast[order]) - ref) <= QUADRATURE_REL_TOL * scale


def test_integrals_on_axis_have_only_i0() -> None:
    i0, i1, i2 = psf.vectorial_integrals(
        0.0,
        [-1.0, 0.0, 1.0],
        nfp_um=5.0,
        na=1.3,
        n_immersion=OIL,
        n_sample=WATER,
        wavelength_um=0.5,
    )
    assert np.all(np.abs(i0) > 0)
    assert np.all(i1 == 0) and np.all(i2 == 0)


def test_integrals_converge_deep() -> None:
    # doubling the automatic node count changes nothing at NFP = 100 um in water
    kw = dict(nfp_um=100.0, na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)
    z = np.linspace(-16.0, -12.0, 9)
    auto = psf.vectorial_integrals(0.3, z, **kw)[0]
    dense = psf.vectorial_integrals(0.3, z, n_nodes=1500, **kw)[0]
    assert np.max(np.abs(auto - dense)) <= 1e-9 * np.max(np.abs(dense))


def test_axial_intensity_normalised_at_interface_focus() -> None:
    kw = dict(na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)
    assert psf.axial_intensity(0.0, nfp_um=0.0, **kw) == pytest.approx(1.0, rel=1e-12)
    conf = psf.axial_intensity(0.0, nfp_um=0.0, emission_wavelength_um=0.6, **kw)
    assert conf == pytest.approx(1.0, rel=1e-12)
    z = np.linspace(-1, 1, 5)
    wide_ex = psf.axial_intensity(z, nfp_um=3.0, **kw)
    wide_em = psf.axial_intensity(z, nfp_um=3.0, **{**kw, "wavelength_um": 0.6})
    conf = psf.axial_intensity(z, nfp_um=3.0, emission_wavelength_um=0.6, **kw)
    np.testing.assert_allclose(conf, wide_ex * wide_em, rtol=1e-12)
    assert isinstance(psf.axial_intensity(0.5, nfp_um=1.0, **kw), float)


def test_axial_intensity_matches_slow_reference() -> None:
    kw = dict(nfp=20.0, na=1.3, n1=OIL, n2=GLYCEROL, lam=0.514)
    z = np.array([-1.5, -0.8, 0.0, 0.6])
    fast = psf.axial_intensity(
        z, nfp_um=20.0, na=1.3, n_immersion=OIL, n_sample=GLYCEROL, wavelength_um=0.514
    )
    norm = abs(slow_integral(0, 0.0, 0.0, **{**kw, "nfp": 0.0})) ** 2
    slow = np.array([abs(slow_integral(0, 0.0, zz, **kw)) ** 2 / norm for zz in z])
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


@pytest.mark.parametrize(
    ("n_sample", "table", "tol"),
    [(GLYCEROL, EGNER_GLYCEROL, GLYCEROL_REL_TOL), (WATER, EGNER_WATER, WATER_REL_TOL)],
    ids=["glycerol", "water"],
)
def test_egner_hell_table_20_1(n_sample: float, table: tuple[float, ...], tol: float) -> None:
    nfp = np.array((0.0, *EGNER_NFP))
    res = psf.apparent_focal_position(
        nfp,
        na=1.3,
        n_immersion=OIL,
        n_sample=n_sample,
        wavelength_um=0.514,
        emission_wavelength_um=0.59,
    )
    shift = res.afp_um - nfp
    assert shift[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(shift[1:], table, rtol=tol)
    # the peak falls with depth (its values are not a test target, REFERENCES 3)
    assert res.peak_intensity[0] == pytest.approx(1.0, rel=1e-9)
    assert np.all(np.diff(res.peak_intensity) < 0)


def test_seed_003_air_objective_into_ice() -> None:
    nfp = np.linspace(2.0, 8.0, 7)
    kw = dict(na=0.85, n_immersion=1.0, n_sample=1.3)
    res = psf.apparent_focal_position(nfp, wavelength_um=0.52, **kw)
    crit = psf.axial_scaling_factor(model="critical", **kw)
    np.testing.assert_allclose(res.afp_um / nfp, crit, rtol=ICE_REL_TOL)


def test_wave_factor_matches_reference_values() -> None:
    nfp = np.array([2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    table = np.array([0.741, 0.784, 0.806, 0.824, 0.844, 0.852])
    sf = psf.axial_scaling_factor(
        1.3, n_immersion=OIL, n_sample=WATER, model="wave", nfp_um=nfp, wavelength_um=0.52
    )
    np.testing.assert_allclose(sf, table, atol=WAVE_TABLE_ABS_TOL)
    # Loginov's depth-dependent factor tracks it
    lg = psf.axial_scaling_factor(
        1.3, n_immersion=OIL, n_sample=WATER, model="loginov", nfp_um=nfp, wavelength_um=0.52
    )
    np.testing.assert_allclose(lg, sf, rtol=LOGINOV_REL_TOL)


@pytest.mark.parametrize("nfp", [0.0, 7.0, 100.0])
def test_matched_indices_focus_stays_nominal(nfp: float) -> None:
    res = psf.apparent_focal_position(
        nfp,
        na=1.2,
        n_immersion=1.33,
        n_sample=1.33,
        wavelength_um=0.5,
        emission_wavelength_um=0.55,
    )
    assert abs(res.afp_um - nfp) < MATCHED_AFP_TOL_UM
    assert res.peak_intensity == pytest.approx(1.0, rel=1e-9)
    assert isinstance(res.afp_um, float)


def test_matched_axial_intensity_symmetric() -> None:
    z = np.linspace(0.1, 2.0, 7)
    kw = dict(nfp_um=5.0, na=1.2, n_immersion=1.33, n_sample=1.33, wavelength_um=0.5)
    np.testing.assert_allclose(
        psf.axial_intensity(z, **kw), psf.axial_intensity(-z, **kw), rtol=1e-10
    )


def test_evanescent_focus_found() -> None:
    # NA 1.45 oil objective into water: beyond the critical angle, light stays near the glass
    res = psf.apparent_focal_position(
        [0.0, 5.0], na=1.45, n_immersion=OIL, n_sample=WATER, wavelength_um=0.5
    )
    assert np.all(np.isfinite(res.afp_um)) and res.afp_um[0] >= 0.0
    assert 0.6 * 5.0 < res.afp_um[1] < 5.0


SCALING_TABLE = {
    # model: (oil->water NA 1.3, oil->glycerol NA 1.3, air->water NA 0.85), REFERENCES 3
    "carlsson": (0.876, 0.970, 1.330),
    "visser": (0.358, 0.884, 1.942),
    "diel_median": (0.846, 0.964, 1.392),
    "diel_mean": (0.799, 0.955, 1.457),
    "stallinga": (0.745, 0.946, 1.522),
    "lyakin": (0.772, 0.948, 1.523),
    "critical": (0.700, 0.941, 1.541),
}
SCALING_CASES = ((1.3, OIL, WATER), (1.3, OIL, GLYCEROL), (0.85, 1.0, 1.33))


@pytest.mark.parametrize("model", sorted(SCALING_TABLE))
def test_scaling_factor_table(model: str) -> None:
    for (na, n1, n2), expected in zip(SCALING_CASES, SCALING_TABLE[model], strict=True):
        got = psf.axial_scaling_factor(na, n_immersion=n1, n_sample=n2, model=model)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, abs=THREE_DECIMALS)


def test_stallinga_closed_form_matches_pupil_average() -> None:
    na, n1, n2 = 1.1, 1.518, 1.38

    def avg(g):  # type: ignore[no-untyped-def]
        return integrate.quad(lambda r: 2 * r * g(r), 0, 1, epsabs=0, epsrel=1e-13)[0]

    f1 = lambda r: math.sqrt(n1 * n1 - na * na * r * r)  # noqa: E731
    f2 = lambda r: math.sqrt(n2 * n2 - na * na * r * r)  # noqa: E731
    m1, m2 = avg(f1), avg(f2)
    ref = (avg(lambda r: f1(r) ** 2) - m1 * m1) / (avg(lambda r: f1(r) * f2(r)) - m1 * m2)
    got = psf.axial_scaling_factor(na, n_immersion=n1, n_sample=n2, model="stallinga")
    assert got == pytest.approx(ref, rel=1e-10)


def test_scaling_broadcasts_and_matched_is_one() -> None:
    na = np.array([0.5, 0.9, 1.2])
    for model in psf.SCALING_MODELS[:7]:
        sf = psf.axial_scaling_factor(na, n_immersion=1.33, n_sample=1.33, model=model)
        assert sf.shape == (3,)
        np.testing.assert_allclose(sf, 1.0, rtol=1e-12)
    lg = psf.axial_scaling_factor(
        na,
        n_immersion=1.33,
        n_sample=1.33,
        model="loginov",
        nfp_um=[[1.0], [10.0]],
        wavelength_um=0.5,
    )
    assert lg.shape == (2, 3)
    np.testing.assert_allclose(lg, 1.0)


@settings(max_examples=25, deadline=None)
@given(
    n1=st.floats(1.0, 1.52),
    n2=st.floats(1.0, 1.52),
    frac=st.floats(0.05, 0.95),
    nfp=st.floats(0.0, 200.0),
)
def test_loginov_bounded_between_critical_and_carlsson(
    n1: float, n2: float, frac: float, nfp: float
) -> None:
    na = frac * min(n1, n2)
    kw = dict(n_immersion=n1, n_sample=n2)
    crit = psf.axial_scaling_factor(na, model="critical", **kw)
    carl = psf.axial_scaling_factor(na, model="carlsson", **kw)
    lg = psf.axial_scaling_factor(na, model="loginov", nfp_um=nfp, wavelength_um=0.5, **kw)
    lo, hi = min(crit, carl), max(crit, carl)
    assert lo - 1e-12 <= lg <= hi + 1e-12


def test_loginov_limits() -> None:
    kw = dict(n_immersion=OIL, n_sample=WATER, model="loginov", wavelength_um=0.52)
    crit = psf.axial_scaling_factor(1.3, n_immersion=OIL, n_sample=WATER, model="critical")
    assert psf.axial_scaling_factor(1.3, nfp_um=0.0, **kw) == pytest.approx(crit)
    deep = psf.axial_scaling_factor(1.3, nfp_um=1e7, **kw)
    assert deep == pytest.approx(WATER / OIL, rel=1e-3)


def test_actual_depth() -> None:
    kw = dict(na=1.3, n_immersion=OIL, n_sample=WATER)
    nominal = np.array([0.0, 5.0, 10.0])
    np.testing.assert_allclose(
        psf.actual_depth_um(nominal, model="carlsson", **kw), nominal * WATER / OIL
    )
    wave = psf.actual_depth_um(nominal, wavelength_um=0.52, **kw)
    afp = psf.apparent_focal_position(nominal, wavelength_um=0.52, **kw).afp_um
    np.testing.assert_allclose(wave, afp)
    assert wave[0] == 0.0
    lg = psf.actual_depth_um(nominal, model="loginov", wavelength_um=0.52, **kw)
    assert lg[0] == 0.0 and np.all(np.diff(lg) > 0)
    assert isinstance(psf.actual_depth_um(3.0, model="critical", **kw), float)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(na=1.518), "na"),
        (dict(na=1.6), "na"),
        (dict(n_sample=float("nan")), "n_sample"),
        (dict(wavelength_um=-0.5), "wavelength_um"),
        (dict(wavelength_um=float("inf")), "wavelength_um"),
        (dict(nfp_um=-1.0), "nfp_um"),
        (dict(nfp_um=float("nan")), "nfp_um"),
        (dict(emission_wavelength_um=0.0), "emission_wavelength_um"),
    ],
)
def test_bad_input_focal(kwargs: dict, match: str) -> None:
    base = dict(nfp_um=5.0, na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)
    with pytest.raises(ValueError, match=match):
        psf.apparent_focal_position(**{**base, **kwargs})
    with pytest.raises(ValueError, match=match):
        psf.axial_intensity(0.0, **{**base, **kwargs})


def test_bad_input_depth_and_scaling() -> None:
    kw = dict(na=1.3, n_immersion=OIL, n_sample=WATER, wavelength_um=0.52)
    with pytest.raises(ValueError, match="z_um"):
        psf.axial_intensity(-6.0, nfp_um=5.0, **kw)
    with pytest.raises(ValueError, match="z_um"):
        psf.axial_intensity([0.0, np.nan], nfp_um=5.0, **kw)
    with pytest.raises(ValueError, match="r_um"):
        psf.vectorial_integrals(-0.1, 0.0, nfp_um=1.0, **kw)
    with pytest.raises(ValueError, match="nfp_um"):
        psf.apparent_focal_position([], **kw)
    sk = dict(n_immersion=OIL, n_sample=WATER)
    with pytest.raises(ValueError, match="model"):
        psf.axial_scaling_factor(1.3, model="nope", **sk)
    with pytest.raises(ValueError, match="nfp_um"):
        psf.axial_scaling_factor(1.3, model="loginov", wavelength_um=0.5, **sk)
    with pytest.raises(ValueError, match="wavelength_um"):
        psf.axial_scaling_factor(1.3, model="wave", nfp_um=1.0, **sk)
    with pytest.raises(ValueError, match="nfp_um"):
        psf.axial_scaling_factor(1.3, model="wave", nfp_um=0.0, wavelength_um=0.5, **sk)
    with pytest.raises(ValueError, match="n_sample"):
        psf.axial_scaling_factor(1.4, model="critical", **sk)
    with pytest.raises(ValueError, match="n_immersion"):
        psf.axial_scaling_factor(1.6, model="carlsson", **sk)
    with pytest.raises(TypeError, match="na"):
        psf.axial_scaling_factor("1.3", model="carlsson", **sk)
    with pytest.warns(UserWarning, match="ignored"):
        psf.axial_scaling_factor(1.3, model="carlsson", nfp_um=3.0, **sk)
    with pytest.raises(ValueError, match="nominal_um"):
        psf.actual_depth_um(-1.0, model="carlsson", na=1.3, **sk)


#: agreement of two evaluations of one point whose quadrature rules differ (see above)
QUADRATURE_RTOL = 1e-6


@settings(max_examples=15, deadline=None)
@given(
    n1=st.sampled_from([1.0, 1.33, 1.406, 1.518]),
    n2=st.floats(1.0, 1.52),
    frac=st.floats(0.3, 0.95),
    nfp=st.floats(0.0, 30.0),
)
@example(n1=1.518, n2=1.3467822926616162, frac=0.88671875, nfp=0.0)  # found by CI
@example(n1=1.518, n2=1.3515625, frac=0.88671875, nfp=0.0)
def test_focus_search_finds_global_maximum(n1: float, n2: float, frac: float, nfp: float) -> None:
    na = frac * n1
    kw = dict(na=na, n_immersion=n1, n_sample=n2, wavelength_um=0.5)
    res = psf.apparent_focal_position(nfp, **kw)
    # brute force over every depth from the interface to twice the deepest estimate
    n_eff = min(na, n2)
    dz = 0.5 / (n2 - math.sqrt(n2 * n2 - n_eff * n_eff))
    z = np.arange(-nfp, 1.0 * nfp + 3 * nfp * n2 / n1 + 5 * dz, dz / 20)
    brute = psf.axial_intensity(z, nfp_um=nfp, **kw)
    # the quadrature's node count follows the z range asked for, so the same point computed
    # for two ranges differs by up to ~1e-8 (relative); the integrals themselves are checked
    # against adaptive quadrature to 1e-4 above
    assert res.peak_intensity >= brute.max() * (1 - QUADRATURE_RTOL)
    assert res.peak_intensity == pytest.approx(
        psf.axial_intensity(res.afp_um - nfp, nfp_um=nfp, **kw), rel=QUADRATURE_RTOL
    )
