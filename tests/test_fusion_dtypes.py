"""Fusion of every integer width and any finite float scale: finite, inside the data.

Integer frames wider than 16 bits used to wrap near the dtype's maximum (every frame
2147483647 fused to -2147483648), float32 frames at 1e-20 or 1e25 fused to NaN, float64
at 1e-300 to zeros, float16 was refused with NotImplementedError, and float64 pixels
landed one float32 step outside the frames' range.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.fusion import StackFuser, fuse_stack, scene_stack, synthetic_stack
from nanoro_optics.fusion.frame_range import frame_range
from nanoro_optics.fusion.rule import NOISE_FLOOR_MIN, FusionRule

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
WIDE_INTS = [np.int32, np.uint32, np.int64, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
#: frames x height x width of the small stacks here (the fuser's arithmetic, not its quality)
SHAPE = (4, 24, 20)


def _inside(image: np.ndarray, frames: np.ndarray) -> bool:
    """Every pixel within the frames' per-pixel [min, max], compared exactly (no casts)."""
    lo, hi = frames.min(axis=0), frames.max(axis=0)
    return bool(np.all((lo <= image) & (image <= hi)))


def _offset_stack(pattern: np.ndarray, base: int, dtype: type) -> np.ndarray:
    """``base + pattern`` (non-negative integers) in ``dtype``, exactly, for any width."""
    dt = np.dtype(dtype)
    u = pattern.astype(np.uint64) + np.uint64(base % 2**64)  # modulo 2**64: exact bits
    if dt.kind == "i":
        return u.view(np.int64).astype(dt)
    return u.astype(dt)


def _texture(rng: np.random.Generator, span: int, channels: int = 1) -> np.ndarray:
    shape = SHAPE if channels == 1 else (*SHAPE, channels)
    return rng.integers(0, span, shape, dtype=np.uint64, endpoint=True)


@pytest.mark.parametrize("dtype", WIDE_INTS)
@pytest.mark.parametrize("end", ["max", "min"])
def test_constant_wide_integers_at_the_limits_come_back_exactly(dtype, end):
    info = np.iinfo(dtype)
    value = info.max if end == "max" else info.min
    frames = np.full(SHAPE, value, dtype)
    image = fuse_stack(frames).image
    assert image.dtype == frames.dtype
    assert np.all(image == value)  # was the opposite end: int32 max -> int32 min


@pytest.mark.parametrize("dtype", WIDE_INTS)
def test_wide_integers_near_the_limits_fuse_as_the_same_data_near_zero(dtype):
    """A 12-bit scene offset to the top (and bottom) of a wide integer type fuses to the
    same image as the scene itself, offset: no wrap, no loss of the low bits."""
    scene = scene_stack("thick", (48, 40), 5, seed=0)
    ref = fuse_stack(scene.frames.astype(np.int32)).image.astype(np.int64)
    info = np.iinfo(dtype)
    pattern = scene.frames.astype(np.uint64)
    for base in (int(info.max) - scene.white_level, int(info.min)):
        frames = _offset_stack(pattern, base, dtype)
        image = fuse_stack(frames).image
        assert image.dtype == np.dtype(dtype)
        assert _inside(image, frames)
        back = (image.astype(object) - base).astype(np.int64)  # exact for every width
        np.testing.assert_array_equal(back, ref)


