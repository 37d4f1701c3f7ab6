"""Reading frames: TIFF pages, the PNG codec or Pillow, one frame at a time."""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_bool
from ._png import PNG_SIGNATURE
from ._sources import (
    _TIFF_SUFFIXES,
    PathLike,
    StackSource,
    is_stack_source,
    list_stack_files,
)

#: Rec. 709 luma weights, the ones scikit-image's ``rgb2gray`` uses.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


@dataclass(frozen=True)
class StackFrame:
    """One frame of a stack and where it came from.

    Attributes
    ----------
    image : numpy.ndarray
        The pixels, ``(H, W)`` or ``(H, W, C)``; not always C-contiguous (an 8-bit colour
        PNG is a view of its decoded rows, which spares a copy per frame).
    path : pathlib.Path
        The file the frame was read from.
    page : int
        The frame's index inside its file (0 for a single-image file).
    index : int
        The frame's index in the whole stack.
    """

    image: np.ndarray
    path: Path
    page: int
    index: int

    def describe(self) -> str:
        """Say which frame this is, for error messages: ``frame 3 (a/b.tif, page 3)``."""
        where = f"{self.path}" if self.page == 0 else f"{self.path}, page {self.page}"
        return f"frame {self.index} ({where})"


class _TiffLogCatcher(logging.Handler):
    """Collect tifffile's logged errors for the current thread only.

    tifffile logs (rather than raises) when it meets a damaged IFD and then returns fewer pages
    than the file claims; a truncated stack would otherwise be read short without a word.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _tiff_errors(path: Path) -> Iterator[_TiffLogCatcher]:
    logger = logging.getLogger("tifffile")
    catcher = _TiffLogCatcher()
    logger.addHandler(catcher)
    try:
        yield catcher
    finally:
        logger.removeHandler(catcher)
    if catcher.messages:
        raise ValueError(f"cannot read {path}: damaged or truncated TIFF ({catcher.messages[0]})")


def _check_page_in_file(page: Any, size: int, path: Path, k: int) -> None:
    offsets = getattr(page, "dataoffsets", ()) or ()
    counts = getattr(page, "databytecounts", ()) or ()
    for off, cnt in zip(offsets, counts, strict=False):
        if off + cnt > size:
            raise ValueError(
                f"cannot read {path}: truncated TIFF, page {k} needs bytes up to {off + cnt} "
                f"but the file has {size}"
            )


def _page_frames(arr: np.ndarray, axes: str) -> Iterator[np.ndarray]:
    """Split one TIFF page into 2-D / RGB frames (a page may hold a volume or planar RGB)."""
    if axes.startswith("S") and axes.endswith("YX"):  # planar RGB
        arr = np.moveaxis(arr, 0, -1)
        axes = axes[1:] + "S"
    lead = len(axes) - (3 if axes.endswith("S") else 2)
    if lead <= 0:
        yield arr
        return
    yield from arr.reshape((-1, *arr.shape[lead:]))


def _iter_tiff(path: Path) -> Iterator[np.ndarray]:
    import tifffile

    size = path.stat().st_size
    try:
        with _tiff_errors(path), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError(f"cannot read {path}: the TIFF holds no image")
            series = tif.series[0]
            page_axes = ""
            pages = list(series.pages)
            if pages and pages[0] is not None:
                page_axes = pages[0].axes
            outer = series.axes[: len(series.axes) - len(page_axes)] if page_axes else ""
            multi = [
                f"{ax}={n}"
                for ax, n in zip(series.axes, series.shape, strict=True)
                if ax in outer and n > 1 and ax not in "YXS"
            ]
            if len(multi) > 1:
                raise ValueError(
                    f"cannot read {path} as a focus stack: it has more than one axis besides "
                    f"Y, X and colour ({', '.join(multi)}; axes {series.axes!r}); "
                    "save one channel / time point per file"
                )
            expected = int(
                np.prod([n for ax, n in zip(series.axes, series.shape, strict=True) if ax in outer])
            )
            if len(pages) < expected:
                raise ValueError(
                    f"cannot read {path}: truncated TIFF, {len(pages)} of {expected} pages present"
                )
            for k, page in enumerate(pages):
                if page is None:
                    raise ValueError(f"cannot read {path}: page {k} is missing")
                _check_page_in_file(page, size, path, k)
                yield from _page_frames(page.asarray(), page.axes)
    except ValueError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged files
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _png_header(path: Path) -> tuple[int, int, int, int, int] | None:
    """Return ``(width, height, bit_depth, colour_type, interlace)`` of a PNG, else None."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, colour, interlace


