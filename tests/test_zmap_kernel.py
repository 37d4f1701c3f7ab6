"""The depth map's frame-index -> z kernel equals ``np.interp`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from nanoro_optics.fusion._zmap_kernels import index_to_z


def _reference(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """What DepthTracker.finish computed before: numpy's interp on the frame-index grid."""
    return np.interp(x, np.arange(z.size, dtype=np.float64), z).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_index_to_z_equals_numpy_interp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    steps = rng.uniform(0.01, 5.0, n)  # uneven steps, rising or falling
    z = rng.normal(0.0, 100.0) + np.cumsum(steps) * (1.0 if seed % 2 else -1.0)
    x = rng.uniform(-1.5, n + 0.5, (37, 53)).astype(np.float32)
    # the cases numpy treats apart: grid points, the ends, just inside, NaN, -0.0
    x[0, :n] = np.arange(n)
    last = np.float32(n - 1)
    x[1, :6] = [np.nan, last, np.nextafter(last, np.float32(0)), 0.0, -0.0, -1e-7]
    ref = _reference(x, z)
    out = np.full_like(x, -123.0)
    index_to_z(x, z, out)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)  # NaN where NaN, every bit elsewhere
    assert np.array_equal(np.signbit(out), np.signbit(ref))
    inplace = x.copy()
    index_to_z(inplace, z, inplace)  # DepthTracker.finish converts in place
    np.testing.assert_array_equal(inplace, ref)


def test_index_to_z_two_frames() -> None:
    z = np.array([5.0, 3.5])
    x = np.linspace(-0.5, 1.5, 40, dtype=np.float32).reshape(4, 10)
    out = np.empty_like(x)
    index_to_z(x, z, out)
    np.testing.assert_array_equal(out, _reference(x, z))
    assert out[0, 0] == np.float32(5.0) and out[-1, -1] == np.float32(3.5)


@pytest.mark.parametrize("seed", range(4))
def test_relabel_equals_numpy_interp(seed: int) -> None:
    from nanoro_optics.psf._mismatch_kernels import relabel

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    xk = np.cumsum(rng.uniform(0.05, 3.0, n)) + rng.normal(0.0, 50.0)
    yk = rng.normal(0.0, 20.0, n)  # any values, not monotonic
    x = rng.uniform(xk[0] - 2.0, xk[-1] + 2.0, (29, 31)).astype(np.float32)
    x[0, :n] = xk.astype(np.float32)
    x[1, 0] = np.nan
    out = np.empty_like(x)
    relabel(x, xk, yk, out)
    ref = np.interp(x.astype(np.float64), xk, yk)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
    assert np.isnan(out[1, 0]) and np.isfinite(np.delete(out.ravel(), 31)).all()
