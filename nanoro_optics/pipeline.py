"""Files -> fuser -> files: the one file route of focus fusion.

``nanoro-optics fuse``, the workers of ``fuse-batch`` (:func:`nanoro_optics.distributed.fuse_many`),
the demo and a GUI's file route all come through here; :mod:`nanoro_optics.fusion` itself
only sees arrays. This module owns every decision about files:

- which files are frames (:func:`stack_files`): folders in natural order, patterns, multi-page
  TIFFs; an output path is never an input (refused, naming both, with or without
  ``overwrite``); the outputs of earlier runs (fused images and maps, recognised by the record
  :mod:`nanoro_optics.io` keeps in them) are left out with a note, or refused when named;
- how they are read: decoded in a background thread, one ahead of the fuser, into one reused
  buffer (decoding overlaps fusing on two cores, one decoded frame in memory); the frames'
  per-pixel range, which keeps the fused image inside the data, is held while fusing, or,
  when depth is tracked too (a depth map, the halo correction) and the frames are not
  aligned, read back afterwards two files at a time (two frame-size maps less at the peak,
  which the depth tracker's maps would otherwise join); with ``reference="middle"`` a first
  pass estimates the middle frame's transform. Each file is decoded at most twice, besides
  the frames the halo correction reads again near occluding edges (:func:`_fuse`);
- the z step (frame ``k`` at ``k * z_step_um``, :class:`~nanoro_optics.fusion.FusionOptions`),
  the crop, and a stack of one frame (refused, :data:`~nanoro_optics.fusion.stack.ONE_FRAME_ERROR`);
- writing: every output of a run is checked first and committed together, all or none
  (:func:`write_outputs`), with the options' JSON in the records.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import check_positive
from .fusion.frame_range import FrameRange
from .fusion.options import FusionOptions
from .fusion.result import ONE_FRAME_ERROR, FusionResult
from .fusion.stack import StackFuser

__all__ = [
    "FusedFiles",
    "FusionOutputs",
    "check_outputs",
    "fuse_files",
    "fuse_to_files",
    "stack_files",
    "write_outputs",
]

#: frames of at least this size (decoded) have their range pass run with glibc's mmap
#: threshold fixed (:func:`_fix_mmap_threshold`)
LARGE_FRAME_BYTES = 16 << 20

Note = Callable[[str], None]
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class FusionOutputs:
    """The files one fusion writes: the fused image and, optionally, the maps.

    Attributes
    ----------
    image : pathlib.Path
        Fused image: ``.tif``/``.tiff`` (any dtype), ``.png`` (8/16-bit), ``.jpg`` (8-bit).
    depth, confidence : pathlib.Path or None
        float32 TIFFs of the depth map and its confidence.
    halo_map : pathlib.Path or None
        uint8 TIFF of where the halo correction acted (255) and where the image is the
        pyramid fusion's (0): the only pixels that may lie outside the frames' range. Needs
        ``FusionOptions.halo="auto"``; all 0 when the correction found nothing to correct
        or could not run (:attr:`FusedFiles.halo` says why).
    pixel_size_um : float or None
        The frames' pixel size in the specimen (um), when known: every output records it
        (its record's ``pixel_size_um`` and the format's own resolution tags), so that a
        viewer (the napari reader) shows the maps on the true x/y scale.
    """

    image: Path
    depth: Path | None = None
    confidence: Path | None = None
    pixel_size_um: float | None = None
    halo_map: Path | None = None

    def __post_init__(self) -> None:
        if self.pixel_size_um is not None:
            object.__setattr__(
                self, "pixel_size_um", check_positive(self.pixel_size_um, "pixel_size_um")
            )
        for name in ("image", "depth", "confidence", "halo_map"):
            value = getattr(self, name)
            if value is None and name != "image":
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, Path(value).expanduser())

    def named(self) -> list[tuple[str, Path]]:
        """``(name, path)`` of every output given, the image first."""
        pairs = (
            ("image", self.image),
            ("depth", self.depth),
            ("confidence", self.confidence),
            ("halo", self.halo_map),
        )
        return [(n, p) for n, p in pairs if p is not None]


@dataclass(frozen=True)
class FusedFiles:
    """What :func:`fuse_to_files` did.

    Attributes
    ----------
    files : tuple of pathlib.Path
        The outputs written (image first).
    n_frames : int
    shape : tuple of int
        Shape of the fused image written.
    dtype : str
    depth_unit : str
        ``"frame"``, ``"um"``, or ``""`` without a depth map.
    crop_box : tuple of int or None
        ``(y0, y1, x0, x1)`` the result was cropped to (``crop``), else None.
    grid_shape : tuple of int
        ``(H, W)`` of the fused image before any crop.
    sources : tuple of pathlib.Path
        The frames' files, in stack order.
    seconds : float
        Wall time of reading, fusing and writing.
    halo : HaloReport or None
        With ``halo="auto"``: where the halo correction acted, its area and its check's
        residual (:mod:`nanoro_optics.fusion.halo`; its map cropped as the image).
    """

    files: tuple[Path, ...]
    n_frames: int
    shape: tuple[int, ...]
    dtype: str
    depth_unit: str
    crop_box: tuple[int, int, int, int] | None
    grid_shape: tuple[int, int]
    sources: tuple[Path, ...]
    seconds: float
    halo: Any = None


# --------------------------------------------------------------------------------------------
# which files are frames


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _output_name(path: Path, outputs: Sequence[tuple[str, Path]]) -> str | None:
    for name, target in outputs:
        if _same_file(target, path):
            return name
    return None


def _earlier_output(path: Path) -> str | None:
    """Return what an earlier run of this package wrote at ``path`` (its record), or None."""
    from . import io as nio

    record = nio.output_record(path)
    if record is None:
        return None
    kind = record.get("kind")
    names = {
        "fused": "fused image",
        "depth": "depth map",
        "confidence": "confidence map",
        "halo": "halo map",
    }
    return names.get(str(kind), "output")


def stack_files(
    inputs: Any,
    *,
    outputs: Sequence[tuple[str, Path]] = (),
    note: Note | None = None,
) -> list[Path]:
    """List the frames' files of ``inputs``, leaving out what is not a frame.

    Parameters
    ----------
    inputs : path or sequence of paths
        Image files in focus order, folders (natural order), glob patterns, multi-page TIFFs.
    outputs : sequence of (label, path), keyword-only
        The run's outputs (:func:`check_outputs`). One that is also an input frame (named,
        or found in a folder or by a pattern) is refused, with or without overwriting:
        writing it would destroy a frame. A file there that an earlier run wrote (its
        record says so) is left out.
    note : callable, optional
        Called with one sentence per file left out.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    ValueError
        An output that is an input, an earlier output named as an input, or no frame left.
    FileNotFoundError
        An input that does not exist.
    """
    from . import io as nio

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in items:
        explicit = Path(item).expanduser().is_file()
        for f in nio.list_stack_files(item):
            earlier = _earlier_output(f)
            name = _output_name(f, outputs)
            if earlier is None and name is not None:
                raise ValueError(
                    f"{name} {f} is also an input frame"
                    f"{'' if explicit else f' (found in {item})'}; writing it would destroy "
                    "the frame: choose an output path outside the inputs"
                )
            if earlier is None:
                files.append(f)
            elif explicit:
                raise ValueError(
                    f"{f} is a {earlier} written by nanoro-optics, not a frame; leave it out "
                    "of the inputs"
                )
            elif note is not None:
                note(f"{f} is a {earlier} of an earlier run: left out of the stack")
    if not files:
        shown = " ".join(os.fspath(i) for i in items)
        raise ValueError(f"empty stack: {shown} holds no frame besides earlier outputs")
    return files


# --------------------------------------------------------------------------------------------
# reading


class _End:
    """Marks the end of the frames in the queue."""


class _HandOff:
    """Decode frames in a background thread, one ahead of the consumer, into one buffer.

    The thread decodes the next frame as soon as the consumer calls :meth:`release` for the
    current one (or asks for the next), so a consumer that copies each frame first and then
    works on its copy (``StackFuser._add(image, z, handoff.release)``) overlaps the decoding
    of frame ``k + 1`` with its work on frame ``k``, and only one decoded frame is ever in
    memory. Exceptions raised while decoding are re-raised in the consumer's thread, at the
    position of the frame that failed. Closing the iterator stops the thread.
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


