"""Writing images and depth maps, atomically; the format follows the suffix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_bool, check_choice
from ._atomic import OutputSet, atomic_write
from ._records import DEPTH_MAP_KINDS, DEPTH_MAP_UNITS, RECORD_KEY, make_record, record_text
from ._sources import _PNG_SUFFIXES, _TIFF_SUFFIXES, WRITE_SUFFIXES, PathLike


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[2])


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] > 4):
        raise ValueError(
            f"{name} must be (H, W) or (H, W, C) with C <= 4 and not empty, got shape {image.shape}"
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(image))[0])
        raise ValueError(f"{name} pixel {bad} is {float(image[bad])!r}; an image must be finite")
    return image


def _check_format(path: Path, image: np.ndarray) -> str:
    """Return the format for ``path``'s suffix, or raise if it cannot hold ``image``."""
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {path}: unknown image format {suffix!r}; use one of "
            f"{', '.join(WRITE_SUFFIXES)}"
        )
    if suffix in _TIFF_SUFFIXES:
        return "tiff"
    if suffix in _PNG_SUFFIXES:
        if image.dtype not in (np.uint8, np.uint16, np.bool_):
            raise ValueError(
                f"cannot write {path}: PNG holds 8- or 16-bit unsigned integers, got dtype "
                f"{image.dtype}; convert the image or write a TIFF, which keeps {image.dtype}"
            )
        return "png"
    if image.dtype not in (np.uint8, np.bool_):
        raise ValueError(
            f"cannot write {path}: JPEG holds 8-bit images only, got dtype {image.dtype}; "
            "write a TIFF or PNG to keep 16-bit data, or convert to uint8 explicitly"
        )
    if _channels(image) not in (1, 3):
        raise ValueError(
            f"cannot write {path}: JPEG holds grey or RGB, got {_channels(image)} channels"
        )
    return "jpeg"


