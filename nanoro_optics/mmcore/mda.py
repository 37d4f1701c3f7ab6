"""Live extended depth of field inside a pymmcore-plus MDA (:class:`LiveFusion`), MDA checks.

pymmcore-plus runs a useq-schema ``MDASequence`` and hands every frame to its *output
handlers*, objects with ``sequenceStarted(sequence, meta)``, ``frameReady(image, event,
meta)`` and ``sequenceFinished(sequence)`` methods (``core.mda.run(sequence,
output=handler)``) [1]_. :class:`LiveFusion` is such a handler: it groups the frames by
their non-z indices (position, grid, time and, unless a guide channel is given, channel),
feeds each group's z-loop to a :class:`~nanoro_optics.fusion.StackFuser` as the frames
arrive, and when the loop is complete emits the fused image, the depth map in um (from the
events' z positions; with :class:`IndexMismatch` the actual heights in the sample) and the
confidence, through a callback and optionally to an OME-TIFF or OME-Zarr
(:func:`nanoro_optics.io.write_fusion_ome`), from a thread of its own while the next group
is acquired.
Only the open groups hold a fuser (and at most one more group is being finished), so
memory is bounded by the groups open at once (one, or one per channel), not by frames.

:func:`check_mda_sequence` (defined in :mod:`nanoro_optics.zscan`, beside the useq
interchange, and re-exported here) checks a sequence's Z plan against this library's rules
(never below the start, inside the stage limits, steps no larger than the objective's depth
of field) before anything moves.

References
----------
.. [1] pymmcore-plus documentation, "Acquisition engine" and "Output handlers",
   https://pymmcore-plus.github.io/pymmcore-plus/
.. [2] useq-schema, ``MDASequence`` and ``MDAEvent``, https://pymmcore-plus.github.io/useq-schema/
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import queue
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import optics
from .._numba import DEFAULT_FUSION_NICE, fusion_threads, lower_this_thread, max_threads
from .._numba import threads as numba_threads
from .._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_range,
)
from ..fusion.options import FusionOptions
from ..psf.mismatch import IndexMismatch
from ..zscan import check_mda_sequence

__all__ = [
    "BacklogReport",
    "FusedGroup",
    "IndexMismatch",
    "LiveFusion",
    "LiveFusionBacklogWarning",
    "check_mda_sequence",
]

_log = logging.getLogger(__name__)

#: fusion options LiveFusion sets itself (from the events, and guide_channel by name)
_OWN_OPTIONS = ("z_um", "z_step_um", "guide_channel")
#: file suffix of each output format
_SUFFIXES = {"ome-tiff": ".ome.tif", "ome-zarr": ".ome.zarr"}
#: index axes of an MDA event other than z and channel (position, grid, time)
_OUTER_AXES = ("p", "g", "t")
#: default of LiveFusion's max_backlog_frames (16 frames of 2048 x 2048 uint16: 128 MiB)
DEFAULT_MAX_BACKLOG_FRAMES = 16
#: largest max_backlog_frames accepted (a backlog is memory: frames, not a time)
MAX_BACKLOG_FRAMES_LIMIT = 10_000
#: frames over which the arrival and fusion rates are measured (throughputs)
_RATE_WINDOW = 16
#: finishing threads of sequences finished in the background (finish_in_background),
#: which an exiting interpreter waits for (:func:`_join_background`)
_BACKGROUND: set[threading.Thread] = set()
_BACKGROUND_LOCK = threading.Lock()


def _join_background() -> None:
    """Wait for the outputs of every sequence finished in the background (run at exit).

    The finishing threads are daemons (one whose sequence never finished must not keep
    the interpreter alive); the interpreter runs its exit functions after joining the
    other threads and before it stops the daemons, so their outputs are done first. No
    thread is started for this when a sequence ends: a new thread, on the acquisition's
    time, would wait for the interpreter while the finishing thread holds it.
    """
    while True:
        with _BACKGROUND_LOCK:
            pending = [t for t in _BACKGROUND if t.is_alive()]
            _BACKGROUND.clear()
        if not pending:
            return
        for thread in pending:
            thread.join()


atexit.register(_join_background)

#: the kernels the sequence-start warm-up has loaded in this process: (dtype, frame
#: dimensions, guided, options); a later sequence's warm-up only maps in its buffers
_WARMED: set[tuple[str, int, bool, str]] = set()
_WARM_LOCK = threading.Lock()
#: frames fused, and intervals between frames, measured before a backlog is reported: the
#: first frames of a process may wait for numba to load its kernels, once
MIN_MEASURED_FRAMES = 4


class LiveFusionBacklogWarning(RuntimeWarning):
    """Frames reach :class:`LiveFusion` faster than it fuses them.

    Issued at most once per group, with the measured rates (see :class:`BacklogReport`,
    which :attr:`LiveFusion.backlog_reports` keeps for every warning). The rates are over
    the last 16 frames: in the first sequence of a process they include the time numba
    takes to load (or compile) its kernels at the first frames, which can fill a small
    backlog once.
    """


@dataclass(frozen=True)
class BacklogReport:
    """Frames waiting for :class:`LiveFusion` when its backlog reached ``max_backlog_frames``.

    Attributes
    ----------
    index : tuple of (str, int)
        The group the waiting frame belongs to (as :attr:`FusedGroup.index`).
    frames_behind : int
        Frames acquired and not yet fused, besides the one being fused (in
        pymmcore-plus' queue: what waits there, which besides frames holds at most the
        sequence's end).
    seconds_behind : float
        ``frames_behind / fusion_fps``: how long fusion needs to catch up (in s).
    arrival_fps : float
        Frames per second the acquisition delivers over the last 16 frames (their count
        over the sum of the intervals between them, the time the acquisition spent
        waiting for fusion excluded).
    fusion_fps : float
        Frames per second the handler fuses over the last 16 frames (their count over
        the time it spent on them).
    bounded : bool
        True: the acquisition waits for fusion (:meth:`LiveFusion.attached`, used by
        :meth:`LiveFusion.run`), the backlog stays at ``max_backlog_frames``. False: the
        frames wait in pymmcore-plus' own queue (``core.mda.run(seq, output=live)``),
        which the handler cannot bound, and the backlog goes on growing.
    max_backlog_frames : int
        The handler's bound.
    """

    index: tuple[tuple[str, int], ...]
    frames_behind: int
    seconds_behind: float
    arrival_fps: float
    fusion_fps: float
    bounded: bool
    max_backlog_frames: int

    def message(self) -> str:
        """Return the warning's text: the group, the two rates and how far behind."""
        head = (
            f"live fusion is falling behind (group {self.index}): frames arrive at "
            f"{self.arrival_fps:.1f} frames/s and are fused at {self.fusion_fps:.1f} frames/s; "
            f"{self.frames_behind} frames ({self.seconds_behind:.2f} s of fusion) wait"
        )
        if self.bounded:
            return (
                f"{head}. The acquisition now waits for fusion whenever "
                f"max_backlog_frames={self.max_backlog_frames} frames wait: the MDA slows "
                "to the fusion rate and no frame is dropped (longer exposures, smaller "
                "frames, fewer levels or more threads= keep pace)"
            )
        return (
            f"{head} in pymmcore-plus' queue, which this handler cannot bound "
            "(core.mda.run(seq, output=live)): it grows for as long as frames come faster. "
            "Use live.run(core, seq, ...) or 'with live.attached(core): core.mda.run(seq)' "
            f"to make the acquisition wait at max_backlog_frames={self.max_backlog_frames}"
        )


def _fps(intervals_s: deque[float]) -> float:
    """Frames per second over a window: its count over its total time (NaN if empty).

    A throughput, not a median: with a guide channel every other frame is only buffered,
    and how far behind fusion falls depends on the mean time per frame.
    """
    vals = [v for v in intervals_s if v > 0]
    return len(vals) / math.fsum(vals) if vals else math.nan


@dataclass(frozen=True)
class FusedGroup:
    """The fused z-loop of one group of an MDA (one position, grid cell, time, channel).

    Attributes
    ----------
    index : tuple of (str, int)
        The group's event indices other than ``z`` (and ``c`` with a guide channel), as
        sorted ``(axis, index)`` pairs, e.g. ``(("c", 1), ("p", 0))``.
    channels : tuple of str
        Channel names of ``image``'s channels (one, or all of the sequence's with a guide).
    image : numpy.ndarray
        Fused image in the frames' dtype: ``(H, W)``, or ``(H, W, C)`` with a guide channel.
    depth_um : numpy.ndarray
        float32 ``(H, W)`` in um, NaN where no depth was found: by default the nominal
        stage z of best focus (from the events' ``z_pos``); with ``index_mismatch`` the
        actual height in the sample (:meth:`IndexMismatch.actual_z_um`). ``depth_kind``
        says which.
    confidence : numpy.ndarray
        float32 ``(H, W)`` in ``[0, 1]`` (see :class:`~nanoro_optics.fusion.FusionResult`).
    z_um : tuple of float
        The z positions fused, in capture order.
    pixel_size_um : float or None
        Pixel size at the sample (from the frames' metadata or as given).
    path : pathlib.Path or None
        The OME-TIFF written, when the handler writes files.
    depth_kind : {"nominal", "actual"}
        What ``depth_um`` holds: ``"nominal"`` stage z, or ``"actual"`` height in the
        sample (index mismatch corrected).
    """

    index: tuple[tuple[str, int], ...]
    channels: tuple[str, ...]
    image: np.ndarray
    depth_um: np.ndarray
    confidence: np.ndarray
    z_um: tuple[float, ...]
    pixel_size_um: float | None
    path: Path | None
    depth_kind: str = "nominal"


def _import_useq() -> Any:
    try:
        import useq
    except ImportError as exc:
        raise ImportError(
            'live fusion in an MDA needs useq-schema: pip install "nanoro_optics[mmcore]"'
        ) from exc
    return useq


def _check_sequence_type(sequence: Any) -> Any:
    useq = _import_useq()
    if not isinstance(sequence, useq.MDASequence):
        raise TypeError(
            f"sequence must be a useq.MDASequence, got {type(sequence).__name__}; "
            "live fusion needs the sequence's z plan to know when a z-loop ends"
        )
    return sequence


def _index(event: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(event.index).items()}


def _channel_name(channel: Any) -> str:
    return str(channel.config)


class LiveFusion:
    """A pymmcore-plus MDA output handler that fuses every z-loop as it is acquired.

    Parameters
    ----------
    on_result : callable, optional
        Called as ``on_result(group)`` with a :class:`FusedGroup` when a group's z-loop is
        complete, in the handler's finishing thread (see Notes), one group at a time and
        in the order the groups ended.
    out_dir : str or os.PathLike, keyword-only, optional
        Folder (it must exist) to write each group to, as
        ``{name}_p{p}[_g{g}]_t{t}[_c{c}].ome.tif`` (or ``.ome.zarr``, ``file_format``): the
        fused image, the depth map in um and the confidence, with the pixel size, the z
        positions and the fusion settings.
    name : str, keyword-only
        File name prefix (default ``"fused"``; letters, digits, ``-`` and ``_``).
    guide_channel : str or int, keyword-only, optional
        Fuse all channels of a (position, grid, time) together, with the weights of this
        channel (its config name, or its index in ``sequence.channels``): the depth map is
        measured on it and applied to the others with the same pyramid blending
        (:class:`~nanoro_optics.fusion.StackFuser` ``guide_channel``). Needs the channels
        to vary faster than z (``axis_order`` with ``c`` after ``z``, e.g. ``"tpgzc"``),
        so that only one z-slice of channels is buffered. By default every channel is
        fused on its own.
    pixel_size_um : float, keyword-only, optional
        Pixel size at the sample in um; default the frames' ``pixel_size_um`` metadata
        (Micro-Manager's pixel size calibration). Files need one.
    overwrite : bool, keyword-only
        Replace existing files. By default a sequence whose files exist is refused when
        it starts (:meth:`check`), and no file is ever replaced.
    file_format : {"ome-tiff", "ome-zarr"}, keyword-only
        ``.ome.tif`` files (the default) or ``.ome.zarr`` stores (extra
        ``nanoro_optics[omezarr]``) with the same content, written by
        :func:`~nanoro_optics.io.write_fusion_ome`.
    index_mismatch : IndexMismatch, keyword-only, optional
        Correct the depth map for the focal shift at an index-mismatched interface: it then
        holds the actual height in the sample (:meth:`IndexMismatch.relabel`), not the
        nominal stage z of best focus; ``FusedGroup.depth_kind`` and the files' settings
        (``depth_um``, ``index_mismatch``) say which. The fused image does not change.
    threads : int, keyword-only, optional
        numba threads for the handler's work while the MDA still acquires (each frame's
        fusion, and the results and files of groups before the last one), from 1 to
        numba's thread count; default (None): the package's thread-count policy
        (:func:`nanoro_optics._numba.fusion_threads`), every thread but one, which the
        acquisition keeps (1 on two cores). The sequence's last frame, and the last
        group's result and file, once the acquisition is over, use all of numba's
        threads. See Notes.
    finish_in_background : bool, keyword-only
        Let :meth:`sequenceFinished` return while the last group is still being finished,
        so that ``core.mda.run`` returns (and the microscope is free for the next
        sequence) as soon as the last frame is fused: its result, file and callback follow
        in the finishing thread (``benchmarks/bench_live_mda.py`` times both finishes). Call
        :meth:`wait` before reading the files or :attr:`errors`. An interpreter that exits
        meanwhile waits for them (an exit function joins the finishing thread); the
        next sequence's start waits for them too. Default False: when ``core.mda.run``
        returns, every output is done. :meth:`run` always waits.
    max_backlog_frames : int, keyword-only
        At most this many frames wait to be fused (besides the one being fused), from 1
        to 10000, default 16 (128 MiB of 2048 x 2048 uint16 frames). With
        :meth:`run` or :meth:`attached`, the acquisition waits when they are reached
        (backpressure: the MDA slows to the fusion rate, no frame is ever dropped);
        with ``core.mda.run(seq, output=live)`` the frames wait in pymmcore-plus' queue,
        which the handler can measure but not bound. Either way, the first time in a
        group that the backlog reaches the bound (once 4 frames have been fused and
        timed), a :class:`LiveFusionBacklogWarning` states the arrival and fusion rates
        in frames/s and how far behind fusion is (:attr:`backlog_reports` keeps them).
        See Notes.
    fusion_nice : int, keyword-only
        Steps of niceness (Linux, 0 to 19, default 10) by which the handler's own fusing
        and finishing threads yield to the acquisition
        (:func:`nanoro_optics._numba.lower_this_thread`): they still use every core the
        acquisition leaves idle, but a thread waking from an exposure takes a core first
        instead of waiting behind them. 0 runs them at the acquisition's priority (on a
        machine where other busy programs compete with the fusion, so that it keeps its
        share). With ``core.mda.run(seq, output=live)`` the frames are fused in
        pymmcore-plus' relay thread, which the handler leaves as it is.
    options : FusionOptions, keyword-only, optional
        The fusion's settings (:class:`~nanoro_optics.fusion.FusionOptions`), checked here;
        z positions come from the events and the guide from ``guide_channel``, so its
        ``z_um``, ``z_step_um`` and ``guide_channel`` must be None. Its ``index_mismatch``
        is the same as the argument's.
    **fusion_options
        Fields of ``options`` to set (``levels=3``, ...), checked here.

    Attributes
    ----------
    errors : list of (tuple, Exception)
        Failures while the MDA ran, with the group's index (``()`` for the sequence).
        pymmcore-plus logs and discards what a handler raises, so the handler keeps them
        here; :meth:`run` raises the first one after the MDA. A failed group is dropped
        (no callback, no file).
    incomplete : list of tuple
        Groups whose z-loop had not ended when the sequence finished (a cancelled MDA);
        they get no output.
    n_done : int
        Groups fused and emitted in the last sequence.
    backlog_reports : list of BacklogReport
        One per :class:`LiveFusionBacklogWarning` of the last sequence (at most one per
        group): the rates and the backlog when it reached ``max_backlog_frames``.

    Notes
    -----
    Frames must arrive in z order within a group (as a useq ``MDASequence`` delivers them
    when ``z`` comes after ``p``, ``g`` and ``t`` in ``axis_order``: every group's z-loop
    then ends before the next group begins). Sequences with per-position sub-sequences,
    channels that skip z (``do_stack=False``) or, with a guide, channels that skip time
    points (``acquire_every``) are refused by :meth:`check`: their groups do not have one
    z-loop of the sequence's length.

    Frames are fused in a thread other than the acquisition's, so that exposures and
    fusion overlap: the acquisition does not wait for fusion until the backlog is full.
    :meth:`run` and :meth:`attached` connect the handler to ``core.mda.events``
    themselves, through a queue of ``max_backlog_frames`` frames and a fusing thread
    of the handler (``LiveFusion-fuse``); when the queue is full the acquisition thread
    waits, in ``frameReady``, until a frame has been fused: the backlog, and the memory
    it holds (``max_backlog_frames`` frames plus the one being fused and the one the
    acquisition holds), is bounded, and when frames come faster than they fuse the MDA
    goes at the fusion rate instead of falling minutes behind (:attr:`acquisition_waiting`
    says when it waits; :attr:`arrival_fps` and :attr:`fusion_fps` give the rates, and
    no frame is ever dropped). ``core.mda.run(seq,
    output=live)`` uses pymmcore-plus' relay thread instead, fed by a queue the handler
    cannot bound: there the handler warns once per group when ``max_backlog_frames``
    frames wait (it asks the relay thread how many), and nothing slows the acquisition.
    Frames are held, not copied, while they wait (as pymmcore-plus' relay holds them):
    an engine must not reuse an image array it has handed on (pymmcore-plus' does not);
    each is copied into the fuser (or, with a guide, into a one-slice buffer) when fused.
    Called directly, :meth:`frameReady` fuses the frame before it returns.

    When a group's z-loop ends, its result, file and callback are handed to a finishing
    thread of the handler, so the fusing thread goes on with the next group's frames
    meanwhile; at most one group is being finished at a time (the fusing thread waits
    for the previous one first), so the handler holds its open groups plus at most one.
    :meth:`sequenceFinished` waits for the finishing thread: when ``core.mda.run``
    returns, every result, file and callback is done (unless ``finish_in_background``:
    then :meth:`wait` says when). ``benchmarks/bench_live_mda.py`` measures the
    wall-time cost per exposure.

    Threads: numba's parallel kernels run as OpenMP teams whose threads spin while they
    wait for each other; next to an MDA that needs the CPU too (the acquisition thread,
    the camera, a viewer) a team that loses a core to another thread stalls, so the
    handler fuses with ``threads`` numba threads (thread-local: other code keeps
    numba's setting) while acquisition goes on, and with all of them for the last group.
    On 2 cores one thread per frame cost less wall time than two in
    ``benchmarks/bench_live_mda.py`` (see the README). Setting the environment variable
    ``OMP_WAIT_POLICY=passive`` before numba starts makes waiting threads sleep instead.

    Examples
    --------
    >>> import useq
    >>> live = LiveFusion(levels=3)
    >>> live.check(useq.MDASequence(channels=["DAPI"], z_plan={"range": 4, "step": 1}))
    >>> live.check(useq.MDASequence(channels=["DAPI"]))
    Traceback (most recent call last):
    ...
    ValueError: the sequence has no z plan: live fusion needs a z-loop of at least 2 positions
    """

    def __init__(
        self,
        on_result: Callable[[FusedGroup], None] | None = None,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        name: str = "fused",
        guide_channel: str | int | None = None,
        pixel_size_um: float | None = None,
        overwrite: bool = False,
        file_format: str = "ome-tiff",
        index_mismatch: IndexMismatch | None = None,
        threads: int | None = None,
        finish_in_background: bool = False,
        max_backlog_frames: int = DEFAULT_MAX_BACKLOG_FRAMES,
        fusion_nice: int = DEFAULT_FUSION_NICE,
        options: FusionOptions | None = None,
        **fusion_options: Any,
    ) -> None:
        from nanoro_optics.fusion.options import merge

        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be callable, got {type(on_result).__name__}")
        self.on_result = on_result
        self.out_dir = None if out_dir is None else Path(out_dir)
        if self.out_dir is not None and not self.out_dir.is_dir():
            raise FileNotFoundError(f"out_dir {self.out_dir} is not an existing folder")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"name must be letters, digits, '-' and '_' only, got {name!r}")
        self.name = name
        if guide_channel is not None and (
            isinstance(guide_channel, bool) or not isinstance(guide_channel, (str, int))
        ):
            raise TypeError(
                f"guide_channel must be a channel name or index, got "
                f"{type(guide_channel).__name__} {guide_channel!r}"
            )
        self.guide_channel = guide_channel
        self.pixel_size_um = (
            None if pixel_size_um is None else check_positive(pixel_size_um, "pixel_size_um")
        )
        self.overwrite = check_bool(overwrite, "overwrite")
        self.file_format = check_choice(file_format, "file_format", _SUFFIXES)
        self.threads = (
            fusion_threads(busy=1)  # the acquisition keeps a core
            if threads is None
            else check_int(threads, "threads", 1, max_threads())
        )
        self.finish_in_background = check_bool(finish_in_background, "finish_in_background")
        self.max_backlog_frames = check_int(
            max_backlog_frames, "max_backlog_frames", 1, MAX_BACKLOG_FRAMES_LIMIT
        )
        self.fusion_nice = check_int(fusion_nice, "fusion_nice", 0, 19)
        self._finisher: threading.Thread | None = None
        self._relay: _BoundedRelay | None = None  # while attached
        #: the dtype the kernels were last warmed up for at a sequence's start (None: not yet)
        self.warmed_up: np.dtype | None = None
        self._warmer: threading.Thread | None = None
        if index_mismatch is not None and not isinstance(index_mismatch, IndexMismatch):
            raise TypeError(
                f"index_mismatch must be an IndexMismatch, got {type(index_mismatch).__name__}"
            )
        self.index_mismatch = index_mismatch
        own = [k for k in _OWN_OPTIONS if k in fusion_options]
        if own:
            raise TypeError(
                f"{', '.join(own)} cannot be given to LiveFusion: it takes z positions from "
                "the events and the guide as guide_channel="
            )
        opts = merge(options, fusion_options)  # checked now, not at the first frame
        set_here = [k for k in _OWN_OPTIONS if getattr(opts, k) is not None]
        if set_here:
            raise ValueError(
                f"options.{', options.'.join(set_here)} must be None for LiveFusion: it takes z "
                "positions from the events and the guide as guide_channel="
            )
        if opts.halo != "off":
            raise ValueError(
                f"halo={opts.halo!r} reads the frames again near occluding edges, and LiveFusion "
                "fuses each frame as it arrives and keeps none: give halo='off' here, and fuse a "
                "saved stack with fuse_stack or `nanoro-optics fuse --halo auto`"
            )
        if opts.index_mismatch is not None:  # applied here, to the group's z positions
            if index_mismatch is not None:
                raise ValueError("give index_mismatch once: as an argument or in options")
            self.index_mismatch = opts.index_mismatch
            opts = opts.replace(index_mismatch=None)
        #: the options every group's fuser is made with
        self.options = opts
        self.errors: list[tuple[tuple[tuple[str, int], ...], Exception]] = []
        self.incomplete: list[tuple[tuple[str, int], ...]] = []
        self.n_done = 0
        self.backlog_reports: list[BacklogReport] = []
        self._reset()

    def _reset(self) -> None:
        self._sequence: Any = None
        self._nz = 0
        self._channels: tuple[str, ...] = ()
        self._guide: int | None = None
        self._open: dict[tuple[tuple[str, int], ...], dict[str, Any]] = {}
        self._dropped: set[tuple[tuple[str, int], ...]] = set()
        self._px: float | None = self.pixel_size_um
        self._n_groups = 0  # groups the sequence will end (known once it starts)
        self._n_planned = 0
        self._n_ended = 0
        self._jobs: queue.SimpleQueue[Any] | None = None
        self._slot = threading.Semaphore(1)  # one group being finished at a time
        # the rates of the backlog warnings: intervals between frames (s), fusion times (s)
        self._stats_lock = threading.Lock()
        self._arrival_s: deque[float] = deque(maxlen=_RATE_WINDOW)
        self._fusion_s: deque[float] = deque(maxlen=_RATE_WINDOW)
        self._last_arrival: float | None = None  # the previous frame's time (s)
        self._warned: set[tuple[tuple[str, int], ...]] = set()

    @property
    def arrival_fps(self) -> float:
        """Frames per second the acquisition delivers (the last 16 frames; NaN before 2).

        From the intervals between frames: with :meth:`attached` the acquisition's
        own time per frame (time waiting for fusion excluded), through pymmcore-plus'
        relay the frames' ``runner_time_ms``, called directly the times of the calls.
        """
        with self._stats_lock:
            return _fps(self._arrival_s)

    @property
    def fusion_fps(self) -> float:
        """Frames per second the handler fuses (the last 16 frames; NaN before 1)."""
        with self._stats_lock:
            return _fps(self._fusion_s)

    @property
    def acquisition_waiting(self) -> bool:
        """True while the acquisition waits for fusion (:meth:`attached`, backlog full)."""
        relay = self._relay
        return relay is not None and relay.waiting

    @property
    def n_open(self) -> int:
        """Groups open now, each holding one fuser (at most one more is being finished)."""
        return len(self._open)

    # -- before the run -------------------------------------------------------------------
    def check(self, sequence: Any) -> None:
        """Refuse a sequence this handler cannot fuse, or whose files exist, before it runs.

        Raises
        ------
        TypeError
            Not a ``useq.MDASequence``.
        ValueError
            No z plan; per-position sub-sequences; a channel with ``do_stack=False``; ``z``
            before ``p``, ``g`` or ``t`` in ``axis_order``; with a guide, an unknown guide
            channel, ``c`` before ``z`` or a channel with ``acquire_every > 1``.
        FileExistsError
            An output file of the sequence exists and ``overwrite`` is False (names it).
        """
        self._plan(sequence)

    def _plan(self, sequence: Any) -> tuple[int, tuple[str, ...], int | None]:
        seq = _check_sequence_type(sequence)
        nz = len(list(seq.z_plan)) if seq.z_plan is not None else 0
        if nz == 0:
            raise ValueError(
                "the sequence has no z plan: live fusion needs a z-loop of at least 2 positions"
            )
        if nz == 1:  # the policy of every front end for a one-frame stack
            from nanoro_optics.fusion.stack import ONE_FRAME_ERROR

            raise ValueError(f"the sequence's z plan has 1 position: {ONE_FRAME_ERROR}")
        subs = [i for i, pos in enumerate(seq.stage_positions) if pos.sequence is not None]
        if subs:
            raise ValueError(
                f"stage positions {subs} have sub-sequences: their z-loops may differ from "
                "the sequence's, which live fusion does not follow"
            )
        flat = [_channel_name(c) for c in seq.channels if not c.do_stack]
        if flat:
            raise ValueError(f"channels {flat} have do_stack=False: they take no z-loop to fuse")
        order = str(seq.axis_order if isinstance(seq.axis_order, str) else "".join(seq.axis_order))
        zpos = order.index("z") if "z" in order else len(order)
        late = [a for a in _OUTER_AXES if a in order and order.index(a) > zpos]
        if late:
            raise ValueError(
                f"axis_order {order!r} varies {', '.join(late)} faster than z: every group "
                "would stay open until the end; put z after p, g and t (e.g. 'tpgcz')"
            )
        channels = tuple(_channel_name(c) for c in seq.channels) or ("",)
        guide = None
        if self.guide_channel is not None:
            guide = self._resolve_guide(seq, channels)
            if "c" in order and order.index("c") < zpos:
                raise ValueError(
                    f"axis_order {order!r} takes every z of a channel before the next "
                    "channel: with a guide channel the channels must vary faster than z "
                    "(e.g. 'tpgzc')"
                )
            skip = [_channel_name(c) for c in seq.channels if c.acquire_every != 1]
            if skip:
                raise ValueError(
                    f"channels {skip} have acquire_every > 1: with a guide channel every "
                    "channel must be taken at every time point"
                )
        keys = {self._key(_index(ev), guide is not None) for ev in seq.iter_events()}
        if self.out_dir is not None and not self.overwrite:
            for key in sorted(keys):
                path = self._path(key)
                if path.exists():
                    raise FileExistsError(
                        f"{path} exists and overwrite=False: the sequence would write it"
                    )
        self._n_planned = len(keys)
        return nz, channels, guide

    def _resolve_guide(self, seq: Any, channels: tuple[str, ...]) -> int:
        g = self.guide_channel
        if not seq.channels:
            raise ValueError(f"guide_channel={g!r} but the sequence has no channels")
        if isinstance(g, str):
            if g not in channels:
                raise ValueError(f"guide_channel={g!r} is not a channel of the sequence {channels}")
            return channels.index(g)
        assert isinstance(g, int)
        if not 0 <= g < len(channels):
            raise ValueError(
                f"guide_channel={g} is out of range: the sequence has {len(channels)} "
                f"channels (0 to {len(channels) - 1})"
            )
        return g

    def _key(self, index: dict[str, int], guided: bool) -> tuple[tuple[str, int], ...]:
        drop = ("z", "c") if guided else ("z",)
        return tuple(sorted((k, v) for k, v in index.items() if k not in drop))

    def _path(self, key: tuple[tuple[str, int], ...]) -> Path:
        assert self.out_dir is not None
        d = dict(key)
        parts = [self.name, f"p{d.get('p', 0):03d}"]
        if "g" in d:
            parts.append(f"g{d['g']:03d}")
        parts.append(f"t{d.get('t', 0):04d}")
        if "c" in d:
            parts.append(f"c{d['c']:02d}")
        return self.out_dir / ("_".join(parts) + _SUFFIXES[self.file_format])

    def run(
        self,
        core: Any,
        sequence: Any,
        *,
        limits_um: tuple[float, float],
        objective: optics.Objective | str,
        wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
    ) -> None:
        """Check ``sequence``, run it on ``core`` with this handler, raise what failed.

        Before anything moves, :meth:`check` runs, then :func:`check_mda_sequence` with the
        stage's ``limits_um`` and the ``objective`` (the start of a stage position without
        a ``z`` of its own is the focus device's position now), and files need a pixel size
        (given, or the core's ``getPixelSizeUm()``): a refused sequence never starts.
        Afterwards the first entry of :attr:`errors` is raised (as ``RuntimeError`` with it
        as the cause).

        The handler is connected to the MDA by :meth:`attached`: frames wait in a queue
        of ``max_backlog_frames``, and the acquisition waits when it is full.
        ``core.mda.run(sequence, output=handler)`` runs the same MDA without the Z-plan
        check (pymmcore-plus tells a handler of the sequence from another thread, once
        the engine is already moving) and without the bound on the backlog: call
        :func:`check_mda_sequence` first.

        Parameters
        ----------
        core : pymmcore_plus.CMMCorePlus
            The core to run the MDA on.
        sequence : useq.MDASequence
            The sequence.
        limits_um : (float, float), keyword-only
            The focus drive's travel limits in um (Micro-Manager does not report them).
        objective : Objective or str, keyword-only
            The objective (or a preset name), for the depth-of-field rule.
        wavelength_um : float, keyword-only
            Wavelength of that depth of field.

        Raises
        ------
        nanoro_optics.zscan.PlanProblemsError
            The Z plan goes below a start, outside the limits or steps past the depth of
            field (nothing moved).
        ValueError, TypeError, FileExistsError
            See :meth:`check`; no pixel size for files.
        RuntimeError
            Something failed during the MDA (the cause is the first of :attr:`errors`).
        """
        self.check(sequence)
        check_mda_sequence(
            sequence,
            limits_um=limits_um,
            objective=objective,
            current_um=_focus_position_um(core),
            wavelength_um=wavelength_um,
        )
        if self.out_dir is not None and self.pixel_size_um is None:
            px = float(core.getPixelSizeUm())
            if not px > 0:
                raise ValueError(
                    "the core has no pixel size calibration (getPixelSizeUm() is 0): give "
                    "pixel_size_um= or calibrate the pixel size before writing files"
                )
        with self.attached(core):  # bounded: the acquisition waits at max_backlog_frames
            core.mda.run(sequence)
        self.wait()
        if self.errors:
            key, exc = self.errors[0]
            raise RuntimeError(
                f"live fusion failed for {len(self.errors)} group(s); the first, {key}: {exc}"
            ) from exc

    # -- the output handler protocol ------------------------------------------------------
    def sequenceStarted(self, sequence: Any, meta: Any = None) -> None:
        """Start a sequence (pymmcore-plus calls this): check it, forget the last one."""
        self._stop_finisher()
        self._reset()
        self.errors, self.incomplete, self.n_done = [], [], 0
        self.backlog_reports = []
        try:
            self._nz, self._channels, self._guide = self._plan(sequence)
            self._n_groups = self._n_planned
            if self._px is None and isinstance(meta, dict):
                infos = meta.get("image_infos") or ()
                px = infos[0].get("pixel_size_um") if infos else None
                if px is not None and float(px) > 0:
                    self._px = float(px)
            if self.out_dir is not None and self._px is None:
                raise ValueError(
                    "no pixel size: give pixel_size_um= or calibrate the pixel size in "
                    "Micro-Manager before writing files"
                )
        except Exception as exc:  # recorded: pymmcore-plus would only log it
            _log.error("live fusion refused the sequence: %s", exc)
            self.errors.append(((), exc))
            return
        self._sequence = sequence
        self._warm_up(meta)
        jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs = jobs
        self._finisher = threading.Thread(
            target=self._finish_loop, args=(jobs,), name="LiveFusion-finish", daemon=True
        )
        self._finisher.start()

    def _warm_up(self, meta: Any) -> None:
        """Load (or compile) the fusion kernels for the camera's frames, in a thread.

        numba loads a process's kernels at their first call: about a second from its
        cache, a minute on a first run. Done at the first frame, that time is a backlog
        the acquisition waits for; started here, from the sequence's summary (the
        camera's dtype and plane shape), it overlaps the moves to the first position. A
        tiny stack of that dtype is fused with the handler's options (once per process:
        a later sequence's kernels are loaded already, and the tiny stack's Python work
        would only compete with the acquisition's start for the interpreter), on one
        numba thread and ``fusion_nice`` steps nicer, and the first group's buffers
        (about 0.1 GB at 2048 x 2048) are allocated and mapped in for it
        (:meth:`StackFuser._lend_reserved`), which its first frame would otherwise pay
        for; when the summary says nothing usable, nothing is done (the first frame loads
        them, as before). A failure is only logged: the frames then meet the same error,
        recorded as usual.
        """
        infos = meta.get("image_infos") if isinstance(meta, dict) else None
        info = infos[0] if isinstance(infos, (list, tuple)) and infos else None
        if not isinstance(info, dict):
            return
        if not isinstance(info.get("dtype"), str):
            return
        try:
            dtype = np.dtype(info["dtype"])
            shape = tuple(int(n) for n in info.get("plane_shape", ()))
        except (TypeError, ValueError):
            return
        if dtype.kind not in "uif" or len(shape) not in (2, 3):
            return
        if self._guide is not None:  # the fuser gets (H, W, channels)
            shape = (*shape[:2], len(self._channels))
        plane = (16, 16, *shape[2:])
        options, guide, nice = self.options, self._guide, self.fusion_nice
        kernels = (dtype.str, len(plane), guide is not None, repr(options))

        def warm() -> None:
            from nanoro_optics.fusion import StackFuser

            lower_this_thread(nice)  # the acquisition first
            try:
                with _WARM_LOCK:
                    loaded = kernels in _WARMED
                if not loaded:
                    with numba_threads(1):  # a 16 x 16 stack: a team would only wait
                        fuser = StackFuser(options, guide_channel=guide)
                        for k in range(3):
                            fuser.add(np.full(plane, k, dtype), z_um=float(k))
                        fuser.result(release=True)
                    with _WARM_LOCK:
                        _WARMED.add(kernels)
                    self.warmed_up = dtype
                # the first group's buffers, mapped in now rather than while frames come
                spare = StackFuser(options, guide_channel=guide).share_buffers(self)
                spare._reserve(shape, dtype)
                spare._lend_reserved()
                self.warmed_up = dtype
            except Exception as exc:  # the first frame will say it, where it is recorded
                _log.debug("live fusion's kernel warm-up failed: %s", exc)

        self._warmer = threading.Thread(target=warm, name="LiveFusion-warm-up", daemon=True)
        self._warmer.start()

    def frameReady(self, image: Any, event: Any, meta: Any = None) -> None:
        """Fuse one frame (pymmcore-plus calls this for every frame).

        Called by pymmcore-plus' relay thread (``core.mda.run(seq, output=live)``), it
        then asks that thread how many frames wait behind this one and warns once per group
        (:class:`LiveFusionBacklogWarning`) when ``max_backlog_frames`` do. Called
        directly, it fuses the frame before it returns.
        """
        if self._sequence is None:
            return  # refused or not started
        now = time.perf_counter()
        runner_ms = meta.get("runner_time_ms") if isinstance(meta, dict) else None
        t = float(runner_ms) / 1000.0 if isinstance(runner_ms, (int, float)) else now
        with self._stats_lock:  # the acquisition's time of the frame when it is known
            if self._last_arrival is not None and t > self._last_arrival:
                self._arrival_s.append(t - self._last_arrival)
            self._last_arrival = t
        key = self._fuse(image, event, meta)
        # what queued up in pymmcore-plus' relay while this frame was fused
        remaining = getattr(threading.current_thread(), "remaining", None)
        behind = int(remaining()) if callable(remaining) else 0
        if key is not None and behind >= self.max_backlog_frames:
            self._backlog(key, behind, bounded=False)

    def _fuse(self, image: Any, event: Any, meta: Any) -> tuple[tuple[str, int], ...] | None:
        """Fuse one frame in this thread; return its group (None if nothing was done)."""
        if self._sequence is None:
            return None  # refused or not started
        index = _index(event)
        key = self._key(index, self._guide is not None)
        if key in self._dropped:
            return None
        t0 = time.perf_counter()
        # the sequence's last z of its last group: the acquisition is over, the core free
        threads = (
            fusion_threads()
            if index.get("z", 0) == self._nz - 1
            and self._n_ended + len(self._dropped) == self._n_groups - 1
            and len(self._open) <= 1
            else self.threads
        )
        try:
            with numba_threads(threads):
                self._take(key, index, image, event, meta)
        except Exception as exc:
            _log.error("live fusion dropped group %s: %s", key, exc)
            self.errors.append((key, exc))
            self._dropped.add(key)
            group = self._open.pop(key, None)
            if group is not None:
                group["fuser"].close()
            return key
        with self._stats_lock:
            self._fusion_s.append(time.perf_counter() - t0)
        return key

    def _measured(self) -> tuple[int, float, float]:
        """Return the frames measured (the fewer of the two windows) and both rates."""
        with self._stats_lock:
            n = min(len(self._arrival_s), len(self._fusion_s))
            return n, _fps(self._arrival_s), _fps(self._fusion_s)

    def _backlog(
        self,
        key: tuple[tuple[str, int], ...],
        behind: int,
        *,
        bounded: bool,
        snapshot: tuple[int, float, float] | None = None,
    ) -> None:
        """Warn (once per group) that ``behind`` frames wait, with the rates measured.

        ``snapshot``: :meth:`_measured` taken when the backlog was seen (default now).
        """
        measured, arrival, fusion = self._measured() if snapshot is None else snapshot
        with self._stats_lock:
            if key in self._warned or measured < MIN_MEASURED_FRAMES:
                return  # said already, or not measured yet (a later frame will say it)
            self._warned.add(key)
        report = BacklogReport(
            index=key,
            frames_behind=int(behind),
            seconds_behind=behind / fusion if fusion > 0 else math.nan,
            arrival_fps=arrival,
            fusion_fps=fusion,
            bounded=bounded,
            max_backlog_frames=self.max_backlog_frames,
        )
        self.backlog_reports.append(report)
        try:
            warnings.warn(report.message(), LiveFusionBacklogWarning, stacklevel=3)
        except Exception as exc:  # warnings made errors: kept, never raised into the MDA
            self.errors.append((key, exc))

    @contextmanager
    def attached(self, core: Any) -> Iterator[None]:
        """Connect the handler to ``core``'s MDA through a bounded queue, in a ``with``.

        Inside, ``core.mda.run(sequence)`` (without ``output=``: the handler is already
        connected) hands every frame, in the acquisition thread, to a queue of
        ``max_backlog_frames`` frames that the handler's fusing thread empties. When it
        is full, the acquisition thread waits until a frame has been fused (and warns
        once per group, :class:`LiveFusionBacklogWarning`, with the rates): the MDA
        slows to the fusion rate; no frame is dropped. :meth:`run` does this.

        Parameters
        ----------
        core : pymmcore_plus.CMMCorePlus
            The core whose ``mda.events`` to connect to.

        Raises
        ------
        RuntimeError
            The handler is attached already (to this core or another).
        TypeError
            ``core`` has no ``mda.events`` (not a pymmcore-plus core).
        """
        events = getattr(getattr(core, "mda", None), "events", None)
        if events is None:
            raise TypeError(
                f"core must be a pymmcore_plus.CMMCorePlus (with mda.events), got "
                f"{type(core).__name__}"
            )
        if self._relay is not None:
            raise RuntimeError("this LiveFusion is attached already: one MDA at a time")
        relay = self._relay = _BoundedRelay(self)
        names = ("sequenceStarted", "frameReady", "sequenceFinished")
        for name in names:
            getattr(events, name).connect(getattr(relay, name))
        try:
            yield
        finally:
            for name in names:
                getattr(events, name).disconnect(getattr(relay, name))
            relay.close()
            self._relay = None

    def sequenceFinished(self, sequence: Any) -> None:
        """End a sequence: wait for the groups being finished; unfinished z-loops get nothing."""
        self.incomplete = list(self._open)
        for group in self._open.values():
            group["fuser"].close()
        self._open.clear()
        if self.finish_in_background:
            self._release_finisher()
            finisher = self._finisher
            if finisher is not None:  # an exiting interpreter waits for this one
                with _BACKGROUND_LOCK:
                    _BACKGROUND.difference_update([t for t in _BACKGROUND if not t.is_alive()])
                    _BACKGROUND.add(finisher)
        else:
            self._stop_finisher()
        self._sequence = None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the groups handed to the finishing thread are done; say if they are.

        Only needed with ``finish_in_background``: otherwise every output is done when
        ``core.mda.run`` returns. Returns False if ``timeout_s`` (seconds) ran out first;
        True once every result, file and callback of the last sequence is done (what
        failed is then in :attr:`errors`).

        Raises
        ------
        RuntimeError
            While a sequence is running (before its ``sequenceFinished``).
        ValueError
            A negative or non-finite ``timeout_s``.
        """
        if timeout_s is not None:
            timeout_s = check_range(timeout_s, "timeout_s", 0.0, threading.TIMEOUT_MAX)
        finisher = self._finisher
        if finisher is None:
            return True
        if self._jobs is not None:
            raise RuntimeError(
                "wait() is for after the sequence: it is still running (sequenceFinished "
                "was not called yet)"
            )
        finisher.join(timeout_s)
        if finisher.is_alive():
            return False
        self._finisher = None
        return True

    # -- the finishing thread -------------------------------------------------------------
    def _release_finisher(self) -> None:
        """Tell the finishing thread that nothing follows what it was given."""
        if self._jobs is not None:
            self._jobs.put(None)
        self._jobs = None

    def _stop_finisher(self) -> None:
        """Let the finishing thread finish what it was given, and wait for it."""
        self._release_finisher()
        self.wait()

    def _finish_loop(self, jobs: queue.SimpleQueue[Any]) -> None:
        lower_this_thread(self.fusion_nice)  # the acquisition first
        while True:
            job = jobs.get()
            if job is None:
                return
            key, group, last = job
            job = None
            try:
                # the last group's end has the CPU to itself: the acquisition is over
                with numba_threads(fusion_threads() if last else self.threads):
                    self._emit(key, group)
            except Exception as exc:  # recorded: the MDA goes on with the other groups
                _log.error("live fusion dropped group %s: %s", key, exc)
                self.errors.append((key, exc))
            finally:
                group = None  # the fuser's memory goes before the next group's end
                self._slot.release()

    # -- the work -------------------------------------------------------------------------
    def _take(
        self,
        key: tuple[tuple[str, int], ...],
        index: dict[str, int],
        image: Any,
        event: Any,
        meta: Any,
    ) -> None:
        from nanoro_optics.fusion import StackFuser

        frame = np.asarray(image)
        z_i = index.get("z", 0)
        c_i = index.get("c", 0)
        group = self._open.get(key)
        if group is None:
            if z_i != 0:
                raise ValueError(f"the group's first frame has z index {z_i}, expected 0")
            if self._guide is not None and frame.ndim != 2:
                raise ValueError(
                    f"with a guide channel the frames must be grey (H, W), got shape {frame.shape}"
                )
            # (the previous groups' buffers, when released, are this group's: one allocation)
            fuser = StackFuser(self.options, guide_channel=self._guide).share_buffers(self)
            group = {"fuser": fuser, "z": [], "next": 0, "slice": None, "seen": set()}
            self._open[key] = group
        if self._px is None and isinstance(meta, dict):
            px = meta.get("pixel_size_um")
            if px is not None and float(px) > 0:
                self._px = float(px)
        if z_i != group["next"]:
            raise ValueError(
                f"frame with z index {z_i} arrived where z index {group['next']} was due: "
                "frames must arrive in z order"
            )
        z_um = event.z_pos
        if z_um is None:
            raise ValueError(f"the event {index} has no z position (z_pos is None)")
        fuser = group["fuser"]
        if self._guide is None:
            fuser.add(frame, z_um=float(z_um))  # copies the frame into the fuser's buffer
            group["z"].append(float(z_um))
            group["next"] += 1
        else:
            nc = len(self._channels)
            buf = group["slice"]
            if buf is None:
                buf = group["slice"] = np.empty((*frame.shape, nc), frame.dtype)
            if c_i in group["seen"] or not 0 <= c_i < nc:
                raise ValueError(f"channel index {c_i} arrived twice or is not one of {nc}")
            buf[..., c_i] = frame  # the copy: the engine may reuse its buffer
            group["seen"].add(c_i)
            if c_i == self._guide:
                group["z_guide"] = float(z_um)
            if len(group["seen"]) < nc:
                return
            z_guide = group.pop("z_guide")
            fuser.add(buf, z_um=z_guide)
            group["z"].append(z_guide)
            group["seen"] = set()
            group["next"] += 1
        if group["next"] == self._nz:
            del self._open[key]
            self._n_ended += 1
            self._slot.acquire()  # the previous group's end first: bounded memory
            assert self._jobs is not None
            last = self._n_ended + len(self._dropped) >= self._n_groups
            self._jobs.put((key, group, last))

    def _emit(self, key: tuple[tuple[str, int], ...], group: dict[str, Any]) -> None:
        from nanoro_optics.io import write_fusion_ome

        res = group["fuser"].result(release=True)
        depth, kind = res.depth, "nominal"
        if self.index_mismatch is not None:
            depth, kind = self.index_mismatch.relabel(res.depth, group["z"]), "actual"
        d = dict(key)
        names = self._channels if self._guide is not None else (self._channels[d.get("c", 0)],)
        path = None
        if self.out_dir is not None:
            assert self._px is not None
            path = write_fusion_ome(
                self._path(key),
                res.image,
                depth,
                res.confidence,
                pixel_size_um=self._px,
                z_um=group["z"],
                channel_names=names,
                settings=self.settings(),
                overwrite=self.overwrite,
            )
        out = FusedGroup(
            index=key,
            channels=tuple(names),
            image=res.image,
            depth_um=depth,
            confidence=res.confidence,
            z_um=tuple(group["z"]),
            pixel_size_um=self._px,
            path=path,
            depth_kind=kind,
        )
        self.n_done += 1
        if self.on_result is not None:
            self.on_result(out)

    def settings(self) -> dict[str, Any]:
        """Return the fusion settings recorded with every output (JSON-serialisable)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("nanoro_optics")
        except PackageNotFoundError:  # run from a source tree that is not installed
            release = "not installed"
        guide = None if self._guide is None else self._channels[self._guide]
        im = self.index_mismatch
        return {
            "fuser": "nanoro_optics.fusion.StackFuser",
            "version": release,
            "depth_um": (
                "nominal: stage z of best focus (the events' z_pos)"
                if im is None
                else "actual: height in the sample, index mismatch corrected "
                "(LiveFusion index_mismatch)"
            ),
            **self.options.to_json(),
            "index_mismatch": None if im is None else im.settings(),
            "guide_channel": guide,
        }


