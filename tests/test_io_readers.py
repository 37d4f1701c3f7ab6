"""Readers: every TIFF page a frame, the pixel limit before allocation, IHDR checks, file names."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nanoro_optics import io as nio


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(
    width: int,
    height: int,
    *,
    depth: int = 8,
    colour: int = 0,
    compression: int = 0,
    filtering: int = 0,
    interlace: int = 0,
    data: bytes | None = None,
) -> bytes:
    """A PNG with the given IHDR fields (valid CRCs) and ``data`` inflated from its IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, compression, filtering, interlace)
    if data is None:
        data = b"\0" * min(height * (1 + width), 1 << 23)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(data, 9))
        + _chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ every page of a TIFF


def test_a_tiff_written_one_page_per_write_gives_every_page(tmp_path: Path) -> None:
    path = tmp_path / "streamed.tif"
    with tifffile.TiffWriter(path) as tw:
        for k in range(4):
            tw.write(np.full((8, 9), k, np.uint16))  # one series per write
    frames = nio.read_stack(path)
    assert frames.shape == (4, 8, 9)
    assert [int(f[0, 0]) for f in frames] == [0, 1, 2, 3]
    assert [f.page for f in nio.iter_frames(path)] == [0, 1, 2, 3]


def test_fuse_stack_of_a_streamed_tiff_fuses_every_page(tmp_path: Path) -> None:
    from nanoro_optics.fusion import fuse_stack

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (4, 24, 24)).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "s.tif") as tw:
        for f in frames:
            tw.write(f)
    assert fuse_stack(tmp_path / "s.tif").n_frames == 4


@pytest.mark.parametrize(
    ("odd", "shape", "dtype"),
    [((16, 16), "(16, 16)", "uint16"), ((32, 32), "(32, 32)", "float32")],
)
def test_a_page_that_differs_is_refused_naming_file_page_shape_dtype(
    tmp_path: Path, odd, shape, dtype
) -> None:
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tw:
        for k in range(4):
            tw.write(np.zeros(odd, dtype) if k == 2 else np.zeros((32, 32), np.uint16))
    with pytest.raises(ValueError) as info:
        nio.read_stack(path)
    text = str(info.value)
    for part in (str(path), "page 2", shape, dtype, "(32, 32)", "uint16"):
        assert part in text, (part, text)


@pytest.mark.parametrize("kind", ["imagej", "ome"])
def test_hyperstacks_are_read_along_their_stack_axis(tmp_path: Path, kind: str) -> None:
    stack = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    path = tmp_path / f"{kind}.tif"
    tifffile.imwrite(path, stack, **{kind: True}, metadata={"axes": "ZYX"})
    np.testing.assert_array_equal(nio.read_stack(path), stack)
    if kind == "imagej":  # two stack axes are refused, naming them
        tifffile.imwrite(
            path, np.zeros((2, 3, 6, 7), np.uint16), imagej=True, metadata={"axes": "ZCYX"}
        )
        with pytest.raises(ValueError, match="more than one axis"):
            nio.read_stack(path)


def test_tifffile_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
        nio.read_image(path)
    path.write_bytes(b"MM\x00+garbage")  # BigTIFF magic, damaged header
    with pytest.raises(ValueError, match=r"bad\.tif"):
        list(nio.iter_frames(path))


# ------------------------------------------------------------------ the pixel limit


def test_a_header_claiming_a_huge_image_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png(100_000, 100_000, colour=6, data=b"\0" * 64))
    for read in (nio.read_image, nio.png_frame_format, nio.read_stack):
        with pytest.raises(ValueError) as info:
            read(path)
        text = str(info.value)
        assert "huge.png" in text and "10,000,000,000 pixels" in text and "178,956,970" in text


def test_a_small_file_claiming_a_large_image_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "liar.png"
    path.write_bytes(_png(8000, 6000, colour=2, data=b"\0" * 10))  # under the pixel limit
    assert path.stat().st_size < 100
    with pytest.raises(ValueError, match=r"no \d+-byte PNG can hold"):
        nio.png_frame_format(path)  # what the CLI sizes its buffers from
    with pytest.raises(ValueError, match=r"liar\.png"):
        nio.read_image(path)


