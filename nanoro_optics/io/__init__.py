"""Reading and writing focus stacks, images and depth maps.

The package's rooms: ``_sources`` (listing stacks, globs, natural order: :func:`is_glob`,
:func:`natural_key`), ``_read`` (frames from the PNG codec, TIFF pages or Pillow;
:class:`FileDecoder`, one per thread), ``_tiff`` (every page of a TIFF), ``_png`` +
``_png_kernels`` (the PNG codec), ``_limits`` (the pixel limit), ``_write`` (images, maps,
JSON), ``_records`` (what an output is), ``_ome`` (OME-TIFF / OME-Zarr) and ``_atomic`` (the
one atomic-write helper every writer uses, and :class:`OutputSet`).

A *stack source* is a folder, a file (a multi-page TIFF or OME-TIFF holds a whole stack; any other
image file holds one frame), a glob pattern, or a list of those. Files found in a folder or by a
glob are taken in natural order (``frame2`` before ``frame10``); the files of a list keep the order
the list gives.

Frames are read lazily by :func:`iter_stack` (one frame in memory at a time), so a stack of
hundreds of 20 MP frames can be fused without holding it. Every error names the file, and for a
stack the frame index, that caused it.

Writing is atomic: every writer encodes into a temporary file in the destination folder and
moves it into place when complete (:class:`OutputSet`), so a failure (a bad dtype for the
format, a full disk, an interrupt) never leaves a partial file or clobbers an existing one; the
outputs of one run can be committed together, all or none, with one :class:`OutputSet`.
TIFF keeps every dtype (16-bit and float included); PNG holds 8- and 16-bit integers (16-bit
colour included, which Pillow alone truncates to 8 bits); JPEG holds 8-bit only.

Sizes read from headers are checked against :data:`MAX_PIXELS` before any memory is taken
(see ``io/_limits.py``), so a damaged file or a decompression bomb is refused with a
ValueError naming the file, the size and the limit. Outputs carry a record of what they are
(:func:`output_record`: a fused image, a depth or confidence map, with the settings and the
pixel size), so that a later run can leave them out of a stack.

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

from ._atomic import OutputSet
from ._limits import DEFAULT_MAX_PIXELS
from ._ome import FUSION_OME_NAMESPACE, FUSION_OME_SUFFIXES, write_fusion_ome
from ._read import (
    FileDecoder,
    StackFrame,
    as_frames,
    iter_frames,
    iter_stack,
    png_frame_format,
    read_image,
    read_stack,
)
from ._records import (
    DEPTH_MAP_KEY,
    DEPTH_MAP_KINDS,
    DEPTH_MAP_UNITS,
    OUTPUT_KINDS,
    RECORD_KEY,
    map_record,
    output_record,
)
from ._sources import (
    IMAGE_SUFFIXES,
    WRITE_SUFFIXES,
    PathLike,
    StackSource,
    is_glob,
    is_stack_source,
    list_stack_files,
    natural_key,
)
from ._write import check_image_format, write_depth_map, write_image, write_json

#: Frames whose header claims more pixels (height x width) are refused before they are read;
#: None: the NANORO_MAX_PIXELS environment variable, else DEFAULT_MAX_PIXELS (about 179 MP).
MAX_PIXELS: int | None = None

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEPTH_MAP_KEY",
    "DEPTH_MAP_KINDS",
    "DEPTH_MAP_UNITS",
    "FUSION_OME_NAMESPACE",
    "FUSION_OME_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "OUTPUT_KINDS",
    "RECORD_KEY",
    "WRITE_SUFFIXES",
    "FileDecoder",
    "OutputSet",
    "PathLike",
    "StackFrame",
    "StackSource",
    "as_frames",
    "check_image_format",
    "is_glob",
    "is_stack_source",
    "iter_frames",
    "iter_stack",
    "list_stack_files",
    "map_record",
    "natural_key",
    "output_record",
    "png_frame_format",
    "read_image",
    "read_stack",
    "write_depth_map",
    "write_fusion_ome",
    "write_image",
    "write_json",
]