class _BoundedRelay:
    """Hands an MDA's frames to a :class:`LiveFusion` through a bounded buffer.

    Its methods are connected to ``core.mda.events`` and run in the acquisition thread;
    a fusing thread takes the frames from the buffer and fuses them. ``frameReady`` waits
    while ``max_backlog_frames`` frames wait: backpressure on the acquisition. The fusing
    thread notes the measurements when it lets a waiting acquisition in, so that what
    the warning states is the state at that moment.
    """

    def __init__(self, live: LiveFusion) -> None:
        self.live = live
        self.cond = threading.Condition()
        self.buf: deque[Any] = deque()
        self.thread: threading.Thread | None = None
        self.waiting = False  # the acquisition waits for room
        self.snapshot: tuple[int, float, float] | None = None  # taken when room was made
        self.last_return: float | None = None  # when the previous frame was let in

    def sequenceStarted(self, sequence: Any, meta: Any = None) -> None:
        self.close()  # a previous sequence that was never finished
        self.live.sequenceStarted(sequence, meta)
        self.buf, self.last_return = deque(), None
        self.thread = threading.Thread(target=self._fuse_loop, name="LiveFusion-fuse", daemon=True)
        self.thread.start()

    def frameReady(self, image: Any, event: Any, meta: Any = None) -> None:
        thread = self.thread
        if thread is None:
            return
        live = self.live
        t_call = time.perf_counter()
        if self.last_return is not None:  # the acquisition's own time for this frame
            with live._stats_lock:
                live._arrival_s.append(t_call - self.last_return)
        waited = False
        with self.cond:
            while len(self.buf) >= live.max_backlog_frames:  # backpressure
                waited = self.waiting = True
                if not self.cond.wait(timeout=1.0) and not thread.is_alive():
                    self.waiting = False  # never: the loop catches what fails
                    live.errors.append(((), RuntimeError("the fusing thread stopped")))
                    return
            self.waiting = False
            self.buf.append((image, event, meta))
            snapshot, self.snapshot = self.snapshot, None
            self.cond.notify_all()
        self.last_return = time.perf_counter()
        if waited:
            key = live._key(_index(event), live._guide is not None)
            live._backlog(key, live.max_backlog_frames, bounded=True, snapshot=snapshot)

    def sequenceFinished(self, sequence: Any) -> None:
        self.close()
        self.live.sequenceFinished(sequence)

    def close(self) -> None:
        """Let the fusing thread fuse every frame given, and wait for it."""
        thread, self.thread = self.thread, None
        if thread is not None:
            with self.cond:
                self.buf.append(None)  # the end: past the bound, nothing waits for it
                self.cond.notify_all()
            thread.join()

    def _fuse_loop(self) -> None:
        live = self.live
        lower_this_thread(live.fusion_nice)  # the acquisition first
        while True:
            with self.cond:
                while not self.buf:
                    self.cond.wait()
                item = self.buf.popleft()
                if self.waiting and self.snapshot is None:  # room for a waiting
                    self.snapshot = live._measured()  # acquisition: what it will say
                self.cond.notify_all()
            if item is None:
                return
            try:
                live._fuse(*item)
            except Exception as exc:  # _fuse keeps what fails; this is the last guard
                _log.error("live fusion failed on a frame: %s", exc)
                live.errors.append(((), exc))
            item = None  # the frame goes before the next one is taken


def _focus_position_um(core: Any) -> float | None:
    """Return the position of the core's focus device now, or None if it has none."""
    get_device = getattr(core, "getFocusDevice", None)
    device = get_device() if callable(get_device) else None
    if not isinstance(device, str) or not device:
        return None
    z = float(core.getPosition(device))
    return z if np.isfinite(z) else None
