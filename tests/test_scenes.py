"""Layered occlusion scenes (``occlusion_stack``): shapes, truth, halo band, kernels, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nanoro_optics.fusion.scenes import (
    OCCLUSION_VARIANTS,
    PSF_FAMILIES,
    SceneStack,
    VectorialOptics,
    occlusion_stack,
    scene_stack,
)

#: a kernel sums to 1 up to rounding
KERNEL_SUM_TOL = 1e-9
#: the measured noise of a frame against the truth, in units of the noise the camera model
#: predicts (photon + read + quantisation): 1 within this share
NOISE_RATIO_TOL = 0.15
#: px beyond the halo band from which the occluder's glow is below the noise
CLEAR_PX = 3


def _small(**kw):
    kw.setdefault("seed", 1)
    return occlusion_stack((64, 72), kw.pop("n", 4), **kw)


def _interior(mask: np.ndarray, margin: float) -> np.ndarray:
    """``mask`` farther than ``margin`` from its complement and from the (periodic) border."""
    m = int(np.ceil(margin))
    out = ndimage.distance_transform_edt(mask) > margin
    out[:m], out[-m:], out[:, :m], out[:, -m:] = False, False, False, False
    return out


def _predicted_sigma(s: SceneStack, where: np.ndarray) -> float:
    """RMS noise (DN) the camera model gives over ``where``: photon, read, quantisation."""
    well, read = s.noise_e
    gain = well / s.white_level  # electrons per DN
    var = np.maximum(s.truth[where], 0) / gain + (read / gain) ** 2 + 1 / 12
    return float(np.sqrt(var.mean()))


@pytest.mark.parametrize("bits, dtype", [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
@pytest.mark.parametrize("psf", PSF_FAMILIES)
def test_shapes_dtypes_and_white_level(psf, bits, dtype):
    s = _small(psf=psf, bit_depth=bits, n=3)
    assert s.frames.shape == (3, 64, 72, 3) and s.frames.dtype == dtype
    assert s.white_level == 2**bits - 1 and int(s.frames.max()) <= s.white_level
    assert s.truth.shape == (64, 72, 3) and s.truth.dtype == np.float64
    assert s.depth.shape == (64, 72) and s.depth.dtype == np.float32
    assert s.band is not None and s.band.shape == (64, 72) and s.band.dtype == bool
    assert s.edges.shape == (64, 72) and s.psf == psf and s.kind == "occlusion"
    assert len(s.kernels) == len(s.layers) and all(len(k) == 3 for k in s.kernels)
    # the scene fills the camera's range without running into the white level
    assert 0.5 * s.white_level < s.truth.max() < 0.97 * s.white_level


@pytest.mark.parametrize("variant", OCCLUSION_VARIANTS)
def test_every_variant_has_occluders_a_band_and_two_depths(variant):
    s = _small(variant=variant, n=4)
    assert s.variant == variant
    assert s.band is not None and 0.01 < s.band.mean() < 0.9
    depths = set(np.unique(s.depth).tolist())
    assert {0.0, 3.0} <= depths
    assert len(s.layers) == (3 if variant == "layers3" else 2)
    if variant == "layers3":
        assert 1.0 in depths


def test_same_seed_same_stack_other_seed_other_stack():
    a, b = _small(seed=5), _small(seed=5)
    c = _small(seed=6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.truth, b.truth)
    assert np.array_equal(a.band, b.band)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("psf", PSF_FAMILIES)
@pytest.mark.parametrize("bits", [8, 12])
def test_truth_is_an_in_focus_frame_away_from_the_edges_within_the_noise(psf, bits):
    # frame 0 has the background in focus, the last frame the front layer: there, away
    # from the other layer's blur, the frame is the truth plus the camera's noise
    s = occlusion_stack((96, 96), 4, psf=psf, bit_depth=bits, seed=2)
    reach = s.band_px + CLEAR_PX
    back = _interior(s.depth == 0, reach)
    front = _interior(s.depth == 3, 2.0)
    assert back.sum() > 1000 and front.sum() > 50
    for frame, where in ((s.frames[0], back), (s.frames[-1], front)):
        err = frame.astype(np.float64) - s.truth
        rms = float(np.sqrt(np.mean(err[where] ** 2)))
        assert rms == pytest.approx(_predicted_sigma(s, where), rel=NOISE_RATIO_TOL)
        assert abs(float(err[where].mean())) < 0.1 * rms + 0.5  # no bias


def test_noise_free_frames_are_the_rounded_truth_where_in_focus():
    s = occlusion_stack((64, 64), 3, noise=False, seed=3)
    assert s.noise_e == (0.0, 0.0)
    back = _interior(s.depth == 0, s.band_px + CLEAR_PX)
    assert np.array_equal(s.frames[0][back], np.rint(s.truth[back]))


@pytest.mark.parametrize("psf", PSF_FAMILIES)
def test_the_band_is_where_the_glow_is(psf):
    # in the frame focused on the background the occluder's glow lies on the band: there
    # the error is far above the noise; beyond the band it is at the noise level
    s = occlusion_stack((128, 128), 5, psf=psf, noise=False, seed=4)
    assert s.band is not None
    err = np.abs(s.frames[0].astype(np.float64) - s.truth).max(-1)
    mask = s.depth > 0
    dist = ndimage.distance_transform_edt(~mask)
    near = s.band & (dist <= 0.5 * s.band_px)
    beyond = _interior(~mask, s.band_px + CLEAR_PX)
    assert np.median(err[near]) > 10.0  # DN: the glow
    assert np.percentile(err[beyond], 99) <= 1.0  # rounding only
    # the band: the background side only, as wide as the blur, around every occluder
    assert not (s.band & mask).any()
    assert np.array_equal(s.band, (dist <= s.band_px) & ~mask)


def test_band_width_is_the_largest_blur_radius():
    blur, n = 2.0, 5
    s = occlusion_stack((96, 96), n, psf="pillbox", blur_px_per_frame=blur, seed=1)
    radius = blur * (n - 1)
    # 95 % of a disc's energy lies within 0.975 R; the diffraction Gaussian adds a little
    assert 0.9 * radius <= s.band_px <= radius + 1.5
    g = occlusion_stack((96, 96), n, psf="gaussian", blur_px_per_frame=blur, seed=1)
    assert g.band_px > s.band_px  # the Gaussian's tail reaches farther


@pytest.mark.parametrize("psf", PSF_FAMILIES)
def test_kernels_are_normalised_centred_and_grow_with_defocus(psf):
    s = _small(psf=psf, n=4)
    for row in s.kernels:
        for k in row:
            assert k.ndim == 2 and k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
            assert abs(float(k.sum()) - 1.0) < KERNEL_SUM_TOL and k.min() >= 0.0
    back = s.kernels[0]
    spread = []
    for k in back:
        h, w = k.shape
        yy, xx = np.mgrid[:h, :w]
        r2 = (yy - h // 2) ** 2 + (xx - w // 2) ** 2
        spread.append(float((k * np.minimum(r2, 400)).sum()))
    assert spread == sorted(spread)  # the background blurs more in later frames
    if psf != "vectorial":  # symmetric: centred
        k = back[-1]
        h, w = k.shape
        yy, xx = np.mgrid[:h, :w]
        assert float((k * yy).sum()) == pytest.approx(h // 2, abs=1e-9)
        assert float((k * xx).sum()) == pytest.approx(w // 2, abs=1e-9)


def test_vectorial_kernels_differ_from_the_geometric_disc():
    # the index mismatch makes the PSF differ on either side of focus: the background's
    # kernel 2 frames after its focus and the front's 2 frames before are not alike
    s = _small(psf="vectorial", n=5)
    a, b = s.kernels[0][2], s.kernels[1][2]  # both 2 frames from focus, opposite sides
    side = min(a.shape[0], b.shape[0])
    ca = a[(a.shape[0] - side) // 2 :, (a.shape[1] - side) // 2 :][:side, :side]
    cb = b[(b.shape[0] - side) // 2 :, (b.shape[1] - side) // 2 :][:side, :side]
    assert np.abs(ca - cb).sum() > 0.05


def test_variant_properties():
    fib = _small(variant="fibres")
    inner = ndimage.distance_transform_edt(fib.layers[-1].matte > 0.5)
    # 1 to 3 px wide: no pixel more than 2 px from the fibre's side but where fibres cross
    assert np.percentile(inner[inner > 0], 99) <= 2.0 and inner.max() > 0
    tr = _small(variant="translucent")
    inside = tr.layers[-1].matte[tr.depth > 0]
    assert 0.5 < inside.min() and inside.max() < 0.9
    dim = _small(variant="dim")
    fg, bg = dim.layers[-1], dim.layers[0]
    assert fg.colour[fg.matte > 0.5].mean() < 0.3 * bg.colour.mean()
    holes = _small(variant="holes", n=5)
    lab, _ = ndimage.label(holes.depth == 0)
    # some background is seen only through holes: components not touching the border
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
    assert set(np.unique(lab).tolist()) - border - {0}


def test_breathing_magnifies_each_frame_about_the_centre():
    from nanoro_optics.fusion.synthetic import _magnify

    b = occlusion_stack((64, 64), 3, breathing=0.02, noise=False, seed=2)
    flat = occlusion_stack((64, 64), 3, noise=False, seed=2)
    assert b.magnification is not None and flat.magnification is None
    assert b.magnification.tolist() == pytest.approx([0.98, 1.0, 1.02])
    assert np.array_equal(b.frames[1], flat.frames[1])
    for k in (0, 2):
        ref = _magnify(flat.frames[k].astype(np.float64), float(b.magnification[k]), 3)
        err = np.abs(b.frames[k] - ref)[8:-8, 8:-8]
        unmagnified = np.abs(b.frames[k].astype(float) - flat.frames[k])[8:-8, 8:-8]
        assert np.median(err) <= 1.0  # the same frame magnified, up to rounding twice
        assert err.mean() < 0.5 * unmagnified.mean()


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    blur=st.floats(0.3, 3.0),
    variant=st.sampled_from(OCCLUSION_VARIANTS),
)
def test_invariants(seed, blur, variant):
    s = occlusion_stack((40, 48), 3, variant=variant, blur_px_per_frame=blur, seed=seed)
    assert np.all(s.truth >= 0) and np.all(s.truth <= s.white_level)
    assert s.band is not None and not (s.band & (s.depth == s.depth.max())).any()
    assert all(0.0 <= lay.matte.min() and lay.matte.max() <= 1.0 for lay in s.layers)


def test_old_scenes_unchanged_by_the_new_fields():
    s = scene_stack("occlusion", (48, 64), 4, seed=2)
    assert s.band is None and s.layers == () and s.psf == "pillbox"


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(shape=(8, 64)), ValueError, "shape\\[0\\] must be >= 16"),
        (dict(shape=(64,)), ValueError, "shape must be \\(rows, cols\\)"),
        (dict(n_frames=1), ValueError, "n_frames must be >= 2"),
        (dict(n_frames=2, variant="layers3"), ValueError, "n_frames must be >= 3"),
        (dict(n_frames=3.0), TypeError, "n_frames must be an integer"),
        (dict(variant="smoke"), ValueError, "variant must be one of"),
        (dict(psf="airy"), ValueError, "psf must be one of"),
        (dict(bit_depth=7), ValueError, "bit_depth must be >= 8"),
        (dict(bit_depth=17), ValueError, "bit_depth must be <= 16"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
        (dict(blur_px_per_frame=0.0), ValueError, "blur_px_per_frame must be >= 0.1"),
        (dict(blur_px_per_frame=np.nan), ValueError, "blur_px_per_frame must be finite"),
        (dict(breathing=0.5), ValueError, "breathing must be <= 0.2"),
        (dict(noise=1), TypeError, "noise must be a bool"),
        (dict(full_well_e=1.0), ValueError, "full_well_e must be >= 10"),
        (dict(read_noise_e=-1.0), ValueError, "read_noise_e must be >= 0"),
        (dict(psf="vectorial", optics="air"), TypeError, "optics must be a VectorialOptics"),
        (
            dict(psf="vectorial", n_frames=12, blur_px_per_frame=6.0),
            ValueError,
            "blur_px_per_frame \\* \\(n_frames - 1\\) must be <= 64 px with psf='vectorial'",
        ),
        (
            dict(render="rays", n_frames=9, blur_px_per_frame=6.0),
            ValueError,
            "must be <= 40 px with render='rays'.*got 48",
        ),
    ],
)
def test_bad_arguments_are_refused(kw, err, match):
    args = dict(shape=(32, 32), n_frames=3)
    args.update(kw)
    with pytest.raises(err, match=match):
        occlusion_stack(args.pop("shape"), args.pop("n_frames"), **args)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(na=1.2), "na must be < 1.0"),
        (dict(na=0.0), "na must be > 0.0"),
        (dict(wavelength_um=5.0), "wavelength_um must be <= 2.0"),
        (dict(pixel_um=0.0), "pixel_um must be >= 0.01"),
        (dict(nfp_um=-1.0), "nfp_um must be >= 0.0"),
    ],
)
def test_bad_optics_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        VectorialOptics(**kw)


def test_optics_with_a_geometric_psf_is_warned_about():
    with pytest.warns(UserWarning, match="optics is ignored with psf='pillbox'"):
        occlusion_stack((32, 32), 2, psf="pillbox", optics=VectorialOptics())


@pytest.mark.parametrize("variant, psf", [("layers3", "pillbox"), ("translucent", "vectorial")])
def test_layers_and_kernels_render_the_frames(variant, psf):
    # the ingredients the scene hands out are the ones it rendered with: compositing the
    # layers front over back through their kernels gives every frame up to the rounding
    from nanoro_optics.fusion.scenes import _fold

    s = occlusion_stack((48, 56), 4, variant=variant, psf=psf, noise=False, seed=7)

    def conv(img, kernel):
        otf = np.fft.rfft2(_fold(kernel, img.shape[:2]))
        if img.ndim == 3:
            otf = otf[..., None]
        return np.fft.irfft2(np.fft.rfft2(img, axes=(0, 1)) * otf, s=img.shape[:2], axes=(0, 1))

    for k in range(s.n_frames):
        acc = conv(s.layers[0].colour, s.kernels[0][k])
        for lay, row in zip(s.layers[1:], s.kernels[1:], strict=True):
            a = conv(lay.matte, row[k])
            acc = conv(lay.colour * lay.matte[..., None], row[k]) + (1 - a)[..., None] * acc
        assert np.abs(s.frames[k] - acc).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("psf", ["pillbox", "gaussian"])
def test_ray_rendering_departs_from_the_layered_formula_only_next_to_occluders(psf):
    # both formations agree where at most one layer is out of focus (first and last
    # frames) and far from the occluders; in between, next to them, the rays keep which
    # part of the background each ray sees, which blurring the layers apart does not
    kw = dict(psf=psf, noise=False, seed=5, blur_px_per_frame=2.0)
    rays = occlusion_stack((64, 64), 5, render="rays", **kw)
    flat = occlusion_stack((64, 64), 5, **kw)
    assert rays.render == "rays" and flat.render == "layered"
    assert np.array_equal(rays.frames[0], flat.frames[0])
    assert np.array_equal(rays.frames[-1], flat.frames[-1])
    far = _interior(rays.depth == 0, rays.band_px + CLEAR_PX)
    diff = np.abs(rays.frames[2].astype(np.float64) - flat.frames[2]).max(-1)
    assert diff[far].max() <= 1.0  # rounding
    assert diff[rays.band].max() >= 3.0  # DN: the occlusion the layered formula misses
    for row in rays.kernels:
        for k in row:
            assert abs(float(k.sum()) - 1.0) < KERNEL_SUM_TOL and k.min() >= 0.0


def test_ray_rendering_needs_a_geometric_psf():
    with pytest.raises(ValueError, match="render='rays' needs a geometric PSF"):
        occlusion_stack((32, 32), 3, psf="vectorial", render="rays")
    with pytest.raises(ValueError, match="render must be one of"):
        occlusion_stack((32, 32), 3, render="paint")
