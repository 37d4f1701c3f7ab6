"""Tests of the focus fuser: pyramid kernels vs numpy references, the rule, streaming, depth."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.fusion import (
    FusionResult,
    FusionRule,
    StackFuser,
    collapse_pyramid,
    fuse_stack,
    gaussian_pyramid,
    laplacian_pyramid,
    synthetic_stack,
)

#: float32 kernels vs float64 references: relative rounding of a few ulps over a few stages
KERNEL_RTOL = 1e-5
KERNEL_ATOL = 1e-3  # in DN of an 8-bit image

# --------------------------------------------------------------------------------------
# slow, obvious numpy references
# --------------------------------------------------------------------------------------
W5 = np.array([1, 4, 6, 4, 1]) / 16.0


def _refl(i, n: int):
    i = np.abs(np.asarray(i))
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n - 2
    i = i % period
    return np.where(i >= n, period - i, i)


def ref_reduce(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    h, w = img.shape[:2]
    rows = np.arange(0, h, 2)
    tmp = sum(W5[d + 2] * img[_refl(rows + d, h)] for d in range(-2, 3))
    cols = np.arange(0, w, 2)
    return sum(W5[d + 2] * tmp[:, _refl(cols + d, w)] for d in range(-2, 3))


def ref_expand(g: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    def along(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
        a = np.moveaxis(a, axis, 0)
        n = a.shape[0]
        out = np.empty((n_out, *a.shape[1:]))
        for i in range(n_out):
            m = i // 2
            if i % 2 == 0:
                out[i] = (a[_refl(m - 1, n)] + 6 * a[_refl(m, n)] + a[_refl(m + 1, n)]) / 8
            else:
                out[i] = (a[_refl(m, n)] + a[_refl(m + 1, n)]) / 2
        return np.moveaxis(out, 0, axis)

    return along(along(g, shape[0], 0), shape[1], 1)


def ref_laplacian(img: np.ndarray, levels: int) -> list[np.ndarray]:
    gs = [img.astype(np.float64)]
    for _ in range(levels - 1):
        gs.append(ref_reduce(gs[-1]))
    out = [gs[k] - ref_expand(gs[k + 1], gs[k].shape[:2]) for k in range(levels - 1)]
    return [*out, gs[-1]]


def ref_box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    h, w = a.shape
    tmp = sum(a[_refl(np.arange(h) + d, h)] for d in range(-radius, radius + 1))
    out = sum(tmp[:, _refl(np.arange(w) + d, w)] for d in range(-radius, radius + 1))
    return out / (2 * radius + 1) ** 2


def ref_tent_decimate(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    rows = np.arange(0, h, 2)
    tmp = (a[_refl(rows - 1, h)] + 2 * a[rows] + a[_refl(rows + 1, h)]) / 4
    cols = np.arange(0, w, 2)
    return (tmp[:, _refl(cols - 1, w)] + 2 * tmp[:, cols] + tmp[:, _refl(cols + 1, w)]) / 4


def ref_activity_codes(a: np.ndarray, eps: float) -> np.ndarray:
    """16-bit codes of activities: float32 bits of ``a / eps`` (>= 1), 11 mantissa bits."""
    x = np.maximum(a.astype(np.float32) * np.float32(1.0 / eps), np.float32(1.0))
    bits = x.view(np.uint32).astype(np.int64)
    return np.minimum((bits - 0x3F800000 + 0x800) >> 12, 65534)


def ref_hard_pick(keys: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """Weights (F, H, W) of the hard rule: largest key; ties, the larger coefficient vector."""
    cand = keys == keys.max(axis=0)
    for c in range(coefs.shape[-1]):
        val = np.where(cand, coefs[..., c], -np.inf)
        cand &= val == val.max(axis=0)
    first = np.argmax(cand, axis=0)  # the remaining candidates have equal vectors
    return (np.arange(len(keys))[:, None, None] == first).astype(float)


#: relative difference between the kernels' activities and the float64 reference's: float32
#: rounding, and for uint8 frames the fuser's int16 Gaussian levels (1/128 DN steps) in the
#: coefficients whose energy the activity is
ACTIVITY_RTOL = {np.dtype(np.uint8): 1e-3, np.dtype(np.uint16): 1e-5}


def ref_fuse_pyramid(
    frames: np.ndarray,
    levels: int,
    rule: FusionRule,
    eps: float,
    noise_dn: np.ndarray,
    choices: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """The fused pyramid, computed with the whole stack at hand (not streaming).

    For integer frames the hard rule compares activities by their 16-bit codes, as the
    fuser does (activities within a code step, 2.4e-4 relative, are ties); its coefficients
    are compared in the fuser's fixed point (1/128 DN) for uint8. The kernel's activities
    differ from these by up to ``ACTIVITY_RTOL``, which can move one across a code
    boundary: ``choices`` receives, per level, the frames the kernel may pick (code within
    that tolerance of the largest) and every frame's coefficients.
    """
    # every channel's energy weighed by its noise (the fuser's estimate, tested on its own)
    lum = 1.0 / (len(noise_dn) * np.asarray(noise_dn, np.float64) ** 2)
    pyrs = []
    acts = []
    for f in frames:
        f3 = f if f.ndim == 3 else f[:, :, None]
        pyr = ref_laplacian(f3, levels)
        act = []
        inherited = None
        for k, lev in enumerate(pyr):
            a = np.full(lev.shape[:2], eps)
            if inherited is not None:
                a += rule.inherit * inherited
            if k < min(levels - 1, rule.focus_levels):
                window = rule.window_px if k < 2 else rule.coarse_window_px or rule.window_px
                a += ref_box_mean(lev**2 @ lum, window // 2)
            act.append(a)
            inherited = ref_tent_decimate(a)
        pyrs.append(pyr)
        acts.append(act)
    fused = []
    for k in range(levels):
        a = np.stack([act[k] for act in acts])
        c = np.stack([p[k] for p in pyrs])
        if rule.sharpness is None and frames.dtype.kind in "ui":
            q = np.rint(c * 128.0) / 128.0 if frames.dtype == np.uint8 else c
            wts = ref_hard_pick(ref_activity_codes(a, eps), q)
            if choices is not None:
                rtol = ACTIVITY_RTOL[frames.dtype]
                top = ref_activity_codes(a.max(axis=0) * (1 - rtol), eps)
                choices.append((ref_activity_codes(a * (1 + rtol), eps) >= top, q))
        elif rule.sharpness is None:
            wts = (a == a.max(axis=0)).astype(float)
        else:
            wts = (a / a.max(axis=0)) ** rule.sharpness
        fused.append((wts[..., None] * c).sum(axis=0) / wts.sum(axis=0)[..., None])
    return fused


def psnr(a: np.ndarray, b: np.ndarray, full: float = 255.0) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(full**2 / err))


@pytest.fixture(scope="module")
def small_stack():
    return synthetic_stack((96, 112), 7, seed=3)


@pytest.fixture(scope="module")
def noisy_stack():
    return synthetic_stack((128, 128), 9, seed=4, noise_dn=3.0)


# --------------------------------------------------------------------------------------
# pyramid kernels
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 48), (9, 17), (33, 2, 1)])
def test_pyramid_kernels_match_numpy_reference(shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape).astype(np.uint8)
    levels = 3
    got = laplacian_pyramid(img, levels=levels)
    ref = ref_laplacian(img if img.ndim == 3 else img[:, :, None], levels)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g.reshape(r.shape), r, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    gauss = gaussian_pyramid(img, levels=levels)
    np.testing.assert_allclose(
        gauss[1].reshape(ref_reduce(img).shape),
        ref_reduce(img),
        rtol=KERNEL_RTOL,
        atol=KERNEL_ATOL,
    )


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    levels=st.integers(1, 5),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    seed=st.integers(0, 2**16),
)
def test_pyramid_reconstructs_integers_exactly(h, w, levels, dtype, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, np.iinfo(dtype).max, (h, w, 3), endpoint=True).astype(dtype)
    rec = collapse_pyramid(laplacian_pyramid(img, levels=levels), dtype=dtype)
    np.testing.assert_array_equal(rec, img)


def test_collapse_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="pyramid level 1"):
        collapse_pyramid([np.zeros((8, 8)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="at least one level"):
        collapse_pyramid([])


# --------------------------------------------------------------------------------------
# the fusion rule: streaming kernels against the whole-stack numpy reference
# --------------------------------------------------------------------------------------
#: uint8 frames are fused in int16 fixed point with 128 steps per DN: each stored mean is
#: rounded by up to half a step, and at worst these roundings add up over the frames
QUANT_HALF_STEP = 0.5 / 128.0


@pytest.mark.parametrize("sharpness", [4, 1, 3, 64, None])
@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_streaming_fusion_matches_reference(small_stack, sharpness, grey, dtype):
    frames = small_stack.frames[:, :40, :56].astype(dtype)
    if grey:
        frames = frames[..., 1].copy()
    levels = 3
    fuser = StackFuser(levels=levels, sharpness=sharpness)
    for f in frames:
        fuser.add(f)
    assert fuser._acc[0].dtype == (np.int16 if dtype == np.uint8 else np.float32)
    choices: list[tuple[np.ndarray, np.ndarray]] = []
    ref = ref_fuse_pyramid(frames, levels, fuser.rule, fuser._eps, fuser.noise_dn, choices)
    atol = len(frames) * QUANT_HALF_STEP if dtype == np.uint8 else 2e-3
    for k in range(levels):
        got = np.moveaxis(fuser._fused_levels()[k], 0, -1)
        close = np.isclose(got, ref[k], rtol=1e-4, atol=atol).all(axis=-1)
        if not choices:
            assert close.all()
            continue
        # the hard rule on codes: the kernel's pick is the reference's, or where activities
        # lie within the kernel's rounding of a code boundary, another frame it may pick
        may, coefs = choices[k]
        same = np.isclose(got[None], coefs, rtol=1e-4, atol=atol).all(axis=-1)
        assert (same & may).any(axis=0).all()
        assert close.mean() > 0.99
    if dtype == np.uint8:
        img = collapse_pyramid([r if not grey else r[..., 0] for r in ref], dtype=np.uint8)
        diff = np.abs(fuser.result().image.astype(int) - img.astype(int))
        assert diff.max() <= 1  # a value within the fixed-point rounding of .5
        assert (diff > 0).mean() < 0.02


@pytest.mark.parametrize("coarse", [1, 3, 9])
def test_coarse_window_is_used_from_the_third_level_on(small_stack, coarse):
    frames = small_stack.frames[:, :48, :64].astype(np.float32)
    levels = 5
    fuser = StackFuser(levels=levels, focus_levels=4, coarse_window_px=coarse)
    for f in frames:
        fuser.add(f)
    ref = ref_fuse_pyramid(frames, levels, fuser.rule, fuser._eps, fuser.noise_dn)
    for k in range(levels):
        got = np.moveaxis(fuser._fused_levels()[k], 0, -1)
        np.testing.assert_allclose(got, ref[k], rtol=1e-4, atol=2e-3)
    # the two finest levels keep window_px: only the coarser ones change
    same = StackFuser(levels=levels, focus_levels=4)
    for f in frames:
        same.add(f)
    for k in range(levels):
        a, b = fuser._fused_levels()[k], same._fused_levels()[k]
        assert np.array_equal(a, b) == (k < 2 or coarse == 5)
    with pytest.raises(ValueError, match="coarse_window_px must be odd, got 4"):
        StackFuser(coarse_window_px=4)
    with pytest.raises(ValueError, match="coarse_window_px"):
        StackFuser(coarse_window_px=17)


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(2, 5),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    grey=st.booleans(),
    sharpness=st.sampled_from([None, 1, 4, 16]),
    seed=st.integers(0, 1000),
)
def test_copies_of_one_image_fuse_to_it_exactly(n, dtype, grey, sharpness, seed):
    rng = np.random.default_rng(seed)
    shape = (33, 47) if grey else (33, 47, 3)
    img = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    res = fuse_stack([img] * n, sharpness=sharpness)
    assert res.image.dtype == img.dtype
    np.testing.assert_array_equal(res.image, img)


def test_single_frame_comes_back_as_is_but_has_no_depth():
    img = np.random.default_rng(1).random((20, 30))  # float64
    fuser = StackFuser()
    fuser.add(img)
    image = fuser.image()
    np.testing.assert_array_equal(image, img)
    assert image.dtype == np.float64
    # one policy everywhere: a one-frame stack is refused, never an all-NaN "filled" depth
    with pytest.raises(ValueError, match="holds 1 frame: focus fusion needs at least 2"):
        fuser.result()
    with pytest.raises(ValueError, match="holds 1 frame"):
        fuse_stack(img[None])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1, 3), (257, 131, 3), (64, 96, 4)])
def test_single_integer_frame_comes_back_from_its_pyramid_exactly(dtype, shape):
    # no copy of the first frame is kept for 8/16-bit input: the pyramid must return it
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(len(shape))
    img = rng.integers(0, top, shape, endpoint=True).astype(dtype)
    img.flat[:2] = (0, top)  # both ends of the range
    fuser = StackFuser()
    fuser.add(img)
    image = fuser.image()
    assert image.dtype == dtype
    np.testing.assert_array_equal(image, img)


def test_frame_order_does_not_change_the_image(small_stack):
    frames = small_stack.frames
    perm = np.random.default_rng(0).permutation(len(frames))
    # the noise is estimated from the first frame unless given: give it, as the docs say
    hard_a = fuse_stack(frames, sharpness=None, noise_dn=1.5).image
    hard_b = fuse_stack(frames[perm], sharpness=None, noise_dn=1.5).image
    np.testing.assert_array_equal(hard_a, hard_b)
    soft_a = fuse_stack(frames, noise_dn=1.5).image.astype(int)
    soft_b = fuse_stack(frames[perm], noise_dn=1.5).image.astype(int)
    diff = np.abs(soft_a - soft_b)
    assert diff.max() <= 1  # the rounding of the stored means (int16 steps of 1/128 DN)
    assert (diff > 0).mean() < 5e-3


def test_float_input_gives_float_output(small_stack):
    frames = small_stack.frames.astype(np.float32) / 255
    res = fuse_stack(frames)
    assert res.image.dtype == np.float32
    ref = fuse_stack(small_stack.frames).image / 255
    assert np.abs(res.image - ref).max() < 0.6 / 255


def test_sixteen_bit_keeps_its_precision():
    s8 = synthetic_stack((96, 96), 5, seed=2)
    s16 = synthetic_stack((96, 96), 5, seed=2, dtype=np.uint16)
    r16 = fuse_stack(s16.frames)
    assert r16.image.dtype == np.uint16
    # the low byte carries information: the result is closer to the 16-bit truth than any
    # 8-bit quantisation of it could be
    p16 = psnr(r16.image, s16.truth, 65535.0)
    p8 = psnr(fuse_stack(s8.frames).image, s8.truth)
    assert p16 > p8 - 1.0
    assert len(np.unique(r16.image % 257)) > 200


# --------------------------------------------------------------------------------------
# quality on synthetic stacks (small versions of the benchmark's)
# --------------------------------------------------------------------------------------
def test_fused_beats_every_single_frame(small_stack):
    res = fuse_stack(small_stack.frames)
    best_frame = max(psnr(f, small_stack.truth) for f in small_stack.frames)
    assert psnr(res.image, small_stack.truth) > best_frame + 10.0


def test_noisy_stack_beats_the_oracle(noisy_stack):
    # the oracle keeps, per pixel, the frame nearest the true depth: its error is the noise
    k = np.clip(np.rint(noisy_stack.depth), 0, noisy_stack.n_frames - 1).astype(int)
    oracle = np.take_along_axis(noisy_stack.frames, k[None, ..., None], axis=0)[0]
    res = fuse_stack(noisy_stack.frames)
    assert psnr(res.image, noisy_stack.truth) > psnr(oracle, noisy_stack.truth) + 1.0


def test_flat_region_is_not_turned_into_noise():
    rng = np.random.default_rng(5)
    frames = np.clip(np.rint(100 + rng.normal(0, 3, (9, 64, 64))), 0, 255).astype(np.uint8)
    res = fuse_stack(frames)
    # one frame's noise is 3 DN (a hard maximum-activity pick gives more: it keeps the
    # largest noise coefficient); averaging all frames would give 3 / sqrt(9) = 1 DN
    assert res.image.astype(float).std() < 0.7 * 3.0
    hard = fuse_stack(frames, sharpness=None).image.astype(float).std()
    assert res.image.astype(float).std() < 0.6 * hard
    assert np.isnan(res.depth).mean() > 0.9  # nothing is in focus on a flat field


def test_no_halo_from_a_bright_edge_over_a_never_focused_background():
    from scipy import ndimage

    h = w = 128
    yy, xx = np.mgrid[0:h, 0:w]
    disk = ((yy - 64) ** 2 + (xx - 64) ** 2 < 20**2).astype(float)
    rng = np.random.default_rng(0)
    background = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 6) * 40 + 60
    n = 7
    frame_list = []
    for k in range(n):
        sig = 3.0 * abs(k - 3)  # the disk is sharp in frame 3
        d = ndimage.gaussian_filter(disk, sig) if sig else disk
        frame_list.append(np.clip(np.rint(background * (1 - d) + 250 * d), 0, 255).astype(np.uint8))
    frames = np.array(frame_list)
    res = fuse_stack(frames).image.astype(float)
    ring = (np.hypot(yy - 64, xx - 64) > 23) & (np.hypot(yy - 64, xx - 64) < 40)
    halo = np.abs(res[ring] - frames[3][ring].astype(float)).mean()
    spill = np.abs(frames[0][ring].astype(float) - frames[3][ring].astype(float)).mean()
    assert halo < 0.1 * spill


# --------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------
def test_depth_map_recovers_the_true_depth():
    s = synthetic_stack((128, 128), 9, seed=6)
    res = fuse_stack(s.frames)
    ok = ~np.isnan(res.depth)
    assert ok.mean() > 0.9
    rmse = np.sqrt(np.mean((res.depth[ok] - s.depth[ok]) ** 2))
    assert rmse < 0.2
    assert res.depth.dtype == np.float32 and res.confidence.dtype == np.float32
    assert 0 <= res.confidence.min() and res.confidence.max() <= 1


def test_depth_in_um_with_z_positions(small_stack):
    z = 10.0 + 2.5 * np.arange(small_stack.n_frames)
    res_f = fuse_stack(small_stack.frames)
    res_z = fuse_stack(small_stack.frames, z_um=z)
    assert res_z.depth_unit == "um"
    np.testing.assert_allclose(res_z.depth, 10.0 + 2.5 * res_f.depth, rtol=1e-5, equal_nan=True)
    fuser = StackFuser()
    for zk, f in zip(z, small_stack.frames, strict=True):
        fuser.add(f, z_um=zk)
    np.testing.assert_allclose(fuser.result().depth, res_z.depth, rtol=1e-6, equal_nan=True)


def test_subframe_offset_is_the_parabola_vertex():
    from nanoro_optics.fusion.depth import subframe_offset

    for z in (-0.45, -0.2, 0.0, 0.1, 0.4):
        y = -0.7 * (np.array([-1.0, 0.0, 1.0]) - z) ** 2
        a = np.exp(y)
        got = subframe_offset(a[:1], a[1:2], a[2:])[0]
        assert got == pytest.approx(z, abs=1e-9)
    assert subframe_offset(np.array([np.nan]), np.array([1.0]), np.array([0.5]))[0] == 0


# --------------------------------------------------------------------------------------
# streaming and memory
# --------------------------------------------------------------------------------------
def test_stream_and_array_give_the_same_result(small_stack):
    a = fuse_stack(small_stack.frames)
    seen = []
    b = fuse_stack((f for f in small_stack.frames), progress=lambda i, n: seen.append((i, n)))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert seen[-1] == (small_stack.n_frames, None)
    assert isinstance(a, FusionResult) and a.n_frames == small_stack.n_frames


def test_result_can_be_taken_while_streaming(small_stack):
    fuser = StackFuser()
    for f in small_stack.frames[:3]:
        fuser.add(f)
    early = fuser.result()
    for f in small_stack.frames[3:]:
        fuser.add(f)
    assert early.n_frames == 3 and fuser.n_frames == small_stack.n_frames
    np.testing.assert_array_equal(fuser.result().image, fuse_stack(small_stack.frames).image)


def _peak_bytes(n: int) -> int:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    tracemalloc.start()
    fuse_stack(np.roll(base, k, axis=1) for k in range(n))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_number_of_frames():
    _peak_bytes(2)  # compile first
    # min of two: a stray allocation elsewhere in the process must not decide the test
    small = min(_peak_bytes(5), _peak_bytes(5))
    large = min(_peak_bytes(40), _peak_bytes(40))
    assert large < 1.1 * small, (small, large)


def test_image_alone_is_the_result_image(small_stack):
    frames = small_stack.frames
    fuser = StackFuser()
    with pytest.raises(ValueError, match="the stack is empty"):
        fuser.image()
    for f in frames:
        fuser.add(f)
    expected = fuser.result().image
    np.testing.assert_array_equal(fuser.image(), expected)
    with pytest.raises(TypeError, match="release must be a bool"):
        fuser.image(release="yes")  # type: ignore[arg-type]
    np.testing.assert_array_equal(fuser.image(release=True), expected)
    with pytest.raises(RuntimeError, match="released"):
        fuser.result()
    with pytest.raises(RuntimeError, match="released"):
        fuser.add(frames[0])


def test_reserve_gives_the_same_result_and_fixes_shape_and_dtype(small_stack):
    # (StackFuser._reserve: the file pipeline's, while the first frame is decoded)
    frames = small_stack.frames
    fuser = StackFuser(sharpness=None)
    fuser._reserve(frames.shape[1:], np.uint8)
    assert fuser.n_frames == 0
    for f in frames:
        fuser.add(f)
    np.testing.assert_array_equal(fuser.result().image, fuse_stack(frames, sharpness=None).image)
    reserved = StackFuser()
    reserved._reserve(frames.shape[1:], "uint8")
    with pytest.raises(ValueError, match=r"frame 0 has shape .* \(the shape of _reserve\(\)\)"):
        reserved.add(frames[0][:, :-1])
    with pytest.raises(TypeError, match=r"frame 0 has dtype uint16.*_reserve\(\)"):
        reserved.add(frames[0].astype(np.uint16))
    with pytest.raises(ValueError, match="must come before the first frame"):
        fuser._reserve(frames.shape[1:], np.uint8)
    # float64 frames are fused in float32 and a single one comes back as is
    grey = frames[..., 1].astype(np.float64) / 255.0
    floats = StackFuser()
    floats._reserve(grey.shape[1:], grey.dtype)
    floats.add(grey[0])
    np.testing.assert_array_equal(floats.image(), grey[0])
    for f in grey[1:]:
        floats.add(f)
    # a result taken after one frame fixed the noise from that frame alone
    same_noise = fuse_stack(grey, noise_dn=floats.noise_dn).image
    np.testing.assert_array_equal(floats.result().image, same_noise)


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "match"),
    [
        ((5,), np.uint8, ValueError, "shape must be"),
        ((4, 0), np.uint8, ValueError, "shape must be"),
        ((4, 4, 17), np.uint8, ValueError, "1 to 16 channels"),
        ((4.5, 4), np.uint8, TypeError, "sequence of ints"),
        ((4, 4), np.bool_, TypeError, "integer or float"),
        ((4, 4), "no-such-type", TypeError, "numpy dtype"),
    ],
)
def test_reserve_refuses_what_is_not_a_frame(shape, dtype, error, match):
    with pytest.raises(error, match=match):
        StackFuser()._reserve(shape, dtype)


# --------------------------------------------------------------------------------------
# 16-bit activity codes
# --------------------------------------------------------------------------------------
#: the codes keep 11 mantissa bits: rounding to the nearest is within half a step
CODE_RTOL = 2.0**-12


@settings(max_examples=50, deadline=None)
@given(
    x=st.lists(st.floats(1.0, 2.0**31, allow_nan=False), min_size=1, max_size=40),
    floor=st.floats(1e-6, 1e6),
)
def test_activity_codes_round_to_the_nearest_step_and_keep_the_order(x, floor):
    from nanoro_optics.fusion import _kernel_common
    from nanoro_optics.fusion._codes import CODE_UNKNOWN

    a = (np.sort(np.asarray(x, np.float32)) * np.float32(floor)).astype(np.float32)
    keys = np.empty_like(a)
    _kernel_common._encode_row(a, np.float32(1.0 / floor), keys)
    np.testing.assert_array_equal(keys, ref_activity_codes(a, floor))
    assert (np.diff(keys) >= 0).all()  # monotonic: comparisons need no decoding
    logs = np.array([_kernel_common._log_code(np.uint16(k)) for k in keys])
    exact = np.log(np.maximum(a.astype(np.float64) * np.float32(1.0 / floor), 1.0))
    np.testing.assert_allclose(logs, exact, rtol=0, atol=CODE_RTOL + 1e-6)
    assert np.isnan(_kernel_common._log_code(np.uint16(CODE_UNKNOWN)))


def test_activity_codes_cover_the_largest_activity_of_integer_frames():
    from nanoro_optics.fusion._codes import CODE_MAX
    from nanoro_optics.fusion.noise import _SIGMA_MIN_DN
    from nanoro_optics.fusion.stack import _CODE_RANGE, _activity_bound

    # the worst case: full-scale checkerboards (every coefficient near the full scale)
    yy, xx = np.mgrid[:64, :64]
    board = ((yy + xx) % 2 * 255).astype(np.uint8)
    blocks = ((yy // 4 + xx // 4) % 2 * 255).astype(np.uint8)
    for inherit in (1.0, 4.0):
        fuser = StackFuser(inherit=inherit, sharpness=None)
        for f in (board, blocks, 255 - board):
            fuser.add(f)
        assert fuser._coded
        top = max(int(w.max()) for w in fuser._wnorm)
        assert top < CODE_MAX
        bound = _activity_bound(fuser.levels, inherit, 255.0**2 / _SIGMA_MIN_DN**2 / fuser._eps)
        assert 2.0 ** (top / 2048.0) < bound < _CODE_RANGE
    # where the bound does not fit (large inherit, many levels) the maps stay float32
    fuser = StackFuser(inherit=100.0)
    fuser.add(board)
    assert not fuser._coded and fuser._wnorm[0].dtype == np.float32
    np.testing.assert_array_equal(fuser.image(), board)


def test_coded_depth_tracker_agrees_with_the_float_one():
    from nanoro_optics.fusion import _depth_kernels
    from nanoro_optics.fusion.depth import DepthTracker

    rng = np.random.default_rng(5)
    shape = (40, 50)
    peak = rng.uniform(0, 8, shape)
    width = rng.uniform(1.0, 3.0, shape)
    exact = DepthTracker(shape, 0, shape)
    coded = DepthTracker(shape, 0, shape, floor=0.01)
    for k in range(9):
        act = (0.02 + 50 * np.exp(-(((k - peak) / width) ** 2))).astype(np.float32)
        exact.update(act)
        coded.update(act)
    assert coded.best.dtype == np.uint16 and exact.best.dtype == np.float32
    assert coded.best.nbytes == exact.best.nbytes // 2
    # two frames whose activities fall within one code step are ties (the first one wins)
    same = exact.idx == coded.idx
    assert same.mean() > 0.99
    frac = []
    for tr in (exact, coded):
        f, c = np.empty(shape, np.float32), np.empty(shape, np.float32)
        _depth_kernels.depth_estimate(tr.idx, tr.before, tr.best, tr.after, tr.amin, tr.coded, 0.0,
                                float(np.log(3.0)), float(np.log(8.0)), f, c)  # fmt: skip
        frac.append(f)
    # each log activity within CODE_RTOL: the vertex moves by at most about
    # 4 CODE_RTOL / curvature, and the flattest profile here (width 3) has curvature 2 / 9
    offset_atol = 4 * CODE_RTOL / (2.0 / 9.0)
    np.testing.assert_allclose(frac[1][same], frac[0][same], rtol=0, atol=offset_atol)
    d0, _ = exact.finish(z_um=None, min_confidence=0.0)
    d1, _ = coded.finish(z_um=None, min_confidence=0.0)
    assert np.sqrt(np.mean((d1 - d0) ** 2)) < 0.01  # against the estimator's own 0.1
    with pytest.raises(ValueError, match="floor"):
        DepthTracker(shape, 0, shape, floor=0.0)


def test_fuser_without_depth_gives_the_same_image_and_no_depth(small_stack):
    with_depth, image_only = StackFuser(), StackFuser(depth=False)
    for f in small_stack.frames:
        with_depth.add(f)
        image_only.add(f)
    assert image_only._tracker is None
    np.testing.assert_array_equal(image_only.image(), with_depth.result().image)
    with pytest.raises(RuntimeError, match="depth=False"):
        image_only.result()
    with pytest.raises(TypeError, match="depth must be a bool"):
        StackFuser(depth="no")


def test_depth_tracker_widens_its_frame_index_before_it_overflows():
    from nanoro_optics.fusion.depth import DepthTracker

    tracker = DepthTracker((2, 3), 0, (2, 3))
    tracker.update(np.ones((2, 3), np.float32))
    assert tracker.idx.dtype == np.uint8
    for count, dtype in ((255, np.uint16), (65535, np.int32)):
        tracker.count = count  # as after that many frames
        tracker.update(np.full((2, 3), float(count), np.float32))
        assert tracker.idx.dtype == dtype
        assert (tracker.idx == count).all()
    tracker.update(np.full((2, 3), 1e6, np.float32))
    assert (tracker.idx == 65536).all()


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_empty_stack_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        fuse_stack([])
    with pytest.raises(ValueError, match="empty"):
        StackFuser().result()


def test_frames_of_different_shape_or_dtype_name_the_frame():
    a = np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match="frame 2 has shape"):
        fuse_stack([a, a, np.zeros((16, 17), np.uint8)])
    with pytest.raises(TypeError, match="frame 1 has dtype uint16"):
        fuse_stack([a, a.astype(np.uint16)])
    with pytest.raises(TypeError, match="frame 0 must hold"):
        fuse_stack([a.astype(bool)])
    with pytest.raises(ValueError, match="frame 0 must be"):
        fuse_stack([np.zeros(5)])


def test_nan_pixel_is_an_error_naming_frame_and_pixel():
    frames = np.zeros((3, 8, 9), np.float32)
    frames[1, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"frame 1 has a non-finite pixel \(nan\) at \(4, 5\)"):
        fuse_stack(frames)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="window_px must be odd"):
        StackFuser(window_px=4)
    with pytest.raises(ValueError, match="sharpness must be >= 1"):
        StackFuser(sharpness=0)
    with pytest.raises(TypeError, match="sharpness must be an integer"):
        StackFuser(sharpness=2.5)
    with pytest.raises(ValueError, match="inherit must be >= 0"):
        StackFuser(inherit=-1)
    with pytest.raises(ValueError, match="min_confidence must be <= 1"):
        StackFuser(min_confidence=2)
    with pytest.raises(TypeError, match="got an unexpected keyword"):
        StackFuser(bogus=1)
    with pytest.raises(TypeError, match="frames must be an array or an iterable"):
        fuse_stack(3)
    with pytest.raises(ValueError, match="frames must be an array"):
        fuse_stack(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="crop must be a bool"):
        fuse_stack(np.zeros((2, 4, 4)), crop="yes")


def test_bad_z_positions_are_refused():
    a = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(ValueError, match="z_um must be strictly monotonic"):
        StackFuser(z_um=[0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="z_um has 3 positions but 2 frames"):
        fuse_stack(a, z_um=[0.0, 1.0, 2.0])
    fuser = StackFuser()
    fuser.add(a[0], z_um=0.0)
    with pytest.raises(ValueError, match="frame 1 has no z_um"):
        fuser.add(a[1])
    with pytest.raises(ValueError, match="must not be NaN"):
        StackFuser(z_um=[0.0, np.nan])


# --------------------------------------------------------------------------------------
# alignment (FrameAligner from fusion.align)
# --------------------------------------------------------------------------------------
def test_alignment_undoes_focus_breathing():
    from nanoro_optics.fusion.synthetic import _magnify

    s = synthetic_stack((160, 160), 7, seed=8, breathing=0.014)
    truth0 = _magnify(s.truth.astype(np.float64), float(s.magnification[0]), 3)
    m = 12  # the border that not every frame covers
    inner = (slice(m, -m), slice(m, -m))
    plain = fuse_stack(s.frames).image
    aligned = fuse_stack(s.frames, align=True)
    assert psnr(aligned.image[inner], truth0[inner]) > psnr(plain[inner], truth0[inner]) + 5.0
    cropped = fuse_stack(s.frames, align=True, crop=True)
    assert cropped.image.shape[0] < 160 and cropped.image.shape[1] < 160
    assert cropped.depth.shape == cropped.image.shape[:2]


def test_aligned_depth_is_nan_where_some_frames_hold_no_data():
    from nanoro_optics.fusion.synthetic import _magnify

    s = synthetic_stack((160, 160), 7, seed=8, breathing=0.014)
    fuser = StackFuser(align=True, fill_depth=False)
    filled = StackFuser(align=True)
    for f in s.frames:
        fuser.add(f)
        filled.add(f)
    res = fuser.result()
    y0, y1, x0, x1 = fuser.valid_bbox
    assert 0 < y0 < y1 < 160 and 0 < x0 < x1 < 160
    inside = np.zeros((160, 160), bool)
    inside[y0:y1, x0:x1] = True
    assert np.isnan(res.depth[~inside]).all() and (res.confidence[~inside] == 0).all()
    # a filled depth map leaves no NaN at the aligned border: the border takes the nearest
    # covered pixel's depth, and its confidence 0 marks it
    full = filled.result()
    assert not np.isnan(full.depth).any() and (full.confidence[~inside] == 0).all()
    assert full.depth[0, 0] == full.depth[y0, x0] and full.depth[-1, x0] == full.depth[y1 - 1, x0]
    truth0 = _magnify(s.depth.astype(np.float64), float(s.magnification[0]), 1)
    ok = inside & ~np.isnan(res.depth)
    assert ok.mean() > 0.6
    rmse = np.sqrt(np.mean((res.depth[ok] - truth0[ok]) ** 2))
    assert rmse < 0.3  # frames; the 1024 px benchmark gives 0.14


def test_on_copied_lets_the_caller_reuse_its_buffer_at_once(small_stack):
    # (StackFuser._add: the file pipeline's decoding thread refills the buffer at once)
    frames = small_stack.frames
    expected = fuse_stack(frames).image
    fuser = StackFuser()
    calls = []
    buffer = np.empty_like(frames[0])

    def scribble() -> None:  # the caller refills its buffer while the frame is fused
        calls.append(fuser.n_frames)
        buffer[...] = 255 - buffer

    for frame in frames:
        buffer[...] = frame
        fuser._add(buffer, None, scribble)
    assert calls == list(range(len(frames)))  # once per frame, before it is counted
    np.testing.assert_array_equal(fuser.result().image, expected)
    with pytest.raises(ValueError, match="frame 7 has shape"):
        fuser._add(frames[0][:-1], None, scribble)
    assert len(calls) == len(frames)  # not called when add refuses the frame


def test_released_fuser_gives_the_same_result_and_takes_no_more_frames(small_stack):
    kept, released = StackFuser(), StackFuser()
    for f in small_stack.frames:
        kept.add(f)
        released.add(f)
    a = kept.result()
    b = released.result(release=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    with pytest.raises(RuntimeError, match="released"):
        released.add(small_stack.frames[0])
    with pytest.raises(RuntimeError, match="released"):
        released.result()
    with pytest.raises(TypeError, match="release must be a bool"):
        kept.result(release="yes")


def test_fusers_of_one_pool_share_buffers_and_give_the_same_results(small_stack):
    # (StackFuser.share_buffers: LiveFusion's fusers, one per MDA group, allocate once)
    class Owner:
        pass

    owner = Owner()
    frames = small_stack.frames
    first = StackFuser().share_buffers(owner)
    for f in frames:
        first.add(f)
    plane = first._plane
    image1 = first.result(release=True).image
    second = StackFuser().share_buffers(owner)
    for f in frames[::-1]:
        second.add(f)
    assert second._plane is plane  # the first fuser's buffers, taken at the first frame
    fresh = StackFuser()
    for f in frames[::-1]:
        fresh.add(f)
    got, ref = second.result(release=True), fresh.result()
    for a, b in ((got.image, ref.image), (got.depth, ref.depth), (got.confidence, ref.confidence)):
        np.testing.assert_array_equal(a, b)
    again = StackFuser()
    for f in frames:
        again.add(f)
    np.testing.assert_array_equal(image1, again.image())  # the first result kept its own
    other = StackFuser(levels=2).share_buffers(owner)  # another layout: fresh buffers
    other.add(frames[0])
    assert other._plane is not plane
    unpooled = StackFuser().share_buffers(Owner())  # another owner: another pool
    unpooled.add(frames[0])
    assert unpooled._plane is not plane


#: the soft rule's sum codes keep 9 mantissa bits: rounding to the nearest is within half a step
SUM_CODE_RTOL = 2.0**-10


@settings(max_examples=50, deadline=None)
@given(x=st.lists(st.floats(1.0, 2.0**120, allow_nan=False), min_size=1, max_size=40))
def test_sum_codes_round_to_the_nearest_step_and_keep_the_order(x):
    from nanoro_optics.fusion._codes import CODE_MAX, CODE_ONE, SUM_CODE_SHIFT

    sums = np.sort(np.asarray(x, np.float32))
    # the kernels' register forms (_code_of_sum, _sum_of_code), infinity last
    codes, back_reg = _sum_code_registers(np.append(sums, np.float32(np.inf)))
    assert codes[-1] == CODE_MAX  # saturates
    codes, back_reg = codes[:-1], back_reg[:-1]
    assert codes.max() <= CODE_MAX and (np.diff(codes.astype(np.int64)) >= 0).all()
    back = ((codes.astype(np.uint32) << SUM_CODE_SHIFT) + np.uint32(CODE_ONE)).view(np.float32)
    np.testing.assert_allclose(back, sums, rtol=SUM_CODE_RTOL * (1 + 1e-6))
    np.testing.assert_array_equal(back_reg, back)  # decoded as the bit formula says
    # independent of the bit trick: the nearest of the 512 steps of each octave
    octave = np.floor(np.log2(sums.astype(np.float64)))
    steps = np.floor((sums / 2.0**octave - 1.0) * 512.0 + 0.5)  # halves up, as the bits
    want = octave * 512.0 + steps
    np.testing.assert_array_equal(codes, want.astype(np.int64))


def _sum_code_registers(sums):
    from nanoro_optics._numba import njit
    from nanoro_optics.fusion import _kernel_common

    @njit()
    def run(x):
        codes = np.empty(x.size, np.uint16)
        back = np.empty(x.size, np.float32)
        for i in range(x.size):
            codes[i] = _kernel_common._code_of_sum(x[i])
            back[i] = _kernel_common._sum_of_code(codes[i])
        return codes, back

    return run(np.ascontiguousarray(sums, np.float32))


@settings(max_examples=100, deadline=None)
@given(
    a=st.floats(1.0, 2.0**30, allow_nan=False),
    m=st.one_of(st.just(0.0), st.floats(1.0, 2.0**30, allow_nan=False)),
)
def test_soft4_sum_gives_the_share_of_the_norm_form(a, m):
    # the default rule on integer frames keeps sum x**4 instead of its fourth root: the same
    # share (one division, no roots), to float32 rounding
    from nanoro_optics.fusion import _blend_kernels

    a32, m32 = np.float32(a), np.float32(m)
    norm, share = _blend_kernels._soft4(a32, m32)
    total, share_sum = _blend_kernels._soft4_sum(a32, np.float32(np.float64(m32) ** 4))
    exact = float(a32) ** 4 / (float(m32) ** 4 + float(a32) ** 4)
    assert share_sum == pytest.approx(exact, rel=1e-6, abs=1e-12)
    assert share == pytest.approx(exact, rel=1e-5, abs=1e-12)
    assert float(total) == pytest.approx(float(norm) ** 4, rel=1e-5)


def _whole_array_noise(frame: np.ndarray) -> np.ndarray:
    """The noise estimate computed on all its rows at once (the definition, as first written)."""
    from nanoro_optics.fusion import noise

    x = frame[noise.noise_rows(frame.shape[0])].astype(np.float32)
    r = np.abs(x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:]))
    th = noise._NOISE_TILE_ROWS if r.shape[0] >= 2 * noise._NOISE_TILE_ROWS else r.shape[0]
    tw = min(noise._NOISE_TILE_COLS, r.shape[1])
    ny, nx = r.shape[0] // th, r.shape[1] // tw
    tiles = r[: ny * th, : nx * tw].reshape(ny, th, nx, tw, -1).transpose(0, 2, 1, 3, 4)
    mads = np.median(tiles.reshape(ny * nx, th * tw, -1), axis=1)
    mad = np.quantile(mads, noise._NOISE_QUANTILE, axis=0) if len(mads) > 1 else mads[0]
    return np.asarray(mad, np.float64) / (0.6745 * np.sqrt(1.5))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 1000, 3), (64, 300, 1), (7, 130, 2), (5, 3, 1), (9, 2, 1)])
def test_noise_estimate_by_bands_is_the_whole_array_estimate(dtype, shape):
    from nanoro_optics.fusion.noise import estimate_noise, noise_sigma

    rng = np.random.default_rng(sum(shape))
    frames = rng.normal(120.0, 30.0, (2, *shape)).clip(0, 250).astype(dtype)
    frame, nxt = frames[0], frames[1][:, ::-1]  # (a strided next frame)
    if shape[1] < 3:  # no second difference: nothing measured
        assert not estimate_noise(frame).any()
        return
    np.testing.assert_array_equal(estimate_noise(frame), _whole_array_noise(frame))
    if shape[0] <= 64:  # (noise_rows: every row of a short frame)
        diff = nxt.astype(np.float32) - frame.astype(np.float32)
        want = np.minimum(_whole_array_noise(frame), _whole_array_noise(diff) / np.sqrt(2.0))
        floor = 1e-6 * float(frame.max() - frame.min()) if frame.dtype.kind == "f" else 1.0
        np.testing.assert_array_equal(noise_sigma(frame, nxt), np.maximum(want, floor))


def test_noise_estimate_of_a_wide_frame_keeps_its_temporaries_small():
    from nanoro_optics.fusion.noise import noise_sigma

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 256, 4000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        noise_sigma(frames[0], frames[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 64 rows of 4000 x 3 samples: 3 MB as float32 (the difference of the two frames'
    # rows); the whole-array estimate held some 18 MB of float32 copies at once
    assert peak < 6 << 20, peak