@pytest.mark.parametrize("dtype", WIDE_INTS)
def test_wide_integers_over_the_full_span_stay_inside(dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    frames = _offset_stack(_texture(rng, 2**64 - 1), 0, np.uint64)
    if np.dtype(dtype).itemsize < 8:
        frames = (frames >> np.uint64(64 - 8 * np.dtype(dtype).itemsize)).astype(np.uint64)
    frames = _offset_stack(frames, int(info.min), dtype)
    image = fuse_stack(frames, sharpness=None).image
    assert _inside(image, frames)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("exponent", [-120, -70, -40, 40, 80, 120])
def test_float_scales_fuse_exactly_as_the_unscaled_stack(dtype, exponent):
    """Scaling the frames by a power of two scales the fused image by it, bit for bit
    (float32 at 1e-20 and 1e25 fused to NaN before, 1e20 half NaN)."""
    frames = synthetic_stack((40, 36), 4, seed=2, dtype="float32", noise_dn=2 / 255).frames
    frames = frames.astype(dtype)
    ref = fuse_stack(frames).image
    if dtype == np.float64:
        exponent *= 8  # to 2**-960 and 2**960
    image = fuse_stack(np.ldexp(frames, exponent)).image
    assert image.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image, np.ldexp(ref, exponent).astype(dtype))


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(np.float32, 1e-20), (np.float32, 1e20), (np.float32, 1e25), (np.float32, 1e-38),
     (np.float32, 3e38), (np.float64, 1e-300), (np.float64, 1e300), (np.float64, 5e-324),
     (np.float64, 1.7e308), (np.float16, 1.0), (np.float16, 6e4), (np.float16, 1e-7)],
)  # fmt: skip
def test_float_frames_at_extreme_scales_fuse_finite_and_inside(dtype, scale):
    rng = np.random.default_rng(1)
    frames = (rng.random((*SHAPE, 3)) * scale).astype(dtype)
    for sharpness in (4, None):
        image = fuse_stack(frames, sharpness=sharpness).image
        assert image.dtype == np.dtype(dtype)
        assert np.isfinite(image).all()
        assert _inside(image, frames)
        if frames.max() > 0:  # not all zeros (float64 at 1e-300 fused to zeros before)
            assert image.max() > 0


def test_float64_pixels_stay_inside_the_exact_range():
    """The range used to be kept in float32: ~150 of 4096 float64 pixels landed a float32
    step outside the frames' range."""
    frames = synthetic_stack((64, 64), 5, seed=4, dtype="float64", noise_dn=2 / 255).frames
    for sharpness in (4, None):
        assert _inside(fuse_stack(frames, sharpness=sharpness).image, frames)


def test_a_finite_huge_pixel_is_not_called_infinite():
    frames = np.ones((3, 16, 16))
    frames[0, 3, 4] = 1e300  # finite: float32 of it is inf, which the message reported
    image = fuse_stack(frames).image
    assert np.isfinite(image).all() and _inside(image, frames)
    frames[0, 3, 4] = 1.0
    frames[1, 3, 4] = 1e300  # 2**996 times frame 0: refused, naming the value as it is
    with pytest.raises(ValueError, match=r"frame 1 has a pixel of magnitude 1e\+300"):
        fuse_stack(frames)
    frames[1, 3, 4] = 1.0
    frames[2, 5, 6] = np.nan
    with pytest.raises(ValueError, match=r"frame 2 has a non-finite pixel \(nan\) at \(5, 6\)"):
        fuse_stack(frames)


def test_float16_frames_are_supported():
    frames = synthetic_stack((32, 32), 4, seed=3, dtype="float32").frames.astype(np.float16)
    res = fuse_stack(frames)
    assert res.image.dtype == np.float16 and _inside(res.image, frames)
    assert np.isfinite(res.depth).all()


def test_frames_far_larger_than_the_first_are_refused_naming_the_frame():
    frames = synthetic_stack((32, 32), 4, seed=3, dtype="float32").frames
    mixed = frames.copy()
    mixed[2] *= np.float32(1e29)  # below 2**100 times frame 0: fused, finite, inside
    image = fuse_stack(mixed).image
    assert np.isfinite(image).all() and _inside(image, mixed)
    mixed[2] = frames[2] * np.float32(1e31)
    with pytest.raises(ValueError, match=r"frame 2 has a pixel of magnitude .* 2\*\*100"):
        fuse_stack(mixed)