def test_a_decompression_bomb_is_refused_and_the_limit_can_be_raised(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(2000, 1500))  # 3 MP of zeros in a few kB
    assert path.stat().st_size < 10_000
    with pytest.raises(ValueError, match="3,000,000 pixels, more than the limit of 1,000,000"):
        nio.read_image(path, max_pixels=1_000_000)
    assert nio.read_image(path).shape == (1500, 2000)  # under the default limit
    monkeypatch.setattr(nio, "MAX_PIXELS", 2_999_999)
    with pytest.raises(ValueError, match="limit of 2,999,999"):
        next(nio.iter_stack(path))
    monkeypatch.setattr(nio, "MAX_PIXELS", None)
    monkeypatch.setenv("NANORO_MAX_PIXELS", "2e6")
    with pytest.raises(ValueError, match="limit of 2,000,000"):
        nio.read_stack([path])
    monkeypatch.setenv("NANORO_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="NANORO_MAX_PIXELS must be a whole number"):
        nio.read_image(path)
    for bad, error in ((0, ValueError), (float("nan"), ValueError), ("1e6", TypeError)):
        with pytest.raises(error, match="max_pixels"):
            nio.read_image(path, max_pixels=bad)


def test_tiff_pages_and_pillow_images_obey_the_limit(tmp_path: Path) -> None:
    from PIL import Image

    tifffile.imwrite(
        tmp_path / "t.tif", np.zeros((3, 100, 100), np.uint8), photometric="minisblack"
    )
    with pytest.raises(ValueError, match=r"t\.tif, page 0: its header claims 100 x 100"):
        nio.read_stack(tmp_path / "t.tif", max_pixels=9_999)
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "j.jpg")
    with pytest.raises(ValueError, match=r"j\.jpg: its header claims"):
        nio.read_image(tmp_path / "j.jpg", max_pixels=9_999)


def test_the_cli_refuses_a_bomb_with_exit_status_2(tmp_path: Path, capsys) -> None:
    from nanoro_optics.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_png(100_000, 100_000, colour=6, data=b"\0"))
    (tmp_path / "in" / "b.png").write_bytes(_png(100_000, 100_000, colour=6, data=b"\0"))
    assert main(["fuse", str(tmp_path / "in"), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "limit" in err
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------ IHDR as libpng checks it


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"compression": 1}, "compression method 1"),
        ({"filtering": 1}, "filter method 1"),
        ({"interlace": 2}, "interlace method 2"),
        ({"depth": 3}, "bit depth 3 for colour type 0"),
        ({"depth": 16, "colour": 3}, "bit depth 16 for colour type 3"),
        ({"depth": 4, "colour": 2}, "bit depth 4 for colour type 2"),
        ({"colour": 5}, "colour type 5"),
        ({"width": 0}, "width 0"),
        ({"height": 2**31}, "height 2147483648"),
    ],
)
def test_invalid_ihdr_fields_are_refused_as_libpng_does(tmp_path: Path, fields, message) -> None:
    args = {"width": 4, "height": 3, **fields}
    path = tmp_path / "bad.png"
    path.write_bytes(_png(args.pop("width"), args.pop("height"), **args))
    with pytest.raises(ValueError, match=f"bad.png: invalid PNG header.*{message}"):
        nio.read_image(path)
    with pytest.raises(ValueError, match="invalid PNG header"):
        nio.png_frame_format(path)


def test_a_damaged_ihdr_is_refused(tmp_path: Path) -> None:
    good = _png(4, 3)
    path = tmp_path / "crc.png"
    path.write_bytes(good[:20] + bytes([good[20] ^ 1]) + good[21:])
    with pytest.raises(ValueError, match="bad CRC in chunk b'IHDR'"):
        nio.read_image(path)
    path.write_bytes(good[:8] + _chunk(b"IDAT", b"") + good[8:])
    with pytest.raises(ValueError, match="first chunk is not IHDR"):
        nio.read_image(path)
    path.write_bytes(good[:30])
    with pytest.raises(ValueError, match="IHDR cut short"):
        nio.read_image(path)


