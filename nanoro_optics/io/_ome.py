"""OME-TIFF and OME-Zarr output of a fusion (image, depth map, confidence, record)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_bool
from ._atomic import OutputSet, atomic_write
from ._sources import PathLike

#: Namespace of the OME-TIFF MapAnnotation (and OME-Zarr attribute) of :func:`write_fusion_ome`
FUSION_OME_NAMESPACE = "nanoro_optics/fusion"
#: suffixes :func:`write_fusion_ome` takes, and the format each one writes
FUSION_OME_SUFFIXES = {".ome.tif": "tiff", ".ome.tiff": "tiff", ".ome.zarr": "zarr"}


def write_fusion_ome(
    path: PathLike,
    image: Any,
    depth_um: Any,
    confidence: Any,
    *,
    pixel_size_um: float,
    z_um: Sequence[float],
    channel_names: Sequence[str],
    settings: dict[str, Any] | None = None,
    overwrite: bool = False,
    outputs: OutputSet | None = None,
) -> Path:
    """Write a fused image with its depth map and confidence as OME-TIFF or OME-Zarr, atomically.

    Two images: ``fused``, the image ``(C, Y, X)`` in its own dtype with one channel per
    name, and ``depth``, float32 ``(2, Y, X)`` with the channels ``depth_um`` (NaN where
    there is no depth) and ``confidence``. Both carry the pixel size in um, so the depth
    map lies on the image's grid. The z positions fused (um) and the fusion settings are
    recorded with them. The format follows the suffix:

    - ``.ome.tif`` / ``.ome.tiff``: one OME-TIFF of two OME images (series), with
      ``PhysicalSizeX``/``Y`` in um and a MapAnnotation (namespace
      :data:`FUSION_OME_NAMESPACE`) holding ``z_um`` and ``settings`` as JSON. Written with
      tifffile's OME-XML support: tifffile is a core dependency and writes the OME-TIFF
      that Bio-Formats, Fiji and napari read, so no extra writer is needed. The file is
      encoded into a hidden temporary file beside ``path`` and moved into place once
      complete (as :func:`write_image` does).
    - ``.ome.zarr``: an OME-Zarr 0.5 store in the bioformats2raw layout (series ``0`` and
      ``1``), the pixel size in micrometres as the y/x scale, the record in the root's
      ``nanoro_optics`` attribute. Written with yaozarrs (OME-Zarr models and writer) on
      zarr-python, extra ``nanoro_optics[omezarr]``: ome-writers, which pymmcore-plus
      uses, refuses float arrays in its zarr backends (0.3.2), so it cannot hold the depth
      map. The store is built in a hidden folder beside ``path`` and renamed into place.

    Either way a crash leaves no partial output under ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in one of :data:`FUSION_OME_SUFFIXES`.
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, integer or float, finite.
    depth_um, confidence : array_like
        ``(H, W)`` real arrays (the :class:`~nanoro_optics.fusion.FusionResult` maps).
    pixel_size_um : float, keyword-only
        Pixel size at the sample in um (> 0).
    z_um : sequence of float, keyword-only
        The z positions of the frames fused, in um, in capture order.
    channel_names : sequence of str, keyword-only
        One name per channel of ``image``.
    settings : dict, optional
        The fusion settings, recorded as JSON (values JSON cannot hold as their ``str``).
    overwrite : bool, optional
        Replace an existing output (an OME-Zarr store is moved aside, the new one moved
        in, then the old one deleted). By default (False) an existing ``path`` is refused
        (:class:`FileExistsError`) and left untouched.
    outputs : OutputSet, optional
        Write the output as one member of this set: it appears, with the set's other
        outputs, when the set commits (all or none).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError, TypeError
        A bad suffix, shape, dtype, non-finite image, pixel size, z position or settings,
        or a channel count that does not match the names; nothing is written.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the destination folder does not exist.
    ImportError
        For ``.ome.zarr`` without zarr and yaozarrs (``pip install
        "nanoro_optics[omezarr]"``; zarr 3 needs Python 3.11).

    References
    ----------
    .. [1] OME-TIFF specification, https://ome-model.readthedocs.io/en/stable/ome-tiff/
    .. [2] OME-NGFF (OME-Zarr) specification 0.5, https://ngff.openmicroscopy.org/0.5/

    Examples
    --------
    >>> import tempfile, numpy as np, tifffile, zarr
    >>> img = np.zeros((4, 6), np.uint16)
    >>> depth, conf = np.ones((4, 6), np.float32), np.zeros((4, 6), np.float32)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     tif = write_fusion_ome(f"{tmp}/a.ome.tif", img, depth, conf,
    ...         pixel_size_um=0.5, z_um=[1.0, 2.0], channel_names=["DAPI"])
    ...     with tifffile.TiffFile(tif) as f:
    ...         print([s.shape for s in f.series])
    ...     store = write_fusion_ome(f"{tmp}/a.ome.zarr", img, depth, conf,
    ...         pixel_size_um=0.5, z_um=[1.0, 2.0], channel_names=["DAPI"])
    ...     root = zarr.open_group(store, mode="r")
    ...     print(root["0/0"].shape, root["1/0"].dtype, root.attrs["nanoro_optics"]["z_um"])
    [(4, 6), (2, 4, 6)]
    (1, 4, 6) float32 [1.0, 2.0]
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    p = Path(path)
    fmt = next((f for s, f in FUSION_OME_SUFFIXES.items() if p.name.lower().endswith(s)), None)
    if fmt is None:
        raise ValueError(
            f"cannot write {p}: the name must end in one of {', '.join(FUSION_OME_SUFFIXES)}"
        )
    check_bool(overwrite, "overwrite")
    data = _fusion_content(
        image, depth_um, confidence, pixel_size_um, z_um, channel_names, settings
    )
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {p}: folder {folder} does not exist")
    if fmt == "zarr":
        _write_ome_zarr(p, overwrite, data, outputs)
    else:
        _write_ome_tiff(p, overwrite, data, outputs)
    return p


