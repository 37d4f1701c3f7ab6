"""Tests for nanoro_optics.fusion.align: registration accuracy, chaining, warping, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nanoro_optics.fusion.align import (
    AlignResult,
    FrameAligner,
    align_stack,
    warp_frame,
)

#: recovery of a known warp of a sharp textured frame (the task's acceptance figures)
TRANSLATION_TOL_PX = 0.05
SCALE_TOL = 2e-4
ROTATION_TOL_RAD = 2e-4
#: composed transforms of a blurred breathing stack: worst displacement error at the corners
CHAIN_CORNER_TOL_PX = 0.2
CHAIN_SCALE_TOL = 3e-4
#: oracle fusion PSNR with estimated vs true transforms (noise-free stack at ~57 dB)
ORACLE_GAP_DB = 2.5


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Multi-scale smoothed noise in [0, 1]: texture at every scale, like tissue or a PCB."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape)
    for sigma in (1.0, 2.0, 4.0, 8.0):
        img += sigma * ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (img - img.min()) / (img.max() - img.min())


def _resample(scene: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Frame whose pixel x shows scene(matrix x): matrix is frame -> scene, (x, y) order."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    xs = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    ys = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    return ndimage.map_coordinates(scene, [ys, xs], order=3, mode="mirror")


def _similarity(scale: float, theta: float, tx: float, ty: float, centre: float) -> np.ndarray:
    """3x3 map x -> s R (x - c) + c + t."""
    c, s = math.cos(theta), math.sin(theta)
    lin = scale * np.array([[c, -s], [s, c]])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = np.array([centre, centre]) + np.array([tx, ty]) - lin @ [centre, centre]
    return m


def _corner_error(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
    return float(np.abs((np.asarray(a)[:2] - np.asarray(b)[:2]) @ corners).max())


def _scale_of(m: np.ndarray) -> float:
    return math.sqrt(abs(np.linalg.det(np.asarray(m)[:2, :2])))


SIZE = 256
SCENE = _texture((SIZE, SIZE), seed=0)


def _register_pair(moved_to_ref: np.ndarray, **kwargs) -> np.ndarray:
    """Render frame 0 = scene and frame 1 with ``frame1 -> frame0 = moved_to_ref``; register."""
    frame1 = _resample(SCENE, moved_to_ref, (SIZE, SIZE))
    aligner = FrameAligner(downsample=1, **kwargs)
    aligner.add(SCENE)
    aligner.add(frame1)
    return aligner.transforms[1]


# ------------------------------------------------------------------------- single pairs


def test_similarity_recovers_breathing_step_and_shift() -> None:
    c = (SIZE - 1) / 2
    truth = _similarity(1.0015, 0.0, 0.37, -0.81, c)
    est = _register_pair(truth, model="similarity")
    centre = np.array([c, c, 1.0])
    assert np.abs(est @ centre - truth[:2] @ centre).max() < TRANSLATION_TOL_PX
    assert abs(_scale_of(est) - 1.0015) < SCALE_TOL
    assert est[0, 1] == est[1, 0] == 0.0  # no rotation unless asked


def test_similarity_with_rotation_and_affine() -> None:
    c = (SIZE - 1) / 2
    truth = _similarity(0.998, 2e-3, -1.2, 0.6, c)
    est = _register_pair(truth, model="similarity", rotation=True)
    assert _corner_error(est, truth, (SIZE, SIZE)) < 2 * TRANSLATION_TOL_PX
    assert abs(math.atan2(est[1, 0], est[0, 0]) - 2e-3) < ROTATION_TOL_RAD
    shear = truth.copy()
    shear[0, 1] += 2e-3  # anisotropic: only the affine model can follow it
    shear[1, 1] *= 1.001
    est = _register_pair(shear, model="affine")
    assert _corner_error(est, shear, (SIZE, SIZE)) < 2 * TRANSLATION_TOL_PX


@settings(max_examples=8, deadline=None)
@given(tx=st.floats(-6, 6), ty=st.floats(-6, 6))
def test_translation_recovered_for_any_shift(tx: float, ty: float) -> None:
    truth = np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1]])
    est = _register_pair(truth, model="translation")
    np.testing.assert_allclose(est[:, 2], [tx, ty], atol=TRANSLATION_TOL_PX)
    np.testing.assert_array_equal(est[:, :2], np.eye(2))


def test_downsampled_estimate_maps_back_to_full_resolution() -> None:
    c = (SIZE - 1) / 2
    truth = _similarity(1.002, 0.0, 1.5, 0.5, c)
    frame1 = _resample(SCENE, truth, (SIZE, SIZE))
    aligner = FrameAligner(downsample=2)
    aligner.add(SCENE)
    aligner.add(frame1)
    est = aligner.transforms[1]
    assert _corner_error(est, truth, (SIZE, SIZE)) < 2 * TRANSLATION_TOL_PX


# ------------------------------------------------------------------- chained breathing stack


def _breathing_stack(
    n: int, breathing: float, blur_per_frame: float, *, size: int = SIZE, drift_px: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a tilted scene: blur grows with |depth - k|, magnification changes with k.

    Returns frames and the true frame -> frame 0 matrices.
    """
    scene = _texture((size, size), seed=3)
    yy, xx = np.mgrid[0:size, 0:size]
    depth = (n - 1) * (0.1 + 0.8 * (0.7 * xx + 0.3 * yy) / size)
    c = (size - 1) / 2
    mags = 1 + breathing * np.linspace(-1, 1, n)
    shifts = np.cumsum(np.random.default_rng(5).normal(0, drift_px, (n, 2)), axis=0)
    levels = np.arange(0, blur_per_frame * n + 0.5, 0.5)
    blurred = [ndimage.gaussian_filter(scene, s) if s else scene for s in levels]
    frames, to_scene = [], []
    for k in range(n):
        sigma = blur_per_frame * np.maximum(0, np.abs(depth - k) - 0.5)
        idx = np.clip(np.rint(sigma / 0.5).astype(int), 0, len(levels) - 1)
        img = np.choose(idx, blurred)
        m = _similarity(1 / mags[k], 0.0, -shifts[k, 0], -shifts[k, 1], c)  # frame -> scene
        frames.append(_resample(img, m, (size, size)))
        to_scene.append(m)
    to_scene_arr = np.array(to_scene)
    return np.array(frames, np.float32), np.linalg.inv(to_scene_arr[0]) @ to_scene_arr


