"""``nanoro-optics fuse``: fuse a focus stack from image files into one sharp image.

Frames are decoded in a background thread into one reused buffer: as soon as the fuser has
copied frame ``k`` the thread decodes frame ``k + 1`` into it while the fuser folds frame
``k`` in, so decoding and fusing overlap on two cores with a single decoded frame in memory.
Nothing is written unless the whole stack fused: a bad frame (different shape or dtype, NaN
pixels, an unreadable or truncated file) stops the run with an error that names the file,
and the output is not touched.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .._text import plural
from ._first_run import announce_compile
from ._fusion_options import (
    add_fusion_arguments,
    check_output_options,
    fuser_options,
    unused_option_notes,
)
from ._memory import fix_mmap_threshold

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


class _End:
    """Marks the end of the frames in the queue."""


class HandOff:
    """Decode frames in a background thread, one ahead of the consumer, into one buffer.

    The thread decodes the next frame as soon as the consumer calls :meth:`release` for the
    current one (or asks for the next), so a consumer that copies each frame first and then
    works on its copy (``StackFuser.add(image, on_copied=handoff.release)``) overlaps the
    decoding of frame ``k + 1`` with its work on frame ``k``, and only one decoded frame is
    ever in memory. ``frames`` may therefore reuse its buffer from frame to frame
    (``iter_frames(..., reuse_buffer=True)``).

    Exceptions raised while decoding are re-raised in the consumer's thread, at the position
    of the frame that failed. Closing the iterator (or leaving a ``for`` loop over it by an
    exception) stops the thread.
    """

    def __init__(self, frames: Iterator[Any]) -> None:
        self._frames = frames
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._free = threading.Semaphore(1)  # the buffer may be decoded into
        self._held = False  # the consumer holds a frame it has not released
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._free.acquire()
                if self._stop.is_set():
                    return
                try:
                    item = next(self._frames)
                except StopIteration:
                    self._queue.put(_End())
                    return
                self._queue.put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._queue.put(exc)

    def release(self) -> None:
        """Say the consumer is done with the current frame: decode the next one now."""
        if self._held:
            self._held = False
            self._free.release()

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                self.release()
                item = self._queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                self._held = True
                yield item
                item = None  # do not hold the frame while waiting for the next one
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoding thread and close ``frames`` (which frees its buffers)."""
        self._stop.set()
        self._free.release()
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()


