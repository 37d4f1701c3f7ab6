"""Reading and writing focus stacks, images and depth maps.

A *stack source* is a folder, a file (a multi-page TIFF or OME-TIFF holds a whole stack; any other
image file holds one frame), a glob pattern, or a list of those. Files found in a folder or by a
glob are taken in natural order (``frame2`` before ``frame10``); the files of a list keep the order
the list gives.

Frames are read lazily by :func:`iter_stack` (one frame in memory at a time), so a stack of
hundreds of 20 MP frames can be fused without holding it. Every error names the file, and for a
stack the frame index, that caused it.

Writing is atomic: :func:`write_image` and :func:`write_depth_map` encode into a temporary file in
the destination folder and move it into place with :func:`os.replace`, so a failure (a bad dtype
for the format, a full disk, an interrupt) never leaves a partial file or clobbers an existing one.
TIFF keeps every dtype (16-bit and float included); PNG holds 8- and 16-bit integers (16-bit
colour included, which Pillow alone truncates to 8 bits); JPEG holds 8-bit only.

JPEG (and PNG) frames are returned upright: the EXIF orientation tag is applied, as a viewer
would show them [1]_.

References
----------
.. [1] CIPA DC-008-2023, "Exchangeable image file format for digital still cameras: Exif
   Version 3.0", tag 0x0112 (Orientation).
.. [2] ISO/IEC 15948:2004, "Portable Network Graphics (PNG): Functional specification",
   sections 9 (filtering) and 11.2.2 (IHDR).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import check_bool, check_choice

__all__ = [
    "FUSION_OME_SUFFIXES",
    "IMAGE_SUFFIXES",
    "WRITE_SUFFIXES",
    "StackFrame",
    "as_frames",
    "check_image_format",
    "is_stack_source",
    "iter_frames",
    "iter_stack",
    "list_stack_files",
    "map_record",
    "read_image",
    "read_stack",
    "write_depth_map",
    "write_fusion_ome",
    "write_image",
]

#: File suffixes taken from a folder (case-insensitive). Hidden files (``.name``) are skipped.
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_TIFF_SUFFIXES = (".tif", ".tiff")
_PNG_SUFFIXES = (".png",)
_JPEG_SUFFIXES = (".jpg", ".jpeg")
#: File suffixes :func:`write_image` can write (case-insensitive).
WRITE_SUFFIXES: tuple[str, ...] = _TIFF_SUFFIXES + _PNG_SUFFIXES + _JPEG_SUFFIXES
#: Rec. 709 luma weights, the ones scikit-image's ``rgb2gray`` uses.
_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib level of written PNG: level 1 is ~5x faster than 6 for ~15 % larger files
_PNG_LEVEL = 1

PathLike = str | os.PathLike[str]
StackSource = PathLike | Sequence[PathLike]


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


# --------------------------------------------------------------------------------------------
# listing


def _natural_key(text: str) -> tuple[Any, ...]:
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _expand(item: PathLike) -> list[Path]:
    if not isinstance(item, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path, a glob pattern or a list of them, got "
            f"{type(item).__name__} {item!r}"
        )
    text = os.fspath(item)
    path = Path(text).expanduser()
    if path.is_dir():
        found = [
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not found:
            raise ValueError(
                f"empty stack: folder {path} holds no image files "
                f"(looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        return sorted(found, key=lambda p: _natural_key(p.name))
    if path.is_file():
        return [path]
    if _is_glob(text):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise ValueError(f"empty stack: the pattern {text!r} matches no file")
        return sorted(matches, key=lambda p: _natural_key(str(p)))
    raise FileNotFoundError(f"no such file or folder: {text}")


def list_stack_files(source: StackSource) -> list[Path]:
    """Return the files of a stack source, in stack order.

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        A folder (its image files, see :data:`IMAGE_SUFFIXES`, hidden files skipped), a single
        file, a glob pattern (``"stack/*.png"``, ``**`` recurses), or a list of any of these.
        Folders and patterns are expanded in natural order (``frame2`` before ``frame10``,
        case-insensitive); a list keeps its own order.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        If a path that is not a pattern does not exist.
    ValueError
        If the source yields no file (an empty folder, list, or a pattern matching nothing).
    TypeError
        If ``source`` is not a path or a sequence of paths.

    Examples
    --------
    >>> sorted(["f10.png", "f2.png", "f1.png"], key=_natural_key)
    ['f1.png', 'f2.png', 'f10.png']
    """
    if isinstance(source, (str, os.PathLike)):
        items: list[PathLike] = [source]
    elif isinstance(source, Iterable):
        items = list(source)
        if not items:
            raise ValueError("empty stack: source is an empty list")
    else:
        raise TypeError(
            f"source must be a path, a glob pattern or a list of them, got "
            f"{type(source).__name__} {source!r}"
        )
    files: list[Path] = []
    for item in items:
        files.extend(_expand(item))
    return files


# --------------------------------------------------------------------------------------------
# reading


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
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
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
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for k in (10, 2, 1):
    ...         _ = write_image(f"{tmp}/f{k}.png", np.full((4, 5), k, np.uint8))
    ...     [int(f[0, 0]) for f in iter_stack(tmp)]
    [1, 2, 10]
    """
    for frame in iter_frames(source, as_gray=as_gray):
        yield frame.image


