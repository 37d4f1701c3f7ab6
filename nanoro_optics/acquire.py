"""Run a Z-scan plan on a stage and a camera, safely, optionally fusing while acquiring.

:func:`run_zscan` follows the capture sequence of Urwin (2021) [1]_: the stage moves up to the top
of the plan (``distance_um`` above the start), snaps, then moves down one spacing at a
time and snaps at each position, the last image at the start; it never goes below the
start, where the user placed the lens. Setup is separate from execution (as in
pymmcore-plus' ``PMDAEngine.setup_event`` / ``exec_event``): the plan's problems and every
position, including a backlash overshoot, are checked against the stage limits before
anything moves.

Faults
------
=============================== ============================================================
what failed                     what the executor does
=============================== ============================================================
the stage (any exception from   calls ``stage.stop()``, moves no more, raises
``move_to_um``, ``wait_until_   :class:`~nanoro_optics.hardware.errors.AcquisitionError`
idle``, ``get_position_um``)    carrying the frames captured so far
the camera, the fuser or a      moves back to the start (if ``return_to_start``), then
callback (stage healthy)        raises ``AcquisitionError`` carrying the frames so far
KeyboardInterrupt               calls ``stage.stop()``, moves no more, raises
                                :class:`~nanoro_optics.hardware.errors.AcquisitionInterrupted`
                                (a ``KeyboardInterrupt``) carrying the frames so far
=============================== ============================================================

References
----------
.. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021),
   "Physical movement of the Z stage".
.. [2] pymmcore-plus, "MDA engine", https://pymmcore-plus.github.io/pymmcore-plus/
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ._text import plural
from ._validation import check_choice, check_finite_real, check_interval, check_positive
from .hardware.errors import (
    AcquisitionError,
    AcquisitionInterrupted,
    CameraError,
    StageLimitError,
)
from .hardware.protocols import Camera, ZStage

if TYPE_CHECKING:
    from .zscan import ZScanLimits, ZScanPlan

__all__ = ["FrameInfo", "StackFuserLike", "ZStack", "run_zscan", "scan_targets_um"]


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
        The frames in capture order (top first), as the camera returned them.
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
        The fuser's result (e.g. a :class:`~nanoro_optics.fusion.FusionResult`) after a
        complete scan with ``fuser=``, else None.
    elapsed_s : float
        Wall-clock duration of the scan in seconds.
    plan : ZScanPlan or None
        The plan that was run.
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

    def __post_init__(self) -> None:
        for name in ("commanded_um", "measured_um", "planned_um"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "frames", tuple(self.frames))
        if not len(self.frames) == self.commanded_um.size == self.measured_um.size:
            raise ValueError(
                f"frames ({len(self.frames)}), commanded_um ({self.commanded_um.size}) and "
                f"measured_um ({self.measured_um.size}) must have the same length"
            )

    def __len__(self) -> int:
        return len(self.frames)

    def as_array(self) -> np.ndarray:
        """Return the frames stacked along a new first axis (top first)."""
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
    targets = [float(z) for z in positions_um]
    if b > 0 and targets:
        targets.insert(0, targets[0] + b)
    return targets


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
) -> ZStack:
    """Acquire a Z stack following ``plan``, top to bottom, never below the start.

    Parameters
    ----------
    plan : ZScanPlan
        The scan. When its ``start_um`` is None the start is the stage's position now.
    stage : ZStage
        The focus drive (any object following :class:`~nanoro_optics.hardware.ZStage`).
    camera : Camera
        The camera (any object following :class:`~nanoro_optics.hardware.Camera`).
    return_to_start : bool, keyword-only
        Command the stage back to the start after the scan and after a camera fault while
        the stage is healthy (default True). A complete scan ends at the start anyway.
    settle_ms : float, keyword-only
        Extra wait after the stage reports idle, before each snap (>= 0).
    backlash_um : float, keyword-only
        Overshoot above the top on the first move, so every position is approached from
        above (>= 0). Should be at least the stage's mechanical play.
    fuser : object with ``add(frame, *, z_um)`` and ``result()``, keyword-only
        Fuses frames as they arrive; its result is :attr:`ZStack.fused`.
    fuse_z : {"measured", "commanded"}, keyword-only
        Which position the fuser gets as ``z_um`` (default the measured one, so the depth
        map reflects where the stage really was; "commanded" keeps the positions exactly
        evenly spaced, e.g. for a stage whose readout is noisier than the spacing).
    on_frame : callable, keyword-only
        Called as ``on_frame(frame, info)`` with a :class:`FrameInfo` after each frame.
    progress : callable, keyword-only
        Called as ``progress(done, total)`` after each frame.
    limits : ZScanLimits, keyword-only
        Objective-dependent plan limits passed to ``plan.problems``.
    timeout_s : float, keyword-only
        Time allowed for each move, each wait for idle and each snap (None: no limit).
    sleep : callable, keyword-only
        Used for the ``settle_ms`` waits. Default: ``stage.clock.sleep`` when the stage
        exposes a simulated clock (as :class:`~nanoro_optics.hardware.MockZStage` does),
        else :func:`time.sleep`.

    Returns
    -------
    ZStack
        The frames with commanded and measured positions, ``complete=True``.

    Raises
    ------
    ValueError
        If the plan has problems (a :class:`~nanoro_optics.zscan.PlanProblemsError`), or
        for bad arguments; nothing has moved.
    StageLimitError
        If a position (or the backlash overshoot) is outside ``stage.limits_um``; nothing
        has moved.
    TypeError
        If ``stage`` or ``camera`` does not follow its protocol.
    AcquisitionError
        After a fault during the scan; ``err.partial`` is a :class:`ZStack` with every
        frame captured before the fault, and the original error is ``err.__cause__``.
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
    settle_s = check_positive(settle_ms, "settle_ms", allow_zero=True) / 1000.0
    use_measured = check_choice(fuse_z, "fuse_z", ("measured", "commanded")) == "measured"
    backlash = check_positive(backlash_um, "backlash_um", allow_zero=True)
    timeout = None if timeout_s is None else check_positive(timeout_s, "timeout_s")
    for name, fn in (("on_frame", on_frame), ("progress", progress), ("sleep", sleep)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")
    if fuser is not None and not (
        callable(getattr(fuser, "add", None)) and callable(getattr(fuser, "result", None))
    ):
        raise TypeError(f"fuser must have add(frame, *, z_um) and result(), got {fuser!r}")
    if sleep is None:
        clock = getattr(stage, "clock", None)
        sleep = getattr(clock, "sleep", None) or time.sleep

    problems = plan.problems(limits)
    if problems:
        from .zscan import PlanProblemsError

        raise PlanProblemsError(problems)
    lo, hi = _check_limits(stage)
    if plan.start_um is not None:
        start = float(plan.start_um)
        positions = plan.positions_um()
    else:
        start = check_finite_real(stage.get_position_um(), "stage.get_position_um()")
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

    # ---------------------------------------------------------------- execution
    n_images = len(positions)
    frames: list[np.ndarray] = []
    commanded: list[float] = []
    measured: list[float] = []
    t_begin = time.perf_counter()
    last_commanded = math.nan
    first_shape: tuple[int, ...] | None = None

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
        )

    def move(z: float) -> None:
        nonlocal last_commanded
        last_commanded = z
        stage.move_to_um(z, timeout_s=timeout)
        stage.wait_until_idle(timeout_s=timeout)

    def fail_stage(exc: BaseException, index: int) -> AcquisitionError:
        _safe_stop(stage)
        return AcquisitionError(
            f"stage fault before frame {index} of {n_images} ({type(exc).__name__}: {exc}); "
            f"the stage was stopped; {len(frames)} frame(s) kept",
            partial=snapshot(),
            stage_stopped=True,
        )

    def interrupted(index: int) -> AcquisitionInterrupted:
        _safe_stop(stage)
        return AcquisitionInterrupted(
            f"Z scan interrupted at frame {index} of {n_images}; the stage was stopped; "
            f"{len(frames)} frame(s) kept",
            partial=snapshot(),
        )

    n_pre = len(targets) - n_images  # overshoot moves before the first image
    try:
        for z in targets[:n_pre]:
            move(z)
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
            z_meas = float(stage.get_position_um())
        except KeyboardInterrupt:
            raise interrupted(i) from None
        except Exception as exc:
            raise fail_stage(exc, i) from exc
        # the camera / processing part: the stage is healthy
        try:
            frame = camera.snap(timeout_s=timeout)
            frame = _check_frame(frame, i, first_shape)
            first_shape = frame.shape
            frames.append(frame)
            commanded.append(z)
            measured.append(z_meas)
            if fuser is not None:
                fuser.add(frame, z_um=z_meas if use_measured else z)
            if on_frame is not None:
                on_frame(frame, FrameInfo(i, n_images, z, z_meas))
            if progress is not None:
                progress(len(frames), n_images)
        except KeyboardInterrupt:
            raise interrupted(i) from None
        except Exception as exc:
            returned = False
            if return_to_start:
                try:
                    move(start)
                    returned = True
                except KeyboardInterrupt:
                    raise interrupted(i) from None
                except Exception as exc2:
                    raise fail_stage(exc2, i) from exc
            raise AcquisitionError(
                f"frame {i} of {n_images} failed ({type(exc).__name__}: {exc}); "
                f"{len(frames)} frame(s) kept"
                + ("; the stage is back at the start" if returned else ""),
                partial=snapshot(returned=returned),
                returned_to_start=returned,
            ) from exc

    returned = False
    if return_to_start:
        try:
            if last_commanded != start:
                move(start)
            returned = True
        except KeyboardInterrupt:
            raise interrupted(n_images) from None
        except Exception as exc:
            raise fail_stage(exc, n_images) from exc
    fused = None
    if fuser is not None:
        try:
            fused = fuser.result()
        except Exception as exc:
            raise AcquisitionError(
                f"fusing the {plural(len(frames), 'frame')} failed ({type(exc).__name__}: {exc})",
                partial=snapshot(returned=returned),
                returned_to_start=returned,
            ) from exc
    return snapshot(returned=returned, complete=True, fused=fused)


def _safe_stop(stage: Any) -> None:
    """Call ``stage.stop()``; a failing stop must not hide the original error."""
    try:
        stage.stop()
    except Exception:  # best effort: the caller raises the original fault
        pass


def _check_frame(frame: Any, index: int, first_shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise CameraError(f"frame {index} is a {type(frame).__name__}, not a numpy array")
    if frame.ndim not in (2, 3) or frame.size == 0:
        raise CameraError(f"frame {index} has shape {frame.shape}; expected 2-D or colour 3-D")
    if first_shape is not None and frame.shape != first_shape:
        raise CameraError(
            f"frame {index} has shape {frame.shape}, unlike the first frame's {first_shape}"
        )
    return frame
