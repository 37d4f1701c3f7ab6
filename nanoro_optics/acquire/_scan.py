"""Run a Z-scan plan: :func:`run_zscan` and the targets it commands (:func:`scan_targets_um`).

The guarantees and the faults table are in :mod:`nanoro_optics.acquire`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._text import plural
from .._validation import (
    as_float_array,
    check_choice,
    check_interval,
    check_positive,
    check_range,
)
from ..hardware.errors import (
    AcquisitionError,
    AcquisitionInterrupted,
    StageLimitError,
)
from ..hardware.protocols import Camera, ZStage
from ._guard import MAX_TIMEOUT_S, MotionGuard, ReadingCheck, _read_start
from ._stack import FrameInfo, StackFuserLike, ZStack

if TYPE_CHECKING:
    from ..zscan import ZScanLimits, ZScanPlan

__all__ = [
    "DEFAULT_READOUT_TOLERANCE_UM",
    "POSITION_TOLERANCE_SPACINGS",
    "run_zscan",
    "scan_targets_um",
]


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
