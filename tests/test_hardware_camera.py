"""Tests of the simulated camera: optics against closed forms, rendering, noise, truth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics import optics
from nanoro_optics.acquire import run_zscan
from nanoro_optics.hardware import Camera, CameraError, MockZStage
from nanoro_optics.hardware.sim_camera import (
    LADDER_STEP,
    SimulatedCamera,
    Specimen,
    defocus_otf,
)
from nanoro_optics.zscan import ZScanPlan

#: discretised pupil (radius ~30 samples) vs the analytic OTF of a circular pupil
OTF_TOL = 0.02
#: added PSF variance at large defocus vs the geometric ray spread (pupil sampling ~2.4%)
GEOMETRIC_RTOL = 0.04
#: variance of simulated shot + read noise vs its expectation (65k samples: ~1% std)
NOISE_RTOL = 0.05


def _flat(shape: tuple[int, int] = (48, 48), *, h: float = 0.0, seed: int = 1) -> Specimen:
    tex = Specimen.synthetic(shape, relief_um=0.0, seed=seed).texture
    return Specimen(tex, np.full(shape, h))


def _analytic_otf(nu: np.ndarray) -> np.ndarray:
    nu = np.clip(nu, 0.0, 1.0)
    return (2 / np.pi) * (np.arccos(nu) - nu * np.sqrt(1 - nu**2))


def test_in_focus_otf_matches_circular_pupil() -> None:
    shape = (128, 128)
    p, na, lam = 0.65, 0.25, 0.7
    otf = defocus_otf(shape, pixel_um=p, na=na, n=1.0, wavelength_um=lam, dz_um=0.0)
    assert otf.shape == (128, 65) and otf[0, 0] == pytest.approx(1.0)
    fy = np.fft.fftfreq(shape[0], d=p)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=p)[None, :]
    nu = np.hypot(fy, fx) / (2 * na / lam)
    np.testing.assert_allclose(otf.real, _analytic_otf(nu), atol=OTF_TOL)
    assert np.abs(otf.imag).max() < 1e-9


def test_otf_without_aliasing_when_undersampled() -> None:
    # 2 NA / lambda = 1.86 /um above the pixel Nyquist 1/(2 x 0.4) = 1.25 /um
    shape = (64, 64)
    otf = defocus_otf(shape, pixel_um=0.4, na=0.65, n=1.0, wavelength_um=0.7, dz_um=0.0)
    fy = np.fft.fftfreq(shape[0], d=0.4)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=0.4)[None, :]
    nu = np.hypot(fy, fx) / (2 * 0.65 / 0.7)
    np.testing.assert_allclose(otf.real, _analytic_otf(nu), atol=3 * OTF_TOL)


def test_defocus_is_symmetric_and_blurs_monotonically() -> None:
    kw = {"pixel_um": 0.1625, "na": 0.65, "n": 1.0, "wavelength_um": 0.7}
    up = defocus_otf((64, 64), dz_um=1.0, **kw)
    down = defocus_otf((64, 64), dz_um=-1.0, **kw)
    np.testing.assert_allclose(np.abs(up), np.abs(down), atol=1e-12)
    mid = [abs(defocus_otf((64, 64), dz_um=dz, **kw)[0, 8]) for dz in (0.0, 0.3, 0.6, 0.9)]
    assert all(a > b for a, b in itertools.pairwise(mid))


def test_large_defocus_matches_geometric_ray_spread() -> None:
    """Defocus adds the variance of the geometric ray spread to the in-focus PSF's.

    Rays uniform in pupil coordinate s = sin(theta) land at r = dz tan(theta); averaging
    over the pupil disc of radius NA gives var_x = dz^2 (-NA^2 - ln(1 - NA^2)) / (2 NA^2)
    (non-paraxial; the paraxial disc would give (dz NA)^2 / 4).
    """
    n_px, p, na, lam = 256, 0.1625, 0.65, 0.7
    x = (np.arange(n_px) - n_px // 2) * p

    def var_x(dz: float) -> float:
        otf = defocus_otf((n_px, n_px), pixel_um=p, na=na, n=1.0, wavelength_um=lam, dz_um=dz)
        psf = np.fft.fftshift(np.fft.irfft2(otf, s=(n_px, n_px)))
        return float(np.sum(psf.sum(axis=0) * x**2) / psf.sum())

    s2 = na**2
    per_um2 = (-s2 - math.log(1 - s2)) / (2 * s2)
    v0 = var_x(0.0)
    for dz in (3.0, 6.0):
        assert var_x(dz) - v0 == pytest.approx(dz**2 * per_um2, rel=GEOMETRIC_RTOL)


def test_otf_bad_arguments() -> None:
    with pytest.raises(ValueError, match="na must be <= n"):
        defocus_otf((8, 8), pixel_um=1.0, na=1.2, n=1.0, wavelength_um=0.5, dz_um=0.0)
    with pytest.raises(ValueError, match="dz_um"):
        defocus_otf((8, 8), pixel_um=1.0, na=0.5, n=1.0, wavelength_um=0.5, dz_um=math.inf)


def test_camera_protocol_and_exposure_clock() -> None:
    stage = MockZStage()
    cam = SimulatedCamera(stage, _flat((16, 16)), exposure_ms=20.0)
    assert isinstance(cam, Camera)
    cam.snap()
    assert stage.clock.time() == pytest.approx(0.02)
    white = cam.white_dn
    cam.set_exposure_ms(40.0)
    assert cam.exposure_ms == 40.0 and cam.white_dn == pytest.approx(2 * white)
    with pytest.raises(ValueError, match="ms"):
        cam.set_exposure_ms(0.0)


def _slow_render(cam: SimulatedCamera, z: float) -> np.ndarray:
    """Obvious per-pixel reference of the rung blend."""
    out = np.empty(cam.specimen.shape)
    h = cam.ground_truth().focus_height_um
    for (r, c), hv in np.ndenumerate(h):
        u = math.asinh(abs(z - hv) / cam._z0_um) / LADDER_STEP
        k = math.floor(u)
        w = u - k
        out[r, c] = (1 - w) * cam._rung(k)[r, c] + w * cam._rung(k + 1)[r, c]
    return out


def test_render_blend_matches_reference_and_flat_rungs() -> None:
    spec = Specimen.synthetic((24, 24), relief_um=3.0, seed=2)
    cam = SimulatedCamera(MockZStage(), spec)
    for z in (-1.0, 0.7, 2.2, 5.0):
        np.testing.assert_allclose(cam.render(z), _slow_render(cam, z), atol=1e-6)
    flat = SimulatedCamera(MockZStage(), _flat((24, 24), h=2.0))
    dz = flat._z0_um * math.sinh(3 * LADDER_STEP)  # exactly on rung 3
    direct = np.fft.irfft2(
        np.fft.rfft2(flat.specimen.texture)
        * defocus_otf(
            (24, 24), pixel_um=flat.pixel_um, na=0.65, n=1.0, wavelength_um=0.7, dz_um=dz
        ),
        s=(24, 24),
    )
    np.testing.assert_allclose(flat.render(2.0 + dz), direct, atol=1e-6)
    np.testing.assert_allclose(flat.render(2.0 - dz), direct, atol=1e-6)


def test_sharpest_frame_is_at_the_specimen_height() -> None:
    cam = SimulatedCamera(MockZStage(), _flat((48, 48), h=3.0), noise=False)
    zs = np.arange(0.0, 6.01, 0.25)
    sharp = [np.var(np.diff(cam.render(z), axis=1)) for z in zs]
    assert zs[int(np.argmax(sharp))] == 3.0


def test_snap_reads_the_stage_position() -> None:
    stage = MockZStage(position_um=3.0)
    cam = SimulatedCamera(stage, _flat((32, 32), h=3.0), noise=False)
    in_focus = cam.snap().astype(float)
    stage.move_to_um(8.0)
    stage.wait_until_idle()
    blurred = cam.snap().astype(float)
    assert np.var(np.diff(blurred, axis=1)) < 0.5 * np.var(np.diff(in_focus, axis=1))
    np.testing.assert_allclose(
        cam.frame_to_reflectance(in_focus), cam.ground_truth().reflectance, atol=1e-4
    )


def test_seeded_noise_and_its_statistics() -> None:
    spec = Specimen(np.full((256, 256), 0.5), np.zeros((256, 256)))

    def cam(seed: int) -> SimulatedCamera:
        return SimulatedCamera(MockZStage(), spec, seed=seed, read_noise_e=3.0, gain_e_per_dn=0.5)

    a, b, c = cam(5).snap(), cam(5).snap(), cam(6).snap()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    one = cam(5)
    electrons = 0.5 * one.signal_e_per_ms * one.exposure_ms
    expected_var = (electrons + 3.0**2) / 0.5**2 + 1 / 12  # + quantisation
    frame = a.astype(float)
    assert frame.mean() == pytest.approx(100.0 + electrons / 0.5, rel=1e-3)
    assert frame.var() == pytest.approx(expected_var, rel=NOISE_RTOL)


def test_adc_saturates_and_8_bit() -> None:
    spec = Specimen(np.full((16, 16), 1.0), np.zeros((16, 16)))
    cam = SimulatedCamera(MockZStage(), spec, bit_depth=8, noise=False)
    frame = cam.snap()
    assert frame.dtype == np.uint8 and frame.max() == 255


def test_ground_truth_and_index_mismatch_ratio() -> None:
    spec = Specimen.synthetic((16, 16), relief_um=10.0, base_um=-10.0, seed=3)
    plain = SimulatedCamera(MockZStage(), spec)
    np.testing.assert_array_equal(plain.ground_truth().focus_height_um, spec.height_um)
    wet = SimulatedCamera(MockZStage(), spec, n_sample=1.33, interface_um=0.0)
    r = optics.focal_shift_ratio(0.65, n_immersion=1.0, n_sample=1.33)
    truth = wet.ground_truth()
    np.testing.assert_allclose(truth.focus_height_um, spec.height_um / r)
    np.testing.assert_array_equal(truth.height_um, spec.height_um)


def test_index_mismatch_psf_model_inverts_apparent_focus() -> None:
    from nanoro_optics.psf import apparent_focal_position

    tex = np.full((8, 8), 0.5)
    h = np.full((8, 8), -6.0)
    cam = SimulatedCamera(
        MockZStage(), Specimen(tex, h), n_sample=1.33, interface_um=0.0, focal_shift="psf"
    )
    z_focus = float(cam.ground_truth().focus_height_um[0, 0])
    afp = apparent_focal_position(
        -z_focus, na=0.65, n_immersion=1.0, n_sample=1.33, wavelength_um=0.7
    )[0]
    assert afp == pytest.approx(6.0, abs=0.05)


def test_focus_breathing_zooms_about_the_centre() -> None:
    tex = np.full((65, 65), 0.1)
    tex[32, 47] = 1.0  # a bright point 15 px right of the centre
    spec = Specimen(tex, np.zeros((65, 65)))
    kw = {"breathing_ref_um": 0.0, "noise": False}
    steady = SimulatedCamera(MockZStage(), spec, **kw)
    breathing = SimulatedCamera(MockZStage(), spec, breathing_per_um=0.05, **kw)
    col = np.arange(65)[None, :]

    def offset_x(img: np.ndarray) -> float:
        excess = img - 0.1
        return float(np.sum(excess * col) / np.sum(excess)) - 32

    # equal defocus (+-2 um), opposite magnification change (x1.1 and x0.9)
    for z, m in ((2.0, 1.1), (-2.0, 0.9), (0.0, 1.0)):
        assert offset_x(breathing.render(z)) == pytest.approx(
            m * offset_x(steady.render(z)), abs=0.15
        )


def test_second_layer_and_colour() -> None:
    spec = Specimen.synthetic((32, 32), relief_um=5.0, second_layer=True, colour=True, seed=4)
    assert spec.top_um == pytest.approx(6.0) and spec.bottom_um == pytest.approx(0.0)
    cam = SimulatedCamera(MockZStage(position_um=6.0), spec, noise=False)
    frame = cam.snap()
    assert frame.shape == (32, 32, 3)
    truth = cam.ground_truth()
    assert truth.image.shape == (32, 32, 3)
    assert spec.layer_alpha is not None and spec.layer_texture is not None
    # the layer is in focus at its own height: the frame there shows it sharply
    expected = spec.layer_alpha[..., None] * spec.layer_texture
    assert (
        np.corrcoef(cam.render(6.0)[..., 0].ravel(), expected[..., 0].ravel())[0, 1]
        > np.corrcoef(cam.render(12.0)[..., 0].ravel(), expected[..., 0].ravel())[0, 1]
    )


def test_specimen_is_deterministic_and_spans_the_relief() -> None:
    a = Specimen.synthetic((40, 30), relief_um=12.0, base_um=5.0, seed=9)
    b = Specimen.synthetic((40, 30), relief_um=12.0, base_um=5.0, seed=9)
    np.testing.assert_array_equal(a.texture, b.texture)
    assert a.height_um.min() == pytest.approx(5.0) and a.height_um.max() == pytest.approx(17.0)
    assert 0.0 <= a.texture.min() and a.texture.max() <= 1.0
    assert a.shape == (40, 30)


def test_camera_faults() -> None:
    cam = SimulatedCamera(MockZStage(), _flat((8, 8)), fail_on_snap=2, exposure_ms=50.0)
    cam.snap()
    with pytest.raises(CameraError, match="snap 2"):
        cam.snap()
    with pytest.raises(CameraError, match="longer than timeout_s"):
        cam.snap(timeout_s=0.01)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"objective": "nope"}, ValueError, "objective"),
        ({"objective": 3}, TypeError, "objective"),
        ({"pixel_um": 0.0}, ValueError, "pixel_um"),
        ({"bit_depth": 20}, ValueError, "bit_depth"),
        ({"noise": 1}, TypeError, "noise"),
        ({"focal_shift": "exact"}, ValueError, "focal_shift"),
        ({"n_sample": -1.0}, ValueError, "n_sample"),
        ({"fail_on_snap": 0}, ValueError, "fail_on_snap"),
        ({"clock": 1.0}, TypeError, "clock"),
        ({"specimen": np.zeros((8, 8))}, TypeError, "specimen"),
    ],
)
def test_camera_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    kw = {"specimen": _flat((8, 8)), **kwargs}
    with pytest.raises(exc, match=match):
        SimulatedCamera(MockZStage(), **kw)


def test_camera_needs_a_stage() -> None:
    with pytest.raises(TypeError, match="get_position_um"):
        SimulatedCamera(object(), _flat((8, 8)))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((8, 8)), np.zeros((8, 9))), "height_um"),
        ((np.zeros((4, 4)), np.zeros((4, 4))), "at least 8"),
        ((np.full((8, 8), 2.0), np.zeros((8, 8))), r"\[0, 1\]"),
        ((np.zeros((8, 8)), np.full((8, 8), np.nan)), "finite"),
        ((np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8))), "together"),
    ],
)
def test_specimen_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Specimen(*args)


def test_synthetic_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shape"):
        Specimen.synthetic((4, 64))
    with pytest.raises(ValueError, match="relief_um"):
        Specimen.synthetic((16, 16), relief_um=-1.0)
    with pytest.raises(ValueError, match="feature_px"):
        Specimen.synthetic((16, 16), feature_px=0.5)


def test_zscan_with_camera_returns_measured_frames() -> None:
    spec = Specimen.synthetic((32, 32), relief_um=3.0, seed=5)
    stage = MockZStage(position_um=-1.0, position_noise_um=0.02, seed=3)
    cam = SimulatedCamera(stage, spec)
    stack = run_zscan(ZScanPlan(5.0, 1.0, 5), stage, cam)
    assert len(stack) == 6 and stack.frames[0].dtype == np.uint16
    # each frame was rendered at the measured (noisy) position
    for frame, z in zip(stack.frames, stack.measured_um, strict=True):
        err = cam.frame_to_reflectance(frame) - cam.render(float(z))
        assert abs(float(err.mean())) < 0.01


@settings(max_examples=40, deadline=None)
@given(
    z=st.floats(-40.0, 40.0),
    seed=st.integers(0, 3),
    objective=st.sampled_from(sorted(optics.OBJECTIVES)),
    layer=st.booleans(),
)
def test_render_is_a_convex_blur(z: float, seed: int, objective: str, layer: bool) -> None:
    """The PSF is non-negative with unit sum: a frame stays within the specimen's range."""
    spec = Specimen.synthetic((24, 24), relief_um=6.0, second_layer=layer, seed=seed)
    cam = SimulatedCamera(MockZStage(), spec, objective=objective)
    img = cam.render(z)
    # with the layer, each pixel is a convex mix of the layer (0.95) and the surface below
    lo = min(spec.texture.min(), 0.95) if layer else spec.texture.min()
    hi = max(spec.texture.max(), 0.95) if layer else spec.texture.max()
    assert lo - 1e-6 <= img.min() and img.max() <= hi + 1e-6
    assert abs(img.mean() - cam.render(z).mean()) == 0.0  # deterministic


