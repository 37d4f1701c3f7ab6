"""BTID model, simulator and Leginon-style calibration/solve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.beamtilt import (
    BeamTiltCalibration,
    apparent_defocus,
    btid_displacement,
    defocus_error_budget,
    displacement_px,
    measure_shift,
    simulate_tilt_pair,
    simulate_tilt_series,
    solve_defocus_stig,
    tilt_pair_displacement,
)

#: Exact algebra (floating point only).
EXACT = 1e-12
#: Issue 5 acceptance for defocus on simulated pairs (um): |bias| and SD <= 5 nm.
DEFOCUS_TOL_UM = 0.005

finite = st.floats(-5, 5, allow_nan=False)
cplx = st.builds(complex, finite, finite)


def test_seed_formula_along_one_axis() -> None:
    # Leginon: d = Cs a^3 + z a (a in rad, lengths in um)
    a_mrad, z, cs_mm = 7.0, -2.3, 2.7
    d = btid_displacement(a_mrad, defocus_um=z, cs_mm=cs_mm)
    a = a_mrad * 1e-3
    assert d == pytest.approx(complex(cs_mm * 1e3 * a**3 + z * a, 0.0), abs=EXACT)


@settings(max_examples=30, deadline=None)
@given(t=cplx, c1=finite, a1=cplx, b2=cplx, a2=cplx, cs=st.floats(0, 5))
def test_symmetric_pair_cancels_even_terms(t, c1, a1, b2, a2, cs) -> None:
    full = tilt_pair_displacement(
        t, defocus_um=c1, astigmatism_um=a1, coma_um=b2, three_fold_um=a2, cs_mm=cs
    )
    w = t * 1e-3
    expected = 2 * (c1 * w + a1 * np.conj(w) + cs * 1e3 * abs(w) ** 2 * w)
    assert abs(full - expected) <= 1e-9 * (1 + abs(expected))


@settings(max_examples=20, deadline=None)
@given(t=cplx, u=cplx, b2=cplx)
def test_misalignment_with_coma_looks_like_defocus_and_astigmatism(t, u, b2) -> None:
    # D(u+t) - D(u-t) for pure coma = 2 [2 B2 u t + 2 conj(B2) (u conj(t) + conj(u) t)]/...
    w, v = t * 1e-3, u * 1e-3
    got = tilt_pair_displacement(t, misalignment_mrad=u, coma_um=b2)
    expected = 4 * b2 * v * w + 4 * np.conj(b2) * (v * np.conj(w) + np.conj(v) * w).real
    assert abs(got - expected) <= 1e-12 + 1e-9 * abs(expected)


def test_broadcasting_and_types() -> None:
    assert isinstance(btid_displacement(1.0, defocus_um=1.0), complex)
    arr = btid_displacement(np.array([1.0, 2.0j]), defocus_um=np.array([[1.0], [2.0]]))
    assert arr.shape == (2, 2)
    assert isinstance(apparent_defocus(0.0, tilt_mrad=5.0, cs_mm=2.7), float)
    assert apparent_defocus(-1.0, tilt_mrad=5j, cs_mm=2.7) == pytest.approx(-1.0 + 0.0675)


def test_error_budget_reference() -> None:
    # REFERENCES.md section 4: error = shift error (px) * pixel / tilt difference
    assert defocus_error_budget(0.1, pixel_size_nm=0.5, tilt_difference_mrad=10.0) == (
        pytest.approx(0.005)
    )
    # seed 001: 0.01 rad at 1 nm pixels resolves 0.1 um per pixel
    assert defocus_error_budget(1.0, pixel_size_nm=1.0, tilt_difference_mrad=10.0) == (
        pytest.approx(0.1)
    )


def test_displacement_px_convention() -> None:
    # x along columns (dx), y down the rows (dy); 90 degrees turns x into y
    np.testing.assert_allclose(displacement_px(1e-3 + 0j, pixel_size_nm=0.5), [0.0, 2.0])
    np.testing.assert_allclose(
        displacement_px(1e-3 + 0j, pixel_size_nm=0.5, image_rotation_deg=90.0),
        [2.0, 0.0],
        atol=EXACT,
    )


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: btid_displacement("a"), TypeError, "tilt_mrad"),
        (lambda: btid_displacement(True), TypeError, "tilt_mrad"),
        (lambda: btid_displacement(np.nan), ValueError, "tilt_mrad"),
        (lambda: btid_displacement(1.0, defocus_um=np.inf), ValueError, "defocus_um"),
        (lambda: btid_displacement(1.0, defocus_um=1j), TypeError, "defocus_um"),
        (lambda: displacement_px(1.0, pixel_size_nm=0.0), ValueError, "pixel_size_nm"),
        (
            lambda: defocus_error_budget(1, pixel_size_nm=1, tilt_difference_mrad=0),
            ValueError,
            "tilt_difference_mrad",
        ),
        (lambda: simulate_tilt_series(tilts_mrad=[1], shape=(8, 8)), ValueError, "shape"),
        (lambda: simulate_tilt_series(tilts_mrad=[1], contrast=0.0), ValueError, "contrast"),
        (lambda: simulate_tilt_series(tilts_mrad=[1], dose_e_per_px=-1.0), ValueError, "dose"),
        (
            lambda: simulate_tilt_series(tilts_mrad=[50], defocus_um=-500.0, shape=(32, 32)),
            ValueError,
            "displacement",
        ),
        (lambda: simulate_tilt_pair(tilt_mrad=(1, 2, 3)), ValueError, "tilt_mrad"),
    ],
)
def test_bad_model_input(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_simulator_truth_and_noise() -> None:
    p = simulate_tilt_pair(
        tilt_mrad=(0.0, 2.0),
        shape=(64, 96),
        pixel_size_nm=1.0,
        defocus_um=-1.5,
        dose_e_per_px=10.0,
        seed=3,
    )
    assert p.reference.shape == (64, 96)
    assert p.shift_px == pytest.approx((-6.0, 0.0))  # 2 z t along y / 1 nm
    assert float(np.mean(p.reference)) == pytest.approx(10.0, rel=0.1)
    assert np.all(p.reference == np.round(p.reference))  # counts
    same = simulate_tilt_pair(
        tilt_mrad=(0.0, 2.0),
        shape=(64, 96),
        pixel_size_nm=1.0,
        defocus_um=-1.5,
        dose_e_per_px=10.0,
        seed=3,
    )
    np.testing.assert_array_equal(p.moving, same.moving)


# --- Leginon calibration and solve ---------------------------------------------------------

PIXEL_NM = 0.5
ROTATION_DEG = 23.0
#: complex A1 (um) produced by one unit of the X and of the Y stigmator of the virtual scope
STIG_GAIN_UM = (0.08 + 0.01j, -0.02 + 0.09j)


def _model_pair(
    tilt: complex, z: float, stig: tuple[float, float], *, cs_mm: float = 0.0, astig0: complex = 0j
) -> np.ndarray:
    """Exact pair shift (px) of a virtual scope: no images, only the model."""
    a1 = astig0 + stig[0] * STIG_GAIN_UM[0] + stig[1] * STIG_GAIN_UM[1]
    d = tilt_pair_displacement(tilt, defocus_um=z, astigmatism_um=a1, cs_mm=cs_mm)
    return displacement_px(d, pixel_size_nm=PIXEL_NM, image_rotation_deg=ROTATION_DEG)


def _calibration() -> BeamTiltCalibration:
    return BeamTiltCalibration.measure(
        _model_pair, tilt_mrad=3.0, defocus_um=(-2.0, -1.0), stig_step=0.5
    )


def test_leginon_round_trip_exact() -> None:
    cal = _calibration()
    tilts = [5.0, 5.0j]
    z, stig = -1.37, (0.4, -0.7)
    shifts = [_model_pair(t, z, stig) for t in tilts]
    res = solve_defocus_stig(shifts, tilts, cal)
    assert res.defocus_um == pytest.approx(z, abs=1e-9)
    assert res.stigmator == pytest.approx(stig, abs=1e-9)
    assert res.residual_rms_px < 1e-9 and res.passed and res.dof == 1
    assert res.focus_correction_um == pytest.approx(-z)
    assert res.stig_correction == pytest.approx((-0.4, 0.7))
    # applying the correction leaves nothing to measure
    after = [
        _model_pair(t, z + res.focus_correction_um, tuple(np.add(stig, res.stig_correction)))
        for t in tilts
    ]
    assert np.max(np.abs(after)) < 1e-8


def test_cs_offset_modelled_or_reported() -> None:
    cal = _calibration()  # calibrated by differences: Cs cancels in the matrices
    z, t = -0.8, [5.0, 5.0j, -5.0 + 0.0j]
    shifts = [_model_pair(tt, z, (0.0, 0.0), cs_mm=2.7) for tt in t]
    plain = solve_defocus_stig(shifts, t, cal, fit_stig=False)
    assert not plain.cs_corrected and plain.cs_offset_um is None
    assert plain.defocus_um == pytest.approx(apparent_defocus(z, tilt_mrad=5.0, cs_mm=2.7))
    fixed = solve_defocus_stig(shifts, t, cal, fit_stig=False, cs_mm=2.7)
    assert fixed.cs_corrected and fixed.cs_offset_um == pytest.approx(0.0675)
    assert fixed.defocus_um == pytest.approx(z, abs=1e-9)


def test_fit_limit_means_the_same_at_any_pixel_size() -> None:
    tilts = [4.0, 4.0j, -4.0]
    residual_um = []
    for pixel in (0.25, 2.0):
        f = np.array([[0.0, 1.0], [1.0, 0.0]]) * (1e-3 / pixel) * 1e3 * 1e-3  # px/(um mrad)
        cal = BeamTiltCalibration(defocus_matrix=f)
        shifts = np.array([2 * f @ [np.real(t), np.imag(t)] * -1.0 for t in tilts])
        shifts[1] += 0.05 / pixel  # the same 0.05 nm inconsistency, in pixels
        res = solve_defocus_stig(shifts, tilts, cal, fit_limit_um=0.5)
        residual_um.append(res.residual_rms_um)
    assert residual_um[0] == pytest.approx(residual_um[1], rel=1e-9)


def test_fit_limit_flags_a_bad_peak() -> None:
    cal = _calibration()
    tilts = [5.0, 5.0j, -5.0, -5.0j]
    shifts = np.array([_model_pair(t, -1.0, (0.0, 0.0)) for t in tilts])
    good = solve_defocus_stig(shifts, tilts, cal)
    shifts[2] += (40.0, -25.0)  # a random peak
    bad = solve_defocus_stig(shifts, tilts, cal)
    assert good.passed and not bad.passed
    assert bad.residual_sum_sq_px2 > 100.0


def test_solve_errors() -> None:
    cal = _calibration()
    with pytest.raises(ValueError, match="two different directions"):
        solve_defocus_stig([[1.0, 2.0]], [5.0], cal)
    with pytest.raises(ValueError, match="one \\(dy, dx\\) row per tilt"):
        solve_defocus_stig([[1.0, 2.0]], [5.0, 5.0j], cal)
    with pytest.raises(ValueError, match="stigmator matrices"):
        solve_defocus_stig(
            [[1.0, 2.0]],
            [5.0],
            BeamTiltCalibration(defocus_matrix=cal.defocus_matrix),
            fit_stig=True,
        )
    with pytest.raises(TypeError, match="BeamTiltCalibration"):
        solve_defocus_stig([[1.0, 2.0]], [5.0], "cal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-zero"):
        solve_defocus_stig([[1.0, 2.0]], [0.0], cal, fit_stig=False)
    with pytest.raises(ValueError, match="invertible"):
        BeamTiltCalibration(defocus_matrix=[[1.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="two different levels"):
        BeamTiltCalibration.from_shifts(
            tilt_mrad=1.0, defocus_um=(1.0, 1.0), defocus_shifts_px=np.zeros((2, 2, 2))
        )
    with pytest.raises(ValueError, match="fit_limit_um"):
        solve_defocus_stig([[1.0, 2.0]], [5.0], cal, fit_stig=False, fit_limit_um=0.0)


def test_defocus_from_simulated_images_meets_acceptance() -> None:
    # issue 5: 0.5 nm pixels, 5 mrad, Cs 2.7 mm, 10 e/px; bias and SD <= 5 nm
    cal = BeamTiltCalibration.measure(
        lambda t, z, s: displacement_px(tilt_pair_displacement(t, defocus_um=z), pixel_size_nm=0.5),
        tilt_mrad=5.0,
        defocus_um=(-2.0, 0.0),
    )
    errors = []
    for seed in range(6):
        p = simulate_tilt_pair(
            tilt_mrad=5.0,
            shape=(256, 256),
            pixel_size_nm=0.5,
            defocus_um=-1.2,
            cs_mm=2.7,
            dose_e_per_px=10.0,
            seed=seed,
        )
        shift = measure_shift(p.reference, p.moving).shift_px
        res = solve_defocus_stig([shift], [5.0], cal, cs_mm=2.7)
        errors.append(res.defocus_um - p.defocus_um)
    assert abs(np.mean(errors)) <= DEFOCUS_TOL_UM
    assert np.std(errors, ddof=1) <= DEFOCUS_TOL_UM