@pytest.fixture(scope="module")
def breathing() -> tuple[np.ndarray, np.ndarray]:
    return _breathing_stack(9, 0.014, 1.0, drift_px=0.3)


def test_chained_transforms_follow_breathing_and_drift(breathing) -> None:
    frames, truth = breathing
    aligner = FrameAligner()
    for f in frames:
        aligner.add(f)
    assert all(aligner.registered)
    for k, (est, tru) in enumerate(zip(aligner.transforms, truth, strict=True)):
        assert _corner_error(est, tru, frames.shape[1:]) < CHAIN_CORNER_TOL_PX, k
        assert abs(_scale_of(est) - _scale_of(tru)) < CHAIN_SCALE_TOL, k


def test_align_stack_to_middle_and_crop(breathing) -> None:
    frames, truth = breathing
    res = align_stack(frames, crop=True)
    assert isinstance(res, AlignResult)
    ref = len(frames) // 2
    assert res.reference == ref
    y0, y1, x0, x1 = res.valid_bbox
    assert res.frames.shape == (len(frames), y1 - y0, x1 - x0)
    # breathing +-1.4 % on 256 px: the smallest frame covers ~ +-1.8 px less at each side
    assert 0 < y0 <= 4 and 0 < x0 <= 4 and SIZE - 4 <= y1 < SIZE and SIZE - 4 <= x1 < SIZE
    to_ref = np.linalg.inv(truth[ref]) @ truth
    offset = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])  # cropped -> reference grid
    for est, tru in zip(res.transforms, to_ref, strict=True):
        full = offset @ np.vstack([est, [0, 0, 1]])
        assert _corner_error(full, tru, frames.shape[1:]) < CHAIN_CORNER_TOL_PX


