"""Channel-guided fusion: every channel blended with the weights of one (``guide_channel``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.fusion import StackFuser, fuse_stack, synthetic_stack

#: no clamp to the frames' range: the fused pyramid is then linear in a channel's data
_WIDE = 1e6


def _grey(n: int, *, dtype: object = np.uint16, seed: int = 1) -> np.ndarray:
    frames = synthetic_stack((48, 56), n, dtype=dtype, channels=1, seed=seed).frames
    return frames if frames.ndim == 3 else frames[..., 0]


def _fuse_unclamped(frames: np.ndarray, **options: object) -> np.ndarray:
    """Fuse float frames (N, H, W, C) without the clamp to their per-pixel range."""
    fuser = StackFuser(**options)  # type: ignore[arg-type]
    fuser._drop_range()
    for f in frames:
        fuser.add(f)
    lo = np.full(frames.shape[1:], -_WIDE, frames.dtype)
    fuser._set_range(lo, -lo)
    return fuser.image()


def test_guide_channel_fuses_exactly_as_alone() -> None:
    guide = _grey(5)
    rng = np.random.default_rng(3)
    flat = rng.integers(1000, 3000, guide.shape, dtype=np.uint16)  # flat noise: no focus
    stack = np.stack([flat, guide], axis=-1)
    alone = fuse_stack(guide, z_um=[4.0, 3.0, 2.0, 1.0, 0.0])
    res = fuse_stack(stack, z_um=[4.0, 3.0, 2.0, 1.0, 0.0], guide_channel=1)
    np.testing.assert_array_equal(res.image[..., 1], alone.image)
    np.testing.assert_array_equal(res.depth, alone.depth)
    np.testing.assert_array_equal(res.confidence, alone.confidence)
    # unguided, the noise channel has its say in the weights and the depth map
    free = fuse_stack(stack, z_um=[4.0, 3.0, 2.0, 1.0, 0.0])
    assert not np.array_equal(free.image[..., 1], alone.image)
    assert not np.array_equal(free.depth, alone.depth)


def test_other_channels_follow_the_guides_weights() -> None:
    """Linearity: with fixed weights, fused(a * guide + noise) = a * fused(guide) + fused(noise).

    The guide's weights blend channel 1 whatever channel 1 holds; fused unguided, the
    noise and the guide's copy in channel 1 change the weights and the identity breaks.
    """
    guide = _grey(6, dtype=np.float32)
    rng = np.random.default_rng(7)
    noise = rng.normal(0.5, 0.2, guide.shape).astype(np.float32)
    a = np.float32(0.75)
    mixed = np.stack([guide, a * guide + noise], axis=-1)
    only_noise = np.stack([guide, noise], axis=-1)
    fused_guide = _fuse_unclamped(guide[..., None], noise_dn=0.01)[..., 0]

    def channel1(stack: np.ndarray, **opt: object) -> np.ndarray:
        return _fuse_unclamped(stack, noise_dn=0.01, **opt)[..., 1].astype(np.float64)

    lhs = channel1(mixed, guide_channel=0) - channel1(only_noise, guide_channel=0)
    np.testing.assert_allclose(lhs, a * fused_guide, rtol=0, atol=2e-5)
    free = channel1(mixed) - channel1(only_noise)
    assert np.max(np.abs(free - a * fused_guide)) > 0.05


def test_guided_scaled_copy_is_the_guides_fusion_scaled() -> None:
    guide = _grey(4, dtype=np.float32, seed=5)
    stack = np.stack([guide, 0.5 * guide + 0.25, guide[::-1]], axis=-1)  # ch2: reversed
    out = fuse_stack(stack, guide_channel=0).image
    np.testing.assert_allclose(out[..., 1], 0.5 * out[..., 0] + 0.25, atol=2e-6)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 4),
    c=st.integers(2, 3),
    g=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_guide_is_its_own_fusion_property(n: int, c: int, g: int, seed: int) -> None:
    g = min(g, c - 1)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, 24, 20, c), dtype=np.uint8)
    res = fuse_stack(frames, guide_channel=g)
    alone = fuse_stack(np.ascontiguousarray(frames[..., g]))
    np.testing.assert_array_equal(res.image[..., g], alone.image)
    np.testing.assert_array_equal(res.depth, alone.depth)
    # every fused pixel of every channel stays inside the frames' range there
    assert np.all(res.image >= frames.min(axis=0)) and np.all(res.image <= frames.max(axis=0))


def test_guide_channel_validated() -> None:
    with pytest.raises(TypeError, match=r"guide_channel must be an integer, got float 1\.0"):
        StackFuser(guide_channel=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guide_channel must be an integer"):
        StackFuser(guide_channel=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="guide_channel must be >= 0, got -1"):
        StackFuser(guide_channel=-1)
    frames = np.zeros((2, 8, 8, 2), np.uint8)
    with pytest.raises(ValueError, match=r"guide_channel=2 is out of range: frame 0 has 2 "):
        fuse_stack(frames, guide_channel=2)
    fuser = StackFuser(guide_channel=1)
    with pytest.raises(ValueError, match=r"frame 0 has 1 channel \(guide_channel 0 to 0\)"):
        fuser.add(np.zeros((8, 8), np.uint8))
    assert fuser.n_frames == 0  # refused before anything was allocated
    with pytest.raises(ValueError, match=r"the reserved shape \(8, 8, 3\) has 3 channels"):
        StackFuser(guide_channel=3)._reserve((8, 8, 3), np.uint8)
