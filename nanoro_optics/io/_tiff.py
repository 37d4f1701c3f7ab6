"""Frames of a TIFF: every page of every image series, checked before it is decoded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._limits import check_pixels


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


class _Refused(ValueError):
    """A file refused by this reader (its message names the file already)."""


def _check_page_in_file(page: Any, size: int, path: Path, k: int) -> None:
    """Refuse a page whose strips or tiles lie past the end of the file or hold no data.

    tifffile decodes a compressed strip of byte count 0 to zeros: pixels the file does not
    hold. A single uncompressed strip with a bogus byte count is read, as libtiff reads it,
    when the pixels its shape needs lie inside the file.
    """
    offsets: tuple[int, ...] = tuple(getattr(page, "dataoffsets", ()) or ())
    counts: tuple[int, ...] = tuple(getattr(page, "databytecounts", ()) or ())
    compressed = getattr(page, "compression", 1) != 1
    tags = getattr(page, "tags", None)
    samples = tags.get("SamplesPerPixel") if tags is not None else None
    if samples is not None and not int(samples.value) >= 1:  # tifffile reads it as 1
        raise _Refused(
            f"cannot read {path}: damaged TIFF, page {k} has SamplesPerPixel {samples.value}"
        )
    for i, (off, cnt) in enumerate(zip(offsets, counts, strict=False)):
        if cnt and off < 8:  # bytes 0-7 are the TIFF header: never pixel data
            raise _Refused(
                f"cannot read {path}: damaged TIFF, strip/tile {i} of page {k} starts at "
                f"byte {off}, inside the file header"
            )
        if off + cnt > size:
            raise _Refused(
                f"cannot read {path}: truncated TIFF, page {k} needs bytes up to {off + cnt} "
                f"but the file has {size}"
            )
        if cnt == 0 and compressed:
            raise _Refused(
                f"cannot read {path}: damaged TIFF, strip/tile {i} of page {k} holds no data "
                "(byte count 0)"
            )
    nbytes = int(getattr(page, "nbytes", 0) or 0)
    whole_bytes = int(getattr(page, "bitspersample", 0) or 0) % 8 == 0  # 1-bit pages pack
    if compressed or not whole_bytes or not counts or sum(counts) >= nbytes:
        return
    if len(offsets) != 1 or offsets[0] + nbytes > size:
        raise _Refused(
            f"cannot read {path}: damaged TIFF, page {k} holds {sum(counts)} bytes of "
            f"uncompressed pixels but its shape needs {nbytes}"
        )


def _frame_format(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """Return the shape of one frame of a page of ``shape``/``axes`` (planar colour moved last)."""
    if axes.startswith("S") and axes.endswith("YX"):
        shape, axes = (*shape[1:], shape[0]), axes[1:] + "S"
    lead = len(axes) - (3 if axes.endswith("S") else 2)
    return tuple(shape[max(lead, 0) :])


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


def _series_pages(series: Any, path: Path) -> list[Any]:
    """Return the pages of one image series, checked against the series' own shape."""
    pages = list(series.pages)
    page_axes = pages[0].axes if pages and pages[0] is not None else ""
    outer = series.axes[: len(series.axes) - len(page_axes)] if page_axes else ""
    multi = [
        f"{ax}={n}"
        for ax, n in zip(series.axes, series.shape, strict=True)
        if ax in outer and n > 1 and ax not in "YXS"
    ]
    if len(multi) > 1:
        raise _Refused(
            f"cannot read {path} as a focus stack: it has more than one axis besides "
            f"Y, X and colour ({', '.join(multi)}; axes {series.axes!r}); "
            "save one channel / time point per file"
        )
    expected = int(
        np.prod([n for ax, n in zip(series.axes, series.shape, strict=True) if ax in outer])
    )
    if len(pages) < expected:
        raise _Refused(
            f"cannot read {path}: truncated TIFF, {len(pages)} of {expected} pages present"
        )
    return pages


def _is_reduced(series: Any) -> bool:
    """Say whether a series holds reduced-resolution pages (thumbnails, pyramid levels)."""
    first = series.pages[0] if len(series.pages) else None
    return bool(first is not None and getattr(first, "is_reduced", False))


def iter_tiff(path: Path, max_pixels: int) -> Iterator[np.ndarray]:
    """Yield every frame of a TIFF: all pages of all its image series, in file order.

    A file written one page per write (tifffile's streaming pattern, many acquisition
    programs) holds one series per page; ImageJ and OME hyperstacks hold their frames in one
    series along Z (or T); every one of them is a frame. Reduced-resolution pages
    (thumbnails, pyramid levels, ``NewSubfileType`` bit 0) are not frames and are skipped.
    Every page's shape and dtype are checked against the first frame's, and its size against
    the pixel limit, before it is decoded.

    Raises
    ------
    ValueError
        Naming the file (and the page): damaged or truncated file, a page that differs from
        the first in shape or dtype, a page over the pixel limit, more than one stack axis.
    """
    import tifffile

    size = path.stat().st_size
    try:
        with _tiff_errors(path), tifffile.TiffFile(path) as tif:
            groups = [_series_pages(s, path) for s in tif.series if not _is_reduced(s)]
            if not groups:
                raise _Refused(f"cannot read {path}: the TIFF holds no image")
            first: tuple[tuple[int, ...], np.dtype] | None = None
            k = 0
            for pages in groups:
                for page in pages:
                    if page is None:
                        raise _Refused(f"cannot read {path}: page {k} is missing")
                    shape = _frame_format(tuple(page.shape), page.axes)
                    check_pixels(path, shape[0], shape[1], max_pixels, f", page {k}")
                    if first is None:
                        first = (shape, np.dtype(page.dtype))
                    elif (shape, np.dtype(page.dtype)) != first:
                        raise _Refused(
                            f"cannot read {path} as a focus stack: page {k} has shape {shape} "
                            f"and dtype {page.dtype}, but page 0 has shape {first[0]} and dtype "
                            f"{first[1]}; every page must match"
                        )
                    _check_page_in_file(page, size, path, k)
                    k += 1
            k = 0
            for pages in groups:
                for page in pages:
                    try:
                        arr = page.asarray()
                    except Exception as exc:  # a damaged page
                        raise _Refused(
                            f"cannot read {path}, page {k}: {type(exc).__name__}: {exc}"
                        ) from exc
                    yield from _page_frames(arr, page.axes)
                    k += 1
    except _Refused:
        raise
    except Exception as exc:  # tifffile raises many types (some ValueError) on damaged files
        if str(path) in str(exc) and isinstance(exc, ValueError):
            raise
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
