"""Run a Z-scan plan on a stage and a camera, safely, optionally fusing while acquiring.

:func:`run_zscan` follows the capture sequence of Urwin (2021) [1]_:
the stage moves up to the top of the plan (``distance_um`` above the start), snaps, then
moves down one spacing at a time and snaps at each position, the last image at the start;
it never commands a position below the start, where the user placed the lens. Setup is
separate from execution (as in pymmcore-plus' ``PMDAEngine.setup_event`` /
``exec_event`` [2]_): the plan's problems and every position, including a backlash
overshoot, are checked against the stage limits before anything moves.

Guarantees
----------
The executor trusts neither the stage nor the camera beyond the protocols, and behaves the
same with drivers that misbehave the way real SDKs do (see
:mod:`nanoro_optics.testing.doubles`):

- **Frames are owned by the stack.** Each frame is copied (C order, made read-only) as
  soon as ``snap`` returns, so a camera reusing one buffer cannot change captured data;
  ``err.partial`` holds the same copies. The fuser and ``on_frame`` get that copy.
- **Frames are checked against the first**: a numpy array, 2-D or 3-D, not empty, of an
  integer or float dtype (bool, complex, object, string and time frames are refused), of
  the first frame's shape and dtype, and finite (a float frame with a NaN or infinite
  pixel is refused, with or without a fuser); otherwise a
  :class:`~nanoro_optics.hardware.errors.CameraError` naming the frame index.
- **The start is read at rest**: when the plan has no start, the executor waits for
  ``wait_until_idle`` and reads the position twice; the readings must be finite and agree
  within ``readout_tolerance_um`` (else a
  :class:`~nanoro_optics.hardware.StagePositionError`, nothing moved). The higher reading
  is the start. A wait or reading that fails stops the stage.
- **Every measured position is checked**, after every move: the backlash overshoot, each
  move to an image position (before the snap) and the move back to the start. It must be
  finite, within the stage limits and not below the start (both to
  ``readout_tolerance_um``, default 0.1 um), and, except after the overshoot (which the
  stage's play makes land short by design), within ``position_tolerance_um`` of the
  commanded position (default a quarter of the spacing, which keeps the measured
  positions in the plan's order). A stage that moves the wrong way is therefore stopped
  after its first move below the start: no second move follows.
- **Every device call has a deadline** of ``timeout_s`` (a move: the command and the wait
  together), kept by the executor in real time: the call runs in a worker thread and the
  executor stops waiting for it once the deadline has passed, whether or not the device
  honours the ``timeout_s`` it is given. Moves are also timed on the stage's clock
  (``stage.clock.time()``) when it has one, as the simulated stages do.

Faults
------
=============================== ============================================================
what failed                     what the executor does
=============================== ============================================================
the stage: an exception from    calls ``stage.stop()`` first, moves no more, raises
``move_to_um``, ``wait_until_   :class:`~nanoro_optics.hardware.errors.AcquisitionError`
idle`` or ``get_position_um``,  (``stage_stopped=True``) carrying the frames captured so far
a reading the checks refuse,    and their positions. Its cause is the stage's error:
a call past its deadline        ``StagePositionError`` (with ``measured_um``,
                                ``commanded_um``, ``index``) for a refused reading,
                                ``StageTimeoutError`` for a call past its deadline
the stage, before the start is  calls ``stage.stop()`` and re-raises the stage's error; the
read (the wait, the readings)   executor commanded nothing
the camera (an error, a snap    moves back to the start (if ``return_to_start``; that move
past its deadline, a refused    and its reading are checked too), then raises
frame), the fuser or a          ``AcquisitionError`` carrying the frames so far (cause
callback, the stage healthy     ``CameraTimeoutError`` for a snap past its deadline)
KeyboardInterrupt               calls ``stage.stop()``, moves no more, raises
                                :class:`~nanoro_optics.hardware.errors.AcquisitionInterrupted`
                                (a ``KeyboardInterrupt``) carrying the frames so far
=============================== ============================================================

Safe motion for other procedures
--------------------------------
The rules above are public, so that a procedure that moves the stage and snaps (the
focus searches of :mod:`nanoro_optics.autofocus`) keeps them the same way:
:class:`MotionGuard` (checked moves and snaps under real-time deadlines, a safe stop),
:class:`ReadingCheck` (what a measured position must satisfy) and :func:`check_frame`
(the frame rules and the owned copy). :func:`run_zscan` is built on them.

With a fuser, ``err.partial.fused`` holds the fused result of the frames captured before
the fault, so a scan run with ``keep_frames=False`` loses neither its image nor its
positions.

References
----------
.. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021),
   "Physical movement of the Z stage".
.. [2] pymmcore-plus, "MDA engine", https://pymmcore-plus.github.io/pymmcore-plus/
"""

from __future__ import annotations

import math
import numbers
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._text import plural
from .._validation import (
    as_float_array,
    check_choice,
    check_finite_real,
    check_interval,
    check_positive,
    check_range,
)
from ..hardware.errors import (
    AcquisitionError,
    AcquisitionInterrupted,
    CameraError,
    CameraTimeoutError,
    StageLimitError,
    StagePositionError,
    StageTimeoutError,
)
from ..hardware.protocols import Camera, ZStage

if TYPE_CHECKING:
    from ..zscan import ZScanLimits, ZScanPlan

