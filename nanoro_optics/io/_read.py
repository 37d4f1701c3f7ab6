"""Reading frames: TIFF pages, the PNG codec or Pillow, one frame at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_bool
from ._limits import check_pixels, resolve_max_pixels
from ._sources import (
    _TIFF_SUFFIXES,
    PathLike,
    StackSource,
    is_stack_source,
    list_stack_files,
)
from ._tiff import iter_tiff

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


def png_frame_format(
    path: PathLike, *, max_pixels: int | None = None
) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of the frame a PNG file should read as, from its header alone.

    None when the file is not a PNG or is one :func:`read_image` hands to Pillow (palette,
    1-4 bit, interlaced). An ``eXIf`` orientation, applied when the file is read, may still
    swap the two axes: this is a guess to prepare for, not a promise.

    Parameters
    ----------
    path : str or os.PathLike
        The file; only its first 33 bytes and its size are read.
    max_pixels : int, optional
        The pixel limit (default :data:`nanoro_optics.io.MAX_PIXELS`).

    Raises
    ------
    ValueError
        A PNG whose header is invalid, claims more than ``max_pixels`` pixels, or more image
        data than the file's size can hold (so that nothing is sized from such a header).
    """
    from ._png import CHANNELS, read_header

    limit = resolve_max_pixels(max_pixels)
    p = Path(path)
    header = read_header(p)
    if header is None:
        return None
    header.check_size(p, limit, p.stat().st_size)
    channels = CHANNELS.get(header.colour_type)
    if channels is None or header.bit_depth not in (8, 16) or header.interlace:
        return None
    shape: tuple[int, ...] = (header.height, header.width)
    if channels > 1:
        shape = (*shape, channels)
    return shape, np.dtype(np.uint8 if header.bit_depth == 8 else np.uint16)


def _read_pil(path: Path, max_pixels: int) -> np.ndarray:
    import warnings

    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        # Pillow warns from 89 MP: the pixel limit below is this reader's decision
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im_file = Image.open(path)
    with im_file as im:
        check_pixels(path, im.size[1], im.size[0], max_pixels)
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


def _read_single(path: Path, buffers: Any, max_pixels: int) -> np.ndarray:
    """Read a non-TIFF image file as one frame (EXIF orientation applied).

    ``buffers`` (a :class:`._png.PngBuffers`) lets PNG frames be decoded into reused memory.
    """
    try:
        from ._png import read_header

        header = read_header(path)
        if header is not None:
            from ._png import read_png, verify_png

            header.check_size(path, max_pixels, path.stat().st_size)
            image = read_png(path, buffers=buffers, max_pixels=max_pixels)
            if image is not None:
                return image
            if header.bit_depth == 16 and header.colour_type in (2, 4, 6):  # Pillow: 8 bits
                raise ValueError(
                    f"cannot read {path}: interlaced 16-bit colour PNG is not supported"
                )
            verify_png(path, header)  # what Pillow does not check
        return _read_pil(path, max_pixels)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # PIL raises OSError / SyntaxError / UnidentifiedImageError
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _iter_file(path: Path, buffers: Any, max_pixels: int) -> Iterator[np.ndarray]:
    if path.suffix.lower() in _TIFF_SUFFIXES:
        yield from iter_tiff(path, max_pixels)
    else:
        yield _read_single(path, buffers, max_pixels)


class FileDecoder:
    """Decodes stack files one after another (one decoder per thread).

    With ``reuse_buffer`` (default) it decodes into buffers of its own: 8-bit PNG frames
    land in the same memory every time, so a frame lives only until the next file is read
    with the same decoder. A decoder is not thread-safe: give each thread its own.

    Parameters
    ----------
    reuse_buffer : bool, keyword-only
        Decode into the decoder's own buffers (default True); False gives every frame
        memory of its own.
    max_pixels : int, keyword-only, optional
        Refuse a frame whose header claims more pixels (height x width) than this; default
        :data:`nanoro_optics.io.MAX_PIXELS`.
    """

    def __init__(self, *, reuse_buffer: bool = True, max_pixels: int | None = None) -> None:
        check_bool(reuse_buffer, "reuse_buffer")
        self._max_pixels = resolve_max_pixels(max_pixels)
        self._buffers: Any = None
        if reuse_buffer:
            from ._png import PngBuffers

            self._buffers = PngBuffers()

    def frames(self, path: PathLike) -> Iterator[np.ndarray]:
        """Yield the frames of one file (the pages of a TIFF, else the one image)."""
        yield from _iter_file(Path(path), self._buffers, self._max_pixels)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.shape[-1] in (1, 2):  # grey (+ alpha)
        return image[..., 0].astype(np.float32)
    return np.tensordot(image[..., :3].astype(np.float32), _LUMA, axes=([-1], [0]))