# ------------------------------------------------------------------ extreme arguments

TINY, HUGE = 5e-324, 1e308


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pixel_um": TINY}, "pixel_um must be >= 0.0001"),
        ({"pixel_um": HUGE}, "pixel_um must be <= 1000.0"),
        ({"pixel_um": 100.0}, "pixel_um=100.0 samples the intensity bandwidth"),
        ({"wavelength_um": TINY}, "wavelength_um must be >= 0.01"),
        ({"wavelength_um": HUGE}, "wavelength_um must be <= 100.0"),
        ({"exposure_ms": HUGE}, "exposure_ms must be <= 10000000.0"),
        ({"exposure_ms": TINY * 0}, "exposure_ms must be > 0.0"),
        ({"signal_e_per_ms": HUGE}, "signal_e_per_ms must be <="),
        ({"exposure_ms": 1e6, "signal_e_per_ms": 1e10}, "exposure_ms=1000000.0 ms at signal"),
        ({"gain_e_per_dn": TINY}, "gain_e_per_dn must be >= 1e-06"),
        ({"gain_e_per_dn": HUGE}, "gain_e_per_dn must be <= 1000000.0"),
        ({"read_noise_e": HUGE}, "read_noise_e must be <="),
        ({"offset_dn": HUGE}, "offset_dn must be <= 65535.0"),
        ({"offset_dn": 300.0, "bit_depth": 8}, "offset_dn must be <= 255.0"),
        ({"n_sample": TINY}, "n_sample must be >= 1.0"),
        ({"n_sample": HUGE}, "n_sample must be <= 5.0"),
        ({"breathing_per_um": HUGE}, "breathing_per_um must be <= 0.1"),
    ],
)
def test_extreme_camera_arguments_are_refused_naming_them(kwargs: dict, match: str) -> None:
    # before: ZeroDivisionError / OverflowError ("cannot convert float infinity to
    # integer") or numpy's "lam value too large" at the first snap
    with pytest.raises(ValueError, match=match):
        SimulatedCamera(MockZStage(), Specimen.synthetic((16, 16), relief_um=2.0), **kwargs)