def png_frame_format(path: PathLike) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of the frame a PNG file should read as, from its header alone.

    None when the file is not a PNG or is one :func:`read_image` hands to Pillow (palette,
    1-4 bit, interlaced). An ``eXIf`` orientation, applied when the file is read, may still
    swap the two axes: this is a guess to prepare for, not a promise.
    """
    header = _png_header(Path(path))
    if header is None:
        return None
    from ._png import CHANNELS

    width, height, depth, colour, interlace = header
    channels = CHANNELS.get(colour)
    if channels is None or depth not in (8, 16) or interlace:
        return None
    shape = (height, width) if channels == 1 else (height, width, channels)
    return shape, np.dtype(np.uint8 if depth == 8 else np.uint16)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # exif_transpose would copy even when upright
            im = ImageOps.exif_transpose(im)
        if im.mode in ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "F"):
            pass
        elif im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "I":  # 16-bit grey from some encoders comes up as int32
            arr = np.asarray(im)
            if arr.min(initial=0) >= 0 and arr.max(initial=0) <= 0xFFFF:
                return arr.astype(np.uint16)
            return arr
        else:
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return np.array(arr, copy=True) if not arr.flags.writeable else arr


def _read_single(path: Path, buffers: Any = None) -> np.ndarray:
    """Read a non-TIFF image file as one frame (EXIF orientation applied).

    ``buffers`` (a :class:`._png.PngBuffers`) lets PNG frames be decoded into reused memory.
    """
    try:
        header = _png_header(path)
        if header is not None:
            from ._png import read_png

            image = read_png(path, buffers=buffers)
            if image is not None:
                return image
            if header[2] == 16 and header[3] in (2, 4, 6):  # Pillow would keep 8 bits
                raise ValueError(
                    f"cannot read {path}: interlaced 16-bit colour PNG is not supported"
                )
        return _read_pil(path)
    except ValueError:
        raise
    except Exception as exc:  # PIL raises OSError / SyntaxError / UnidentifiedImageError
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _iter_file(path: Path, buffers: Any = None) -> Iterator[np.ndarray]:
    if path.suffix.lower() in _TIFF_SUFFIXES:
        yield from _iter_tiff(path)
    else:
        yield _read_single(path, buffers)


class _FileDecoder:
    """Decodes stack files one after another (one decoder per thread).

    With ``reuse_buffer`` (default) it decodes into buffers of its own: 8-bit PNG frames
    land in the same memory every time, so a frame lives only until the next file is read
    with the same decoder.
    """

    def __init__(self, reuse_buffer: bool = True) -> None:
        self._buffers: Any = None
        if reuse_buffer:
            from ._png import PngBuffers

            self._buffers = PngBuffers()

    def frames(self, path: PathLike) -> Iterator[np.ndarray]:
        """Yield the frames of one file (the pages of a TIFF, else the one image)."""
        yield from _iter_file(Path(path), self._buffers)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.shape[-1] in (1, 2):  # grey (+ alpha)
        return image[..., 0].astype(np.float32)
    return np.tensordot(image[..., :3].astype(np.float32), _LUMA, axes=([-1], [0]))


def iter_frames(
    source: StackSource, *, as_gray: bool = False, reuse_buffer: bool = False
) -> Iterator[StackFrame]:
    """Yield the frames of a stack one at a time, with the file each came from.

    Like :func:`iter_stack`, but each item is a :class:`StackFrame` (image, path, page, index),
    which lets a caller name the frame in its own error messages.

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        See :func:`list_stack_files`.
    as_gray : bool, optional
        Return float32 luminance ``0.2125 R + 0.7154 G + 0.0721 B`` (Rec. 709 weights), in the
        file's own units (not rescaled); a grey file gives its values as float32.
    reuse_buffer : bool, optional
        Decode 8-bit PNG frames into one buffer, reused for every frame: **each frame's
        image is then valid only until the next frame is requested**. A streaming consumer
        that is done with a frame before asking for the next (a fuser that copies it) saves
        the memory and the page faults of a fresh frame each time.

    Yields
    ------
    StackFrame

    Raises
    ------
    ValueError
        An unreadable or truncated file (the message names it); a frame whose shape or dtype
        differs from the first frame's, or a float frame with NaN or infinite pixels (the
        message names the frame index and file); an empty stack.
    FileNotFoundError
        A path that does not exist.
    """
    check_bool(as_gray, "as_gray")
    check_bool(reuse_buffer, "reuse_buffer")
    files = list_stack_files(source)
    decoder = _FileDecoder(reuse_buffer)
    first: tuple[str, tuple[int, ...], np.dtype] | None = None
    index = 0
    for path in files:
        page = -1
        for page, image in enumerate(decoder.frames(path)):
            frame = StackFrame(image=image, path=path, page=page, index=index)
            if image.ndim not in (2, 3) or image.size == 0:
                raise ValueError(
                    f"{frame.describe()}: expected a 2-D image (H, W) or (H, W, C), got shape "
                    f"{image.shape}"
                )
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(image))[0])
                raise ValueError(
                    f"{frame.describe()}: pixel {bad} is {float(image[bad])!r}; "
                    "frames must be finite"
                )
            if first is None:
                first = (frame.describe(), image.shape, image.dtype)
            elif image.shape != first[1] or image.dtype != first[2]:
                raise ValueError(
                    f"{frame.describe()} has shape {image.shape} and dtype {image.dtype}, but "
                    f"{first[0]} has shape {first[1]} and dtype {first[2]}; all frames of a "
                    "stack must match"
                )
            if as_gray:
                frame = StackFrame(image=_to_gray(image), path=path, page=page, index=index)
            yield frame
            index += 1
        if page < 0:
            raise ValueError(f"cannot read {path}: the file holds no image")


def iter_stack(source: StackSource, *, as_gray: bool = False) -> Iterator[np.ndarray]:
    """Yield the frames of a stack one at a time (lazily: one frame in memory at a time).

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        A folder, a file, a glob pattern or a list of them (see :func:`list_stack_files`).
        A multi-page TIFF or OME-TIFF yields its pages (the first image series; pages holding
        a volume are split into planes; planar RGB is returned as ``(H, W, 3)``).
    as_gray : bool, optional
        Yield float32 Rec. 709 luminance in the file's units instead of the stored pixels.

    Yields
    ------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` frames of the stored dtype (float32 with ``as_gray``).

    Raises
    ------
    ValueError, FileNotFoundError, TypeError
        See :func:`iter_frames`: every message names the file, and the frame index for a frame
        that does not match the first.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from nanoro_optics.io import write_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for k in (10, 2, 1):
    ...         _ = write_image(f"{tmp}/f{k}.png", np.full((4, 5), k, np.uint8))
    ...     [int(f[0, 0]) for f in iter_stack(tmp)]
    [1, 2, 10]
    """
    for frame in iter_frames(source, as_gray=as_gray):
        yield frame.image


def as_frames(frames: Any) -> Any:
    """Return ``frames`` ready for a fuser: files named by a path are read lazily.

    A path, glob pattern or list of paths (see :func:`is_stack_source`) becomes
    :func:`iter_stack` over it, after checking now that every file exists (so a typo fails
    before any frame is fused); anything else (an array, a list or iterator of frames) is
    returned as it is. This is what lets :func:`~nanoro_optics.fusion.fuse_stack` and the
    other fusion helpers take a folder, a glob or a multi-page TIFF.

    Parameters
    ----------
    frames : path, glob, sequence of paths, array_like or iterable of frames
        The stack, or where to read it.

    Returns
    -------
    iterator of numpy.ndarray, or ``frames`` unchanged

    Raises
    ------
    FileNotFoundError, ValueError
        If a path does not exist, or a folder or pattern holds no image file.

    Examples
    --------
    >>> import tempfile
    >>> from nanoro_optics.io import write_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for k in range(3):
    ...         _ = write_image(f"{tmp}/f{k}.png", np.full((4, 5), k, np.uint8))
    ...     [int(f[0, 0]) for f in as_frames(tmp)]
    [0, 1, 2]
    """
    if not is_stack_source(frames):
        return frames
    files = list_stack_files(frames)
    return iter_stack(files)


def read_stack(source: StackSource, *, as_gray: bool = False) -> np.ndarray:
    """Read a whole stack into one array ``(N, H, W[, C])``.

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        See :func:`list_stack_files` and :func:`iter_stack`.
    as_gray : bool, optional
        See :func:`iter_stack`.

    Returns
    -------
    numpy.ndarray
        The frames stacked along a new first axis, in stack order.

    Raises
    ------
    ValueError, FileNotFoundError, TypeError
        See :func:`iter_frames`.
    """
    frames = list(iter_stack(source, as_gray=as_gray))
    out = np.empty((len(frames), *frames[0].shape), dtype=frames[0].dtype)
    for k in range(len(frames)):
        out[k] = frames[k]
        frames[k] = out[k]  # drop the reference to the decoded copy as we go
    return out


def read_image(path: PathLike) -> np.ndarray:
    """Read one image file (EXIF orientation applied to JPEG/PNG).

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF with a single image, or a PNG, JPEG or BMP file.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` in the stored dtype (16-bit PNG and TIFF stay 16-bit).

    Raises
    ------
    ValueError
        If the file is unreadable, truncated, or holds more than one image (use
        :func:`read_stack` for those).
    FileNotFoundError
        If the file does not exist.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    frames = iter(_iter_file(p))
    try:
        image = next(frames)
    except StopIteration:
        raise ValueError(f"cannot read {p}: the file holds no image") from None
    for _ in frames:
        raise ValueError(f"{p} holds more than one image; read it with read_stack")
    return np.ascontiguousarray(image)  # the PNG reader may hand over a strided view
