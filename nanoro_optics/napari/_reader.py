"""napari reader for fusion results: the OME-TIFF of a fusion and the depth / confidence TIFFs.

Two kinds of file are claimed, both recognised by the record the library writes into them
(any other TIFF is left to napari's other readers):

- an OME-TIFF of :func:`~nanoro_optics.io.write_fusion_ome` (the OME MapAnnotation of
  namespace :data:`~nanoro_optics.io.FUSION_OME_NAMESPACE`): three layers, the fused image
  (grey, RGB, or one channel per name), the depth map in um (colormap, the z positions and
  fusion settings in its metadata) and the confidence (hidden), all with the pixel size in um
  as their y/x scale;
- a depth or confidence map written by :func:`~nanoro_optics.io.write_depth_map` (what
  ``nanoro-optics fuse --depth-map/--confidence`` writes; the kind and unit are in its JSON
  description): one layer, the depth with a colormap and its unit in the name and metadata,
  on a grid of its pixel size in um when the file gives one (:func:`pixel_size_um`).
  The fused TIFF or PNG the command writes is an ordinary image that napari opens itself.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nanoro_optics.io import FUSION_OME_NAMESPACE, map_record

__all__ = ["file_kind", "napari_get_reader", "pixel_size_um", "read_fusion"]

#: colormap of depth layers (as the widget's)
DEPTH_COLORMAP = "viridis"

LayerData = tuple[Any, dict[str, Any], str]


def _description(path: Path) -> str:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return str(tif.pages.first.description or "")


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """Say which fusion result ``path`` is: ``"ome"``, ``"map"`` or None (not one of ours).

    Reads the first page's image description only. A file that cannot be read as a TIFF is
    not ours (None): napari then tries its other readers.
    """
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return None
    try:
        text = _description(p)
    except Exception:  # not a TIFF, truncated: not a file this reader claims
        return None
    if text.lstrip().startswith("<?xml") or text.lstrip().startswith("<OME"):
        return "ome" if FUSION_OME_NAMESPACE in text else None
    return "map" if map_record(p) is not None else None


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: the reader function if every path is a fusion result, else None.

    Parameters
    ----------
    path : str or list of str
        What was dropped or opened.

    Returns
    -------
    callable or None
        :func:`read_fusion`, or None so that napari tries its other readers.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(file_kind(p) is None for p in paths):
        return None
    return read_fusion


def read_fusion(path: str | Sequence[str]) -> list[LayerData]:
    """Read fusion results as napari layer-data tuples ``(data, kwargs, "image")``.

    Parameters
    ----------
    path : str or list of str
        Files :func:`file_kind` recognises.

    Returns
    -------
    list of tuple

    Raises
    ------
    ValueError
        A file that is not a fusion result of this library.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        kind = file_kind(p)
        if kind == "ome":
            layers.extend(_read_ome(Path(p)))
        elif kind == "map":
            layers.append(_read_map(Path(p)))
        else:
            raise ValueError(
                f"{p} is not a fusion result of nanoro_optics (an OME-TIFF of "
                f"write_fusion_ome, or a depth/confidence TIFF of write_depth_map)"
            )
    return layers


def _limits(a: np.ndarray) -> tuple[float, float]:
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


#: micrometres per unit of the TIFF ResolutionUnit tag (2: inch, 3: centimetre; 1: none)
_UM_PER_RESOLUTION_UNIT = {2: 25_400.0, 3: 10_000.0}


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def pixel_size_um(path: str | os.PathLike[str], record: dict[str, Any] | None = None) -> Any:
    """Return a map's pixel size ``(y, x)`` in um, or None when the file does not say.

    From the record's ``"pixel_size_um"`` (the map's JSON description, see
    :func:`~nanoro_optics.io.map_record`) when there, else from the TIFF's standard
    XResolution / YResolution (pixels per ResolutionUnit, inch or centimetre, as ImageJ and
    Fiji read them). A resolution without a unit says nothing about um: None.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> p = Path(tempfile.mkdtemp()) / "m.tif"
    >>> tifffile.imwrite(p, np.zeros((2, 2), np.float32), resolution=(4000, 5000),
    ...                  resolutionunit="CENTIMETER")
    >>> pixel_size_um(p)
    (2.0, 2.5)
    """
    if record is not None and "pixel_size_um" in record:
        given = record["pixel_size_um"]
        sizes = given if isinstance(given, (list, tuple)) else (given, given)
        if len(sizes) == 2:
            y, x = (_positive(v) for v in sizes)
            if y is not None and x is not None:
                return (y, x)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        unit = tags.get("ResolutionUnit")
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        if unit is None or xres is None:
            return None
        per_unit = _UM_PER_RESOLUTION_UNIT.get(int(unit.value))
        rates = [
            _positive(t.value[0] / t.value[1]) if t.value[1] else None for t in (yres or xres, xres)
        ]
    if per_unit is None or rates[0] is None or rates[1] is None:
        return None
    return (per_unit / rates[0], per_unit / rates[1])