def test_extreme_exposure_and_frames_are_refused_by_the_methods() -> None:
    cam = SimulatedCamera(MockZStage(), Specimen.synthetic((16, 16), relief_um=2.0))
    with pytest.raises(ValueError, match=r"ms must be <= 10000000\.0"):
        cam.set_exposure_ms(HUGE)
    assert cam.exposure_ms == 10.0
    with pytest.raises(ValueError, match="frame must not be NaN"):
        cam.frame_to_reflectance(np.array([[np.nan]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pixel_um": TINY}, "pixel_um must be >= 0.0001"),
        ({"pixel_um": HUGE}, "pixel_um must be <= 1000.0"),
        ({"wavelength_um": TINY}, "wavelength_um must be >= 0.01"),
        ({"n": HUGE}, "n must be <= 5.0"),
        ({"dz_um": HUGE}, "dz_um must be <= 1000000.0"),
    ],
)
def test_defocus_otf_refuses_extreme_arguments(kwargs: dict, match: str) -> None:
    args = {"pixel_um": 0.2, "na": 0.5, "n": 1.0, "wavelength_um": 0.6, "dz_um": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        defocus_otf((8, 8), **args)


def test_a_huge_feature_size_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"feature_px must be <= 16\.0"):
        Specimen.synthetic((16, 16), feature_px=1e308)