def iter_frames(
    source: StackSource,
    *,
    as_gray: bool = False,
    reuse_buffer: bool = False,
    max_pixels: int | None = None,
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
    max_pixels : int, optional
        Refuse a frame whose header claims more pixels (height x width) than this, before
        any memory is taken for it; default :data:`nanoro_optics.io.MAX_PIXELS` (about
        179 MP unless raised, see :mod:`nanoro_optics.io._limits`).

    Yields
    ------
    StackFrame

    Raises
    ------
    ValueError
        An unreadable, damaged or truncated file, or one whose header claims more than
        ``max_pixels`` (the message names it, the size and the limit); a TIFF page whose
        shape or dtype differs from the file's first (naming file, page, shape and dtype); a
        frame whose shape or dtype differs from the first frame's, or a float frame with NaN
        or infinite pixels (the message names the frame index and file); an empty stack.
    FileNotFoundError
        A path that does not exist.
    """
    check_bool(as_gray, "as_gray")
    check_bool(reuse_buffer, "reuse_buffer")
    files = list_stack_files(source)
    decoder = FileDecoder(reuse_buffer=reuse_buffer, max_pixels=max_pixels)
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


def iter_stack(
    source: StackSource, *, as_gray: bool = False, max_pixels: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the frames of a stack one at a time (lazily: one frame in memory at a time).

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        A folder, a file, a glob pattern or a list of them (see :func:`list_stack_files`).
        A multi-page TIFF or OME-TIFF yields every page of every image series (a file
        written one page per write included; ImageJ and OME hyperstacks along their Z or T
        axis; pages holding a volume are split into planes; planar RGB is returned as
        ``(H, W, 3)``; reduced-resolution pages are skipped).
    as_gray : bool, optional
        Yield float32 Rec. 709 luminance in the file's units instead of the stored pixels.
    max_pixels : int, optional
        Refuse a frame whose header claims more pixels (height x width) than this, before
        any memory is taken for it; default :data:`nanoro_optics.io.MAX_PIXELS` (about
        179 MP unless raised, see :mod:`nanoro_optics.io._limits`).

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
    for frame in iter_frames(source, as_gray=as_gray, max_pixels=max_pixels):
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


def read_stack(
    source: StackSource, *, as_gray: bool = False, max_pixels: int | None = None
) -> np.ndarray:
    """Read a whole stack into one array ``(N, H, W[, C])``.

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        See :func:`list_stack_files` and :func:`iter_stack`.
    as_gray, max_pixels : optional
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
    frames = list(iter_stack(source, as_gray=as_gray, max_pixels=max_pixels))
    out = np.empty((len(frames), *frames[0].shape), dtype=frames[0].dtype)
    for k in range(len(frames)):
        out[k] = frames[k]
        frames[k] = out[k]  # drop the reference to the decoded copy as we go
    return out


def read_image(path: PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file (EXIF orientation applied to JPEG/PNG).

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF with a single image, or a PNG, JPEG or BMP file.
    max_pixels : int, optional
        See :func:`iter_frames`.

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
    frames = iter(_iter_file(p, None, resolve_max_pixels(max_pixels)))
    try:
        image = next(frames)
    except StopIteration:
        raise ValueError(f"cannot read {p}: the file holds no image") from None
    for _ in frames:
        raise ValueError(f"{p} holds more than one image; read it with read_stack")
    return np.ascontiguousarray(image)  # the PNG reader may hand over a strided view