__all__ = [
    "DEFAULT_READOUT_TOLERANCE_UM",
    "MAX_TIMEOUT_S",
    "POSITION_TOLERANCE_SPACINGS",
    "FrameInfo",
    "MotionGuard",
    "ReadingCheck",
    "StackFuserLike",
    "ZStack",
    "check_frame",
    "run_zscan",
    "scan_targets_um",
]


class StackFuserLike(Protocol):
    """What :func:`run_zscan` needs of a fuser (e.g. :class:`nanoro_optics.fusion.StackFuser`)."""

    def add(self, frame: Any, *, z_um: float | None = None) -> Any:
        """Fuse one more frame taken at ``z_um``."""
        ...

    def result(self) -> Any:
        """Return the fused result of the frames added so far."""
        ...


@dataclass(frozen=True)
class FrameInfo:
    """What :func:`run_zscan` passes to ``on_frame`` with each frame.

    Attributes
    ----------
    index : int
        0-based index of the frame in capture order (0 is the top).
    count : int
        Number of frames the plan takes.
    commanded_um, measured_um : float
        Commanded stage position and the position the stage reported after settling.
    """

    index: int
    count: int
    commanded_um: float
    measured_um: float


@dataclass(frozen=True, eq=False)
class ZStack:
    """Frames of a Z scan with their commanded and measured positions.

    Attributes
    ----------
    frames : tuple of numpy.ndarray
        The frames in capture order (top first): read-only copies that
        :func:`run_zscan` made of what the camera returned. Empty when the scan ran with
        ``keep_frames=False`` (``frames_kept`` False): the positions are still recorded.
    commanded_um : numpy.ndarray
        Commanded position of each frame (um, read-only).
    measured_um : numpy.ndarray
        Position the stage reported before each snap (um, read-only).
    start_um : float
        The start (lowest) position of the scan.
    planned_um : numpy.ndarray
        Every position the plan asked for; ``len(frames) < len(planned_um)`` after a fault.
    complete : bool
        True when every planned frame was captured.
    returned_to_start : bool
        True if the stage was commanded back to the start at the end.
    fused : object or None
        The fuser's result (e.g. a :class:`~nanoro_optics.fusion.FusionResult`) with
        ``fuser=``: of every frame after a complete scan; in ``err.partial`` after a fault,
        of the frames fused before it (None if no frame was fused or the fuser's
        ``result()`` failed). None without a fuser.
    elapsed_s : float
        Wall-clock duration of the scan in seconds.
    plan : ZScanPlan or None
        The plan that was run.
    frames_kept : bool
        False when the frames were not kept (``run_zscan(..., keep_frames=False)``).
    """

    frames: tuple[np.ndarray, ...]
    commanded_um: np.ndarray
    measured_um: np.ndarray
    start_um: float
    planned_um: np.ndarray
    complete: bool
    returned_to_start: bool = False
    fused: Any = None
    elapsed_s: float = 0.0
    plan: Any = field(default=None, repr=False)
    frames_kept: bool = True

    def __post_init__(self) -> None:
        for name in ("commanded_um", "measured_um", "planned_um"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "frames", tuple(self.frames))
        if not self.frames_kept and self.frames:
            raise ValueError(f"frames_kept is False but {len(self.frames)} frames were given")
        n_frames = len(self.frames) if self.frames_kept else self.commanded_um.size
        if not n_frames == self.commanded_um.size == self.measured_um.size:
            raise ValueError(
                f"frames ({len(self.frames)}), commanded_um ({self.commanded_um.size}) and "
                f"measured_um ({self.measured_um.size}) must have the same length"
            )

    def __len__(self) -> int:
        """Return the number of frames captured (kept or not)."""
        return int(self.commanded_um.size)

    def as_array(self) -> np.ndarray:
        """Return the frames stacked along a new first axis (top first)."""
        if not self.frames_kept:
            raise ValueError("the frames were not kept (run_zscan(..., keep_frames=False))")
        if not self.frames:
            raise ValueError("the stack has no frames")
        return np.stack(self.frames)


def _check_limits(stage: Any) -> tuple[float, float]:
    return check_interval(stage.limits_um, "stage.limits_um")


def scan_targets_um(positions_um: np.ndarray, *, backlash_um: float = 0.0) -> list[float]:
    """Every stage target of a scan, in order: overshoot (if any), then the positions.

    With ``backlash_um > 0`` the first move goes ``backlash_um`` above the top, so that
    every image position is approached from above (the scan runs downward); the approach
    never overshoots below the start.

    Parameters
    ----------
    positions_um : numpy.ndarray
        Image positions in capture order (top first).
    backlash_um : float, keyword-only
        Overshoot above the top (>= 0).

    Returns
    -------
    list of float
        Commanded targets in order.

    Examples
    --------
    >>> scan_targets_um(np.array([12.0, 11.0, 10.0]), backlash_um=5.0)
    [17.0, 12.0, 11.0, 10.0]
    """
    b = check_positive(backlash_um, "backlash_um", allow_zero=True)
    positions = np.asarray(positions_um)
    if positions.ndim != 1:
        raise ValueError(f"positions_um must be 1-D, got shape {positions.shape}")
    targets = (
        [float(z) for z in as_float_array(positions, "positions_um")] if positions.size else []
    )
    if b > 0 and targets:
        top = targets[0] + b
        if not math.isfinite(top):
            raise ValueError(
                f"backlash_um={b!r} above the top {targets[0]!r} um is not a finite position"
            )
        targets.insert(0, top)
    return targets


