"""Tiled fusion equals untiled fusion, from arrays, memory-mapped TIFF and zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from nanoro_optics.distributed import fuse_tiled, tile_margin_px
from nanoro_optics.distributed import tiled as tiled_mod
from nanoro_optics.fusion import fuse_stack, synthetic_stack
from nanoro_optics.fusion.pyramid import auto_levels

#: tile-by-tile fusion of whole stacks, often on a dask cluster: left out of the quick subset
pytestmark = pytest.mark.slow

#: float frames: the issue asks for 1e-5 relative; the tiles compute every value in the same
#: order as the whole image, so equality is in fact exact and is checked as such too
FLOAT_RTOL = 1e-5


def _assert_same(tiled: Any, ref: Any, *, exact: bool = True) -> None:
    assert tiled.image.dtype == ref.image.dtype and tiled.image.shape == ref.image.shape
    if exact:
        np.testing.assert_array_equal(tiled.image, ref.image)
    else:
        np.testing.assert_allclose(tiled.image, ref.image, rtol=FLOAT_RTOL, atol=0)
    np.testing.assert_array_equal(tiled.depth, ref.depth)  # NaN where unsure, in both
    np.testing.assert_array_equal(tiled.confidence, ref.confidence)


@pytest.mark.parametrize(
    ("dtype", "channels", "levels", "tile_px"),
    [
        (np.uint8, 3, 3, 32),
        (np.uint16, 1, 4, 40),  # tile not a multiple of the level spacing
        (np.float32, 3, 2, 17),
        (np.uint8, 1, 1, 16),
    ],
)
def test_tiled_equals_untiled(dtype: Any, channels: int, levels: int, tile_px: int) -> None:
    noise = 0.01 if dtype == np.float32 else 2.0
    s = synthetic_stack((150, 130), 5, seed=3, dtype=dtype, channels=channels, noise_dn=noise)
    ref = fuse_stack(s.frames, levels=levels, fill_depth=False)
    res = fuse_tiled(s.frames, levels=levels, tile_px=tile_px)
    assert res.n_tiles == -(-150 // tile_px) * -(-130 // tile_px) > 4
    assert res.levels == levels and res.margin_px == tile_margin_px(levels)
    _assert_same(res, ref, exact=True)
    if dtype == np.float32:
        _assert_same(res, ref, exact=False)


@pytest.mark.parametrize(
    ("dtype", "scale", "offset"),
    [
        (np.int64, 2.0**20, 0),  # wider than float32's 24 bits: fused in scaled steps
        (np.int64, 2.0**20, 2**40),  # ... relative to frame 0's midpoint
        (np.uint32, 2.0**14, 0),
        (np.float64, 1e31, 0),  # float frames far from 1: scaled by a power of two
        (np.float32, 1e-30, 0),
    ],
)
def test_tiles_share_the_whole_frames_working_units(dtype: Any, scale: float, offset: int) -> None:
    # each tile's fuser once took its working units from its own part of frame 0: tiles of
    # wide integers were rounded to different steps (seams of up to 4096 DN at 2**20)
    s = synthetic_stack((96, 80), 4, seed=2, dtype=np.uint16, channels=1)
    frames = (s.frames.astype(np.float64) * scale + offset).astype(dtype)
    ref = fuse_stack(frames, levels=3, fill_depth=False)
    res = fuse_tiled(frames, levels=3, tile_px=32)
    assert res.n_tiles == 9
    _assert_same(res, ref, exact=True)


def test_frame0_span_reads_strips(monkeypatch) -> None:
    # frame 0's range is read a strip of rows at a time (a frame larger than memory)
    monkeypatch.setattr(tiled_mod, "_SPAN_ROWS", 7)
    frames = np.zeros((2, 30, 20), np.int64)
    frames[0, 29, 3] = -(2**40)
    frames[0, 0, 0] = 2**50
    frames[1] = 2**60  # (frame 1 is not read)
    span = tiled_mod._frame0_span(tiled_mod._Frames(frames))
    assert span == (-(2**40), 2**50, 0.0)
    floats = np.zeros((2, 30, 20), np.float32)
    floats[0, 15, 2] = -3e30
    assert tiled_mod._frame0_span(tiled_mod._Frames(floats)) == (0, 0, float(np.float32(3e30)))
    assert tiled_mod._frame0_span(tiled_mod._Frames(np.zeros((2, 8, 8), np.uint16))) is None


def test_scale_as_comes_before_the_first_frame_and_is_checked() -> None:
    from nanoro_optics.fusion import StackFuser

    fuser = StackFuser(levels=2)
    for bad in ((3, 2, 0.0), (0, 1, float("nan")), (0, 1, -1.0), (0.5, 1, 0.0)):
        with pytest.raises(ValueError, match="_scale_as"):
            fuser._scale_as(*bad)
    fuser.add(np.zeros((16, 16), np.int64))
    with pytest.raises(ValueError, match="before the first frame"):
        fuser._scale_as(0, 1, 0.0)


def test_hard_rule_wide_window_and_z() -> None:
    s = synthetic_stack((120, 100), 4, seed=5, dtype=np.uint16, noise_dn=30.0)
    z = [10.0, 12.5, 15.0, 17.5]
    opts = {"sharpness": None, "window_px": 7, "inherit": 2.0}
    ref = fuse_stack(s.frames, levels=3, z_um=z, fill_depth=False, **opts)
    res = fuse_tiled(s.frames, levels=3, tile_px=24, z_um=z, **opts)
    assert res.depth_unit == ref.depth_unit == "um"
    assert res.margin_px == tile_margin_px(3, window_px=7) > tile_margin_px(3)
    _assert_same(res, ref)


def test_options_object_and_z_step_as_in_fuse_stack() -> None:
    from nanoro_optics.fusion import FusionOptions
    from nanoro_optics.psf import IndexMismatch

    s = synthetic_stack((120, 100), 4, seed=6, dtype=np.uint16, noise_dn=30.0)
    opts = FusionOptions(levels=3, sharpness=None, coarse_window_px=1, z_step_um=-2.0)
    ref = fuse_stack(s.frames, opts, fill_depth=False)
    res = fuse_tiled(s.frames, opts.replace(fill_depth=False), tile_px=24)
    assert res.depth_unit == ref.depth_unit == "um"
    _assert_same(res, ref)
    # the options' fill (True by default) is applied to the assembled map
    filled = fuse_tiled(s.frames, opts, tile_px=24)
    assert not np.isnan(filled.depth).any()
    with pytest.raises(ValueError, match="index mismatch"):
        water = IndexMismatch(interface_um=0.0, na=0.5, n_immersion=1.0, n_sample=1.33,
                              model="carlsson")  # fmt: skip
        fuse_tiled(s.frames, opts, index_mismatch=water)


def test_margin_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that can fail: too small an overlap changes the result near tile edges."""
    from nanoro_optics.fusion.depth import SMOOTH_PX

    s = synthetic_stack((128, 128), 4, seed=6, noise_dn=0.01, dtype=np.float32)
    ref = fuse_stack(s.frames, levels=3, fill_depth=False)
    image_reach = 22  # worked by hand in test_margin_formula
    depth_reach = 14 + 2 * (int(4 * SMOOTH_PX + 0.5) + 1)
    assert depth_reach >= image_reach + 8

    monkeypatch.setattr(tiled_mod, "tile_margin_px", lambda n, window_px=5: image_reach // 2)
    res = fuse_tiled(s.frames, levels=3, tile_px=32)
    assert not np.array_equal(res.image, ref.image)
    assert not np.array_equal(res.depth, ref.depth, equal_nan=True)
    # enough for the image, not for the depth map's smoothing
    monkeypatch.setattr(tiled_mod, "tile_margin_px", lambda n, window_px=5: image_reach)
    res = fuse_tiled(s.frames, levels=3, tile_px=32)
    assert np.array_equal(res.image, ref.image)
    assert not np.array_equal(res.depth, ref.depth, equal_nan=True)


def test_default_levels_match_fuse_stack_below_2048_px() -> None:
    s = synthetic_stack((70, 90), 3, seed=7)
    res = fuse_tiled(s.frames, tile_px=32)
    assert res.levels == auto_levels((70, 90))
    _assert_same(res, fuse_stack(s.frames, fill_depth=False))
    assert tiled_mod.MAX_DEFAULT_LEVELS == auto_levels((2047, 2047))


def test_margin_formula() -> None:
    # the image's reach (REDUCE/EXPAND/window/inherit chain), worked by hand for 3 levels:
    # G1 2, G2 6, L0 4, L1 10, act0 6, act1 14, top 16, collapse 22; the depth map adds
    # the tracker's smoothing on level 1: act1 + 2 (round(4 SMOOTH_PX) + 1)
    from nanoro_optics.fusion.depth import SMOOTH_PX

    assert tile_margin_px(3) == max(22, 14 + 2 * (int(4 * SMOOTH_PX + 0.5) + 1))
    # grows as 6.5 * 2**(levels - 1)
    for n in range(7, 16):
        assert 6.4 < tile_margin_px(n) / 2 ** (n - 1) < 6.6
    with pytest.raises(ValueError, match="levels must be >= 1"):
        tile_margin_px(0)
    with pytest.raises(ValueError, match="window_px must be <= 15"):
        tile_margin_px(3, window_px=17)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_from_tiff_into_memory_mapped_tiff(tmp_path: Path, compression: str | None) -> None:
    s = synthetic_stack((100, 90), 4, seed=8, dtype=np.uint16, noise_dn=10.0)
    src = tmp_path / "stack.tif"
    # zlib in strips: not memory-mappable, read through tifffile's zarr view
    tifffile.imwrite(src, s.frames, photometric="rgb", compression=compression, rowsperstrip=8)
    paths = {k: tmp_path / f"{k}.tif" for k in ("image", "depth", "confidence")}
    seen: list[tuple[int, int]] = []
    res = fuse_tiled(
        src,
        levels=3,
        tile_px=40,
        image_path=paths["image"],
        depth_path=paths["depth"],
        confidence_path=paths["confidence"],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(k, 9) for k in range(1, 10)]
    assert isinstance(res.image, np.memmap)
    ref = fuse_stack(s.frames, levels=3, fill_depth=False)
    _assert_same(res, ref)
    np.testing.assert_array_equal(tifffile.imread(paths["image"]), ref.image)
    np.testing.assert_array_equal(tifffile.imread(paths["depth"]), ref.depth)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confidence.tif",
        "depth.tif",
        "image.tif",
        "stack.tif",
    ]


