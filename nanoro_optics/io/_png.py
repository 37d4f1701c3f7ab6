"""A fast reader for the PNG files a focus stack is usually saved as (private).

Pillow decodes a large RGB PNG on one core, most of the time in zlib's inflate;
a stack of 20 such frames spends longer decoding than fusing. This reader parses the chunks
itself, inflates the image data with libdeflate (through ``imagecodecs``, a dependency, faster
than zlib) and undoes the scanline filters in a numba kernel that
releases the GIL, so the CLI's decoding thread runs beside the fuser.

It handles what cameras and stacking software write: 8- and 16-bit grey, grey+alpha, RGB and
RGBA, not interlaced. Anything else (palette, 1/2/4-bit, Adam7 interlacing, an ``eXIf`` chunk,
whose orientation Pillow applies) returns None and the caller falls back to Pillow.

References
----------
.. [1] W3C, "Portable Network Graphics (PNG) Specification (Third Edition)", 2025,
   sections 7.3 (filter types) and 11.2 (critical chunks).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._limits import check_pixels, resolve_max_pixels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: colour type -> samples per pixel (palette, 3, is left to Pillow)
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
#: valid bit depths of each colour type (PNG spec, table 11.1)
BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: the most a deflate stream can expand (258 bytes from a 2-bit match code: zlib's FAQ)
_DEFLATE_MAX_RATIO = 1032
#: deflate level of written PNG: level 1 trades slightly larger files for much faster writes
_PNG_LEVEL = 1


class PngBuffers:
    """Buffers that :func:`read_png` decodes into, kept from one file to the next.

    A stack's frames all have the same size; decoding each into fresh memory costs a page
    fault per 4 KiB and, through the
    allocator, keeps several frames' worth of memory mapped. With one ``PngBuffers`` every
    frame lands in the same memory, so **a frame is valid only until the next one is read**
    with the same buffers.
    """

    def __init__(self) -> None:
        self._file = bytearray()
        self._raw = np.empty(0, dtype=np.uint8)

    # A buffer that must grow is dropped before its successor is made: its contents are
    # not kept, and the two would otherwise be in memory together for a moment (the files
    # of a stack often grow frame by frame, and that moment adds to the peak of a run)

    def file(self, size: int) -> bytearray:
        if len(self._file) < size:
            self._file = bytearray()
            self._file = bytearray(size)
        return self._file

    def raw(self, size: int) -> np.ndarray:
        if self._raw.size < size:
            self._raw = np.empty(0, dtype=np.uint8)
            self._raw = np.empty(size, dtype=np.uint8)
        return self._raw[:size]


@dataclass(frozen=True)
class PngHeader:
    """The image header (IHDR) of a PNG file, checked as libpng checks it."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int

    @property
    def samples(self) -> int:
        """Samples per pixel as stored (a palette index is one)."""
        return CHANNELS.get(self.colour_type, 1)

    def data_bytes(self) -> int:
        """Bytes of filtered scanlines the image data must inflate to (not interlaced)."""
        row_bits = self.width * self.samples * self.bit_depth
        return self.height * (1 + (row_bits + 7) // 8)

    def check_size(self, path: Path, max_pixels: int, file_size: int) -> None:
        """Refuse a header whose size exceeds ``max_pixels`` or that the file cannot hold."""
        check_pixels(path, self.height, self.width, max_pixels)
        needed = self.data_bytes() // (2 if self.interlace else 1)  # Adam7: a lower bound
        if file_size * _DEFLATE_MAX_RATIO < needed:
            raise ValueError(
                f"cannot read {path}: its header claims {self.width} x {self.height} pixels, "
                f"which no {file_size}-byte PNG can hold (at most {_DEFLATE_MAX_RATIO}:1 "
                "compression): truncated or damaged file"
            )


def parse_header(head: Any, path: Path) -> PngHeader | None:
    """Read the IHDR from a file's first 33 bytes; None if ``head`` is not a PNG's start.

    Raises
    ------
    ValueError
        A PNG whose IHDR is damaged or invalid (bad length or CRC, zero or too large a size,
        compression or filter method other than 0, interlace method other than 0 or 1, a bit
        depth the colour type does not allow), naming the file and the field, as libpng and
        Pillow refuse them.
    """
    head = bytes(head[:33])
    if len(head) < 16 or head[:8] != PNG_SIGNATURE:
        return None
    if head[12:16] != b"IHDR":
        raise ValueError(f"cannot read {path}: invalid PNG, the first chunk is not IHDR")
    if len(head) < 33:
        raise ValueError(f"cannot read {path}: truncated PNG (IHDR cut short)")
    (length,) = struct.unpack(">I", head[8:12])
    if length != 13:
        raise ValueError(f"cannot read {path}: invalid PNG, IHDR has {length} bytes, not 13")
    (crc,) = struct.unpack(">I", head[29:33])
    if zlib.crc32(head[12:29]) & 0xFFFFFFFF != crc:
        raise ValueError(f"cannot read {path}: corrupt PNG (bad CRC in chunk b'IHDR')")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", head[16:29]
    )
    problems = []
    for name, value in (("width", width), ("height", height)):
        if not 1 <= value <= 2**31 - 1:
            problems.append(f"{name} {value} (must be 1 to 2**31 - 1)")
    if colour not in BIT_DEPTHS:
        problems.append(f"colour type {colour} (must be one of {sorted(BIT_DEPTHS)})")
    elif depth not in BIT_DEPTHS[colour]:
        problems.append(
            f"bit depth {depth} for colour type {colour} (must be one of {BIT_DEPTHS[colour]})"
        )
    if compression != 0:
        problems.append(f"compression method {compression} (only 0 is defined)")
    if filtering != 0:
        problems.append(f"filter method {filtering} (only 0 is defined)")
    if interlace not in (0, 1):
        problems.append(f"interlace method {interlace} (must be 0 or 1)")
    if problems:
        raise ValueError(f"cannot read {path}: invalid PNG header (IHDR): {'; '.join(problems)}")
    return PngHeader(width, height, depth, colour, interlace)