#: Readout tolerance (um) of :func:`run_zscan` by default: how far two readings of the
#: start at rest may differ, and how far a reading may lie below the start or past a limit.
DEFAULT_READOUT_TOLERANCE_UM = 0.1
#: Longest ``timeout_s`` (and ``settle_ms`` / 1000) :func:`run_zscan` accepts, in seconds
#: (about 116 days; the thread waits of the deadline need a bounded time).
MAX_TIMEOUT_S = 1e7
#: Default positioning tolerance of :func:`run_zscan`, as a fraction of the plan's spacing.
#: Below half a spacing the measured positions keep the plan's order (strictly descending)
#: whatever the errors; a quarter leaves half a spacing between neighbours.
POSITION_TOLERANCE_SPACINGS = 0.25


def run_zscan(
    plan: ZScanPlan,
    stage: ZStage,
    camera: Camera,
    *,
    return_to_start: bool = True,
    settle_ms: float = 0.0,
    backlash_um: float = 0.0,
    fuser: StackFuserLike | None = None,
    fuse_z: str = "measured",
    on_frame: Callable[[np.ndarray, FrameInfo], Any] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    limits: ZScanLimits | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], Any] | None = None,
    position_tolerance_um: float | None = None,
    readout_tolerance_um: float = DEFAULT_READOUT_TOLERANCE_UM,
    keep_frames: bool = True,
) -> ZStack:
    """Acquire a Z stack following ``plan``, top to bottom, never below the start.

    See the module documentation for what the executor copies, checks and does on each
    fault.

    Parameters
    ----------
    plan : ZScanPlan
        The scan. When its ``start_um`` is None the start is the stage's position now,
        read (twice) once the stage is idle.
    stage : ZStage
        The focus drive (any object following :class:`~nanoro_optics.hardware.ZStage`).
    camera : Camera
        The camera (any object following :class:`~nanoro_optics.hardware.Camera`). It may
        reuse one buffer for every frame: each frame is copied as soon as ``snap`` returns.
    return_to_start : bool, keyword-only
        Command the stage back to the start after the scan and after a camera fault while
        the stage is healthy (default True). A complete scan ends at the start anyway.
    settle_ms : float, keyword-only
        Extra wait after the stage reports idle, before each snap (>= 0, at most
        :data:`MAX_TIMEOUT_S` s).
    backlash_um : float, keyword-only
        Overshoot above the top on the first move, so every position is approached from
        above (>= 0). Should be at least the stage's mechanical play.
    fuser : object with ``add(frame, *, z_um)`` and ``result()``, keyword-only
        Fuses frames as they arrive; its result is :attr:`ZStack.fused`. It gets the
        stack's own read-only copy of each frame.
    fuse_z : {"measured", "commanded"}, keyword-only
        Which position the fuser gets as ``z_um`` (default the measured one, so the depth
        map reflects where the stage really was; "commanded" keeps the positions exactly
        evenly spaced, e.g. for a stage whose readout is noisier than the spacing).
    on_frame : callable, keyword-only
        Called as ``on_frame(frame, info)`` with a :class:`FrameInfo` after each frame
        (the stack's read-only copy).
    progress : callable, keyword-only
        Called as ``progress(done, total)`` after each frame.
    limits : ZScanLimits, keyword-only
        Objective-dependent plan limits passed to ``plan.problems``.
    timeout_s : float, keyword-only
        Time allowed (s, > 0, at most :data:`MAX_TIMEOUT_S`) for each move (the command
        and the wait for idle together), for the wait before the start is read, for each
        position reading, each snap (it is also passed to ``snap``) and each ``stop()``
        (None, the default: no limit, and a device call that never returns hangs the
        scan). The executor keeps the deadline itself,
        in real time: each device call runs in a worker thread and the executor waits for
        it at most ``timeout_s`` seconds (:func:`time.monotonic`), so a blocked ``snap`` or
        wait raises :class:`~nanoro_optics.hardware.errors.CameraTimeoutError` or
        :class:`~nanoro_optics.hardware.errors.StageTimeoutError` on time (the blocked call
        is abandoned: Python cannot interrupt it). Moves are also timed on the stage's
        clock when it has one (``stage.clock.time()``, as
        :class:`~nanoro_optics.hardware.MockZStage`'s simulated one), so a simulated stage
        ignoring its ``timeout_s`` is timed out too.
    sleep : callable, keyword-only
        Used for the ``settle_ms`` waits. Default: ``stage.clock.sleep`` when the stage
        exposes a simulated clock (as :class:`~nanoro_optics.hardware.MockZStage` does),
        else :func:`time.sleep`.
    position_tolerance_um : float, keyword-only
        How far the measured position before a frame may be from the commanded one (um,
        >= 0;
        default :data:`POSITION_TOLERANCE_SPACINGS` x the plan's spacing). Use at least the
        stage's repeatability, plus its play when ``backlash_um`` is smaller than it.
    readout_tolerance_um : float, keyword-only
        How far two readings of the start at rest may differ, and how far a reading may be
        below the start or past a limit (um, >= 0; default
        :data:`DEFAULT_READOUT_TOLERANCE_UM`, 0.1 um). Use at least the readout noise.
    keep_frames : bool, keyword-only
        Keep every frame in :attr:`ZStack.frames` (default True). False needs a ``fuser``
        or ``on_frame``: each frame is handed on and dropped, so the scan's memory does not
        grow with the number of frames; the positions are still recorded, and after a
        fault ``err.partial.fused`` holds the fused result of the frames so far.

    Returns
    -------
    ZStack
        The frames with commanded and measured positions, ``complete=True``.

    Raises
    ------
    ValueError
        If the plan has problems (a :class:`~nanoro_optics.zscan.PlanProblemsError`), or
        for bad arguments (also ``keep_frames=False`` without ``fuser`` or ``on_frame``);
        nothing has moved.
    StageLimitError
        If a position (or the backlash overshoot) is outside ``stage.limits_um``; nothing
        has moved.
    StagePositionError
        If the start, read at rest, is not a finite number or two readings of it differ by
        more than ``readout_tolerance_um``; nothing has moved.
    StageFault, StageTimeoutError
        If waiting for the stage to be idle before reading the start, or reading it, fails
        (raises, or passes the deadline); the stage was stopped, the executor commanded
        nothing.
    TypeError
        If ``stage`` or ``camera`` does not follow its protocol.
    AcquisitionError
        After a fault during the scan; ``err.partial`` is a :class:`ZStack` with every
        frame captured before the fault (owned copies) and their positions, and the
        original error is ``err.__cause__`` (a :class:`StagePositionError` for a reading
        the scan cannot accept, a :class:`StageTimeoutError` for a move past the deadline).
    AcquisitionInterrupted
        After a ``KeyboardInterrupt`` (the stage was stopped and not moved again).

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage
    >>> from nanoro_optics.zscan import ZScanPlan
    >>> class Dark:
    ...     exposure_ms = 1.0
    ...     def set_exposure_ms(self, ms): self.exposure_ms = ms
    ...     def snap(self, timeout_s=None): return np.zeros((4, 4))
    >>> stage = MockZStage(position_um=100.0)
    >>> stack = run_zscan(ZScanPlan(4.0, 2.0, 2), stage, Dark())
    >>> stack.commanded_um.tolist(), stage.get_position_um()
    ([104.0, 102.0, 100.0], 100.0)
    """
    # ---------------------------------------------------------------- setup: nothing moves
    if not isinstance(stage, ZStage):
        raise TypeError(f"stage must follow the ZStage protocol, got {type(stage).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must follow the Camera protocol, got {type(camera).__name__}")
    if not isinstance(return_to_start, bool):
        raise TypeError(f"return_to_start must be a bool, got {return_to_start!r}")
    if not isinstance(keep_frames, bool):
        raise TypeError(f"keep_frames must be a bool, got {keep_frames!r}")
    if not keep_frames and fuser is None and on_frame is None:
        raise ValueError(
            "keep_frames=False needs a fuser or an on_frame callback: the scan would keep "
            "nothing of its frames"
        )
    settle_s = check_range(settle_ms, "settle_ms", 0.0, MAX_TIMEOUT_S * 1000.0) / 1000.0
    use_measured = check_choice(fuse_z, "fuse_z", ("measured", "commanded")) == "measured"
    backlash = check_positive(backlash_um, "backlash_um", allow_zero=True)
    timeout = (
        None
        if timeout_s is None
        else check_range(timeout_s, "timeout_s", 0.0, MAX_TIMEOUT_S, lo_inclusive=False)
    )
    readout_tol = check_positive(readout_tolerance_um, "readout_tolerance_um", allow_zero=True)
    position_tol = (
        None
        if position_tolerance_um is None
        else check_positive(position_tolerance_um, "position_tolerance_um", allow_zero=True)
    )
    for name, fn in (("on_frame", on_frame), ("progress", progress), ("sleep", sleep)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")
    if fuser is not None and not (
        callable(getattr(fuser, "add", None)) and callable(getattr(fuser, "result", None))
    ):
        raise TypeError(f"fuser must have add(frame, *, z_um) and result(), got {fuser!r}")
    clock = getattr(stage, "clock", None)
    clock_sleep = getattr(clock, "sleep", None)
    if sleep is None:
        sleep = clock_sleep if callable(clock_sleep) else time.sleep

    problems = plan.problems(limits)
    if problems:
        from ..zscan import PlanProblemsError

        raise PlanProblemsError(problems)
    if position_tol is None:
        position_tol = POSITION_TOLERANCE_SPACINGS * float(plan.spacing_um)
    lo, hi = _check_limits(stage)

    guard = MotionGuard(stage, camera, timeout_s=timeout)  # every device call
    if plan.start_um is not None:
        start = float(plan.start_um)
        positions = plan.positions_um()
    else:
        try:
            start = _read_start(guard, readout_tol)
        finally:
            guard.close()  # a new worker for the scan: the set-up may end here
        positions = plan.positions_um(start_um=start)
    targets = scan_targets_um(positions, backlash_um=backlash)
    bad = [z for z in targets if not lo <= z <= hi]
    if bad:
        what = "the backlash overshoot" if backlash > 0 and bad[0] == targets[0] else "position"
        raise StageLimitError(
            f"{what} {bad[0]!r} um is outside the stage limits [{lo!r}, {hi!r}] um "
            f"({len(bad)} of {len(targets)} targets); nothing was moved"
        )
    below = [z for z in targets if z < start]
    if below:  # cannot happen with a valid plan; a last guard for the lens
        raise StageLimitError(f"target {below[0]!r} um is below the start {start!r} um")
    reading = ReadingCheck(start, lo, hi, readout_tol, position_tol)

    # ---------------------------------------------------------------- execution
    n_images = len(positions)
    frames: list[np.ndarray] = []
    commanded: list[float] = []
    measured: list[float] = []
    t_begin = time.perf_counter()
    last_commanded = math.nan

    def fused_so_far() -> Any:
        """Return the fuser's result of the frames so far (None if it fails)."""
        if fuser is None or not commanded:
            return None
        try:
            return fuser.result()
        except Exception:  # the fault being reported matters more
            return None

    def snapshot(*, returned: bool = False, complete: bool = False, fused: Any = None) -> ZStack:
        return ZStack(
            frames=tuple(frames),
            commanded_um=np.asarray(commanded, dtype=np.float64),
            measured_um=np.asarray(measured, dtype=np.float64),
            start_um=start,
            planned_um=positions,
            complete=complete,
            returned_to_start=returned,
            fused=fused,
            elapsed_s=time.perf_counter() - t_begin,
            plan=plan,
            frames_kept=keep_frames,
        )

    def move(z: float) -> None:
        nonlocal last_commanded
        last_commanded = z
        guard.move(z)

    def read(z: float, index: int | None, *, overshoot: bool = False) -> float:
        return guard.read(z, index=index, check=reading, overshoot=overshoot)

    def fail_stage(exc: BaseException, index: int) -> AcquisitionError:
        guard.stop()
        kept = f"{len(commanded)} frame(s) {'kept' if keep_frames else 'fused'}"
        if commanded:
            kept += f" (at {commanded[0]!r} .. {commanded[-1]!r} um)"
        return AcquisitionError(
            f"stage fault before frame {index} of {n_images} ({type(exc).__name__}: {exc}); "
            f"the stage was stopped; {kept}",
            partial=snapshot(fused=fused_so_far()),
            stage_stopped=True,
        )

    def interrupted(index: int) -> AcquisitionInterrupted:
        guard.stop()
        return AcquisitionInterrupted(
            f"Z scan interrupted at frame {index} of {n_images}; the stage was stopped; "
            f"{len(commanded)} frame(s) {'kept' if keep_frames else 'fused'}",
            partial=snapshot(fused=fused_so_far()),
        )

    def return_to(z: float) -> None:
        move(z)
        read(z, None)

    n_pre = len(targets) - n_images  # overshoot moves before the first image
    try:
        try:
            for z in targets[:n_pre]:
                move(z)
                read(z, 0, overshoot=True)  # a stage moving the wrong way stops here
        except KeyboardInterrupt:
            raise interrupted(0) from None
        except Exception as exc:
            raise fail_stage(exc, 0) from exc

        for i, z in enumerate(positions):
            z = float(z)
            # the stage part: any failure here means the stage is not healthy
            try:
                move(z)
                if settle_s > 0:
                    sleep(settle_s)
                z_meas = read(z, i)
            except KeyboardInterrupt:
                raise interrupted(i) from None
            except Exception as exc:
                raise fail_stage(exc, i) from exc
            # the camera / processing part: the stage is healthy
            try:
                frame = guard.snap(i)
                if keep_frames:
                    frames.append(frame)
                commanded.append(z)
                measured.append(z_meas)
                if fuser is not None:
                    fuser.add(frame, z_um=z_meas if use_measured else z)
                if on_frame is not None:
                    on_frame(frame, FrameInfo(i, n_images, z, z_meas))
                if progress is not None:
                    progress(len(commanded), n_images)
            except KeyboardInterrupt:
                raise interrupted(i) from None
            except Exception as exc:
                returned = False
                if return_to_start:
                    try:
                        return_to(start)
                        returned = True
                    except KeyboardInterrupt:
                        raise interrupted(i) from None
                    except Exception as exc2:
                        raise fail_stage(exc2, i) from exc
                raise AcquisitionError(
                    f"frame {i} of {n_images} failed ({type(exc).__name__}: {exc}); "
                    f"{len(commanded)} frame(s) {'kept' if keep_frames else 'fused'}"
                    + ("; the stage is back at the start" if returned else ""),
                    partial=snapshot(returned=returned, fused=fused_so_far()),
                    returned_to_start=returned,
                ) from exc

        returned = False
        if return_to_start:
            try:
                if last_commanded != start:
                    return_to(start)
                returned = True
            except KeyboardInterrupt:
                raise interrupted(n_images) from None
            except Exception as exc:
                raise fail_stage(exc, n_images) from exc
    finally:
        guard.close()
    fused = None
    if fuser is not None:
        try:
            fused = fuser.result()
        except Exception as exc:
            raise AcquisitionError(
                f"fusing the {plural(len(commanded), 'frame')} failed ({type(exc).__name__}: "
                f"{exc})",
                partial=snapshot(returned=returned),
                returned_to_start=returned,
            ) from exc
    return snapshot(returned=returned, complete=True, fused=fused)


class _DeviceCalls:
    """Device calls under a real-time deadline: a worker thread runs each, the caller waits.

    With ``timeout_s`` None every call runs in the caller's thread, unguarded. Otherwise a
    call that has not returned ``timeout_s`` seconds (``time.monotonic``) after it began
    raises :class:`StageTimeoutError` (:meth:`stage`) or :class:`CameraTimeoutError`
    (:meth:`camera`) in the caller; the worker stuck in it is abandoned (a daemon thread
    that exits once the call returns, its result dropped) and the next call gets a new
    worker. A Python thread cannot be interrupted from outside: the call itself goes on
    until the device returns, but the executor no longer waits for it.
    """

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._jobs: queue.SimpleQueue[Any] | None = None
        #: calls abandoned past their deadline
        self.abandoned = 0

    def stage(self, fn: Callable[[], Any], what: str) -> Any:
        """Run a stage call; StageTimeoutError past the deadline."""
        return self._run(fn, what, StageTimeoutError)

    def camera(self, fn: Callable[[], Any], what: str) -> Any:
        """Run a camera call; CameraTimeoutError past the deadline."""
        return self._run(fn, what, CameraTimeoutError)

    def _run(self, fn: Callable[[], Any], what: str, error: type[Exception]) -> Any:
        if self.timeout_s is None:
            return fn()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_work, args=(self._jobs,), name="nanoro-device-call", daemon=True
            ).start()
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        try:
            self._jobs.put((fn, box, done))
            end = time.monotonic() + self.timeout_s
            # in slices: a Ctrl-C that lands just before a blocking wait is only seen by
            # the interpreter once that wait returns
            while not (finished := done.wait(min(_WAIT_SLICE_S, max(end - time.monotonic(), 0)))):
                if time.monotonic() >= end:
                    break
        except BaseException:  # Ctrl-C while waiting: stop() must not queue behind the call
            self._abandon()
            raise
        if not finished:
            self._abandon()
            raise error(
                f"{what} did not return within timeout_s={self.timeout_s!r} s (real time); "
                "it was abandoned"
            )
        ok, value = box[0]
        if ok:
            return value
        raise value

    def _abandon(self) -> None:
        """Leave the worker to its call (it ends once the call returns); the next gets a new one."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None
        self.abandoned += 1

    def close(self) -> None:
        """Let the worker thread end."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