def _read_map(p: Path) -> LayerData:
    import tifffile

    record = map_record(p)
    if record is None:
        raise ValueError(f"{p} is not a depth or confidence map of write_depth_map")
    data = tifffile.imread(p)
    meta = {"nanoro_optics": {**record, "path": str(p)}}
    grid: dict[str, Any] = {}
    size = pixel_size_um(p, record)
    if size is not None:
        grid = {"scale": size, "units": ("um", "um")}
        meta["nanoro_optics"]["pixel_size_um"] = list(size)
    kw: dict[str, Any]
    if record.get("kind") == "confidence":
        kw = {"name": f"{p.stem} confidence", "colormap": "gray", "contrast_limits": (0.0, 1.0)}
    elif record.get("kind") == "halo":  # where the halo correction acted: an overlay
        kw = {
            "name": f"{p.stem} halo correction",
            "colormap": "red",
            "contrast_limits": (0, 255),
            "blending": "additive",
            "opacity": 0.5,
        }
    else:
        unit = record.get("unit")
        label = f" ({unit})" if unit else ""
        kw = {
            "name": f"{p.stem} depth{label}",
            "colormap": DEPTH_COLORMAP,
            "contrast_limits": _limits(data),
        }
    return data, {**kw, **grid, "metadata": meta}, "image"


_OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def _ome_record(xml: str) -> tuple[list[float], dict[str, Any], list[list[str]]]:
    """Pixel size (y, x) in um, the fusion record and every image's channel names."""
    root = ET.fromstring(xml)
    pixels = root.find(f"{_OME}Image/{_OME}Pixels")
    if pixels is None:
        raise ValueError("the OME-XML has no Image/Pixels element")
    scale = [float(pixels.get("PhysicalSizeY", 1.0)), float(pixels.get("PhysicalSizeX", 1.0))]
    record: dict[str, Any] = {}
    for ann in root.iter(f"{_OME}MapAnnotation"):
        if ann.get("Namespace") != FUSION_OME_NAMESPACE:
            continue
        for m in ann.iter(f"{_OME}M"):
            key = m.get("K")
            if key:
                record[key] = json.loads(m.text or "null")
    names = [
        [str(c.get("Name", f"channel {k}")) for k, c in enumerate(img.iter(f"{_OME}Channel"))]
        for img in root.iter(f"{_OME}Image")
    ]
    return scale, record, names


def _read_ome(p: Path) -> list[LayerData]:
    import tifffile

    with tifffile.TiffFile(p) as tif:
        xml = str(tif.ome_metadata)
        fused = tif.series[0].asarray()
        maps = tif.series[1].asarray()
    scale, record, names = _ome_record(xml)
    meta = {**record, "path": str(p)}
    common = {"scale": tuple(scale), "units": ("um", "um")}
    stem = p.name.split(".")[0]
    fused_names = names[0] if names else []
    fused_kw: dict[str, Any] = {
        "name": f"{stem} fused",
        "metadata": {"nanoro_optics": {**meta, "kind": "fused"}},
        **common,
    }
    if fused.ndim == 3:  # (C, Y, X)
        c = fused.shape[0]
        if c in (3, 4) and fused.dtype == np.uint8:
            fused = np.moveaxis(fused, 0, -1)
            fused_kw["rgb"] = True
        else:
            fused_kw["channel_axis"] = 0
            fused_kw["name"] = [
                f"{stem} fused {fused_names[k] if k < len(fused_names) else k}" for k in range(c)
            ]
    depth, conf = maps[0], maps[1]
    layers: list[LayerData] = [
        (fused, fused_kw, "image"),
        (
            depth,
            {
                "name": f"{stem} depth (um)",
                "colormap": DEPTH_COLORMAP,
                "contrast_limits": _limits(depth),
                "metadata": {"nanoro_optics": {**meta, "kind": "depth", "unit": "um"}},
                **common,
            },
            "image",
        ),
        (
            conf,
            {
                "name": f"{stem} confidence",
                "colormap": "gray",
                "contrast_limits": (0.0, 1.0),
                "visible": False,
                "metadata": {"nanoro_optics": {**meta, "kind": "confidence"}},
                **common,
            },
            "image",
        ),
    ]
    return layers