# ------------------------------------------------------------------ PNGs decoded by Pillow


def test_a_palette_png_with_a_damaged_height_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "p.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).convert("P").save(path)
    data = path.read_bytes()
    assert nio.read_image(path).shape == (6, 8, 3)
    ihdr = bytearray(data[16:29])
    ihdr[7] = 5  # height 6 -> 5, with a valid CRC: Pillow alone reads 5 rows
    path.write_bytes(data[:8] + _chunk(b"IHDR", bytes(ihdr)) + data[33:])
    with pytest.raises(ValueError, match=r"p\.png: PNG image data holds more than"):
        nio.read_image(path)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (5, 3), (9, 10), (17, 2)])
def test_interlaced_pngs_need_exactly_their_adam7_data(tmp_path: Path, width, height) -> None:
    from nanoro_optics.io._png import PngHeader, filtered_size

    # Adam7 by hand: every pass's rows of (1 filter byte + its pixels), 8-bit grey
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4))
    passes += ((1, 0, 2, 2), (0, 1, 1, 2))
    need = 0
    for x0, y0, dx, dy in passes:
        cols = len(range(x0, width, dx))
        rows = len(range(y0, height, dy))
        need += rows * (1 + cols) if cols else 0
    assert filtered_size(PngHeader(width, height, 8, 0, 1)) == need
    path = tmp_path / "i.png"
    path.write_bytes(_png(width, height, interlace=1, data=b"\0" * need))
    np.testing.assert_array_equal(nio.read_image(path), np.zeros((height, width), np.uint8))
    path.write_bytes(_png(width, height, interlace=1, data=b"\0" * (need - 1)))
    with pytest.raises(ValueError, match=rf"i\.png: PNG image data has {need - 1} bytes"):
        nio.read_image(path)


def _set_strip_byte_count(path: Path, count: int) -> None:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags["StripByteCounts"]
        offset, fmt = tag.valueoffset, "<I" if tag.dtype == 4 else "<H"
    data = bytearray(path.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, count)
    path.write_bytes(bytes(data))


def test_a_compressed_tiff_strip_without_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.ones((24, 32), np.uint16), compression="zlib")
    _set_strip_byte_count(path, 0)  # tifffile alone decodes it to zeros
    with pytest.raises(ValueError, match=r"s\.tif: damaged TIFF.*holds no data"):
        nio.read_image(path)


@pytest.mark.parametrize("count", [0, 100])
def test_an_uncompressed_strip_with_a_bogus_count_is_read_as_libtiff_does(
    tmp_path: Path, count: int
) -> None:
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.ones((24, 32), np.uint16), photometric="minisblack")
    _set_strip_byte_count(path, count)
    np.testing.assert_array_equal(nio.read_image(path), np.ones((24, 32), np.uint16))
    path.write_bytes(path.read_bytes()[:-1000])  # and now the pixels are not all there
    with pytest.raises(ValueError, match=r"s\.tif"):
        nio.read_image(path)


def test_a_one_bit_tiff_is_still_read(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.eye(16, dtype=bool)).save(tmp_path / "bit.tif")
    assert int(nio.read_image(tmp_path / "bit.tif").sum()) == 16


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("StripOffsets", 0, "starts at byte 0, inside the file header"),
        ("SamplesPerPixel", 0, "has SamplesPerPixel 0"),
    ],
)
def test_impossible_tiff_tags_are_refused(tmp_path: Path, tag, value, message) -> None:
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.ones((24, 32), np.uint16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        entry = tif.pages.first.tags[tag]
        offset, fmt = entry.valueoffset, {3: "<H", 4: "<I", 16: "<Q"}[entry.dtype]
    data = bytearray(path.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))  # tifffile alone decodes the header as pixels / ignores it
    with pytest.raises(ValueError, match=rf"t\.tif: damaged TIFF, .*{message}"):
        nio.read_image(path)
