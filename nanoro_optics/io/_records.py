"""Records kept in the outputs (what a file is, how it was made), and reading them back.

Every output of a fusion carries a small JSON record under the key :data:`RECORD_KEY`:
``{"kind": "fused" | "depth" | "confidence" | "halo", "tool": "nanoro_optics", ...}`` with, when
given, ``"unit"`` (depth maps), ``"settings"`` (the fusion settings, JSON) and
``"pixel_size_um"``. It lives where each format keeps text: a TIFF's image description
(tifffile's JSON "shaped" description), a PNG ``tEXt`` chunk of that keyword before the
image data, a JPEG comment. The file pipeline uses it to leave earlier outputs out of a
stack; any other reader still sees a plain image.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from ._sources import _JPEG_SUFFIXES, _PNG_SUFFIXES, _TIFF_SUFFIXES, PathLike

#: key of the record an output keeps (TIFF description JSON key, PNG tEXt keyword)
RECORD_KEY = "nanoro_optics"
#: former name of :data:`RECORD_KEY`
DEPTH_MAP_KEY = RECORD_KEY
#: what a map written by :func:`write_depth_map` holds ("halo": where the halo correction
#: acted, a uint8 mask), and the units of a depth map
DEPTH_MAP_KINDS = ("depth", "confidence", "halo")
DEPTH_MAP_UNITS = ("um", "frame")
#: kinds of output a record can name
OUTPUT_KINDS = ("fused", *DEPTH_MAP_KINDS)
TOOL = "nanoro_optics"


def make_record(
    kind: str | None, *, unit: str | None = None, settings: Any = None, pixel_size_um: Any = None
) -> dict[str, Any] | None:
    """Build the record of an output, checking ``settings`` and ``pixel_size_um``.

    None when there is nothing to record (no kind, settings or pixel size).
    """
    if kind is not None and kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be None or one of {OUTPUT_KINDS}, got {kind!r}")
    if settings is not None:
        if isinstance(settings, str):
            try:
                settings = json.loads(settings)
            except ValueError as exc:
                raise ValueError(
                    f"settings must be a dict or a JSON text, got {settings!r}"
                ) from exc
        if not isinstance(settings, dict):
            raise TypeError(
                f"settings must be a dict or a JSON object text, got {type(settings).__name__}"
            )
        # JSON types only (anything else as its str), so every reader gets the same record
        settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
    if pixel_size_um is not None:
        if isinstance(pixel_size_um, bool) or not isinstance(pixel_size_um, (int, float)):
            raise TypeError(f"pixel_size_um must be a number, got {pixel_size_um!r}")
        if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise ValueError(f"pixel_size_um must be finite and > 0, got {pixel_size_um!r}")
        pixel_size_um = float(pixel_size_um)
    if kind is None and settings is None and pixel_size_um is None:
        return None
    record: dict[str, Any] = {"kind": kind, "tool": TOOL}
    if kind in DEPTH_MAP_KINDS:
        record["unit"] = unit
    elif unit is not None:
        record["unit"] = unit
    if settings is not None:
        record["settings"] = settings
    if pixel_size_um is not None:
        record["pixel_size_um"] = pixel_size_um
    return record


def record_text(record: dict[str, Any]) -> str:
    """Return the record as the ASCII JSON text kept in PNG and JPEG files."""
    return json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _tiff_record(p: Path) -> Any:
    import tifffile

    with tifffile.TiffFile(p) as tif:
        text = str(tif.pages.first.description)
    return json.loads(text).get(RECORD_KEY) if RECORD_KEY in text else None


def _png_record(p: Path) -> Any:
    """Find the record's ``tEXt``/``iTXt`` chunk before the image data (reads chunk headers)."""
    keyword = RECORD_KEY.encode("latin-1") + b"\0"
    with open(p, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        for _ in range(1000):  # a bounded walk: a damaged file cannot loop
            head = fh.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND") or length > 1 << 24:
                return None
            if kind in (b"tEXt", b"iTXt"):
                body = fh.read(length)
                if body.startswith(keyword):
                    text = body[len(keyword) :]
                    if kind == b"iTXt":  # compression flag, method, language\0, keyword\0
                        if text[:1] != b"\0":
                            return None
                        text = text[2:].split(b"\0", 2)[-1]
                    return json.loads(text.decode("utf-8")).get(RECORD_KEY)
                fh.seek(4, os.SEEK_CUR)
            else:
                fh.seek(length + 4, os.SEEK_CUR)
    return None


def _jpeg_record(p: Path) -> Any:
    from PIL import Image

    with Image.open(p) as im:
        comment = im.info.get("comment", b"")
    if isinstance(comment, bytes):
        comment = comment.decode("latin-1")
    return json.loads(comment).get(RECORD_KEY) if RECORD_KEY in comment else None


def output_record(path: PathLike) -> dict[str, Any] | None:
    """Return the record an output of this package keeps, or None for any other file.

    Parameters
    ----------
    path : str or os.PathLike
        A file. Only its metadata is read (a TIFF's first description, a PNG's chunks before
        the image data, a JPEG's comment), never the image.

    Returns
    -------
    dict or None
        The record, with at least ``"kind"`` (``"fused"``, ``"depth"``, ``"confidence"`` or
        None) and ``"tool"``, and ``"unit"``, ``"settings"``, ``"pixel_size_um"`` when they
        were recorded; None for a frame, another image, or an unreadable file.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from nanoro_optics.io import write_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_image(f"{tmp}/f.png", np.zeros((4, 4), np.uint8), kind="fused",
    ...                       settings={"levels": 5}, pixel_size_um=0.5)
    ...     output_record(out)
    {'kind': 'fused', 'pixel_size_um': 0.5, 'settings': {'levels': 5}, 'tool': 'nanoro_optics'}
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    p = Path(path)
    suffix = p.suffix.lower()
    reader = (
        _tiff_record
        if suffix in _TIFF_SUFFIXES
        else _png_record
        if suffix in _PNG_SUFFIXES
        else _jpeg_record
        if suffix in _JPEG_SUFFIXES
        else None
    )
    if reader is None or not p.is_file():
        return None
    try:
        record = reader(p)
    except Exception:  # damaged, truncated, a text that is not our JSON: not our output
        return None
    if not isinstance(record, dict) or record.get("kind", None) not in (None, *OUTPUT_KINDS):
        return None
    return dict(sorted(record.items()))


def map_record(path: PathLike) -> dict[str, Any] | None:
    """Return the record :func:`write_depth_map` kept in a TIFF, or None for any other file.

    Parameters
    ----------
    path : str or os.PathLike
        A file; only TIFFs are opened (their first page's description is read, not the
        image).

    Returns
    -------
    dict or None
        ``{"kind": "depth" | "confidence" | "halo", "unit": "um" | "frame" | None}`` for a
        map written by :func:`write_depth_map`; None for a frame, another image (a fused
        image included: see :func:`output_record`), or an unreadable file.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    if Path(path).suffix.lower() not in _TIFF_SUFFIXES:
        return None
    record = output_record(path)
    if record is None or record.get("kind") not in DEPTH_MAP_KINDS:
        return None
    return {"kind": record["kind"], "unit": record.get("unit")}