def check_image_format(path: PathLike, image: Any) -> None:
    """Raise if :func:`write_image` would refuse to write ``image`` to ``path``.

    Lets a caller check every output before writing any of them, so that a run that writes
    several files writes all or none.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; only its suffix is looked at.
    image : array_like
        The image to be written.

    Raises
    ------
    ValueError, TypeError
        As :func:`write_image` would (unknown suffix, dtype the format cannot hold, NaN, shape).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    _check_format(Path(path), _check_image(image))


def _encode(
    fh: Any,
    image: np.ndarray,
    fmt: str,
    photometric: str | None,
    record: dict[str, Any] | None = None,
) -> None:
    pixel_um = record.get("pixel_size_um") if record else None
    if fmt == "tiff":
        import tifffile

        if photometric is None:
            photometric = "rgb" if _channels(image) in (3, 4) else "minisblack"
        extrasamples = ("unassalpha",) if photometric == "rgb" and _channels(image) == 4 else None
        resolution: dict[str, Any] = {}
        if pixel_um is not None:  # TIFF 6.0 XResolution/YResolution: pixels per centimetre
            per_cm = 1e4 / pixel_um
            resolution = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
        tifffile.imwrite(
            fh,
            image,
            photometric=photometric,
            extrasamples=extrasamples,
            metadata=None if record is None else {RECORD_KEY: record},
            **resolution,
        )
        return
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if fmt == "png":
        from ._png import encode_png

        fh.write(
            encode_png(
                image,
                text=None if record is None else {RECORD_KEY: record_text({RECORD_KEY: record})},
                pixels_per_metre=None if pixel_um is None else round(1e6 / pixel_um),
            )
        )
        return
    from PIL import Image  # (JPEG only: the PNG encoder above needs no Pillow)

    extra: dict[str, Any] = {}
    if record is not None:
        extra["comment"] = record_text({RECORD_KEY: record})
    if pixel_um is not None:
        extra["dpi"] = (25_400 / pixel_um,) * 2
    Image.fromarray(image).save(fh, format="JPEG", quality=95, subsampling=0, **extra)


def write_image(
    path: PathLike,
    image: Any,
    *,
    overwrite: bool = True,
    photometric: str | None = None,
    outputs: OutputSet | None = None,
    kind: str | None = None,
    settings: dict[str, Any] | str | None = None,
    pixel_size_um: float | None = None,
) -> Path:
    """Write an image atomically; the format follows the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. ``.tif``/``.tiff`` keep any integer or float dtype (16-bit and float32
        included); ``.png`` holds uint8 or uint16 (grey, grey+alpha, RGB, RGBA); ``.jpg``/
        ``.jpeg`` hold uint8 grey or RGB only (quality 95, no chroma subsampling).
    image : array_like
        ``(H, W)`` or ``(H, W, C)`` with C <= 4, finite.
    overwrite : bool, optional
        Replace an existing file (default). With False an existing file raises
        :class:`FileExistsError` and is left untouched.
    photometric : {"minisblack", "rgb"}, optional
        TIFF only: the colour interpretation; by default RGB for 3 or 4 channels.
    outputs : OutputSet, optional
        Write the file as one output of this set: it appears, with the set's other outputs,
        when the set commits (all or none).
    kind : {None, "fused"}, optional
        ``"fused"`` marks the image as a fused output: the record (see
        :func:`~nanoro_optics.io.output_record`) lets a later run leave it out of a stack.
    settings : dict or str, optional
        The settings that made the output (a JSON-serialisable dict, or a JSON object text
        such as ``FusionOptions.to_json()``), kept in its record.
    pixel_size_um : float, optional
        The pixel size at the sample in um (> 0): kept in the record as ``"pixel_size_um"``
        and as the format's own resolution, which other software reads (TIFF
        ``XResolution``/``YResolution`` in pixels per centimetre with ``ResolutionUnit``
        CENTIMETER; PNG ``pHYs`` in pixels per metre; JPEG dots per inch).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        An unknown suffix, a dtype the format cannot hold (e.g. 16-bit JPEG), NaN pixels, a bad
        shape. Nothing is written.
    FileExistsError
        If ``overwrite`` is False and the file exists.
    FileNotFoundError
        If the destination folder does not exist.

    Notes
    -----
    The image is encoded into a hidden temporary file in the destination folder, flushed to
    disk, and moved over ``path`` (:class:`OutputSet`; atomic on POSIX and Windows), so
    readers see either the old file or the complete new one, never a partial file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from nanoro_optics.io import read_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     img = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    ...     out = write_image(f"{tmp}/a.png", img)
    ...     bool(np.array_equal(read_image(out), img))
    True
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    check_bool(overwrite, "overwrite")
    if photometric is not None and photometric not in ("minisblack", "rgb"):
        raise ValueError(f"photometric must be None, 'minisblack' or 'rgb', got {photometric!r}")
    p = Path(path)
    arr = _check_image(image)
    fmt = _check_format(p, arr)
    if photometric == "rgb" and _channels(arr) not in (3, 4):
        raise ValueError(f"photometric='rgb' needs 3 or 4 channels, got shape {arr.shape}")
    _check_outputs(outputs)
    if kind not in (None, "fused"):
        raise ValueError(f"kind must be None or 'fused' for an image, got {kind!r}")
    record = make_record(kind, settings=settings, pixel_size_um=pixel_size_um)
    atomic_write(
        p,
        lambda fh: _encode(fh, arr, fmt, photometric, record),
        overwrite=overwrite,
        outputs=outputs,
    )
    return p


