"""``nanoro-optics fuse``: fuse a focus stack from image files into one sharp image.

The command parses, builds one :class:`~nanoro_optics.fusion.FusionOptions` and calls the file
pipeline (:func:`nanoro_optics.pipeline.fuse_to_files`), which reads, fuses and writes: nothing
is written unless the whole stack fused (a bad frame stops the run with an error that names
the file), and the outputs appear together or not at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from .._text import plural
from ._first_run import compile_notice
from ._fusion_options import (
    add_fusion_arguments,
    check_output_options,
    fusion_options,
    unused_option_notes,
)

COMMAND = "fuse"
HELP = "Fuse a focus stack (image files, a folder, a multi-page TIFF) into one sharp image."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options to ``parser``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files in focus order, folders (natural order: f2 before f10), glob "
        "patterns (quoted or not), or multi-page TIFF / OME-TIFF stacks; the outputs "
        "are never read as frames",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="fused image: .tif/.tiff (keeps 16-bit and float), .png (8/16-bit), .jpg (8-bit)",
    )
    parser.add_argument(
        "--depth-map",
        metavar="PATH",
        help="also write the depth map as a float32 TIFF (frame index, or um with --z-step-um)",
    )
    parser.add_argument(
        "--confidence",
        metavar="PATH",
        help="also write the depth confidence (0 to 1) as a float32 TIFF: low where the depth "
        "was filled from neighbouring pixels",
    )
    parser.add_argument(
        "--halo-map",
        metavar="PATH",
        help="with --halo auto, also write where the halo correction acted as a uint8 TIFF "
        "(255: corrected, the only pixels that may lie outside the frames' range; 0: the "
        "pyramid fusion's)",
    )
    parser.add_argument(
        "--pixel-size-um",
        type=float,
        metavar="UM",
        help="the frames' pixel size in the specimen (um, > 0): recorded in every output "
        "(record and resolution tags), so viewers show the maps on the true x/y scale",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist already (default: refuse, and write nothing)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar, first-run notice, crop box or summary line",
    )
    add_fusion_arguments(parser)


class _Progress:
    """The fusing pass's progress bar (tqdm) on a terminal; nothing when not a TTY or quiet."""

    def __init__(self, total: int | None, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self._bar: Any = None

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, file=self.stream, desc="fusing", unit="frame")
        elif self.total is not None and self._bar.total != self.total:
            self._bar.total = self.total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _note(text: str) -> None:
    print(f"nanoro-optics {COMMAND}: note: {text}", file=sys.stderr, flush=True)


#: how the pipeline's messages name the outputs: by their flags
LABELS = {
    "image": "-o",
    "depth": "--depth-map",
    "confidence": "--confidence",
    "halo": "--halo-map",
}


def run(args: argparse.Namespace) -> int:
    """Fuse the stack and write the outputs; return the exit status."""
    from ..pipeline import FusionOutputs, fuse_to_files

    check_output_options(args)
    options = fusion_options(args)
    outputs = FusionOutputs(
        args.output,
        args.depth_map,
        args.confidence,
        pixel_size_um=args.pixel_size_um,
        halo_map=args.halo_map,
    )
    depth_written = outputs.depth is not None
    for text in unused_option_notes(args, depth_written=depth_written):
        _note(text)
    progress = _Progress(None, sys.stderr, not args.quiet)
    t0 = time.perf_counter()
    try:
        # (numba is imported beside the first frame's decoding, not before it)
        with compile_notice(sys.stderr, enabled=not args.quiet, background=True):
            done = fuse_to_files(
                args.inputs,
                outputs,
                options,
                overwrite=args.overwrite,
                progress=progress.update,
                note=_note,
                labels=LABELS,
            )
    except FileExistsError as exc:  # appeared while fusing
        print(f"nanoro-optics fuse: error: {exc}; give --overwrite to replace it", file=sys.stderr)
        return 1
    except FileNotFoundError:
        raise  # a missing input: exit 2, as bad arguments
    except OSError as exc:  # a full disk, a folder not writable: nothing was written
        print(f"nanoro-optics fuse: error: {exc} (no output written)", file=sys.stderr)
        return 1
    finally:
        progress.close()
    if done.crop_box is not None:
        y0, y1, x0, x1 = done.crop_box
        h, w = done.grid_shape
        if (y0, y1, x0, x1) == (0, h, 0, w):
            _note("--crop: nothing to crop, every frame covers the whole image")
        elif not args.quiet:
            _note(
                f"cropped to rows {y0}:{y1}, columns {x0}:{x1} ({y1 - y0} x {x1 - x0} px of "
                f"{h} x {w}), the area every frame covers"
            )
    if not args.quiet:
        shape = "x".join(str(s) for s in done.shape)
        extra = f", depth map {outputs.depth} ({done.depth_unit})" if outputs.depth else ""
        extra += f", confidence {outputs.confidence}" if outputs.confidence else ""
        extra += f", halo map {outputs.halo_map}" if outputs.halo_map else ""
        print(
            f"fused {plural(done.n_frames, 'frame')} ({shape} {done.dtype}) into "
            f"{outputs.image}{extra} in {time.perf_counter() - t0:.1f} s"
        )
        if done.halo is not None:
            rep = done.halo
            if rep.note:
                _note(f"--halo auto: not applied ({rep.note})")
            else:
                print(
                    f"halo correction: {100 * rep.corrected_fraction:.2f} % of the image "
                    f"corrected ({rep.n_tiles} edge tiles examined, check residual "
                    f"{rep.residual_dn:.2f} DN at noise {rep.noise_dn:.2f} DN)"
                )
    return 0