class _Progress:
    """A one-line text progress bar on a terminal (nothing when not a TTY)."""

    def __init__(self, total: int | None, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if self.total:
            width = 30
            filled = min(width, round(width * done / self.total))
            bar = "#" * filled + "." * (width - filled)
            text = f"\rfusing [{bar}] {done}/{self.total} frames, {elapsed:.1f} s"
        else:
            text = f"\rfusing: {done} frames, {elapsed:.1f} s"
        self.stream.write(text)
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _note(text: str) -> None:
    print(f"nanoro-optics {COMMAND}: note: {text}", file=sys.stderr, flush=True)


def _check_outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Check the output paths (format, folder, not both the same); return ``(flag, path)``."""
    from .. import io as nio

    out = Path(args.output)
    depth = None if args.depth_map is None else Path(args.depth_map)
    if out.suffix.lower() not in nio.WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {out}: unknown image format {out.suffix!r}; use one of "
            f"{', '.join(nio.WRITE_SUFFIXES)}"
        )
    conf = None if args.confidence is None else Path(args.confidence)
    for flag, path, what in (("--depth-map", depth, "depth"), ("--confidence", conf, "confidence")):
        if path is not None and path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"{flag} {path}: the {what} map is a float32 TIFF, use .tif")
    targets = [("-o", out)] + [
        (flag, path) for flag, path in (("--depth-map", depth), ("--confidence", conf)) if path
    ]
    for flag, path in targets:
        if path.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file name")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"{flag} {path}: folder {folder} does not exist")
    for i, (flag_a, a) in enumerate(targets):
        for flag_b, b in targets[i + 1 :]:
            if a.resolve() == b.resolve():
                raise ValueError(f"{flag_a} and {flag_b} are the same file: {a}")
    return targets


def _is_output(path: Path, targets: list[tuple[str, Path]]) -> str | None:
    """Return the flag of the output ``path`` is, if it is one."""
    for flag, target in targets:
        if _same_file(target, path) or target.resolve() == path.resolve():
            return flag
    return None


def _stack_files(inputs: list[str], targets: list[tuple[str, Path]]) -> list[Path]:
    """List the frames' files; outputs found in a folder or by a pattern are left out.

    So are the depth and confidence maps an earlier run wrote there (recognised by the record
    :func:`~nanoro_optics.io.write_depth_map` keeps in them). An output, or such a map, named
    as an input file itself is refused: the user asked to read it.
    """
    from .. import io as nio

    files: list[Path] = []
    for item in inputs:
        explicit = Path(item).expanduser().is_file()
        for f in nio.list_stack_files(item):
            flag = _is_output(f, targets)
            if flag is not None:
                if explicit:
                    raise ValueError(
                        f"{flag} {f} is one of the input files; refusing to overwrite it"
                    )
                _note(f"{f} is the output of {flag}: left out of the stack")
                continue
            record = nio.map_record(f)
            if record is None:
                files.append(f)
            elif explicit:
                raise ValueError(
                    f"{f} is a {record['kind']} map written by nanoro-optics, not a frame; "
                    "leave it out of the inputs"
                )
            else:  # an earlier run's map left beside the frames
                _note(f"{f} is a {record['kind']} map of an earlier run: left out of the stack")
    if not files:
        raise ValueError(f"empty stack: {' '.join(inputs)} holds no frame besides the outputs")
    return files


def _refuse_existing(targets: list[tuple[str, Path]], overwrite: bool) -> None:
    if overwrite:
        return
    for flag, path in targets:
        if path.exists():
            raise ValueError(
                f"{flag} {path} exists already; give --overwrite to replace it "
                "(nothing was written)"
            )


#: frames of at least this size (the decoded frame) have their range pass run with glibc's
#: mmap threshold fixed (:func:`._memory.fix_mmap_threshold`)
LARGE_FRAME_BYTES = 16 << 20


def run(args: argparse.Namespace) -> int:
    """Fuse the stack and write the outputs; return the exit status."""
    import numpy as np

    from .. import io as nio
    from .._numba import max_threads, threads
    from ..fusion import StackFuser
    from ..fusion.stack import frame_range

    check_output_options(args)
    options = fuser_options(args)
    targets = _check_outputs(args)
    files = _stack_files(args.inputs, targets)
    _refuse_existing(targets, args.overwrite)
    out = targets[0][1]
    named = dict(targets)
    depth_path, conf_path = named.get("--depth-map"), named.get("--confidence")
    for text in unused_option_notes(args, depth_written=depth_path is not None):
        _note(text)
    # without --depth-map or --confidence no depth is tracked (its maps are about a sixth of
    # the memory)
    track = depth_path is not None or conf_path is not None

    # the frames' per-pixel range (which keeps the fused image inside the data) is taken
    # from a second read of the files instead of being held while fusing: two maps of the
    # frame's size less at the peak; aligned frames are warped, so their range is kept
    keep_range = bool(options["align"])
    middle = options.pop("reference", "first") == "middle" and options["align"]

    def new_fuser() -> Any:
        return StackFuser(depth=track, keep_range=keep_range, **options)

    fuser = new_fuser()  # checks the options before any frame is read
    if middle:  # a first pass estimates the middle frame's transform: the output's grid
        from ..fusion.align import reference_transform

        frames_again = (f.image for f in nio.iter_frames(files, reuse_buffer=True))
        options["align_reference"] = reference_transform(frames_again, "middle")
        fuser = new_fuser()
    if not args.quiet:
        announce_compile(
            depth=track,
            align=options["align"],
            depth_um=args.z_step_um is not None,
            stream=sys.stderr,
        )
    tiffs = any(f.suffix.lower() in (".tif", ".tiff") for f in files)
    progress = _Progress(None if tiffs else len(files), sys.stderr, not args.quiet)
    t0 = time.perf_counter()
    handoff = HandOff(nio.iter_frames(files, reuse_buffer=True))
    frame_bytes = 0
    expected = nio.png_frame_format(files[0])
    # the decoding thread keeps a core busy: the fuser takes the others (on 2 cores one
    # numba thread fused 12 MP x 20 PNG frames in 2.9 s where two took 3.3 s, their team
    # waiting for the core the decoder held); the finish afterwards has them all
    with threads(max(1, max_threads() - 1)):
        try:
            if expected is not None:
                # map the fuser's memory in while the first frame is being decoded
                fuser.reserve(*expected)
            for frame in handoff:
                z = None if args.z_step_um is None else frame.index * args.z_step_um
                if frame.index == 0:
                    frame_bytes = frame.image.nbytes
                    if expected is not None and (frame.image.shape, frame.image.dtype) != expected:
                        fuser = new_fuser()  # e.g. EXIF-rotated
                try:
                    fuser.add(frame.image, z_um=z, on_copied=handoff.release)
                except (ValueError, TypeError) as exc:
                    where = frame.path if frame.page == 0 else f"{frame.path}, page {frame.page}"
                    raise type(exc)(f"{where}: {exc}") from exc
                progress.update(fuser.n_frames)
                del frame  # its buffer is refilled with the next frame
        finally:
            handoff.close()
            progress.close()
    depth: np.ndarray | None = None
    conf: np.ndarray | None = None
    unit = ""
    if not keep_range:
        # its work buffers go, and its pyramid becomes the image, before the frames are
        # read again (two files at a time); from here on, for large frames, buffers freed
        # go back to the system at once (not earlier: the fusing loop's kernels would then
        # map and fault in their scratch memory for every frame, 50 % slower; and not for
        # small ones, whose memory does not matter, since the setting stays for a process
        # that runs this CLI in-process, such as a notebook or the tests)
        if frame_bytes >= LARGE_FRAME_BYTES:
            fix_mmap_threshold()
        fuser.close(collapse=True)
        # handed over: the fuser frees the two maps once the image is built
        fuser.set_range(*frame_range(files, threads=2))
    if not track:  # no depth map asked for: do not build one
        image = fuser.image(release=True)
    else:
        result = fuser.result(release=True)
        image, depth, conf, unit = result.image, result.depth, result.confidence, result.depth_unit
    bbox = fuser.valid_bbox
    if args.crop and bbox is not None:
        y0, y1, x0, x1 = bbox
        h, w = image.shape[:2]
        if (y0, y1, x0, x1) == (0, h, 0, w):
            _note("--crop: nothing to crop, every frame covers the whole image")
        elif not args.quiet:
            _note(
                f"cropped to rows {y0}:{y1}, columns {x0}:{x1} ({y1 - y0} x {x1 - x0} px of "
                f"{h} x {w}), the area every frame covers"
            )
        image = image[y0:y1, x0:x1]
        depth = None if depth is None else depth[y0:y1, x0:x1]
        conf = None if conf is None else conf[y0:y1, x0:x1]
    # every check before the first byte is written: both outputs or neither
    nio.check_image_format(out, image)
    try:
        nio.write_image(out, image, overwrite=args.overwrite)
        if depth_path is not None:
            nio.write_depth_map(depth_path, depth, overwrite=args.overwrite, unit=unit)
        if conf_path is not None:
            nio.write_depth_map(conf_path, conf, overwrite=args.overwrite, kind="confidence")
    except FileExistsError as exc:  # appeared while fusing
        print(f"nanoro-optics fuse: error: {exc}; give --overwrite to replace it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"nanoro-optics fuse: error: cannot write output: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        shape = "x".join(str(s) for s in image.shape)
        extra = f", depth map {depth_path} ({unit})" if depth_path else ""
        extra += f", confidence {conf_path}" if conf_path else ""
        print(
            f"fused {plural(fuser.n_frames, 'frame')} ({shape} {image.dtype}) into {out}{extra} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return 0