def test_from_single_frame_files_and_zarr(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    s = synthetic_stack((80, 72), 3, seed=9, channels=1)
    for k, f in enumerate(s.frames):
        tifffile.imwrite(tmp_path / f"f{k}.tif", f)
    ref = fuse_stack(s.frames, levels=2, fill_depth=False)
    _assert_same(fuse_tiled(tmp_path, levels=2, tile_px=24), ref)
    z = zarr.create_array(
        store=str(tmp_path / "s.zarr"), shape=s.frames.shape, chunks=(1, 32, 32), dtype="u1"
    )
    z[:] = s.frames
    _assert_same(fuse_tiled(z, levels=2, tile_px=24), ref)


def test_bad_input(tmp_path: Path) -> None:
    s = synthetic_stack((40, 40), 2, seed=1)
    with pytest.raises(ValueError, match="cannot align"):
        fuse_tiled(s.frames, align=True)
    with pytest.raises(ValueError, match="fuse_tiled cannot apply halo='auto'"):
        fuse_tiled(s.frames, halo="auto")
    with pytest.raises(ValueError, match="tile_px must be >= 16"):
        fuse_tiled(s.frames, tile_px=8)
    with pytest.raises(ValueError, match="z_um has 3 positions but the stack has 2 frames"):
        fuse_tiled(s.frames, z_um=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"source array must be \(N, H, W\)"):
        fuse_tiled(s.frames[0, :, :, 0])
    with pytest.raises(ValueError, match=r"image_path must be a \.tif"):
        fuse_tiled(s.frames, image_path=tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fuse_tiled(s.frames, depth_path=tmp_path / "nope" / "d.tif")
    with pytest.raises(FileNotFoundError, match="no such file"):
        fuse_tiled(tmp_path / "missing.tif")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="reads TIFF files"):
        fuse_tiled(tmp_path / "a.png")
    with pytest.raises(ValueError, match="sharpness must be >= 1"):
        fuse_tiled(s.frames, sharpness=0)
    tifffile.imwrite(tmp_path / "a.tif", s.frames[0])
    tifffile.imwrite(tmp_path / "b.tif", s.frames[1, :20])
    with pytest.raises(ValueError, match="all frames of a stack must match"):
        fuse_tiled([tmp_path / "a.tif", tmp_path / "b.tif"])
    # a failed run leaves no partial output
    with pytest.raises(ValueError, match="sharpness"):
        fuse_tiled(s.frames, image_path=tmp_path / "out.tif", sharpness=0)
    assert not list(tmp_path.glob("*out*"))


def test_tiled_depth_can_be_filled_as_a_whole():
    s = synthetic_stack((70, 90), 5, seed=9, channels=1)
    holes = fuse_tiled(s.frames, levels=3, tile_px=32)
    filled = fuse_tiled(s.frames, levels=3, tile_px=32, fill_depth=True)
    assert np.isnan(holes.depth).any() and np.isfinite(filled.depth).all()
    sure = np.isfinite(holes.depth)
    np.testing.assert_array_equal(filled.depth[sure], holes.depth[sure])
    np.testing.assert_array_equal(filled.image, holes.image)
