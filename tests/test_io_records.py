"""Output records: fused images and maps say what they are; the pixel size other software reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nanoro_optics import io as nio

#: TIFF resolution is a rational of two uint32: relative error of the stored pixel size
RESOLUTION_RTOL = 1e-6
#: PNG pHYs holds whole pixels per metre, JPEG whole-ish dots per inch (Pillow rounds)
PNG_DPI_RTOL = 1e-3
SETTINGS = {"levels": 5, "rule": "laplacian", "z_step_um": 2.5}


def _image(channels: int) -> np.ndarray:
    rng = np.random.default_rng(channels)
    shape = (6, 7) if channels == 1 else (6, 7, channels)
    return rng.integers(0, 255, shape).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
@pytest.mark.parametrize("as_text", [False, True])
def test_a_fused_image_records_what_it_is(tmp_path: Path, suffix: str, as_text: bool) -> None:
    img = _image(3)
    given_settings = json.dumps(SETTINGS) if as_text else SETTINGS
    out = nio.write_image(
        tmp_path / f"fused{suffix}", img, kind="fused", settings=given_settings, pixel_size_um=0.5
    )
    assert nio.output_record(out) == {
        "kind": "fused",
        "pixel_size_um": 0.5,
        "settings": SETTINGS,
        "tool": "nanoro_optics",
    }
    assert nio.map_record(out) is None  # a fused image is not a map
    if suffix != ".jpg":  # the record changes no pixel
        np.testing.assert_array_equal(nio.read_image(out), img)
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im), img)


def test_frames_and_foreign_files_have_no_record(tmp_path: Path) -> None:
    for name in ("f.png", "f.tif", "f.jpg"):
        nio.write_image(tmp_path / name, _image(1))
        assert nio.output_record(tmp_path / name) is None, name
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 40)
    (tmp_path / "y.tif").write_bytes(b"II*\x00 damaged")
    Image.fromarray(_image(1)).save(tmp_path / "c.jpg", comment=b'{"nanoro_optics": 3}')
    for name in ("x.png", "y.tif", "c.jpg", "missing.png", "notes.txt"):
        assert nio.output_record(tmp_path / name) is None, name
    with pytest.raises(TypeError, match="path must be"):
        nio.output_record(1.5)  # type: ignore[arg-type]


def test_maps_keep_their_record_and_add_the_pixel_size(tmp_path: Path) -> None:
    d = np.linspace(0, 3, 42, dtype=np.float32).reshape(6, 7)
    out = nio.write_depth_map(tmp_path / "z.tif", d, unit="um", pixel_size_um=0.25)
    assert nio.map_record(out) == {"kind": "depth", "unit": "um"}
    rec = nio.output_record(out)
    assert rec is not None and rec["pixel_size_um"] == 0.25 and rec["kind"] == "depth"
    conf = nio.write_depth_map(tmp_path / "c.tif", d, kind="confidence", settings=SETTINGS)
    assert nio.output_record(conf) == {
        "kind": "confidence",
        "settings": SETTINGS,
        "tool": "nanoro_optics",
        "unit": None,
    }


def test_the_pixel_size_is_the_formats_own_resolution(tmp_path: Path) -> None:
    tif = nio.write_image(tmp_path / "a.tif", _image(1), pixel_size_um=0.5)
    with tifffile.TiffFile(tif) as f:
        tags = f.pages.first.tags
        x, y = tags["XResolution"].value, tags["YResolution"].value
        assert x[0] / x[1] == pytest.approx(2e4) and y == x  # 20000 pixels per cm
        assert tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    png = nio.write_image(tmp_path / "a.png", _image(4), pixel_size_um=0.5)
    jpg = nio.write_image(tmp_path / "a.jpg", _image(3), pixel_size_um=0.5)
    for path in (png, jpg):
        with Image.open(path) as im:
            assert im.info["dpi"][0] == pytest.approx(25_400 / 0.5, rel=PNG_DPI_RTOL)


@settings(max_examples=25, deadline=None)
@given(pixel_um=st.floats(1e-3, 1e3))
def test_tiff_resolution_round_trips_the_pixel_size(tmp_path_factory, pixel_um: float) -> None:
    path = tmp_path_factory.mktemp("r") / "r.tif"
    nio.write_image(path, np.zeros((2, 2), np.uint16), pixel_size_um=pixel_um)
    with tifffile.TiffFile(path) as f:
        num, den = f.pages.first.tags["XResolution"].value
    assert 1e4 * den / num == pytest.approx(pixel_um, rel=RESOLUTION_RTOL)
    rec = nio.output_record(path)
    assert rec is not None and rec["pixel_size_um"] == pixel_um and rec["kind"] is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pixel_size_um": 0.0}, ValueError, "pixel_size_um must be finite and > 0, got 0.0"),
        ({"pixel_size_um": float("nan")}, ValueError, "pixel_size_um must be finite"),
        ({"pixel_size_um": "0.5"}, TypeError, "pixel_size_um must be a number"),
        ({"kind": "depth"}, ValueError, "kind must be None or 'fused'"),
        ({"settings": "not json"}, ValueError, "settings must be a dict or a JSON text"),
        ({"settings": 3}, TypeError, "settings must be a dict"),
        ({"settings": "[1, 2]"}, TypeError, "settings must be a dict"),
    ],
)
def test_record_arguments_are_checked(tmp_path: Path, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        nio.write_image(tmp_path / "a.png", _image(1), **kwargs)
    assert list(tmp_path.iterdir()) == []