def test_oracle_fusion_after_alignment_matches_true_alignment() -> None:
    """Pick each pixel from the frame nearest its true depth (an oracle fuser): with our
    transforms the PSNR must come close to the one with the true transforms."""
    n = 7
    frames, truth = _breathing_stack(n, 0.014, 1.5, size=192)
    size = frames.shape[1]
    scene = _texture((size, size), seed=3)
    yy, xx = np.mgrid[0:size, 0:size]
    depth = (n - 1) * (0.1 + 0.8 * (0.7 * xx + 0.3 * yy) / size)
    nearest = np.clip(np.rint(depth), 0, n - 1).astype(int)

    def psnr(stack: np.ndarray, m: int = 8) -> float:
        fused = np.take_along_axis(stack, nearest[None], axis=0)[0]
        err = (fused - scene)[m:-m, m:-m]
        return float(10 * np.log10(1.0 / np.mean(err**2)))

    # truth is in scene geometry = frame with magnification 1 = the middle frame here
    res = align_stack(frames)
    to_ref = np.linalg.inv(truth[n // 2]) @ truth
    ideal = np.stack([warp_frame(f, m) for f, m in zip(frames, to_ref, strict=True)])
    aligned, best, unaligned = psnr(res.frames), psnr(ideal), psnr(frames)
    # noise-free 57 dB: 2.5 dB below is a residual of ~0.03 px; the acceptance needs 43 dB
    assert aligned > best - ORACLE_GAP_DB
    assert aligned > unaligned + 20


def test_heavily_blurred_end_frames_still_register() -> None:
    frames, truth = _breathing_stack(6, 0.01, 3.0, size=192)  # end frames: sigma up to ~13 px
    aligner = FrameAligner()
    for f in frames:
        aligner.add(f)
    assert all(aligner.registered)
    for est, tru in zip(aligner.transforms, truth, strict=True):
        assert _corner_error(est, tru, frames.shape[1:]) < 2 * CHAIN_CORNER_TOL_PX


def test_flat_frame_falls_back_with_a_warning() -> None:
    aligner = FrameAligner(downsample=1)
    aligner.add(SCENE)
    with pytest.warns(RuntimeWarning, match="frame 1: too little texture"):
        out = aligner.add(np.full_like(SCENE, 0.5))
    assert aligner.registered == [True, False]
    np.testing.assert_array_equal(aligner.transforms[1], np.eye(3)[:2])
    np.testing.assert_allclose(out, 0.5)


# ------------------------------------------------------------------------------- warping


def _bilinear_reference(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Slow, obvious bilinear warp: out(x) = img(inv(matrix) x), edge pixels repeated."""
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    h, w = img.shape
    out = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            sx, sy, _ = inv @ [x, y, 1.0]
            sx, sy = min(max(sx, 0.0), w - 1.0), min(max(sy, 0.0), h - 1.0)
            x0, y0 = min(int(sx), w - 2), min(int(sy), h - 2)
            fx, fy = sx - x0, sy - y0
            out[y, x] = (
                img[y0, x0] * (1 - fx) * (1 - fy)
                + img[y0, x0 + 1] * fx * (1 - fy)
                + img[y0 + 1, x0] * (1 - fx) * fy
                + img[y0 + 1, x0 + 1] * fx * fy
            )
    return out


def test_bilinear_warp_matches_reference() -> None:
    img = SCENE[:20, :24]
    m = _similarity(1.03, 0.05, 0.7, -1.3, 10)[:2]
    np.testing.assert_allclose(warp_frame(img, m, order=1), _bilinear_reference(img, m), atol=1e-9)


@pytest.mark.parametrize(
    ("scale", "theta", "tx", "ty"),
    [
        (1.012, 0.01, -3.4, 2.7),
        (0.95, 0.01, 30.4, -25.7),
        (1.0, 0.0, 0.0, 0.0),
        (1.014, 0.0, -2.2, 1.6),  # scale and shift only: the separable evaluation
        (0.93, 0.0, 25.0, -30.5),
    ],
)
def test_cubic_warp_matches_scipy_affine_transform(scale, theta, tx, ty) -> None:
    # the numba kernels of order 3 against scipy's own cubic B-spline, also far outside
    from scipy import ndimage

    img = (SCENE[:70, :90] * 255).astype(np.float32)
    m = _similarity(scale, theta, tx, ty, 0)
    inv = np.linalg.inv(m)
    rc = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    ref = ndimage.affine_transform(
        img.astype(np.float64), rc, offset=(inv[1, 2], inv[0, 2]), order=3, mode="nearest"
    )
    # float32 coefficients: a few 1e-5 DN on a 255 DN scale
    np.testing.assert_allclose(warp_frame(img, m[:2]), ref, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("shape", "pad"),
    [((1, 1, 1), 0), ((2, 9, 1), 0), ((5, 24, 3), 0), ((17, 3, 2), 4), ((30, 41, 3), 4)],
)
def test_spline_coefficients_match_scipy_spline_filter(shape, pad) -> None:
    # short lines (exact mirrored start) and long ones (truncated sum), rows in groups
    # of eight and columns in blocks, against scipy's one-line-at-a-time float64 filter
    from scipy import ndimage

    from nanoro_optics.fusion import _align_kernels

    frame = np.random.default_rng(shape[0]).random(shape) * 255
    out = np.empty((shape[2], shape[0] + 2 * pad, shape[1] + 2 * pad), np.float32)
    _align_kernels.spline_coefficients(frame, pad, out)
    for c in range(shape[2]):
        ext = np.pad(frame[..., c], pad, mode="edge")
        ref = ndimage.spline_filter(ext, order=3, mode="mirror", output=np.float64)
        np.testing.assert_allclose(out[c], ref, rtol=1e-6, atol=1e-4)  # float32 storage


@pytest.mark.parametrize(("shape", "d"), [((37, 53, 3), 4), ((40, 41), 3), ((20, 22, 2), 2)])
def test_one_pass_luminance_block_mean_matches_numpy(shape, d) -> None:
    from nanoro_optics.fusion import _align_kernels
    from nanoro_optics.fusion.align import _block_mean, _luminance

    frame = (np.random.default_rng(d).random(shape) * 65535).astype(np.uint16)
    f3 = frame[..., None] if frame.ndim == 2 else frame
    weights = np.array([0.2125, 0.7154, 0.0721]) if f3.shape[2] >= 3 else np.ones(1)
    out = np.empty((shape[0] // d, shape[1] // d), np.float32)
    _align_kernels.luminance_block_mean(f3[..., : len(weights)], weights, d, out)
    np.testing.assert_allclose(out, _block_mean(_luminance(frame), d), rtol=1e-6)


def test_warp_keeps_dtype_and_channels() -> None:
    rgb = (np.stack([SCENE, SCENE**2, 1 - SCENE], axis=-1)[:40, :50] * 65535).astype(np.uint16)
    m = _similarity(1.01, 0.0, 0.5, 0.25, 20)[:2]
    out = warp_frame(rgb, m)
    assert out.dtype == np.uint16 and out.shape == rgb.shape
    for c in range(3):
        ref = warp_frame(rgb[..., c].astype(np.float32), m)
        np.testing.assert_allclose(out[..., c], np.clip(np.rint(ref), 0, 65535), atol=0)
    np.testing.assert_array_equal(warp_frame(rgb, np.eye(3)[:2]), rgb)


def test_identical_frames_keep_the_whole_frame_valid() -> None:
    # identical frames register to within ~1e-7 px, not exactly: that noise once cost
    # valid_bbox a row and a column on each side (and the depth map its border)
    frame = (SCENE * 255).astype(np.uint8)
    res = align_stack(np.stack([frame] * 4), reference=0)
    assert res.valid_bbox == (0, SIZE, 0, SIZE)
    aligner = FrameAligner()
    for _ in range(4):
        aligner.add(frame)
    assert aligner.valid_bbox == (0, SIZE, 0, SIZE)
    # a true shift still takes its pixels off: half a pixel costs the edge row it leaves
    shifted = warp_frame(frame.astype(np.float32), np.array([[1.0, 0, 0], [0, 1.0, 0.5]]))
    y0, y1, x0, x1 = align_stack(np.stack([frame, shifted]), reference=0).valid_bbox
    assert (x0, x1) == (0, SIZE) and (y0, y1) in ((0, SIZE - 1), (1, SIZE))


def test_first_frame_comes_back_unchanged_and_single_frame_stack() -> None:
    aligner = FrameAligner()
    frame = (SCENE * 255).astype(np.uint8)
    assert aligner.add(frame) is frame
    assert aligner.valid_bbox == (0, SIZE, 0, SIZE)
    res = align_stack(frame[None])
    np.testing.assert_array_equal(res.frames[0], frame)
    np.testing.assert_array_equal(res.transforms[0], np.eye(3)[:2])


# ---------------------------------------------------------------------------- bad input


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        FrameAligner(model="homography")
    with pytest.raises(ValueError, match="rotation=True applies to model='similarity'"):
        FrameAligner(model="affine", rotation=True)
    with pytest.raises(ValueError, match="downsample must be >= 1"):
        FrameAligner(downsample=0)
    with pytest.raises(ValueError, match="order must be 1 or 3"):
        FrameAligner(order=2)
    with pytest.raises(ValueError, match="empty stack"):
        align_stack([])
    with pytest.raises(ValueError, match="reference must be <= 1"):
        align_stack(np.zeros((2, 32, 32)), reference=2)
    with pytest.raises(ValueError, match="reference must be 'middle'"):
        align_stack(np.zeros((2, 32, 32)), reference="first")
    with pytest.raises(TypeError, match="crop must be a bool"):
        align_stack(np.zeros((2, 32, 32)), crop=1)
    with pytest.raises(ValueError, match="valid_bbox is undefined"):
        _ = FrameAligner().valid_bbox


def test_bad_frames_are_named() -> None:
    aligner = FrameAligner()
    aligner.add(SCENE)
    with pytest.raises(ValueError, match=r"frame 1 has shape \(10, 10\)"):
        aligner.add(np.zeros((10, 10)))
    bad = SCENE.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"frame 1: pixel \(3, 4\) is nan"):
        aligner.add(bad)
    with pytest.raises(ValueError, match="too small to register"):
        FrameAligner(downsample=4).add(np.zeros((40, 40)))
