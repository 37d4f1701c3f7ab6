"""The safe-motion layer: checked moves and snaps under real-time deadlines, a safe stop.

:class:`MotionGuard`, :class:`ReadingCheck` and :func:`check_frame` keep the rules of the
package's Guarantees (see :mod:`nanoro_optics.acquire`); ``_DeviceCalls`` runs each device
call in a worker thread under its deadline.
"""

from __future__ import annotations

import math
import numbers
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import (
    check_finite_real,
    check_interval,
    check_positive,
    check_range,
)
from ..hardware.errors import (
    CameraError,
    CameraTimeoutError,
    StagePositionError,
    StageTimeoutError,
)
from ..hardware.protocols import Camera, ZStage

__all__ = ["MAX_TIMEOUT_S", "MotionGuard", "ReadingCheck", "check_frame"]

#: Longest ``timeout_s`` (and ``settle_ms`` / 1000) :func:`run_zscan` accepts, in seconds
#: (about 116 days; the thread waits of the deadline need a bounded time).
MAX_TIMEOUT_S = 1e7


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
    """The rules a measured stage position must follow (the Faults of :mod:`nanoro_optics.acquire`).

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
