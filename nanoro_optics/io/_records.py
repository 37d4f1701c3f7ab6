"""Records kept in the outputs (what a file is), and reading them back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._sources import _TIFF_SUFFIXES, PathLike

#: key of the record :func:`write_depth_map` keeps in the TIFF's JSON description
DEPTH_MAP_KEY = "nanoro_optics"
#: what a map written by :func:`write_depth_map` holds, and the units of a depth map
DEPTH_MAP_KINDS = ("depth", "confidence")
DEPTH_MAP_UNITS = ("um", "frame")


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
        ``{"kind": "depth" | "confidence", "unit": "um" | "frame" | None}`` for a map written
        by :func:`write_depth_map`; None for a frame, another image, or an unreadable file.

    Raises
    ------
    TypeError
        If ``path`` is not a str or os.PathLike.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    p = Path(path)
    if p.suffix.lower() not in _TIFF_SUFFIXES or not p.is_file():
        return None
    import json

    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            text = str(tif.pages.first.description)
        record = json.loads(text).get(DEPTH_MAP_KEY) if DEPTH_MAP_KEY in text else None
    except Exception:  # not a TIFF, truncated, a description that is not our JSON
        return None
    if not isinstance(record, dict) or record.get("kind") not in DEPTH_MAP_KINDS:
        return None
    return {"kind": record["kind"], "unit": record.get("unit")}