def is_stack_source(obj: Any) -> bool:
    """Say whether ``obj`` names files: a path, a glob pattern, or a non-empty list of them.

    Examples
    --------
    >>> is_stack_source("stack/*.png"), is_stack_source(["a.tif", Path("b.tif")])
    (True, True)
    >>> is_stack_source(np.zeros((2, 4, 4))), is_stack_source([np.zeros((4, 4))])
    (False, False)
    """
    if isinstance(obj, (str, os.PathLike)):
        return True
    if isinstance(obj, (list, tuple)) and obj:
        return all(isinstance(item, (str, os.PathLike)) for item in obj)
    return False


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


# --------------------------------------------------------------------------------------------
# writing


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


def _deflate_parallel(data: bytes, level: int) -> bytes:
    """zlib-compress ``data`` in independent chunks on several threads (as pigz does).

    Each chunk is raw-deflated and ended with a sync flush (the last one with a final block),
    so the concatenation is one valid deflate stream; the zlib header and the Adler-32 of the
    whole data frame it (RFC 1950/1951). zlib releases the GIL, so the chunks run in parallel.
    """
    chunk = 4 << 20
    workers = min(os.cpu_count() or 1, 8, max(1, len(data) // chunk))
    if workers == 1:
        return zlib.compress(data, level)
    from concurrent.futures import ThreadPoolExecutor

    view = memoryview(data)
    bounds = [(i, min(i + chunk, len(data))) for i in range(0, len(data), chunk)]

    def deflate(k: int) -> bytes:
        lo, hi = bounds[k]
        comp = zlib.compressobj(level, zlib.DEFLATED, -15)
        last = k == len(bounds) - 1
        return comp.compress(view[lo:hi]) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        body = b"".join(pool.map(deflate, range(len(bounds))))
    header = b"\x78\x01" if level <= 1 else b"\x78\x9c"
    return header + body + struct.pack(">I", zlib.adler32(data) & 0xFFFFFFFF)


def _deflate(filtered: np.ndarray, level: int) -> bytes:
    """Compress ``filtered`` to a zlib stream: libdeflate, or without it zlib on all cores.

    libdeflate at level 1 compresses a 12 MP frame in 0.19 s on one core, smaller than zlib's
    level 1 does in 0.25 s on two.
    """
    codecs: Any
    try:
        import imagecodecs as codecs
    except ImportError:  # a dependency; zlib when it is broken or missing
        codecs = None
    if codecs is not None and codecs.DEFLATE.available:
        return bytes(codecs.deflate_encode(filtered, level=level))
    return _deflate_parallel(filtered.tobytes(), level)


def _png_bytes(image: np.ndarray, level: int) -> bytes:
    """Encode an 8- or 16-bit image as PNG [2]_ (filter Up on every row).

    Pillow cannot write 16-bit colour PNG, and its encoder is slower; this one writes every
    bit depth Pillow reads back, with libdeflate (or zlib on all cores).
    """
    height, width = image.shape[:2]
    channels = _channels(image)
    depth = 8 * image.dtype.itemsize
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    stored = image.astype(">u2") if depth == 16 else image
    rows = np.ascontiguousarray(stored).reshape(height, -1).view(np.uint8)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps mod 256

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", _deflate(filtered, level))
        + chunk(b"IEND", b"")
    )


def _encode(
    fh: Any,
    image: np.ndarray,
    fmt: str,
    photometric: str | None,
    metadata: dict[str, Any] | None = None,
) -> None:
    if fmt == "tiff":
        import tifffile

        if photometric is None:
            photometric = "rgb" if _channels(image) in (3, 4) else "minisblack"
        extrasamples = ("unassalpha",) if photometric == "rgb" and _channels(image) == 4 else None
        tifffile.imwrite(
            fh, image, photometric=photometric, extrasamples=extrasamples, metadata=metadata
        )
        return
    from PIL import Image

    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if fmt == "png":
        fh.write(_png_bytes(image, level=_PNG_LEVEL))
        return
    Image.fromarray(image).save(fh, format="JPEG", quality=95, subsampling=0)


def _atomic_write(path: Path, overwrite: bool, write: Any) -> None:
    """Run ``write(fh)`` into a temporary file beside ``path``, then move it into place."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite=False")
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # "x" mode: never reuses an existing name; the new file honours the umask
    fh = open(tmp, "xb")
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: no clobbering race
            except FileExistsError:
                raise FileExistsError(f"{path} exists and overwrite=False") from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path} exists and overwrite=False") from None
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def write_image(
    path: PathLike,
    image: Any,
    *,
    overwrite: bool = True,
    photometric: str | None = None,
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
    disk, and moved over ``path`` with :func:`os.replace` (atomic on POSIX and Windows), so
    readers see either the old file or the complete new one, never a partial file.

    Examples
    --------
    >>> import tempfile, numpy as np
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
    _atomic_write(p, bool(overwrite), lambda fh: _encode(fh, arr, fmt, photometric))
    return p


#: key of the record :func:`write_depth_map` keeps in the TIFF's JSON description
DEPTH_MAP_KEY = "nanoro_optics"
#: what a map written by :func:`write_depth_map` holds, and the units of a depth map
DEPTH_MAP_KINDS = ("depth", "confidence")
DEPTH_MAP_UNITS = ("um", "frame")


def write_depth_map(
    path: PathLike,
    depth: Any,
    *,
    overwrite: bool = True,
    kind: str = "depth",
    unit: str | None = None,
) -> Path:
    """Write a depth (height) map as a float32 TIFF, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; must end in ``.tif`` or ``.tiff``.
    depth : array_like
        ``(H, W)`` real values (the fuser's depth, in micrometres or frame units). NaN is
        allowed and marks pixels without a depth estimate.
    overwrite : bool, optional
        Replace an existing file (default); see :func:`write_image`.
    kind : {"depth", "confidence"}, optional
        What the map holds (a confidence map is written with this function too).
    unit : {"um", "frame"}, optional
        The depth's unit (``FusionResult.depth_unit``), for ``kind="depth"``.

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
    metadata) under :data:`DEPTH_MAP_KEY`, ``{"kind": ..., "unit": ...}``, so that a
    reader (the napari plugin's) can tell a depth map in um from one in frames; any TIFF
    reader still reads the plain float32 image.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    p = Path(path)
    if p.suffix.lower() not in _TIFF_SUFFIXES:
        raise ValueError(f"cannot write depth map {p}: it must be a .tif or .tiff file")
    arr = np.asarray(depth)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"depth must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"depth must be a non-empty 2-D array, got shape {arr.shape}")
    check_choice(kind, "kind", DEPTH_MAP_KINDS)
    if unit is not None:
        check_choice(unit, "unit", DEPTH_MAP_UNITS)
        if kind != "depth":
            raise ValueError(f"unit is for a depth map, not for kind={kind!r}; give unit=None")
    record = {DEPTH_MAP_KEY: {"kind": kind, "unit": unit}}
    arr32 = arr.astype(np.float32)
    _atomic_write(p, bool(overwrite), lambda fh: _encode(fh, arr32, "tiff", "minisblack", record))
    return p


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
        _write_ome_zarr(p, folder, bool(overwrite), data)
    else:
        _write_ome_tiff(p, bool(overwrite), data)
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
    from ._validation import as_float_array, check_positive

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


def _write_ome_tiff(p: Path, overwrite: bool, data: _OmeContent) -> None:
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

    _atomic_write(p, overwrite, write)


def _write_ome_zarr(p: Path, folder: Path, overwrite: bool, data: _OmeContent) -> None:
    import shutil

    try:
        from yaozarrs import DimSpec, v05
        from yaozarrs.write.v05 import write_bioformats2raw
    except ImportError as exc:
        raise ImportError(
            'OME-Zarr output needs zarr and yaozarrs: pip install "nanoro_optics[omezarr]"'
        ) from exc
    if not overwrite and p.exists():
        raise FileExistsError(f"{p} exists and overwrite=False")

    px, (_, h, w) = data.pixel_size_um, data.planes.shape

    def model(n_c: int, name: str) -> Any:
        dims = [
            DimSpec(name="c", size=n_c),
            DimSpec(name="y", size=h, scale=px, unit="micrometer"),
            DimSpec(name="x", size=w, scale=px, unit="micrometer"),
        ]
        return v05.Image(multiscales=[v05.Multiscale.from_dims(dims, name=name)])

    tmp = folder / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        write_bioformats2raw(
            tmp,
            {
                "0": (model(len(data.names), "fused"), [data.planes]),
                "1": (model(2, "depth"), [data.depth]),
            },
            extra_attributes={"nanoro_optics": {**data.record, "channels": data.names}},
            writer="zarr",
        )
        if overwrite and p.exists():
            old = folder / f".{p.name}.{secrets.token_hex(4)}.old"
            os.rename(p, old)
            try:
                os.rename(tmp, p)
            except BaseException:
                os.rename(old, p)  # the old store back in place
                raise
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            try:
                os.rename(tmp, p)  # fails on an existing store: no clobbering race
            except OSError:
                if p.exists():
                    raise FileExistsError(f"{p} exists and overwrite=False") from None
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