#: Longest single wait (s) of :class:`_DeviceCalls` for a pending call: how late a Ctrl-C
#: may be noticed at worst.
_WAIT_SLICE_S = 0.05


def _work(jobs: queue.SimpleQueue[Any]) -> None:
    """Run the calls of a :class:`_DeviceCalls` until told to stop (its worker thread)."""
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, box, done = job
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed to the caller, KeyboardInterrupt included
            box.append((False, exc))
        finally:
            done.set()
        job = fn = box = done = None  # hold nothing while waiting for the next call


@dataclass(frozen=True)
class _FrameSpec:
    """Shape and dtype of the first frame: what later frames must match."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _as_reading(
    raw: Any, where: str, *, commanded_um: float = math.nan, index: int | None = None
) -> float:
    """Return a position reading as a float; StagePositionError if it is not finite."""
    ctx: dict[str, Any] = {"commanded_um": commanded_um, "index": index}
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, numbers.Real):
        raise StagePositionError(
            f"get_position_um() returned {type(raw).__name__} {raw!r} {where}, not a number",
            **ctx,
        )
    z = float(raw)
    if not math.isfinite(z):
        raise StagePositionError(
            f"the stage reported {z!r} um {where}, which is not finite", measured_um=z, **ctx
        )
    return z


def _read_start(guard: MotionGuard, tolerance_um: float) -> float:
    """Wait until the stage is idle, then read the start twice; they must agree.

    Any failure of the stage (the wait, or a reading that raises) stops it first.
    """
    stage, calls = guard.stage, guard._calls
    what = "waiting for the stage to be idle before reading the start"

    def wait() -> None:
        t0 = guard.now()
        stage.wait_until_idle(timeout_s=guard.timeout_s)
        guard._deadline(what, t0)

    where = "as the start (nothing was moved)"
    try:
        calls.stage(wait, what)
        first = calls.stage(stage.get_position_um, "get_position_um()")
        second = calls.stage(stage.get_position_um, "get_position_um()")
    except BaseException:  # the stage may still be moving: stop it, commanding nothing
        guard.stop()
        raise
    first = _as_reading(first, where)
    second = _as_reading(second, where)
    if abs(first - second) > tolerance_um:
        raise StagePositionError(
            f"two readings of the start at rest differ: {first!r} and {second!r} um, "
            f"{abs(first - second):.6g} um apart (readout tolerance {tolerance_um!r} um); the "
            "stage is still moving, or its readout is noisier than readout_tolerance_um; "
            "nothing was moved",
            measured_um=second,
        )
    return max(first, second)  # the higher one: no position of the plan below either


@dataclass(frozen=True)
class ReadingCheck:
    """The rules a measured stage position must follow (see the module's Faults table).

    A reading must be a finite number, inside ``[lo_um, hi_um]`` and not below
    ``floor_um`` (both to ``readout_tolerance_um``), and within ``position_tolerance_um``
    of the commanded position (except after a backlash overshoot, which the stage's play
    makes land short by design). Calling the check returns the reading as a float or
    raises :class:`~nanoro_optics.hardware.errors.StagePositionError` saying what is wrong.

    Parameters
    ----------
    floor_um : float
        Lowest position a reading may report: the start of a scan, the bottom of a
        search range (the side towards the specimen).
    lo_um, hi_um : float
        The stage limits (``lo_um <= hi_um``).
    readout_tolerance_um : float
        How far a reading may lie below the floor or past a limit (>= 0).
    position_tolerance_um : float
        How far a reading may lie from the commanded position (>= 0).
    floor_name : str
        What the floor is, for the messages (default ``"the start"``).

    Examples
    --------
    >>> check = ReadingCheck(10.0, 0.0, 100.0, 0.1, 0.5)
    >>> check(12.2, 12.0, 0)
    12.2
    >>> check.problem(9.0, 9.0)
    '1 um below the start 10.0 um (readout tolerance 0.1 um)'
    """

    floor_um: float
    lo_um: float
    hi_um: float
    readout_tolerance_um: float
    position_tolerance_um: float
    floor_name: str = "the start"

    def __post_init__(self) -> None:
        lo, hi = check_interval((self.lo_um, self.hi_um), "(lo_um, hi_um)")
        object.__setattr__(self, "lo_um", lo)
        object.__setattr__(self, "hi_um", hi)
        object.__setattr__(self, "floor_um", check_finite_real(self.floor_um, "floor_um"))
        for name in ("readout_tolerance_um", "position_tolerance_um"):
            value = check_positive(getattr(self, name), name, allow_zero=True)
            object.__setattr__(self, name, value)
        if not isinstance(self.floor_name, str):
            raise TypeError(f"floor_name must be a str, got {self.floor_name!r}")

    def __call__(
        self, raw: Any, commanded_um: float, index: int | None, *, overshoot: bool = False
    ) -> float:
        """Return the reading as a float, or raise StagePositionError saying what is wrong.

        Parameters
        ----------
        raw : object
            What ``get_position_um()`` returned.
        commanded_um : float
            The position commanded last.
        index : int or None
            The frame the reading precedes (for the message and the error); None after the
            move back to the start.
        overshoot : bool, keyword-only
            The reading follows a backlash overshoot: it is not compared with the
            commanded position, only with the limits and the floor.
        """
        if overshoot:
            where = f"after the backlash overshoot to {commanded_um!r} um"
        elif index is None:
            where = "after the move back to the start"
        else:
            where = f"before frame {index}"
        z = _as_reading(raw, where, commanded_um=commanded_um, index=index)
        problem = self.problem(z, commanded_um, check_target=not overshoot)
        if problem is not None:
            raise StagePositionError(
                f"the stage reported {z!r} um {where}, {problem}",
                measured_um=z,
                commanded_um=commanded_um,
                index=index,
            )
        return z

    def problem(self, z_um: float, commanded_um: float, *, check_target: bool = True) -> str | None:
        """Return what is wrong with the finite reading ``z_um``, or None."""
        r, lo, hi, floor = self.readout_tolerance_um, self.lo_um, self.hi_um, self.floor_um
        if not lo - r <= z_um <= hi + r:
            return f"outside the stage limits [{lo!r}, {hi!r}] um (readout tolerance {r!r} um)"
        if z_um < floor - r:
            return (
                f"{floor - z_um:.6g} um below {self.floor_name} {floor!r} um "
                f"(readout tolerance {r!r} um)"
            )
        p = self.position_tolerance_um
        if check_target and abs(z_um - commanded_um) > p:
            return (
                f"{abs(z_um - commanded_um):.6g} um from the commanded {commanded_um!r} um "
                f"(position tolerance {p!r} um)"
            )
        return None


#: The class's former private name, kept so that code patching it (the fault audit's own
#: test patches ``_ReadingCheck.problem``) patches the class :func:`run_zscan` uses.
_ReadingCheck = ReadingCheck


def check_frame(frame: Any, *, index: int, like: Any = None) -> np.ndarray:
    """Check a frame a camera returned; return a read-only C-order copy the caller owns.

    The frame must be a numpy array, 2-D or 3-D (colour), not empty, of an integer or float
    dtype (bool, complex, object, string and time frames are refused), finite (a float
    frame with a NaN or infinite pixel is refused) and, given ``like``, of its shape and
    dtype. The finiteness is checked on the copy, so a camera reusing its buffer cannot
    change what was checked.

    Parameters
    ----------
    frame : object
        What ``snap`` returned.
    index : int, keyword-only
        The frame's index, for the messages.
    like : object with ``shape`` and ``dtype``, keyword-only
        The first frame of the sequence (or anything with its shape and dtype); None for
        the first frame itself.

    Returns
    -------
    numpy.ndarray
        The read-only copy.

    Raises
    ------
    CameraError
        Naming the frame index and what is wrong.

    Examples
    --------
    >>> check_frame(np.zeros((2, 3), np.uint16), index=0).flags.writeable
    False
    """
    if not isinstance(frame, np.ndarray):
        raise CameraError(f"frame {index} is a {type(frame).__name__}, not a numpy array")
    if frame.dtype.kind not in "iuf":
        raise CameraError(
            f"frame {index} has dtype {frame.dtype}; a frame must be an integer or float "
            "array (bool, complex, object, string and time frames are refused)"
        )
    if frame.ndim not in (2, 3) or frame.size == 0:
        raise CameraError(f"frame {index} has shape {frame.shape}; expected 2-D or colour 3-D")
    if like is not None:
        if frame.shape != like.shape:
            raise CameraError(
                f"frame {index} has shape {frame.shape}, unlike the first frame's {like.shape}"
            )
        if frame.dtype != like.dtype:
            raise CameraError(
                f"frame {index} has dtype {frame.dtype}, unlike the first frame's {like.dtype}"
            )
    own = np.array(frame, copy=True, order="C")  # the camera may reuse its buffer
    own.setflags(write=False)
    if own.dtype.kind == "f":
        bad = int(own.size - np.count_nonzero(np.isfinite(own)))
        if bad:
            raise CameraError(
                f"frame {index} has {bad} NaN or infinite pixel(s) of {own.size}: a frame "
                "must be finite"
            )
    return own


class MotionGuard:
    """A stage and a camera under the executor's rules: every call has a real-time deadline.

    The safe-motion layer of :func:`run_zscan`, public so that other procedures that move
    the stage and snap (the focus searches of :mod:`nanoro_optics.autofocus`) keep the same
    rules. With ``timeout_s`` each device call runs in a worker thread and the caller waits
    for it at most ``timeout_s`` seconds of real time (:func:`time.monotonic`): past that,
    :class:`~nanoro_optics.hardware.errors.StageTimeoutError` or
    :class:`~nanoro_optics.hardware.errors.CameraTimeoutError` is raised on time and the
    blocked call is abandoned (Python cannot interrupt it; its late result is dropped).
    Moves are also timed on the stage's clock (``stage.clock.time()``) when it has one, as
    the simulated stages do, so a simulated stage ignoring its ``timeout_s`` times out too.
    Without ``timeout_s`` every call runs in the caller's thread, with no limit.

    The guard starts its worker thread on the first call; :meth:`close` (or leaving a
    ``with`` block) lets it end, and a later call starts a new one.

    Parameters
    ----------
    stage : ZStage
        The focus drive.
    camera : Camera, optional
        The camera (needed by :meth:`snap` only).
    timeout_s : float, keyword-only
        Deadline of each call (s, > 0, at most :data:`MAX_TIMEOUT_S`): a move (the command
        and the wait for idle together), a reading, a snap (also passed to ``snap``), a
        ``stop()``. None (default): no limit.

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage
    >>> stage = MockZStage(position_um=100.0)
    >>> check = ReadingCheck(100.0, *stage.limits_um, 0.1, 0.5)
    >>> with MotionGuard(stage, timeout_s=5.0) as guard:
    ...     guard.move(102.0)
    ...     guard.read(102.0, index=0, check=check)
    102.0
    """

    def __init__(
        self, stage: ZStage, camera: Camera | None = None, *, timeout_s: float | None = None
    ) -> None:
        if not isinstance(stage, ZStage):
            raise TypeError(f"stage must follow the ZStage protocol, got {type(stage).__name__}")
        if camera is not None and not isinstance(camera, Camera):
            raise TypeError(f"camera must follow the Camera protocol, got {type(camera).__name__}")
        self.stage = stage
        self.camera = camera
        self.timeout_s: float | None = (
            None
            if timeout_s is None
            else check_range(timeout_s, "timeout_s", 0.0, MAX_TIMEOUT_S, lo_inclusive=False)
        )
        clock_time = getattr(getattr(stage, "clock", None), "time", None)
        #: The clock moves are timed on: the stage's own when it has one, else monotonic.
        self.now: Callable[[], float] = clock_time if callable(clock_time) else time.monotonic
        self._calls = _DeviceCalls(self.timeout_s)
        self._first: _FrameSpec | None = None

    def __enter__(self) -> MotionGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def abandoned(self) -> int:
        """Number of device calls abandoned past their deadline."""
        return self._calls.abandoned

    def _deadline(self, what: str, t0: float) -> float | None:
        """Time left of what began at ``t0`` (stage clock); StageTimeoutError once run out."""
        if self.timeout_s is None:
            return None
        spent = self.now() - t0
        if spent > self.timeout_s:
            raise StageTimeoutError(
                f"{what} took {spent:.6g} s, beyond timeout_s={self.timeout_s!r} s (the stage "
                "did not keep to its timeout)"
            )
        return self.timeout_s - spent

    def move(self, z_um: float) -> None:
        """Command ``z_um`` and wait until the stage is idle, within one deadline.

        The caller checks the target against its limits first: the guard only moves.

        Raises
        ------
        StageTimeoutError
            When the command and the wait together pass ``timeout_s`` (real time, or the
            stage's clock); any error of the stage as it is.
        """
        timeout = self.timeout_s
        what = f"the move to {z_um!r} um"

        def command_and_wait() -> None:
            t0 = self.now()
            self.stage.move_to_um(z_um, timeout_s=timeout)
            self.stage.wait_until_idle(timeout_s=self._deadline(what, t0))
            self._deadline(what, t0)

        self._calls.stage(command_and_wait, what)

    def read(
        self,
        commanded_um: float,
        *,
        index: int | None,
        check: ReadingCheck,
        overshoot: bool = False,
    ) -> float:
        """Read the position (within the deadline) and check it; return it as a float.

        See :meth:`ReadingCheck.__call__` for ``commanded_um``, ``index`` and
        ``overshoot``.

        Raises
        ------
        StagePositionError
            For a reading the check refuses; StageTimeoutError past the deadline.
        """
        raw = self._calls.stage(self.stage.get_position_um, "get_position_um()")
        return check(raw, commanded_um, index, overshoot=overshoot)

    def snap(self, index: int) -> np.ndarray:
        """Snap a frame (within the deadline) and check it; return the owned copy.

        The first frame snapped through the guard sets the shape and dtype the later ones
        must have (see :func:`check_frame`).

        Raises
        ------
        CameraError
            For a frame :func:`check_frame` refuses; CameraTimeoutError past the deadline.
        """
        camera = self.camera
        if camera is None:
            raise TypeError("this MotionGuard has no camera: MotionGuard(stage, camera)")
        timeout = self.timeout_s
        raw = self._calls.camera(lambda: camera.snap(timeout_s=timeout), f"snap {index}")
        frame = check_frame(raw, index=index, like=self._first)
        if self._first is None:
            self._first = _FrameSpec(frame.shape, frame.dtype)
        return frame

    def stop(self) -> None:
        """Call ``stage.stop()`` (within the deadline); a failing or hanging stop hides nothing.

        Best effort: the caller raises the fault that made it stop, whatever ``stop()`` did.
        """
        try:
            self._calls.stage(self.stage.stop, "stop()")
        except Exception:  # best effort: the caller raises the original fault
            pass

    def close(self) -> None:
        """Let the worker thread end (a later call starts a new one)."""
        self._calls.close()