@dataclass(frozen=True)
class _OmeContent:
    """A checked fusion result for :func:`write_fusion_ome`, planar ``(C, Y, X)``."""

    planes: np.ndarray
    depth: np.ndarray  # float32 (2, Y, X): depth_um, confidence
    pixel_size_um: float
    names: list[str]
    record: dict[str, Any]


def _fusion_content(
    image: Any,
    depth_um: Any,
    confidence: Any,
    pixel_size_um: Any,
    z_um: Any,
    channel_names: Any,
    settings: Any,
) -> _OmeContent:
    """Check a fusion result for :func:`write_fusion_ome`."""
    from .._validation import as_float_array, check_positive

    arr = np.asarray(image)
    if arr.dtype.kind not in "uif" or arr.ndim not in (2, 3) or arr.size == 0:
        raise TypeError(
            f"image must be a non-empty (H, W) or (H, W, C) numeric array, got shape "
            f"{arr.shape} and dtype {arr.dtype}"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("image has non-finite pixels")
    planes = np.ascontiguousarray(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))
    names = [str(n) for n in channel_names]
    if isinstance(channel_names, str) or len(names) != planes.shape[0]:
        raise ValueError(
            f"channel_names must give one name per channel: {planes.shape[0]} channel(s), "
            f"got {channel_names!r}"
        )
    maps = np.empty((2, *planes.shape[1:]), np.float32)  # one copy of each, not two
    for k, (what, m) in enumerate((("depth_um", depth_um), ("confidence", confidence))):
        a = np.asarray(m)
        if a.dtype.kind not in "uif" or a.shape != planes.shape[1:]:
            raise ValueError(
                f"{what} must be a real array of the image's shape {planes.shape[1:]}, got "
                f"shape {a.shape} and dtype {a.dtype}"
            )
        maps[k] = a
    px = check_positive(pixel_size_um, "pixel_size_um")
    z = as_float_array(z_um, "z_um")
    if z.ndim != 1 or z.size == 0:
        raise ValueError(f"z_um must be a non-empty 1-D sequence of positions, got {z_um!r}")
    if settings is not None and not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    # JSON types only (anything else as its str), so that every reader gets the same record
    plain = json.loads(json.dumps(settings or {}, sort_keys=True, default=str))
    record = {"z_um": [float(v) for v in z], "settings": plain}
    return _OmeContent(planes, maps, px, names, record)


def _write_ome_tiff(p: Path, overwrite: bool, data: _OmeContent, outputs: OutputSet | None) -> None:
    import tifffile

    px, names = data.pixel_size_um, data.names
    common = {
        "axes": "CYX",
        "PhysicalSizeX": px,
        "PhysicalSizeXUnit": "\u00b5m",
        "PhysicalSizeY": px,
        "PhysicalSizeYUnit": "\u00b5m",
    }
    annotation = {
        "Namespace": FUSION_OME_NAMESPACE,
        **{k: json.dumps(v) for k, v in data.record.items()},
    }

    def write(fh: Any) -> None:
        with tifffile.TiffWriter(fh, ome=True) as tif:
            tif.write(
                data.planes,
                photometric="minisblack",
                metadata={
                    **common,
                    "Name": "fused",
                    "Channel": {"Name": names},
                    "MapAnnotation": annotation,
                },
            )
            tif.write(
                data.depth,
                photometric="minisblack",
                metadata={
                    **common,
                    "Name": "depth",
                    "Channel": {"Name": ["depth_um", "confidence"]},
                },
            )

    atomic_write(p, write, overwrite=overwrite, outputs=outputs)


def _write_ome_zarr(p: Path, overwrite: bool, data: _OmeContent, outputs: OutputSet | None) -> None:
    try:
        from yaozarrs import DimSpec, v05
        from yaozarrs.write.v05 import write_bioformats2raw
    except ImportError as exc:
        raise ImportError(
            'OME-Zarr output needs zarr and yaozarrs: pip install "nanoro_optics[omezarr]"'
        ) from exc

    px, (_, h, w) = data.pixel_size_um, data.planes.shape

    def model(n_c: int, name: str) -> Any:
        dims = [
            DimSpec(name="c", size=n_c),
            DimSpec(name="y", size=h, scale=px, unit="micrometer"),
            DimSpec(name="x", size=w, scale=px, unit="micrometer"),
        ]
        return v05.Image(multiscales=[v05.Multiscale.from_dims(dims, name=name)])

    with contextlib.ExitStack() as stack:
        if outputs is None:
            outputs = stack.enter_context(OutputSet())
        tmp = outputs.reserve(p, overwrite=overwrite, directory=True)
        tmp.rmdir()  # yaozarrs creates the store itself; the random name stays this writer's
        write_bioformats2raw(
            tmp,
            {
                "0": (model(len(data.names), "fused"), [data.planes]),
                "1": (model(2, "depth"), [data.depth]),
            },
            extra_attributes={"nanoro_optics": {**data.record, "channels": data.names}},
            writer="zarr",
        )
