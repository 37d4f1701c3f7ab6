"""Tests for nanoro_optics.io: stack listing and reading, atomic writes, PNG/TIFF/JPEG codecs."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nanoro_optics import io as nio
from nanoro_optics.io import (
    iter_frames,
    iter_stack,
    list_stack_files,
    read_image,
    read_stack,
    write_depth_map,
    write_image,
)
from nanoro_optics.io._png import PngBuffers, read_png

#: JPEG at quality 95 without chroma subsampling: max abs error on a smooth test image (DN)
JPEG_TOL_DN = 6


def _smooth_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)


def _files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------------ listing


def test_folder_is_listed_in_natural_order_skipping_hidden_and_non_images(tmp_path: Path) -> None:
    for k in (10, 2, 1, 33):
        write_image(tmp_path / f"Frame{k}.png", np.full((4, 4), k, np.uint8))
    (tmp_path / ".frame0.png").write_bytes(b"hidden")
    (tmp_path / "notes.txt").write_text("not an image")
    names = [p.name for p in list_stack_files(tmp_path)]
    assert names == ["Frame1.png", "Frame2.png", "Frame10.png", "Frame33.png"]
    assert [int(f[0, 0]) for f in iter_stack(tmp_path)] == [1, 2, 10, 33]


def test_glob_and_list_sources(tmp_path: Path) -> None:
    for k in (3, 20, 1):
        write_image(tmp_path / f"z{k}.png", np.full((4, 4), k, np.uint8))
    assert [p.name for p in list_stack_files(str(tmp_path / "z*.png"))] == [
        "z1.png",
        "z3.png",
        "z20.png",
    ]
    # a list keeps its own order
    given_order = [tmp_path / "z20.png", tmp_path / "z1.png"]
    assert list_stack_files(given_order) == given_order


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: d, ValueError, "empty stack: folder"),
        (lambda d: str(d / "*.png"), ValueError, "matches no file"),
        (lambda d: d / "missing.png", FileNotFoundError, "missing.png"),
        (lambda d: [], ValueError, "empty list"),
        (lambda d: 3, TypeError, "source must be a path"),
    ],
)
def test_bad_sources(tmp_path: Path, make, error, match) -> None:
    with pytest.raises(error, match=match):
        list_stack_files(make(tmp_path))


# ------------------------------------------------------------------------------------ reading


def test_multipage_tiff_yields_pages_lazily(tmp_path: Path) -> None:
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    tifffile.imwrite(tmp_path / "s.tif", data)
    frames = iter_stack(tmp_path / "s.tif")
    first = next(frames)
    np.testing.assert_array_equal(first, data[0])
    np.testing.assert_array_equal(read_stack(tmp_path / "s.tif"), data)


def test_ome_tiff_and_rgb_and_planar_pages(tmp_path: Path) -> None:
    z = np.random.default_rng(1).integers(0, 4000, (4, 8, 9), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.ome.tif", z, metadata={"axes": "ZYX"})
    np.testing.assert_array_equal(read_stack(tmp_path / "z.ome.tif"), z)
    rgb = np.random.default_rng(2).integers(0, 255, (3, 8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_stack(tmp_path / "rgb.tif"), rgb)
    planar = np.moveaxis(rgb[0], -1, 0)
    tifffile.imwrite(tmp_path / "pl.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "pl.tif"), rgb[0])


def test_tiff_with_two_stack_axes_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "zc.ome.tif", np.zeros((2, 3, 8, 8), np.uint16), metadata={"axes": "ZCYX"}
    )
    with pytest.raises(ValueError, match=r"zc\.ome\.tif.*more than one axis.*Z=2.*C=3"):
        read_stack(tmp_path / "zc.ome.tif")


def test_read_image_refuses_a_stack(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 6, 7), np.uint8))
    with pytest.raises(ValueError, match="more than one image"):
        read_image(tmp_path / "s.tif")


def test_mismatched_frames_name_index_and_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a1.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "a2.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "a3.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"frame 2 \(.*a3\.png\) has shape \(8, 9\)"):
        read_stack(tmp_path)
    (tmp_path / "a3.png").unlink()
    write_image(tmp_path / "a3.png", np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match=r"frame 2 \(.*a3\.png\).*dtype uint16.*frame 0"):
        read_stack(tmp_path)


def test_nan_pixels_name_the_frame(tmp_path: Path) -> None:
    data = np.zeros((3, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    tifffile.imwrite(tmp_path / "f.tif", data, photometric="minisblack")
    with pytest.raises(ValueError, match=r"frame 1 \(.*f\.tif, page 1\): pixel \(2, 3\) is nan"):
        read_stack(tmp_path / "f.tif")


def test_iter_frames_reports_sources(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 5, 6), np.uint8), photometric="minisblack")
    write_image(tmp_path / "b.png", np.ones((5, 6), np.uint8))
    frames = list(iter_frames([tmp_path / "a.tif", tmp_path / "b.png"]))
    assert [(f.path.name, f.page, f.index) for f in frames] == [
        ("a.tif", 0, 0),
        ("a.tif", 1, 1),
        ("b.png", 0, 2),
    ]


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", "-16.png"])
def test_truncated_files_are_named_and_lazy_reading_stops_there(tmp_path: Path, suffix) -> None:
    rng = np.random.default_rng(3)
    if suffix == "-16.png":
        frames = [rng.integers(0, 65535, (40, 50, 3), dtype=np.uint16) for _ in range(3)]
    else:
        frames = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    names = [tmp_path / f"f{k}{suffix}" for k in range(3)]
    for name, frame in zip(names, frames, strict=True):
        write_image(name, frame)
    _truncate(names[1])
    it = iter_stack(tmp_path)
    next(it)  # the good first frame comes out before the bad one is opened
    with pytest.raises(ValueError, match=rf"cannot read .*f1{suffix}"):
        next(it)


def test_truncated_multipage_tiff(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", np.ones((6, 64, 64), np.uint16))
    _truncate(tmp_path / "s.tif", 0.5)
    with pytest.raises(ValueError, match=r"s\.tif.*truncated"):
        read_stack(tmp_path / "s.tif")


def test_garbage_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read .*x\.jpg"):
        read_image(tmp_path / "x.jpg")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = np.zeros((20, 40, 3), np.uint8)
    img[:5, :10] = 255  # a bright top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    # clockwise: the top-left corner moves to the top-right
    assert out[:10, -5:].mean() > 200 and out[:10, :5].mean() < 50


def test_as_gray_uses_rec709_luma(tmp_path: Path) -> None:
    rgb = _smooth_rgb()
    write_image(tmp_path / "c.tif", rgb)
    gray = next(iter_stack(tmp_path / "c.tif", as_gray=True))
    expected = 0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]
    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, expected, rtol=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize(
    ("suffix", "dtype", "channels"),
    [
        (".tif", np.uint16, 1),
        (".tif", np.uint16, 3),
        (".tif", np.float32, 1),
        (".tiff", np.float64, 3),
        (".png", np.uint8, 1),
        (".png", np.uint8, 3),
        (".png", np.uint8, 4),
        (".png", np.uint16, 1),
        (".png", np.uint16, 2),
        (".png", np.uint16, 3),
        (".png", np.uint16, 4),
    ],
)
def test_lossless_round_trips(tmp_path: Path, suffix, dtype, channels) -> None:
    rng = np.random.default_rng(4)
    shape = (17, 23) if channels == 1 else (17, 23, channels)
    if np.dtype(dtype).kind == "f":
        img = rng.normal(size=shape).astype(dtype)
    else:
        img = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    path = write_image(tmp_path / f"img{suffix}", img)
    back = read_image(path)
    assert back.dtype == img.dtype
    np.testing.assert_array_equal(back, img)
    assert _files(tmp_path) == [path]  # no temporary file left behind


def test_jpeg_round_trip_and_refusals(tmp_path: Path) -> None:
    img = _smooth_rgb()
    write_image(tmp_path / "a.jpg", img)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == img.shape
    assert np.abs(back.astype(int) - img).max() <= JPEG_TOL_DN
    with pytest.raises(ValueError, match=r"b\.jpg: JPEG holds 8-bit images only.*uint16"):
        write_image(tmp_path / "b.jpg", img.astype(np.uint16))
    with pytest.raises(ValueError, match=r"PNG holds 8- or 16-bit.*float32"):
        write_image(tmp_path / "c.png", img.astype(np.float32))
    with pytest.raises(ValueError, match=r"unknown image format '\.gif'"):
        write_image(tmp_path / "d.gif", img)
    with pytest.raises(ValueError, match=r"pixel \(0, 0\) is nan"):
        write_image(tmp_path / "e.tif", np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "f.tif", np.zeros((2, 3, 4, 5)))
    assert [p.name for p in _files(tmp_path)] == ["a.jpg"]


def test_failed_write_keeps_old_file_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.tif"
    write_image(target, np.ones((8, 8), np.uint16))
    before = target.read_bytes()

    def broken(fh, image, fmt, photometric, record=None):
        fh.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(nio._write, "_encode", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((8, 8), np.uint16))
    assert target.read_bytes() == before
    assert _files(tmp_path) == [target]


def test_overwrite_false_refuses_and_keeps_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    write_image(target, np.ones((4, 4), np.uint8))
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match=r"out\.png"):
        write_image(target, np.zeros((4, 4), np.uint8), overwrite=False)
    assert target.read_bytes() == before
    fresh = write_image(tmp_path / "new.png", np.zeros((4, 4), np.uint8), overwrite=False)
    assert sorted(_files(tmp_path)) == sorted([target, fresh])


def test_written_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_depth_map_is_float32_tiff(tmp_path: Path) -> None:
    depth = np.linspace(0, 12.5, 30).reshape(5, 6)
    depth[0, 0] = np.nan  # no estimate there
    path = write_depth_map(tmp_path / "d.tif", depth)
    back = tifffile.imread(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, depth.astype(np.float32))
    with pytest.raises(ValueError, match=r"\.tif or \.tiff"):
        write_depth_map(tmp_path / "d.png", depth)
    with pytest.raises(ValueError, match="2-D"):
        write_depth_map(tmp_path / "e.tif", depth[None])


def test_depth_map_records_its_kind_and_unit(tmp_path: Path) -> None:
    depth = np.ones((3, 4))
    for kwargs, record in (
        ({}, {"kind": "depth", "unit": None}),
        ({"unit": "um"}, {"kind": "depth", "unit": "um"}),
        ({"unit": "frame"}, {"kind": "depth", "unit": "frame"}),
        ({"kind": "confidence"}, {"kind": "confidence", "unit": None}),
    ):
        path = write_depth_map(tmp_path / "d.tif", depth, **kwargs)
        with tifffile.TiffFile(path) as tif:
            assert tif.shaped_metadata[0]["nanoro_optics"] == {**record, "tool": "nanoro_optics"}
            np.testing.assert_array_equal(tif.asarray(), depth)
    for kwargs, match in (
        ({"unit": "mm"}, "unit must be one of"),
        ({"kind": "height"}, "kind must be one of"),
        ({"kind": "confidence", "unit": "um"}, "unit is for a depth map"),
    ):
        with pytest.raises(ValueError, match=match):
            write_depth_map(tmp_path / "bad.tif", depth, **kwargs)
    assert not (tmp_path / "bad.tif").exists()


def test_halo_map_is_a_uint8_mask(tmp_path: Path) -> None:
    corrected = np.zeros((4, 5), bool)
    corrected[1, 2:4] = True
    for mask in (corrected, corrected.astype(np.uint8), corrected.astype(np.float32)):
        path = write_depth_map(tmp_path / "h.tif", mask, kind="halo")
        with tifffile.TiffFile(path) as tif:
            back = tif.asarray()
            assert tif.shaped_metadata[0]["nanoro_optics"]["kind"] == "halo"
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, np.where(corrected, 255, 0))
    # anything but a mask is refused, naming the value; nothing written
    for bad, match in ((corrected * 2.0, "got 2.0"), (np.full((4, 5), np.nan), "got nan")):
        with pytest.raises(ValueError, match=match):
            write_depth_map(tmp_path / "bad.tif", bad, kind="halo")
    with pytest.raises(ValueError, match="unit is for a depth map"):
        write_depth_map(tmp_path / "bad.tif", corrected, kind="halo", unit="um")
    with pytest.raises(TypeError, match="real numbers"):
        write_depth_map(tmp_path / "bad.tif", corrected, kind="depth")
    assert not (tmp_path / "bad.tif").exists()


# ------------------------------------------------------------------ PNG decoder vs reference


def _reference_png(arr: np.ndarray, filters: list[int]) -> bytes:
    """Slow, obvious PNG encoder: filter each row with the given type (PNG spec sec. 7.3)."""
    arr3 = arr if arr.ndim == 3 else arr[:, :, None]
    h, w, c = arr3.shape
    nbytes = arr.dtype.itemsize
    bpp = nbytes * c
    big = arr3.astype(">u2") if nbytes == 2 else arr3
    rows = big.reshape(h, w * c).view(np.uint8).astype(np.int64)
    out = []
    prev = [0] * (w * bpp)
    for y in range(h):
        cur = [int(v) for v in rows[y]]
        ft = filters[y % len(filters)]
        line = []
        for i, value in enumerate(cur):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            if ft == 0:
                pred = 0
            elif ft == 1:
                pred = a
            elif ft == 2:
                pred = b
            elif ft == 3:
                pred = (a + b) // 2
            else:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            line.append((value - pred) % 256)
        out.append(bytes([ft, *line]))
        prev = cur

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 8 * nbytes, colour, 0, 0, 0)
    body = zlib.compress(b"".join(out))
    half = len(body) // 2  # two IDAT chunks: the stream may be split anywhere
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", body[:half])
        + chunk(b"IDAT", body[half:])
        + chunk(b"IEND", b"")
    )


_SHARED_BUFFERS = PngBuffers()


def test_png_buffers_that_grow_are_never_held_twice() -> None:
    # the files of a stack often grow frame by frame: each larger one must not briefly
    # hold its predecessor too (that moment adds to the peak of a whole run)
    import tracemalloc

    small, large = 6 << 20, 7 << 20
    tracemalloc.start()
    try:
        buffers = PngBuffers()
        assert len(buffers.file(small)) == small and buffers.raw(small).size == small
        rises = []
        for grow in (buffers.file, buffers.raw):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            grow(large)
            rises.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    # the old buffer went first: the peak rose by the difference, not by the new buffer
    assert max(rises) < (large - small) + (1 << 19), rises
    grown, raw = buffers.file(large), buffers.raw(large)
    assert len(grown) == large and raw.size == large
    # a smaller request reuses the buffer
    assert buffers.file(small) is grown and buffers.raw(small).base is raw.base


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    c=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    filters=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_png_decoder_matches_reference_encoder(
    h, w, c, dtype, filters, seed, tmp_path_factory
) -> None:
    top = np.iinfo(dtype).max + 1
    arr = np.random.default_rng(seed).integers(0, top, (h, w, c)).astype(dtype)
    arr = arr[:, :, 0] if c == 1 else arr
    path = tmp_path_factory.mktemp("png") / "f.png"
    path.write_bytes(_reference_png(arr, filters))
    back = read_image(path)
    assert back.dtype == dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # decoded into buffers shared by every example (of every size): the same pixels
    np.testing.assert_array_equal(read_png(path, buffers=_SHARED_BUFFERS), arr)
    if dtype == np.uint8:  # and the same as Pillow's reading
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), arr)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("h", [5, 13])
@pytest.mark.parametrize("w", [2, 5, 67])
@pytest.mark.parametrize("filters", [[4], [4, 4, 4, 2], [1, 4, 4, 4, 4, 4, 3]])
def test_paeth_runs_decode_exactly(tmp_path, dtype, c, h, w, filters) -> None:
    # runs of four Paeth rows take the vector path (from pixel 1 to the last whose vector
    # stays inside the row, four rows at once); the pixels after it, runs cut short and
    # every other row, the scalar ones
    top = np.iinfo(dtype).max + 1
    arr = np.random.default_rng(h * 100 + w).integers(0, top, (h, w, c)).astype(dtype)
    arr = arr[:, :, 0] if c == 1 else arr
    path = tmp_path / "f.png"
    path.write_bytes(_reference_png(arr, filters))
    np.testing.assert_array_equal(read_png(path), arr)
    np.testing.assert_array_equal(read_png(path, buffers=_SHARED_BUFFERS), arr)


@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
@pytest.mark.parametrize(
    ("c", "dtype"), [(1, np.uint8), (3, np.uint8), (4, np.uint8), (3, np.uint16)]
)
def test_png_decoder_every_filter_and_pixel_size(ftype, c, dtype, tmp_path: Path) -> None:
    top = np.iinfo(dtype).max + 1
    arr = np.random.default_rng(ftype).integers(0, top, (6, 11, c)).astype(dtype)
    arr = arr[:, :, 0] if c == 1 else arr
    (tmp_path / "f.png").write_bytes(_reference_png(arr, [ftype]))
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), arr)


def test_reused_buffer_frames_alias_but_each_is_right_when_yielded(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (9, 13, 3)).astype(np.uint8) for _ in range(4)]
    for k, arr in enumerate(frames):
        (tmp_path / f"f{k}.png").write_bytes(_reference_png(arr, [k % 5, 4]))
    got = []
    for frame in nio.iter_frames(tmp_path, reuse_buffer=True):
        np.testing.assert_array_equal(frame.image, frames[frame.index])
        got.append(frame.image)
    # one buffer for every frame: what was yielded first now shows the last frame
    assert all(np.shares_memory(got[0], g) for g in got[1:])
    np.testing.assert_array_equal(got[0], frames[-1])
    fresh = [f.image for f in nio.iter_frames(tmp_path)]
    assert not np.shares_memory(fresh[0], fresh[1])
    with pytest.raises(TypeError, match="reuse_buffer must be a bool"):
        next(nio.iter_frames(tmp_path, reuse_buffer=1))  # type: ignore[arg-type]


def test_png_frame_format_reads_the_header_only(tmp_path: Path) -> None:
    write_image(tmp_path / "rgb.png", np.zeros((5, 7, 3), np.uint8))
    write_image(tmp_path / "g16.png", np.zeros((5, 7), np.uint16))
    assert nio.png_frame_format(tmp_path / "rgb.png") == ((5, 7, 3), np.dtype(np.uint8))
    assert nio.png_frame_format(tmp_path / "g16.png") == ((5, 7), np.dtype(np.uint16))
    Image.fromarray(np.zeros((5, 7), np.uint8)).convert("P").save(tmp_path / "pal.png")
    assert nio.png_frame_format(tmp_path / "pal.png") is None  # left to Pillow
    write_image(tmp_path / "t.tif", np.zeros((5, 7), np.uint8))
    assert nio.png_frame_format(tmp_path / "t.tif") is None


def test_png_with_exif_or_palette_goes_through_pillow(tmp_path: Path) -> None:
    from nanoro_optics.io._png import read_png

    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "e.png", exif=exif)
    assert read_png(tmp_path / "e.png") is None
    np.testing.assert_array_equal(read_image(tmp_path / "e.png"), np.rot90(arr, -1))
    Image.fromarray(arr).convert("P").save(tmp_path / "p.png")
    assert read_png(tmp_path / "p.png") is None
    assert read_image(tmp_path / "p.png").shape == (3, 4, 3)


def test_png_bad_crc_is_reported(tmp_path: Path) -> None:
    arr = np.ones((4, 4, 3), np.uint16)
    data = bytearray(_reference_png(arr, [0]))
    data[40] ^= 0xFF  # inside the first IDAT body
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.png.*(CRC|corrupt)"):
        read_image(tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"cut\.png.*truncated"),
        ("filter", r"cut\.png.*invalid PNG filter type 7 in row 2"),
        ("short", r"cut\.png.*(expected|corrupt)"),
    ],
)
def test_png_damage_is_named(tmp_path: Path, damage: str, message: str) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (6, 5, 3)).astype(np.uint8)
    data = _reference_png(arr, [0])
    if damage == "truncate":
        data = data[: len(data) - 30]
    else:  # re-encode the image data: a bad filter byte, or one row missing
        raw = bytearray(b"".join(bytes([0]) + arr[y].tobytes() for y in range(6)))
        if damage == "filter":
            raw[2 * 16] = 7
        else:
            raw = raw[:-16]
        body = zlib.compress(bytes(raw))
        head = data[: data.index(b"IDAT") - 4]
        crc = struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF)
        iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
        data = head + struct.pack(">I", len(body)) + b"IDAT" + body + crc + iend
    (tmp_path / "cut.png").write_bytes(data)
    with pytest.raises(ValueError, match=message):
        read_image(tmp_path / "cut.png")


def test_large_png_reads_back_with_pillow(tmp_path: Path) -> None:
    y, x = np.mgrid[0:1100, 0:1500]
    img = np.stack([x % 256, y % 256, (x * y) % 256], axis=-1).astype(np.uint8)  # ~5 MB
    write_image(tmp_path / "big.png", img)
    with Image.open(tmp_path / "big.png") as im:
        np.testing.assert_array_equal(np.asarray(im), img)


# ------------------------------------------------------------------ paths as frame sources


def test_as_frames_reads_paths_lazily_and_passes_frames_through(tmp_path: Path) -> None:
    from nanoro_optics.fusion import fuse_stack
    from nanoro_optics.io import as_frames, is_stack_source

    frames = np.stack([np.full((6, 7), 10 * k, np.uint8) for k in range(4)])
    for k, f in enumerate(frames):
        write_image(tmp_path / f"f{k}.png", f)
    (tmp_path / "t").mkdir()
    tifffile.imwrite(tmp_path / "t" / "stack.tif", frames, photometric="minisblack")
    sources = [
        tmp_path,
        str(tmp_path / "f*.png"),
        [tmp_path / "f0.png", str(tmp_path / "f1.png"), tmp_path / "f2.png", tmp_path / "f3.png"],
        tmp_path / "t" / "stack.tif",
    ]
    for source in sources:
        assert is_stack_source(source)
        got = as_frames(source)
        assert not isinstance(got, np.ndarray)  # an iterator: one frame in memory at a time
        np.testing.assert_array_equal(np.stack(list(got)), frames)
    np.testing.assert_array_equal(
        fuse_stack(as_frames(tmp_path / "t" / "stack.tif")).image, fuse_stack(frames).image
    )
    # frames themselves come back as they are
    assert as_frames(frames) is frames
    listed = list(frames)
    assert as_frames(listed) is listed and not is_stack_source(listed)
    assert not is_stack_source([]) and not is_stack_source(3)


def test_as_frames_refuses_a_missing_path_before_reading_anything(tmp_path: Path) -> None:
    from nanoro_optics.io import as_frames

    write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        as_frames([tmp_path / "a.png", tmp_path / "typo.png"])  # fails now, not mid-stack
    with pytest.raises(ValueError, match="matches no file"):
        as_frames(str(tmp_path / "*.tif"))


def test_map_record_tells_the_maps_written_by_write_depth_map(tmp_path):
    from nanoro_optics.io import map_record, write_depth_map

    d = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    write_depth_map(tmp_path / "z.tif", d, unit="um")
    write_depth_map(tmp_path / "c.tiff", d, kind="confidence")
    tifffile.imwrite(tmp_path / "frame.tif", d)  # plain TIFF: no record
    tifffile.imwrite(tmp_path / "other.tif", d, description='{"nanoro_optics": "no dict"}')
    (tmp_path / "broken.tif").write_bytes(b"II*\0 not really")
    (tmp_path / "z.png").write_bytes(b"")
    assert map_record(tmp_path / "z.tif") == {"kind": "depth", "unit": "um"}
    assert map_record(str(tmp_path / "c.tiff")) == {"kind": "confidence", "unit": None}
    for name in ("frame.tif", "other.tif", "broken.tif", "z.png", "missing.tif"):
        assert map_record(tmp_path / name) is None, name
    with pytest.raises(TypeError, match="path must be a str"):
        map_record(3)  # type: ignore[arg-type]