def write_depth_map(
    path: PathLike,
    depth: Any,
    *,
    overwrite: bool = True,
    kind: str = "depth",
    unit: str | None = None,
    outputs: OutputSet | None = None,
    settings: dict[str, Any] | str | None = None,
    pixel_size_um: float | None = None,
) -> Path:
    """Write a depth (height) map as a float32 TIFF, atomically (or a halo map as uint8).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; must end in ``.tif`` or ``.tiff``.
    depth : array_like
        ``(H, W)`` real values (the fuser's depth, in micrometres or frame units). NaN is
        allowed and marks pixels without a depth estimate.
    overwrite : bool, optional
        Replace an existing file (default); see :func:`write_image`.
    kind : {"depth", "confidence", "halo"}, optional
        What the map holds (a confidence map is written with this function too). A
        ``"halo"`` map (:attr:`~nanoro_optics.fusion.FusionResult.halo_map`, where the halo
        correction replaced the pyramid fusion) takes a bool or 0/1 array and is written as
        a uint8 mask, 255 where corrected and 0 elsewhere (ImageJ's binary-mask convention).
    unit : {"um", "frame"}, optional
        The depth's unit (``FusionResult.depth_unit``), for ``kind="depth"``.
    outputs : OutputSet, optional
        Write the map as one output of this set (see :func:`write_image`).
    settings : dict or str, optional
        The settings that made the output (a JSON-serialisable dict, or a JSON object text
        such as ``FusionOptions.to_json()``), kept in its record.
    pixel_size_um : float, optional
        The pixel size at the sample in um (> 0): kept in the record as ``"pixel_size_um"``
        and as the format's own resolution, which other software reads (TIFF
        ``XResolution``/``YResolution`` in pixels per centimetre with ``ResolutionUnit``
        CENTIMETER; PNG ``pHYs`` in pixels per metre; JPEG dots per inch).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If the suffix is not TIFF, ``depth`` is not a non-empty 2-D real array, or ``kind``
        or ``unit`` is not one of the names above (or a unit is given for a confidence map).

    Notes
    -----
    ``kind`` and ``unit`` are kept in the TIFF's JSON image description (tifffile's shaped
    metadata) under :data:`~nanoro_optics.io.RECORD_KEY`, ``{"kind": ..., "unit": ...,
    "tool": "nanoro_optics"}`` (and the settings and pixel size when given), so that a
    reader (the napari plugin's) can tell a depth map in um from one in frames; any TIFF
    reader still reads the plain float32 image.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    check_bool(overwrite, "overwrite")
    _check_outputs(outputs)
    p = Path(path)
    if p.suffix.lower() not in _TIFF_SUFFIXES:
        raise ValueError(f"cannot write depth map {p}: it must be a .tif or .tiff file")
    arr = np.asarray(depth)
    check_choice(kind, "kind", DEPTH_MAP_KINDS)
    if arr.dtype.kind not in ("biuf" if kind == "halo" else "iuf"):
        raise TypeError(f"depth must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"depth must be a non-empty 2-D array, got shape {arr.shape}")
    if unit is not None:
        check_choice(unit, "unit", DEPTH_MAP_UNITS)
        if kind != "depth":
            raise ValueError(f"unit is for a depth map, not for kind={kind!r}; give unit=None")
    record = make_record(kind, unit=unit, settings=settings, pixel_size_um=pixel_size_um)
    if kind == "halo":
        if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
            bad = arr[~np.isin(arr, (0, 1))].flat[0].item()
            raise ValueError(
                f"a halo map holds bool or 0/1 values (where the correction acted), got {bad!r}"
            )
        data = np.where(arr != 0, np.uint8(255), np.uint8(0))
    else:
        data = arr.astype(np.float32)
    atomic_write(
        p,
        lambda fh: _encode(fh, data, "tiff", "minisblack", record),
        overwrite=overwrite,
        outputs=outputs,
    )
    return p


def write_json(
    path: PathLike,
    data: Any,
    *,
    overwrite: bool = True,
    sort_keys: bool = True,
    outputs: OutputSet | None = None,
) -> Path:
    """Write ``data`` as indented JSON (UTF-8, a final newline), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    data : JSON-serialisable object
        What to write (checked before anything is written).
    overwrite : bool, optional
        Replace an existing file (default); see :func:`write_image`.
    sort_keys : bool, optional
        Write the keys of every mapping in sorted order (default).
    outputs : OutputSet, optional
        Write the file as one output of this set (see :func:`write_image`).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        If ``data`` holds something JSON cannot (nothing is written).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    check_bool(overwrite, "overwrite")
    check_bool(sort_keys, "sort_keys")
    _check_outputs(outputs)
    text = json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"
    body = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(body), overwrite=overwrite, outputs=outputs)


def _check_outputs(outputs: Any) -> None:
    if outputs is not None and not isinstance(outputs, OutputSet):
        raise TypeError(f"outputs must be an io.OutputSet or None, got {type(outputs).__name__}")