def read_header(path: Path) -> PngHeader | None:
    """Return the checked IHDR of the file ``path``, or None if it is not a PNG."""
    with open(path, "rb") as fh:
        return parse_header(fh.read(33), path)


def _read_file(path: Path, buffers: PngBuffers | None) -> memoryview:
    if buffers is None:
        return memoryview(path.read_bytes())
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        view = memoryview(buffers.file(size))[:size]
        got = fh.readinto(view)
    return view[:got]


def _inflate(data: Any, size: int, path: Path, buffers: PngBuffers | None) -> np.ndarray:
    """Inflate the zlib stream ``data`` to exactly ``size`` bytes (a writable array)."""
    import imagecodecs

    raw: Any = np.empty(size, dtype=np.uint8) if buffers is None else buffers.raw(size)
    try:
        raw = imagecodecs.deflate_decode(data, out=raw)
    except Exception as exc:  # imagecodecs.DeflateError and friends
        raise ValueError(f"cannot read {path}: corrupt PNG data ({exc})") from exc
    if len(raw) != size:
        raise ValueError(
            f"cannot read {path}: PNG image data has {len(raw)} bytes, expected {size} "
            "(truncated or corrupt file)"
        )
    return np.asarray(raw)


def _chunks(blob: Any, path: Path) -> tuple[list[tuple[int, int]], bool]:
    """Walk the chunks up to IEND, checking every CRC.

    Returns the ``(offset, length)`` of each IDAT chunk's data and whether there is an
    ``eXIf`` chunk.
    """
    idat: list[tuple[int, int]] = []
    exif = False
    pos = 8
    while True:
        if pos + 12 > len(blob):
            raise ValueError(f"cannot read {path}: truncated PNG (no IEND chunk)")
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = bytes(blob[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > len(blob):
            raise ValueError(f"cannot read {path}: truncated PNG (chunk {kind!r} cut short)")
        body = blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[end - 4 : end])
        if zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF != crc:
            raise ValueError(f"cannot read {path}: corrupt PNG (bad CRC in chunk {kind!r})")
        if kind == b"IDAT":
            idat.append((pos + 8, length))
        elif kind == b"eXIf":
            exif = True
        elif kind == b"IEND":
            return idat, exif
        pos = end


#: Adam7 passes: first column, first row, column step, row step (PNG spec, section 8.2)
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def filtered_size(header: PngHeader) -> int:
    """Bytes the image data of ``header`` inflates to: filter bytes and packed samples."""
    bits = header.samples * header.bit_depth
    if not header.interlace:
        return header.data_bytes()
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        pw = (header.width - x0 + dx - 1) // dx
        ph = (header.height - y0 + dy - 1) // dy
        if pw > 0 and ph > 0:
            total += ph * (1 + (pw * bits + 7) // 8)
    return total


def verify_png(path: Path, header: PngHeader) -> None:
    """Check a PNG that Pillow will decode: every chunk's CRC, and image data of exact size.

    Pillow skips the CRC of image data and decodes an image from a stream longer than
    the header needs (libpng warns of "extra compressed data"); a damaged height or width
    would then pass unseen. The data is inflated with a bound, never past the size needed.
    """
    blob = memoryview(path.read_bytes())
    idat, _ = _chunks(blob, path)
    if not idat:
        raise ValueError(f"cannot read {path}: invalid PNG, no IDAT chunk")
    need = filtered_size(header)
    inflater = zlib.decompressobj()
    got = 0
    try:
        for offset, length in idat:
            got += len(inflater.decompress(blob[offset : offset + length], need + 1 - got))
            if got > need or inflater.unconsumed_tail:
                break
        complete = inflater.eof
    except zlib.error as exc:
        raise ValueError(f"cannot read {path}: corrupt PNG data ({exc})") from exc
    if got > need or inflater.unconsumed_tail:
        raise ValueError(
            f"cannot read {path}: PNG image data holds more than the {need} bytes its header "
            "needs (a damaged width or height)"
        )
    if got < need:
        raise ValueError(
            f"cannot read {path}: PNG image data has {got} bytes, expected {need} "
            "(truncated or corrupt file)"
        )
    if not complete:
        raise ValueError(f"cannot read {path}: corrupt PNG data (the stream does not end)")


def read_png(
    path: Path, *, buffers: PngBuffers | None = None, max_pixels: int | None = None
) -> np.ndarray | None:
    """Decode the PNG file ``path``; None when it is a kind this reader leaves to Pillow.

    Returns ``(H, W)`` for grey, else ``(H, W, C)``; uint8 or uint16 (native byte order).
    An 8-bit image is a view of the decoded buffer (for colour, a strided view that skips
    each row's filter byte), which spares a copy of a large frame; 16-bit images are new
    arrays. With ``buffers`` the file is read and decoded into those, reused from call to
    call: the 8-bit image returned then lives only until the next call with them.

    Raises
    ------
    ValueError
        Truncated file, bad chunk CRC, corrupt image data, an invalid header or filter type,
        an image over ``max_pixels`` (default :data:`nanoro_optics.io.MAX_PIXELS`), with the
        file's name.
    """
    limit = resolve_max_pixels(max_pixels)
    blob = _read_file(path, buffers)
    header = parse_header(blob, path)
    if header is None:
        return None
    header.check_size(path, limit, len(blob))
    width, height, depth, colour = header.width, header.height, header.bit_depth, header.colour_type
    if colour not in CHANNELS or depth not in (8, 16) or header.interlace:
        return None
    channels = CHANNELS[colour]
    idat, has_exif = _chunks(blob, path)
    if has_exif:
        return None  # Pillow applies the orientation it may carry
    bpp = channels * depth // 8
    stride = 1 + width * bpp
    if not idat:
        raise ValueError(f"cannot read {path}: invalid PNG, no IDAT chunk")
    start = idat[0][0] if idat else 0
    total = sum(length for _, length in idat)
    if total * _DEFLATE_MAX_RATIO < height * stride:  # before the image's memory is taken
        raise ValueError(
            f"cannot read {path}: {total} bytes of PNG image data cannot hold the "
            f"{width} x {height} image the header claims (truncated or damaged file)"
        )
    if len(idat) <= 1:
        stream: Any = blob[start : start + total]
    elif buffers is not None:
        # the file is in our own buffer: move the chunks' data together in place, which
        # spares a second buffer the size of the file (CRCs were checked above)
        arr = np.frombuffer(blob, dtype=np.uint8)
        at = start
        for offset, length in idat:
            arr[at : at + length] = arr[offset : offset + length]
            at += length
        stream = blob[start : start + total]
    else:
        stream = b"".join(blob[offset : offset + length] for offset, length in idat)
    data = _inflate(stream, height * stride, path, buffers).reshape(height, stride)
    from ._png_kernels import unfilter

    bad = unfilter(data, bpp)  # in place: row y's pixels end up in data[y, 1:]
    if bad >= 0:
        raise ValueError(
            f"cannot read {path}: invalid PNG filter type {int(data[bad, 0])} in row {bad}"
        )
    pixels = data[:, 1:]
    if depth == 16:
        image = pixels.view(">u2").astype(np.uint16)  # a new, native-order, contiguous array
    elif channels == 1:
        # a view that skips each row's filter byte
        return np.lib.stride_tricks.as_strided(pixels, (height, width), (stride, 1), writeable=True)
    else:
        # a view that skips each row's filter byte: no second copy of a large frame
        return np.lib.stride_tricks.as_strided(
            pixels, (height, width, channels), (stride, channels, 1), writeable=True
        )
    return image.reshape((height, width) if channels == 1 else (height, width, channels))


# --------------------------------------------------------------------------------------------
# encoding


def _deflate(filtered: np.ndarray, level: int) -> bytes:
    """Compress ``filtered`` to a zlib stream with libdeflate (imagecodecs)."""
    import imagecodecs

    encode: Any = imagecodecs.deflate_encode  # takes any buffer, its stubs say bytes
    return bytes(encode(filtered, level=level))


def encode_png(
    image: np.ndarray,
    level: int = _PNG_LEVEL,
    *,
    text: dict[str, str] | None = None,
    pixels_per_metre: int | None = None,
) -> bytes:
    """Encode an 8- or 16-bit image as PNG [1]_ (filter Up on every row).

    Pillow cannot write 16-bit colour PNG, and its encoder is slower; this one writes every
    bit depth Pillow reads back, compressed with libdeflate. ``text`` becomes ``tEXt``
    chunks (Latin-1 keyword and text) and ``pixels_per_metre`` a ``pHYs`` chunk, both
    before the image data.
    """
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else int(image.shape[2])
    depth = 8 * image.dtype.itemsize
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    stored = image.astype(">u2") if depth == 16 else image
    rows = np.ascontiguousarray(stored).reshape(height, -1).view(np.uint8)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps mod 256

    def chunk(kind: bytes, body: bytes) -> list[bytes]:
        crc = zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF  # (no copy of a large body)
        return [struct.pack(">I", len(body)), kind, body, struct.pack(">I", crc)]

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    parts = [PNG_SIGNATURE, *chunk(b"IHDR", ihdr)]
    if pixels_per_metre is not None:
        parts += chunk(b"pHYs", struct.pack(">IIB", pixels_per_metre, pixels_per_metre, 1))
    for key, value in (text or {}).items():
        parts += chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    parts += chunk(b"IDAT", _deflate(filtered, level))
    parts += chunk(b"IEND", b"")
    return b"".join(parts)  # one copy of the image data