@pytest.mark.parametrize("dtype", [np.int64, np.uint32, np.float64])
def test_range_handed_over_and_early_collapse_keep_wide_dtypes_inside(dtype):
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        frames = _offset_stack(_texture(rng, 4095), int(info.max) - 4095, dtype)
    else:
        frames = rng.random(SHAPE) * 1e300
    fuser = StackFuser(depth=False)
    fuser._drop_range()  # as the file pipeline does: the range is handed over afterwards
    for f in frames:
        fuser.add(f)
    fuser._close(collapse=True)
    fuser._set_range(*frame_range(frames))
    image = fuser.image()
    assert image.dtype == frames.dtype and _inside(image, frames)


@pytest.mark.parametrize("dtype", [np.int32, np.uint64])
def test_aligned_wide_integers_do_not_wrap(dtype):
    info = np.iinfo(dtype)
    pattern = synthetic_stack((48, 48), 4, seed=1, breathing=0.02, channels=1).frames
    frames = _offset_stack(pattern.astype(np.uint64), int(info.max) - 255, dtype)
    image = fuse_stack(frames, align=True).image
    assert image.min() >= int(info.max) - 255  # a wrap lands near the other end


@pytest.mark.parametrize("floor", [1e-300, 5e-324, 1e-13, 0.0, -1.0])
def test_noise_floor_below_its_limit_is_refused_naming_it(floor):
    frames = synthetic_stack((32, 32), 3, seed=0).frames
    # was SystemError from a numba ZeroDivisionError (float32 of 1e-300 is 0)
    with pytest.raises(ValueError, match=r"noise_floor must be >= 1e-12, got"):
        fuse_stack(frames, noise_floor=floor)
    assert FusionRule(noise_floor=NOISE_FLOOR_MIN).noise_floor == NOISE_FLOOR_MIN
    assert np.isfinite(fuse_stack(frames, noise_floor=NOISE_FLOOR_MIN).depth).all()


def test_noise_dn_too_small_for_the_data_is_refused_naming_it():
    frames = synthetic_stack((32, 32), 3, seed=0, dtype="float32").frames
    with pytest.raises(ValueError, match=r"noise_dn=\[1e-30\] does not fit these frames: from"):
        fuse_stack(frames, noise_dn=1e-30)
    # the same noise at the data's own scale is fine
    image = fuse_stack(np.ldexp(frames, -100), noise_dn=2.0**-100 / 255).image
    assert np.isfinite(image).all()


def test_noise_dn_of_huge_frames_is_taken_at_their_scale():
    # noise_dn was refused above 1e30 whatever the data; frames of any finite scale are
    # fused, and the noise is checked against theirs (the tiled driver passes it on)
    frames = synthetic_stack((32, 32), 3, seed=0, dtype="float32").frames.astype(np.float64)
    big = fuse_stack(frames * 2.0**110, noise_dn=2.0**110 / 255)
    small = fuse_stack(frames, noise_dn=1 / 255)
    np.testing.assert_array_equal(big.image, small.image * 2.0**110)
    np.testing.assert_array_equal(big.depth, small.depth)
    with pytest.raises(ValueError, match=r"noise_dn=\[1e\+300\] does not fit these frames"):
        fuse_stack(frames, noise_dn=1e300)
    with pytest.raises(ValueError, match="noise_dn must be finite"):
        fuse_stack(frames, noise_dn=float("inf"))


def _random_stack(data: st.DataObject) -> np.ndarray:
    """A small random stack of a random dtype and scale (hypothesis draws the choices)."""
    dtype = np.dtype(data.draw(st.sampled_from(INT_DTYPES + FLOAT_DTYPES), label="dtype"))
    channels = data.draw(st.sampled_from([1, 3]), label="channels")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    if dtype.kind == "f":
        finfo = np.finfo(dtype)
        lo_e, hi_e = int(np.log2(finfo.smallest_subnormal)), int(np.log2(finfo.max))
        top = data.draw(st.integers(lo_e + 1, hi_e), label="log2 scale")
        signed = data.draw(st.booleans(), label="signed")
        x = rng.random(SHAPE if channels == 1 else (*SHAPE, channels))
        x = 2 * x - 1 if signed else x
        return np.ldexp(x, top).astype(dtype)
    info = np.iinfo(dtype)
    bits = data.draw(st.integers(0, info.bits), label="bits of span")
    span = 2**bits - 1
    base = data.draw(st.integers(int(info.min), int(info.max) - span), label="base")
    return _offset_stack(_texture(rng, span, channels), base, dtype)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_fused_image_is_finite_and_inside_the_frames_for_every_dtype_and_scale(data):
    frames = _random_stack(data)
    sharpness = data.draw(st.sampled_from([4, None]), label="sharpness")
    image = fuse_stack(frames, sharpness=sharpness).image
    assert image.dtype == frames.dtype and image.shape == frames.shape[1:]
    if image.dtype.kind == "f":
        assert np.isfinite(image).all()
    assert _inside(image, frames)