def _files_range(files: list[Path], n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel range of the frames in ``files``, decoded ``n_threads`` files at once.

    Decoding a PNG or TIFF releases the GIL, so two threads on two cores take about half the
    time of one, for one decoded frame more in memory; each thread folds its frames in with
    one numba thread (the other decoder holds the other core).
    """
    from . import io as nio
    from ._numba import threads

    acc = FrameRange()
    todo = iter(files)
    take = threading.Lock()
    failed: list[BaseException] = []

    def work() -> None:
        with threads(1):
            read_files()

    def read_files() -> None:
        decoder = nio.FileDecoder()  # this thread's own: a frame lives until its next read
        while not failed:
            with take:
                path = next(todo, None)
            if path is None:
                return
            try:
                for page, image in enumerate(decoder.frames(path)):
                    acc.add(image, str(path) if page == 0 else f"{path}, page {page}")
                    if failed:
                        return
            except BaseException as exc:  # handed to the caller, which re-raises it
                failed.append(exc)
                return

    n = min(n_threads, len(files))
    if n <= 1:
        read_files()
    else:
        pool = [threading.Thread(target=work, daemon=True) for _ in range(n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    if failed:
        raise failed[0]
    return acc.maps()


def _fix_mmap_threshold(threshold_bytes: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold, so that freed frame-size buffers leave the RSS at once.

    glibc's ``malloc`` serves a large request with its own mapping, unmapped when freed, but
    raises that threshold (up to 32 MiB) each time such a block is freed [1]_: after the
    fuser's work buffers go, frame-size buffers then come from heaps that keep their pages.
    The setting stays for the process and makes numpy's allocations above it map fresh pages
    each time, so the pipeline sets it only for large frames, once they are fused. Elsewhere
    than glibc this does nothing.

    References
    ----------
    .. [1] mallopt(3), ``M_MMAP_THRESHOLD``, Linux man-pages 6.9 (2024).
       https://man7.org/linux/man-pages/man3/mallopt.3.html
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no C library to ask
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(-3, int(threshold_bytes)))  # M_MMAP_THRESHOLD of <malloc.h>


class _FramesAgain:
    """Frame ``k`` of the files again, for the halo correction (mostly asked in increasing ``k``).

    One file per frame: that file alone is decoded; else (multi-page TIFFs) the frames are
    decoded in order up to ``k`` (from the first again when ``k`` goes back).
    """

    def __init__(self, files: list[Path]) -> None:
        from . import io as nio

        self._files = files
        self._single = all(f.suffix.lower() not in (".tif", ".tiff") for f in files)
        self._iter = None if self._single else nio.iter_frames(files)
        self._k = -1
        self._image: np.ndarray | None = None

    def __call__(self, k: int) -> np.ndarray:
        from . import io as nio

        if self._single:
            return next(iter(nio.FileDecoder(reuse_buffer=False).frames(self._files[k])))
        if self._iter is None or k < self._k:
            self._iter, self._k = nio.iter_frames(self._files), -1
        while self._k < k:
            frame = next(self._iter)
            self._k, self._image = frame.index, frame.image
        assert self._image is not None
        return self._image


@dataclass(frozen=True)
class _Fused:
    result: FusionResult | None  # with the depth map
    image: np.ndarray
    bbox: tuple[int, int, int, int] | None
    n_frames: int


def _read_into(
    new_fuser: Callable[[], StackFuser], files: list[Path], progress: Progress | None
) -> StackFuser:
    """Decode ``files`` (on a thread beside the fusion) into a fuser from ``new_fuser``."""
    from . import io as nio
    from ._numba import fusion_threads, threads

    fuser = new_fuser()
    tiffs = any(f.suffix.lower() in (".tif", ".tiff") for f in files)
    total = None if tiffs else len(files)
    handoff = _HandOff(nio.iter_frames(files, reuse_buffer=True))
    expected = nio.png_frame_format(files[0])
    # the decoding thread keeps a core busy: the fuser takes the others (a team of numba
    # threads waiting for the core the decoder holds is slower than one thread less); the
    # finish afterwards has them all
    with threads(fusion_threads(busy=1)):
        try:
            if expected is not None:
                # map the fuser's memory in while the first frame is being decoded
                fuser._reserve(*expected)
            for frame in handoff:
                if frame.index == 0:
                    if expected is not None and (frame.image.shape, frame.image.dtype) != expected:
                        fuser = new_fuser()  # e.g. EXIF-rotated
                try:
                    fuser._add(frame.image, None, handoff.release)
                except (ValueError, TypeError) as exc:
                    where = frame.path if frame.page == 0 else f"{frame.path}, page {frame.page}"
                    raise type(exc)(f"{where}: {exc}") from exc
                if progress is not None:
                    progress(fuser.n_frames, total)
                del frame  # its buffer is refilled with the next frame
        finally:
            handoff.close()
    if fuser.n_frames < 2:
        raise ValueError(ONE_FRAME_ERROR)
    return fuser


def _fuse(
    files: list[Path],
    options: FusionOptions,
    *,
    depth: bool,
    progress: Progress | None,
) -> _Fused:
    """Read ``files`` and fuse them, reading them again only where the outputs need it.

    The per-pixel range of the frames (two maps of a frame's size and dtype) and the full
    depth tracker (on level 1) would take about as much memory each (at 12 MP, 72 MB for
    8-bit RGB against 33 MB, on top of the fuser's), so one read holds one of them:

    * no depth tracked: one read, with the range;
    * aligned frames (warped as they are read): one read, with both;
    * the depth map asked for: the fusing read with the tracker, then a read for the range
      (:func:`_files_range`), once the fused pyramid has become the image;
    * the halo correction without a depth output: one read with the range and a coarse
      tracker (level :data:`~.fusion.halo.COARSE_LEVEL`, a sixteenth of the memory); only
      when that map shows a step that may be an occluding edge
      (:func:`~.fusion.halo.may_have_edges`) is the depth tracked again in a second read
      (its image is the first's, kept), and the correction reads the frames it needs near
      the edges once more.
    """
    from . import io as nio
    from .fusion.halo import COARSE_LEVEL, finish_halo, may_have_edges

    # the halo correction finishes from the depth map (tracked for it when not asked for)
    track = depth or options.halo != "off"
    coarse = track and not depth and not options.align
    keep_range = options.align or not track or coarse
    align_reference = None
    if options.reference == "middle":  # a first pass: the middle frame's transform
        from .fusion.align import reference_transform

        frames_again = (f.image for f in nio.iter_frames(files, reuse_buffer=True))
        align_reference = reference_transform(frames_again, "middle")

    def new_fuser() -> StackFuser:
        fuser = StackFuser(options, depth=track, align_reference=align_reference)
        if not keep_range:
            fuser._drop_range()
        if coarse:
            fuser._track_level(COARSE_LEVEL)
        return fuser

    fuser = _read_into(new_fuser, files, progress)
    bbox, n_frames = fuser.valid_bbox, fuser.n_frames
    if not keep_range:
        # the work buffers go, and the pyramid becomes the image, before the frames are read
        # again; from here on, for large frames, freed buffers go back to the system at once
        # (not earlier: the fusing loop's kernels would then fault in their scratch memory
        # for every frame; and not for small ones, whose memory does not matter)
        if fuser._frame_bytes() >= LARGE_FRAME_BYTES:
            _fix_mmap_threshold()
        fuser._close(collapse=True)
        fuser._set_range(*_files_range(files, 2))  # freed once the image is built
    if not track:
        image = fuser.image(release=True)
        return _Fused(None, image, bbox, n_frames)
    # the halo correction reads the frames it needs near occluding edges again
    again = _FramesAgain(files) if options.halo != "off" else None
    if coarse:
        result = fuser._result(release=True)
        if may_have_edges(result, options):
            # the depth in full, in a second read (no range: the first read's image is kept)
            image = result.image
            del result  # (its coarse maps)

            def depth_fuser() -> StackFuser:
                fuser = StackFuser(options, depth=True)
                fuser._drop_range()
                return fuser

            fuser = _read_into(depth_fuser, files, None)
            result = fuser._result(release=True, image=image)
        # (else the coarse map, on which the correction finds no edge: nothing is read again)
        result = finish_halo(fuser, result, again)
    else:
        result = fuser.result(release=True, frames=again)
    return _Fused(result, result.image, bbox, n_frames)


def fuse_files(
    source: Any,
    options: FusionOptions | None = None,
    *,
    progress: Progress | None = None,
    note: Note | None = None,
) -> FusionResult:
    """Read the frames of ``source`` and fuse them (nothing is written).

    What :func:`~nanoro_optics.fusion.fuse_stack` does when given files.

    Parameters
    ----------
    source : path or sequence of paths
        A folder, glob pattern, image file, multi-page TIFF, or a list of them.
    options : FusionOptions, optional
    progress : callable, optional
        ``progress(frames_done, n_frames_or_None)`` after each frame.
    note : callable, optional
        Called with a sentence for each file left out (an earlier run's output).

    Returns
    -------
    FusionResult
        Cropped when ``options.crop``.
    """
    opts = FusionOptions() if options is None else options
    if not isinstance(opts, FusionOptions):
        raise TypeError(f"options must be a FusionOptions, got {type(opts).__name__}")
    files = stack_files(source, note=note)
    fused = _fuse(files, opts, depth=True, progress=progress)
    assert fused.result is not None
    res = fused.result
    if opts.crop and fused.bbox is not None:
        res = res.cropped(fused.bbox)
    return res


# --------------------------------------------------------------------------------------------
# writing


#: how messages name the outputs, unless the caller names them (the CLI: by their flags)
OUTPUT_LABELS = {
    "image": "image output",
    "depth": "depth output",
    "confidence": "confidence output",
    "halo": "halo map output",
}


def check_outputs(
    outputs: FusionOutputs, *, labels: Mapping[str, str] | None = None
) -> list[tuple[str, Path]]:
    """Check the output paths before anything is read: formats, folders, none the same.

    Parameters
    ----------
    outputs : FusionOutputs
    labels : mapping, optional
        How messages name each output (``{"image": "-o", ...}``); default
        :data:`OUTPUT_LABELS`.

    Returns
    -------
    list of (str, pathlib.Path)
        ``(label, path)`` of every output, the image first.

    Raises
    ------
    ValueError
        Naming the output and what is wrong with it.
    """
    from . import io as nio

    if not isinstance(outputs, FusionOutputs):
        raise TypeError(f"outputs must be a FusionOutputs, got {type(outputs).__name__}")
    names = {**OUTPUT_LABELS, **(labels or {})}
    if outputs.image.suffix.lower() not in nio.WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {outputs.image}: unknown image format {outputs.image.suffix!r}; use "
            f"one of {', '.join(nio.WRITE_SUFFIXES)}"
        )
    named = [(names[n], p) for n, p in outputs.named()]
    for (kind, _), (label, path) in zip(outputs.named()[1:], named[1:], strict=True):
        if path.suffix.lower() not in (".tif", ".tiff"):
            what = "a uint8 TIFF" if kind == "halo" else "a float32 TIFF"
            raise ValueError(f"{label} {path}: the {kind} map is {what}, use .tif")
    for label, path in named:
        if path.is_dir():
            raise ValueError(f"{label} {path} is a folder; give a file name")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"{label} {path}: folder {folder} does not exist")
    for i, (label_a, a) in enumerate(named):
        for label_b, b in named[i + 1 :]:
            if a.resolve() == b.resolve():
                raise ValueError(f"{label_a} and {label_b} are the same file: {a}")
    return named


def _refuse_existing(named: list[tuple[str, Path]], overwrite: bool) -> None:
    if overwrite:
        return
    for label, path in named:
        if path.exists():
            raise ValueError(
                f"{label} {path} exists already; give --overwrite (overwrite=True) to replace "
                "it (nothing was written)"
            )


def write_outputs(
    outputs: FusionOutputs,
    image: np.ndarray,
    *,
    depth: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    halo_map: np.ndarray | None = None,
    depth_unit: str = "frame",
    options: FusionOptions | None = None,
    overwrite: bool = False,
    labels: Mapping[str, str] | None = None,
    records: Mapping[str | os.PathLike[str], Any] | None = None,
) -> tuple[Path, ...]:
    """Write a fusion's outputs together: all of them, or none (an existing file stays).

    Every check runs before the first byte is written.

    Parameters
    ----------
    outputs : FusionOutputs
    image : numpy.ndarray
    depth, confidence, halo_map : numpy.ndarray, optional
        Needed when ``outputs`` names them (``halo_map``: bool, where the correction acted).
    depth_unit : {"frame", "um"}
    options : FusionOptions, optional
        Recorded in every output's record (:meth:`FusionOptions.to_json`).
    overwrite : bool
        Replace existing files.
    labels : mapping, optional
        How messages name the outputs (:func:`check_outputs`).
    records : mapping, optional
        ``{path: data}`` of JSON files committed with the images (a summary, a record).

    Returns
    -------
    tuple of pathlib.Path
        The images, then the JSON files.
    """
    from . import io as nio

    named = check_outputs(outputs, labels=labels)
    nio.check_image_format(outputs.image, image)
    for name, path, data in (
        ("depth", outputs.depth, depth),
        ("confidence", outputs.confidence, confidence),
        ("halo", outputs.halo_map, halo_map),
    ):
        if path is not None and data is None:
            raise ValueError(f"{path} was asked for but no {name} map was given")
    extra = [("record", Path(p)) for p in (records or {})]
    _refuse_existing(named + extra, overwrite)
    settings = None if options is None else options.to_json()
    # each output's record says what it is (a later run leaves it out of a stack) and which
    # options made it
    common: dict[str, Any] = {
        "overwrite": overwrite,
        "settings": settings,
        "pixel_size_um": outputs.pixel_size_um,
    }
    with nio.OutputSet() as outs:  # committed together when the block ends, or none
        written = [nio.write_image(outputs.image, image, kind="fused", outputs=outs, **common)]
        if outputs.depth is not None:
            written.append(
                nio.write_depth_map(outputs.depth, depth, unit=depth_unit, outputs=outs, **common)
            )
        if outputs.confidence is not None:
            written.append(
                nio.write_depth_map(
                    outputs.confidence, confidence, kind="confidence", outputs=outs, **common
                )
            )
        if outputs.halo_map is not None:
            written.append(
                nio.write_depth_map(outputs.halo_map, halo_map, kind="halo", outputs=outs, **common)
            )
        for record_path, data in (records or {}).items():
            written.append(nio.write_json(record_path, data, overwrite=overwrite, outputs=outs))
    return tuple(Path(p) for p in written)


def fuse_to_files(
    inputs: Any,
    outputs: FusionOutputs,
    options: FusionOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    note: Note | None = None,
    labels: Mapping[str, str] | None = None,
) -> FusedFiles:
    """Fuse the frames of ``inputs`` and write ``outputs``: the file route of every front end.

    Parameters
    ----------
    inputs : path or sequence of paths
        Frames' files, folders, glob patterns or multi-page TIFFs (:func:`stack_files`).
    outputs : FusionOutputs
        Where the fused image and (optionally) the depth and confidence maps go. No depth
        is tracked when neither map is asked for.
    options : FusionOptions, optional
    overwrite : bool, keyword-only
        Replace outputs that exist (default: refuse before reading anything). An output is
        never an input frame, whatever this says.
    progress, note : callable, optional
        ``progress(frames_done, n_frames_or_None)``; ``note(sentence)`` for what was left out.
    labels : mapping, optional
        How messages name the outputs (:func:`check_outputs`).

    Returns
    -------
    FusedFiles

    Raises
    ------
    ValueError, TypeError
        Bad outputs or options, an output among the inputs, a stack of one frame, frames
        that do not match (naming the file). Nothing is written then.
    FileExistsError
        An output exists and ``overwrite`` is False.
    """
    t0 = time.perf_counter()
    opts = FusionOptions() if options is None else options
    if not isinstance(opts, FusionOptions):
        raise TypeError(f"options must be a FusionOptions, got {type(opts).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__} {overwrite!r}")
    named = check_outputs(outputs, labels=labels)
    if outputs.halo_map is not None and opts.halo == "off":
        label = {**OUTPUT_LABELS, **(labels or {})}["halo"]
        raise ValueError(
            f"{label} {outputs.halo_map} was asked for but the halo correction is off: give "
            "halo='auto' (--halo auto)"
        )
    files = stack_files(inputs, outputs=named, note=note)
    _refuse_existing(named, overwrite)
    track = outputs.depth is not None or outputs.confidence is not None
    fused = _fuse(files, opts, depth=track, progress=progress)
    image, depth, conf, unit = fused.image, None, None, ""
    if fused.result is not None:
        depth, conf, unit = fused.result.depth, fused.result.confidence, fused.result.depth_unit
    bbox = fused.bbox if opts.crop else None
    halo = None if fused.result is None else fused.result.halo
    grid = (int(image.shape[0]), int(image.shape[1]))
    if bbox is not None:
        y0, y1, x0, x1 = bbox
        image = image[y0:y1, x0:x1]
        depth = None if depth is None else depth[y0:y1, x0:x1]
        conf = None if conf is None else conf[y0:y1, x0:x1]
        halo = None if halo is None else halo.cropped(bbox)
    written = write_outputs(
        outputs,
        image,
        depth=depth,
        confidence=conf,
        halo_map=None if halo is None else halo.corrected,
        depth_unit=unit or "frame",
        options=opts,
        overwrite=overwrite,
        labels=labels,
    )
    return FusedFiles(
        files=written,
        n_frames=fused.n_frames,
        shape=tuple(int(n) for n in image.shape),
        dtype=str(image.dtype),
        depth_unit=unit,
        crop_box=bbox,
        grid_shape=grid,
        sources=tuple(files),
        seconds=time.perf_counter() - t0,
        halo=halo,
    )
