"""Fusion on hard stacks: the frames' range kept at every pixel, noise-weighted activity,
dim 12-bit colour, depth maps filled and scored over every pixel with a known depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nanoro_optics.fusion import StackFuser, fuse_stack
from nanoro_optics.fusion.depth import fill_depth
from nanoro_optics.fusion.frame_range import frame_range
from nanoro_optics.fusion.noise import estimate_noise
from nanoro_optics.fusion.scenes import scene_stack

DATA = Path(__file__).parent / "data"

#: float frames are fused in float32: the frames' range is kept to its rounding
FLOAT32_RTOL = 1e-6


def _outside_range(img: np.ndarray, frames: np.ndarray) -> float:
    lo = frames.min(axis=0).astype(np.float64)
    hi = frames.max(axis=0).astype(np.float64)
    x = img.astype(np.float64)
    return float(np.max(np.maximum(lo - x, 0) + np.maximum(x - hi, 0)))


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 37),
    w=st.integers(1, 37),
    n=st.integers(2, 5),
    channels=st.sampled_from([0, 1, 3]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]),
    levels=st.one_of(st.none(), st.integers(1, 6)),
    sharpness=st.sampled_from([4, 1, None]),
    seed=st.integers(0, 2**16),
)
@example(h=1, w=29, n=3, channels=0, dtype=np.uint8, levels=None, sharpness=4, seed=0)
@example(h=31, w=2, n=4, channels=3, dtype=np.float32, levels=5, sharpness=None, seed=1)
def test_no_fused_pixel_leaves_the_range_of_the_frames(
    h, w, n, channels, dtype, levels, sharpness, seed
):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if channels == 0 else (n, h, w, channels)
    if np.dtype(dtype).kind == "f":
        frames = (rng.standard_normal(shape) * 1e3).astype(dtype)
    else:
        info = np.iinfo(dtype)
        frames = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    # random frames are the worst case: every level of every frame disagrees
    res = fuse_stack(frames, levels=levels, sharpness=sharpness)
    assert res.image.shape == frames.shape[1:] and res.image.dtype == frames.dtype
    tol = FLOAT32_RTOL * float(np.abs(frames).max()) if frames.dtype.kind == "f" else 0.0
    assert _outside_range(res.image, frames) <= tol


def _pcb_crop() -> np.ndarray:
    import imageio.v3 as iio

    return np.stack([iio.imread(DATA / f"pcb_crop_{k}.jpg") for k in range(7)])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_real_stack_has_no_dark_band_along_its_edge(dtype):
    # a crop of a real (handheld, JPEG) stack whose frames differ in brightness at coarse
    # scales: the fused right edge went near-black (mean 2/255, every frame >= 28/255)
    frames = (_pcb_crop().astype(np.float64) * 257).astype(dtype)
    img = fuse_stack(frames).image.astype(np.float64)
    band = (slice(0, 121), slice(-12, None))
    lowest = frames[(slice(None), *band)].min(axis=0).astype(np.float64)
    assert np.all(img[band] >= lowest - FLOAT32_RTOL * 65535)
    assert img[band].mean() >= frames[(slice(None), *band)].min(axis=0).mean()
    assert _outside_range(img, frames) <= FLOAT32_RTOL * 65535


def test_noise_estimate_recovers_the_noise_of_each_channel():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:200, :300]
    smooth = 1000 + 300 * np.sin(xx / 40.0) * np.cos(yy / 55.0)
    sigma = np.array([2.0, 7.0, 30.0])
    img = smooth[..., None] + rng.normal(0, 1, (200, 300, 3)) * sigma
    img[50:60, :, 1] += 2000  # a few sharp edges do not move the median
    est = estimate_noise(img)
    np.testing.assert_allclose(est, sigma, rtol=0.06)


def test_dim_channel_in_a_wide_container_counts_as_much_as_a_bright_one():
    # 12-bit-like data in uint16 with independent, noisy channels: on the left a dim blue
    # detail (5 % of the red one) in focus in frame 1, on the right a bright red detail in
    # focus in frame 0; each must come from its own frame. Weighing the channels' energy
    # as luma does (blue 0.07) lets the other channels' noise decide (error ratio 0.52).
    from scipy import ndimage

    rng = np.random.default_rng(1)
    sharp = 800 + 600 * ndimage.gaussian_filter(rng.standard_normal((64, 128)), 1.0)
    soft = ndimage.gaussian_filter(sharp, 4.0)
    clean = np.full((2, 64, 128, 3), 100.0)
    clean[0, :, 64:, 0], clean[1, :, 64:, 0] = sharp[:, 64:], soft[:, 64:]
    clean[0, :, :64, 2] = 100 + 0.05 * soft[:, :64]
    clean[1, :, :64, 2] = 100 + 0.05 * sharp[:, :64]
    frames = np.rint(clean + rng.normal(0, 2.0, clean.shape)).astype(np.uint16)
    res = fuse_stack(frames, levels=3).image.astype(np.float64)

    def ratio(c, cols, k):  # error against frame k's clean channel c, over the frames' gap
        ref, other = clean[k][8:-8, cols, c], clean[1 - k][8:-8, cols, c]
        return np.abs(res[8:-8, cols, c] - ref).mean() / np.abs(other - ref).mean()

    assert ratio(0, slice(64, None), 0) < 0.1
    assert ratio(2, slice(None, 64), 1) < 0.4


def test_twelve_bit_colour_fluorescence_beats_every_frame_and_keeps_sixteen_bits():
    s = scene_stack("fluorescence", (96, 96), 6, seed=2)
    res = fuse_stack(s.frames)
    assert res.image.dtype == np.uint16
    err = np.sqrt(np.mean((res.image.astype(float) - s.truth) ** 2))
    best_frame = min(np.sqrt(np.mean((f.astype(float) - s.truth) ** 2)) for f in s.frames)
    assert err < 0.8 * best_frame
    # dark background is not amplified: no noisier than the frames' own background
    bg = np.isnan(s.depth)
    frame_bg = np.std(s.frames[0].astype(float)[bg] - s.truth[bg])
    assert np.std(res.image.astype(float)[bg] - s.truth[bg]) <= frame_bg


def test_bit_depth_and_noise_options_are_validated():
    with pytest.raises(ValueError, match="bit_depth"):
        StackFuser(bit_depth=0)
    with pytest.raises(ValueError, match="noise_dn"):
        StackFuser(noise_dn=-1.0)
    with pytest.raises(ValueError, match="noise_dn"):
        StackFuser(noise_dn=[1.0, 0.0])
    with pytest.raises(ValueError, match="does not fit"):
        fuse_stack(np.zeros((2, 8, 8), np.uint8), bit_depth=12)
    with pytest.raises(ValueError, match="channels"):
        fuse_stack(np.zeros((2, 8, 8, 3), np.uint8), noise_dn=[1.0, 2.0])
    with pytest.raises(ValueError, match="noise_floor"):
        StackFuser(noise_floor=0.0)
    with pytest.raises(ValueError, match="focus_levels"):
        StackFuser(focus_levels=0)
    with pytest.raises(TypeError, match="fill_depth"):
        StackFuser(fill_depth="yes")


def test_frames_above_the_bit_depth_are_refused_not_clipped():
    frames = np.zeros((2, 8, 8), np.uint16)
    frames[1, 3, 4] = 4096
    with pytest.raises(ValueError, match=r"4096.*bit_depth=12"):
        fuse_stack(frames, bit_depth=12)


def test_depth_fill_keeps_confident_pixels_and_fills_the_rest():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 10, (40, 50))
    w = (rng.uniform(size=(40, 50)) < 0.1).astype(float)
    filled = fill_depth(d, w)
    np.testing.assert_allclose(filled[w > 0], d[w > 0], rtol=1e-6)
    assert np.isfinite(filled).all()
    assert filled.min() >= d[w > 0].min() - 1e-5 and filled.max() <= d[w > 0].max() + 1e-5
    # a plane is filled back exactly enough from a few of its samples
    yy, xx = np.mgrid[:40, :50]
    plane = 0.1 * yy + 0.05 * xx
    assert np.abs(fill_depth(plane, w) - plane).mean() < 0.3
    assert np.isnan(fill_depth(d, np.zeros_like(w))).all()


@pytest.mark.parametrize("n", [9, 24])
def test_depth_of_a_thick_sample_is_covered_and_sub_frame(n):
    s = scene_stack("thick", (128, 128), n, seed=4)
    res = fuse_stack(s.frames)
    assert np.isfinite(res.depth).all()  # filled: coverage 100 %
    err = res.depth - s.depth
    assert np.sqrt(np.mean(err**2)) < 0.6
    kept = fuse_stack(s.frames, fill_depth=False)
    assert np.isnan(kept.depth).any()
    sure = np.isfinite(kept.depth)
    # the same depth where it is confident (but next to a hole, which the interpolation
    # from the half-resolution map reaches into)
    same = np.isclose(kept.depth[sure], res.depth[sure], atol=1e-5)
    assert same.mean() > 0.9
    assert np.abs(kept.depth[sure] - res.depth[sure]).max() < 1.0
    # the confidence map tells the weak pixels: they are the less accurate ones
    weak = res.confidence < 0.5
    if weak.any() and (~weak).any():
        assert np.abs(err[weak]).mean() > np.abs(err[~weak]).mean()


def test_spread_discount_matches_a_numpy_reference():
    from nanoro_optics.fusion import _depth_kernels

    rng = np.random.default_rng(3)
    est = rng.uniform(0, 12, (30, 40)).astype(np.float32)
    conf = rng.uniform(0, 1, (30, 40)).astype(np.float32)
    conf[0, :5] = 0.0  # no weight in the window: the confidence stays as it is
    wsum = conf.copy()  # a window of one pixel, and wider ones, through the sums below
    fsum = (est * conf).astype(np.float32)
    qsum = (est * est * conf + rng.uniform(0, 9, est.shape) * conf).astype(np.float32)
    got = conf.copy()
    _depth_kernels.discount_spread(got, wsum, fsum, qsum, 1.5, 3.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = fsum.astype(float) / wsum
        sd = np.sqrt(np.maximum(qsum.astype(float) / wsum - m * m, 0.0))
    want = np.where(wsum > 1e-6, conf * np.clip((3.0 - sd) / 1.5, 0.0, 1.0), conf)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (got <= conf).all()


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    sigma=st.sampled_from([0.5, 1.0, 2.0, 3.3]),
    seed=st.integers(0, 2**16),
)
def test_smoothing_sums_are_scipys_gaussian_filter_bit_for_bit(h, w, sigma, seed):
    """The depth's one-sweep smoothing gives scipy.ndimage.gaussian_filter's float32 values
    exactly (mode "mirror"), for maps smaller than the kernel too."""
    from scipy import ndimage

    from nanoro_optics.fusion import _depth_kernels
    from nanoro_optics.fusion.depth import _gaussian_half_kernel

    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, (h, w)).astype(np.float32)
    frac = rng.uniform(0, 30, (h, w)).astype(np.float32)
    got = [np.empty((h, w), np.float32) for _ in range(3)]
    tmp = np.empty((3, h, w), np.float32)
    _depth_kernels.smooth_sums(conf, frac, _gaussian_half_kernel(sigma), tmp, *got)
    weighted = frac * conf
    for mine, theirs in zip(got, (conf, weighted, weighted * frac), strict=True):
        want = ndimage.gaussian_filter(theirs, sigma, mode="mirror")
        np.testing.assert_array_equal(mine, want)


def test_confidence_tells_the_wrong_depths_beside_occluding_edges(monkeypatch):
    """Beside an occluding edge the background takes the foreground's frame (its glow);
    the spread of the estimates there lowers the confidence, not the depth."""
    import nanoro_optics.fusion.depth as depth_mod

    s = scene_stack("occlusion", (256, 256), 15, seed=3)
    res = fuse_stack(s.frames)
    monkeypatch.setattr(depth_mod, "SPREAD_LO", 1e9)
    monkeypatch.setattr(depth_mod, "SPREAD_HI", 2e9)
    plain = fuse_stack(s.frames)  # the contrast confidence alone
    np.testing.assert_array_equal(res.depth, plain.depth)  # the depth does not change
    assert (res.confidence <= plain.confidence + 1e-6).all()
    err = np.abs(res.depth - s.depth)
    wrong, right = err > 2.0, err < 1.0
    assert wrong.mean() > 0.03  # the case this is about is in the scene
    told = (res.confidence < 0.5)[wrong].mean()
    told_before = (plain.confidence < 0.5)[wrong].mean()
    assert told > 0.75 and told_before < 0.25  # (measured 0.89 and 0.06 at 512 px)
    assert (res.confidence < 0.5)[right].mean() < 0.1  # few right ones told


def test_fuse_stack_reads_a_folder_and_checks_z_before_fusing(tmp_path):
    from nanoro_optics.io import write_image

    frames = scene_stack("thick", (32, 40), 3, seed=0).frames
    for k, f in enumerate(frames):
        write_image(tmp_path / f"z{k}.tif", f)
    from_folder = fuse_stack(tmp_path)
    np.testing.assert_array_equal(from_folder.image, fuse_stack(frames).image)
    with pytest.raises(ValueError, match="z_um has 2 positions but 3 frames"):
        fuse_stack(frames, z_um=[0.0, 1.0])
    with pytest.raises(FileNotFoundError):
        fuse_stack(tmp_path / "missing")


def test_range_given_afterwards_gives_the_same_image_with_less_memory():
    s = scene_stack("occlusion", (48, 64), 4, seed=2)
    kept = fuse_stack(s.frames)
    fuser = StackFuser()
    fuser._drop_range()  # the file pipeline's: the range comes from a second read
    for f in s.frames:
        fuser.add(f)
    fuser.close()
    with pytest.raises(RuntimeError, match="closed"):
        fuser.add(s.frames[0])
    with pytest.raises(ValueError, match="set_range"):
        fuser.image()
    lo, hi = frame_range(iter(s.frames))
    with pytest.raises(ValueError, match="lo exceeds hi"):
        fuser._set_range(hi, lo)
    with pytest.raises(ValueError, match="shape"):
        fuser._set_range(lo[1:], hi[1:])
    fuser._set_range(lo, hi)
    res = fuser.result()
    np.testing.assert_array_equal(res.image, kept.image)
    np.testing.assert_array_equal(res.depth, kept.depth)
    keeper = StackFuser()
    keeper.add(s.frames[0])
    with pytest.raises(ValueError, match="keeps the frames' range itself"):
        keeper._set_range(lo, hi)
    empty = StackFuser()
    empty._drop_range()
    with pytest.raises(ValueError, match="comes after the frames"):
        empty._set_range(lo, hi)
    with pytest.raises(ValueError, match="empty"):
        frame_range([])
    with pytest.raises(ValueError, match="frame 1"):
        frame_range([lo, lo[1:]])
    single = StackFuser()
    single._drop_range()
    single.add(s.frames[0])
    np.testing.assert_array_equal(single.image(), s.frames[0])  # one frame needs no range
    lean = StackFuser()
    lean._drop_range()
    lean._reserve((8, 8), np.uint8)
    assert lean._lo is None and lean._hi is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_collapsing_at_close_gives_the_same_result(dtype):
    s = scene_stack("occlusion", (40, 56), 5, seed=4)
    frames = s.frames.astype(dtype) * (257 if dtype == np.uint16 else 1)
    kept = fuse_stack(frames)
    fuser = StackFuser()
    fuser._drop_range()
    for f in frames:
        fuser.add(f)
    fuser._close(collapse=True)
    assert fuser._acc == [] and fuser._built is not None  # the pyramid went: the image stays
    fuser._close(collapse=True)  # again: nothing more to do
    fuser._set_range(*frame_range(frames))
    first = fuser.result()  # not released: the same answer twice
    np.testing.assert_array_equal(first.image, kept.image)
    np.testing.assert_array_equal(first.depth, kept.depth)
    again = fuser.result(release=True)
    np.testing.assert_array_equal(again.image, kept.image)
    with pytest.raises(RuntimeError, match="released"):
        fuser.result()
    one = StackFuser()
    one.add(frames[0])
    one._close(collapse=True)  # one frame comes back as it is
    np.testing.assert_array_equal(one.image(), frames[0])


def test_range_of_files_read_by_two_threads_equals_the_frames_range(tmp_path):
    from nanoro_optics.io import write_image
    from nanoro_optics.pipeline import _files_range

    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (7, 33, 47, 3), dtype=np.uint8)
    for k, f in enumerate(frames):  # PNG (decoded into each thread's own buffers) and TIFF
        write_image(tmp_path / f"z{k:02d}.{'png' if k % 2 else 'tif'}", f)
    files = sorted(tmp_path.iterdir())
    want = (frames.min(axis=0), frames.max(axis=0))
    for threads in (1, 2, 3, 64):
        lo, hi = _files_range(files, threads)
        np.testing.assert_array_equal(lo, want[0])
        np.testing.assert_array_equal(hi, want[1])
    # a multi-page TIFF: every page counts
    import tifffile

    tifffile.imwrite(tmp_path / "pages.tif", frames[:, :, :, 0])
    lo, hi = _files_range([tmp_path / "pages.tif"], 2)
    np.testing.assert_array_equal(hi, frames[:, :, :, 0].max(axis=0))
    # a file of another size is named, whichever thread reads it
    write_image(tmp_path / "z99.png", frames[0, :-1])
    with pytest.raises(ValueError, match=r"z99\.png has shape \(32, 47, 3\)"):
        _files_range(sorted(tmp_path.glob("z*")), 2)
    (tmp_path / "z99.png").unlink()
    (tmp_path / "z50.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match=r"z50\.png"):
        _files_range(sorted(tmp_path.glob("z*")), 2)
    with pytest.raises((ValueError, FileNotFoundError), match=r"missing\.png"):
        _files_range([tmp_path / "missing.png"], 2)
    with pytest.raises(ValueError, match="finite"):
        frame_range([np.zeros((4, 4)), np.full((4, 4), np.nan)])


def test_alignment_to_the_middle_frame_keeps_its_grid(tmp_path):
    from nanoro_optics.fusion import synthetic_stack
    from nanoro_optics.fusion.align import FrameAligner, reference_transform
    from nanoro_optics.io import write_image

    scene = synthetic_stack((140, 160), 1, seed=2).frames[0]
    # a drifting stack (3 px per frame in x), every frame equally sharp
    frames = np.stack([scene[10:130, 10 + 3 * k : 130 + 3 * k] for k in range(5)])
    first = fuse_stack(frames, align=True)
    middle = fuse_stack(frames, align=True, reference="middle")
    inner = (slice(10, -10), slice(20, -20))
    assert np.abs(first.image[inner].astype(float) - frames[0][inner]).mean() < 2.0
    assert np.abs(middle.image[inner].astype(float) - frames[2][inner]).mean() < 2.0
    assert np.abs(middle.image[inner].astype(float) - frames[0][inner]).mean() > 10.0
    # the same from files, and through a first pass given by hand
    for k, f in enumerate(frames):
        write_image(tmp_path / f"d{k}.png", f)
    np.testing.assert_array_equal(
        fuse_stack(tmp_path, align=True, reference="middle").image, middle.image
    )
    ref = reference_transform(iter(frames))
    np.testing.assert_allclose(ref[:, 2], [6.0, 0.0], atol=0.2)  # frame 2 sits 6 px right
    by_hand = StackFuser(align=True, align_reference=ref)
    for f in frames:
        by_hand.add(f)
    np.testing.assert_array_equal(by_hand.result().image, middle.image)
    with pytest.raises(TypeError, match="one-shot"):
        fuse_stack(iter(frames), align=True, reference="middle")
    with pytest.raises(ValueError, match="align=True"):
        fuse_stack(frames, reference="middle")
    with pytest.raises(ValueError, match="reference"):
        fuse_stack(frames, align=True, reference="last")
    with pytest.raises(ValueError, match="invertible"):
        FrameAligner(reference=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="align_reference is for align=True"):
        StackFuser(align_reference=ref)


def test_occlusion_truth_is_what_an_in_focus_frame_records_away_from_the_edges():
    # the truth passes through the same diffraction as the frames (as in the other scenes):
    # the last frame (foreground in focus) and the first (background in focus) match it, up
    # to the 1 DN read noise and quantisation, where the other layer's blur does not reach
    from scipy import ndimage

    s = scene_stack("occlusion", (160, 160), 5, seed=4)
    r = int(1.5 * (s.n_frames - 1)) + 3  # the blur's reach (px), the scene's periodic edges cut
    reach = ndimage.distance_transform_edt(~s.edges) > r
    reach[:r], reach[-r:], reach[:, :r], reach[:, -r:] = False, False, False, False
    front = (s.depth == s.n_frames - 1) & reach
    back = (s.depth == 0) & reach
    assert front.sum() > 200 and back.sum() > 2000
    for frame, where in ((s.frames[-1], front), (s.frames[0], back)):
        err = frame.astype(np.float64) - s.truth
        assert np.sqrt(np.mean(err[where] ** 2)) < 1.3  # noise 1 DN + quantisation 0.29 DN


def _fill_depth_numpy(depth, weight):
    """The push-pull fill as numpy once computed it: the reference of the numba kernels."""

    def block_mean(a):
        h, w = a.shape
        out = np.zeros((-(-h // 2), -(-w // 2)), np.float32)
        cnt = np.zeros_like(out)
        for dy in (0, 1):
            for dx in (0, 1):
                part = a[dy::2, dx::2]
                out[: part.shape[0], : part.shape[1]] += part
                cnt[: part.shape[0], : part.shape[1]] += 1
        return out / cnt

    def along0(x, n):
        prev = np.concatenate([x[:1], x[:-1]])
        nxt = np.concatenate([x[1:], x[-1:]])
        out = np.empty((2 * x.shape[0], *x.shape[1:]), np.float32)
        out[0::2] = 0.75 * x + 0.25 * prev
        out[1::2] = 0.75 * x + 0.25 * nxt
        return out[:n]

    w0 = np.where(weight > 0, weight, 0).astype(np.float32)
    d0 = np.where(w0 > 0, depth, 0).astype(np.float32)
    ws, fs = [w0], [w0 * d0]
    while ws[-1].shape[0] > 1 or ws[-1].shape[1] > 1:
        ws.append(block_mean(ws[-1]))
        fs.append(block_mean(fs[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(ws[-1] > 0, fs[-1] / ws[-1], np.float32(np.nan))
        ws.pop()
        fs.pop()
        while ws:
            w, f = ws.pop(), fs.pop()
            up = along0(along0(est, w.shape[0]).T, w.shape[1]).T
            est = np.where(w0 > 0, d0, up) if not ws else np.where(w > 0, f / w, up)
    return est.astype(np.float32, copy=False)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 37),
    w=st.integers(1, 37),
    holes=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_fill_depth_kernels_give_numpys_push_pull_bit_for_bit(h, w, holes, seed):
    from nanoro_optics.fusion.depth import fill_depth

    rng = np.random.default_rng(seed)
    depth = (rng.normal(0, 30, (h, w))).astype(np.float32)
    weight = np.where(rng.random((h, w)) < holes, 0.0, rng.random((h, w)))
    got = fill_depth(depth, weight)
    want = _fill_depth_numpy(depth, weight)
    assert got.dtype == np.float32 and got.shape == (h, w)
    np.testing.assert_array_equal(got, want)  # NaN where no pixel has weight, as numpy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("align", [False, True])
def test_a_frame_buffer_handed_back_is_never_read_again(dtype, align):
    # the file pipeline's decoder refills a frame's buffer once the fuser says it holds its
    # copy (on_copied): the range, the pyramid and the depth must all come from before that
    s = scene_stack("occlusion", (40, 56), 5, seed=4)
    frames = s.frames.astype(dtype) * (257 if dtype == np.uint16 else 1)
    if dtype == np.float32:
        frames = frames * np.float32(2.0**30)  # scaled into working units (not exact)
    want = fuse_stack(frames, align=align)
    fuser = StackFuser(align=align)
    buffer = np.empty_like(frames[0])
    for f in frames:
        buffer[...] = f

        def spoil() -> None:
            buffer[...] = frames.max() if buffer.dtype.kind == "f" else 0

        fuser._add(buffer, None, spoil)
    got = fuser.result()
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.depth, want.depth)