@pytest.mark.parametrize(
    ("z_um", "message"),
    [
        ([-1.7e308, 0.0, 1.7e308], r"z_um must be within \+-1000000000.0 um, got -1.7e\+308"),
        ([0.0, 5e-324, 1e-323], r"z_um steps must be at least 1e-06 um .* position 1 \(5e-324\)"),
        ([1e8, 1e8 + 1e-3, 1e8 + 2e-3], r"z_um steps must be at least 47.7 um"),
    ],
)
def test_z_positions_the_float32_depth_map_cannot_hold_are_refused(z_um, message):
    """They gave a depth map of inf, or of zeros (steps below float32's resolution)."""
    frames = synthetic_stack((32, 32), 3, seed=0).frames
    with pytest.raises(ValueError, match=message):
        fuse_stack(frames, z_um=z_um)
    fuser = StackFuser()  # the same check when z comes frame by frame
    with pytest.raises(ValueError, match=message):
        for frame, z in zip(frames, z_um, strict=True):
            fuser.add(frame, z_um=z)
    depth = fuse_stack(frames, z_um=[1e5, 1e5 + 0.05, 1e5 + 0.1]).depth
    assert np.isfinite(depth).all() and depth.min() >= 1e5 and depth.max() <= 1e5 + 0.1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_absmax_kernel_matches_numpy(dtype):
    from nanoro_optics.fusion import _blend_kernels

    rng = np.random.default_rng(3)
    img = ((rng.random((37, 53, 3)) - 0.5) * 1e30).astype(dtype)
    bad, top = _blend_kernels.finite_absmax(img)
    assert bad == -1 and top == float(np.abs(img).max())
    for value in (np.nan, np.inf, -np.inf):
        img2 = img.copy()
        img2[20, 7, 1] = value
        img2[30, 2, 0] = np.nan
        bad, _ = _blend_kernels.finite_absmax(img2)
        assert bad == int(np.flatnonzero(~np.isfinite(img2))[0])  # the first, in flat order


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.int16, np.int64]),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**31 - 1),
)
def test_parallel_integer_max_is_numpys(dtype, n, seed):
    # the bit-depth check's maximum of a large frame, taken on the fusion's threads
    from nanoro_optics.fusion import _blend_kernels

    info = np.iinfo(dtype)
    a = np.random.default_rng(seed).integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    assert _blend_kernels.int_max(a.reshape(1, -1)) == a.max()
    assert _blend_kernels.int_max(a.reshape(-1, 1)) == a.max()


def test_a_large_frame_above_its_bit_depth_is_refused_where_it_is():
    from nanoro_optics.fusion import FusionOptions, StackFuser
    from nanoro_optics.fusion._intake import _PARALLEL_MAX_PIXELS

    side = int(np.ceil(np.sqrt(_PARALLEL_MAX_PIXELS)))
    frame = np.full((side, side), 100, np.uint16)
    fuser = StackFuser(FusionOptions(bit_depth=12))
    fuser.add(frame)
    bad = frame.copy()
    bad[side - 1, side - 2] = 4096
    with pytest.raises(ValueError, match=rf"value 4096 at \({side - 1}, {side - 2}\), above 4095"):
        fuser.add(bad)
    fuser.add(frame)  # the fuser goes on: the refused frame changed nothing
    assert fuser.n_frames == 2
