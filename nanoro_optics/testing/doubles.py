"""Misbehaving stage and camera doubles, the way real drivers and SDKs misbehave.

Each double follows its protocol (:class:`~nanoro_optics.hardware.ZStage` or
:class:`~nanoro_optics.hardware.Camera`) and breaks one promise that code driving
hardware tends to take for granted. The stages are :class:`~nanoro_optics.hardware.MockZStage`
subclasses, so they run on its simulated clock (nothing sleeps), take all its options
(limits, speed, backlash, noise, injected faults) and keep its log, which is the ground
truth of what was commanded and when ``stop()`` came.

=============================== =========================================================
double                          what it does wrong
=============================== =========================================================
:class:`BufferReusingCamera`    writes every frame into one buffer and returns that same
                                array each time (ring buffers, reused SDK arrays): keep a
                                reference, and the next snap changes it
:class:`NaNReadingStage`        one position reading (the k-th) is NaN, as a driver that
                                returns a failed serial read as NaN
:class:`SettlingStage`          ``wait_until_idle`` returns before the motion ends (a busy
                                flag that clears early), and each reading takes simulated
                                time, so readings of the still-moving stage differ
:class:`OvershootingStage`      a move ends ``overshoot_um`` below its target and reports
                                it truthfully (a lens below where it was sent)
:class:`SlowStage`              a move takes ``delay_s`` longer than it should and
                                ``wait_until_idle`` ignores ``timeout_s``
:class:`ReversedStage`          moves opposite to the command (a motor wired the wrong way,
                                a sign flipped in a driver's configuration), reporting
                                where it really goes
:class:`LateReportingStage`     ``wait_until_idle`` returns ``late_s`` of *real* time late,
                                ignoring ``timeout_s`` (a busy flag read over a slow bus)
:class:`BlockingCamera`         a snap that does not return (in real time) for
                                ``block_s`` seconds, or until :meth:`~BlockingCamera.release`
                                (a frame that never arrives, a stuck SDK call)
=============================== =========================================================

:func:`nanoro_optics.acquire.run_zscan` copes with every one of them (see its Faults
table); a driver wrapper or an acquisition loop of your own can be tested against them
the same way.

Examples
--------
>>> cam = BufferReusingCamera(shape=(2, 2))
>>> first = cam.snap()
>>> second = cam.snap()
>>> first is second, int(first[0, 0]), int(cam.delivered[0][0, 0])
(True, 2, 1)
>>> stage = NaNReadingStage(nan_on_read=2)
>>> stage.get_position_um(), stage.get_position_um()
(0.0, nan)
"""

from __future__ import annotations

import abc
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_finite_real, check_int, check_interval, check_positive
from ..hardware.errors import CameraError, StageLimitError
from ..hardware.mock_stage import MockZStage, SimulatedClock, StageEvent

__all__ = [
    "FAULT_SCAN_KINDS",
    "HANG_SLACK_S",
    "BlockingCamera",
    "BufferReusingCamera",
    "FaultScan",
    "FaultScanOutcome",
    "LateReportingStage",
    "NaNReadingStage",
    "OvershootingStage",
    "ReversedStage",
    "SettlingStage",
    "SlowStage",
    "run_fault_scan",
]

#: Longest real-time delay (s) the real-time doubles accept (a day): beyond it a test hangs.
MAX_REAL_DELAY_S = 86400.0


def _optional_move(value: Any, name: str) -> int | None:
    return None if value is None else check_int(value, name, 1)


class BufferReusingCamera:
    """A camera that returns one and the same buffer from every :meth:`snap`.

    Snap ``k`` (1-based) fills the buffer with ``k`` (modulo the range of an integer
    dtype) and returns it; :attr:`delivered` keeps a copy of each frame as it was when
    delivered, the ground truth to compare a stack against.

    Parameters
    ----------
    shape : tuple of int, keyword-only
        Frame shape, 2-D or ``(rows, cols, channels)`` (default ``(4, 4)``).
    dtype : numpy dtype, keyword-only
        An integer or float dtype (default ``uint16``).
    exposure_ms : float, keyword-only
        Initial exposure (> 0).
    fail_on_snap : int, keyword-only
        The k-th snap (1-based) raises :class:`~nanoro_optics.hardware.errors.CameraError`.
    clock : SimulatedClock, keyword-only
        Advanced by the exposure at each snap (e.g. the stage's ``clock``).

    Examples
    --------
    >>> cam = BufferReusingCamera(shape=(1, 3), dtype="uint8")
    >>> [int(cam.snap()[0, 0]) for _ in range(3)], cam.snap_count
    ([1, 2, 3], 3)
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...] = (4, 4),
        dtype: Any = np.uint16,
        exposure_ms: float = 1.0,
        fail_on_snap: int | None = None,
        clock: SimulatedClock | None = None,
    ) -> None:
        if (
            not isinstance(shape, tuple)
            or len(shape) not in (2, 3)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):
            raise ValueError(f"shape must be a tuple of 2 or 3 positive ints, got {shape!r}")
        dt = np.dtype(dtype)
        if dt.kind not in "iuf":
            raise TypeError(f"dtype must be an integer or float dtype, got {dt}")
        if clock is not None and not isinstance(clock, SimulatedClock):
            raise TypeError(f"clock must be a SimulatedClock, got {type(clock).__name__}")
        self._exposure_ms = check_positive(exposure_ms, "exposure_ms")
        self.fail_on_snap = _optional_move(fail_on_snap, "fail_on_snap")
        self.clock = clock
        self._buffer = np.zeros(shape, dtype=dt)
        self._modulus = None if dt.kind == "f" else int(np.iinfo(dt).max) + 1
        #: number of calls to :meth:`snap` (failed ones included)
        self.snap_count = 0
        #: a copy of every frame delivered, as it was at delivery
        self.delivered: list[np.ndarray] = []

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of every frame."""
        return tuple(self._buffer.shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of every frame."""
        return self._buffer.dtype

    @property
    def exposure_ms(self) -> float:
        """Current exposure in ms."""
        return self._exposure_ms

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure (finite, > 0)."""
        self._exposure_ms = check_positive(ms, "ms")

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        """Fill the one buffer with the snap number and return it (not a copy).

        Raises
        ------
        CameraError
            On the snap chosen by ``fail_on_snap``.
        """
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        self.snap_count += 1
        if self.fail_on_snap == self.snap_count:
            raise CameraError(f"injected camera fault on snap {self.snap_count}")
        k = self.snap_count
        self._buffer[...] = k if self._modulus is None else k % self._modulus
        self.delivered.append(self._buffer.copy())
        if self.clock is not None:
            self.clock.advance(self._exposure_ms / 1000.0)
        return self._buffer

    def __repr__(self) -> str:
        return (
            f"BufferReusingCamera(shape={self._buffer.shape}, dtype={self._buffer.dtype}, "
            f"snaps={self.snap_count})"
        )


class NaNReadingStage(MockZStage):
    """A mock stage whose ``nan_on_read``-th position reading (1-based) is NaN, once.

    Every call of :meth:`get_position_um` counts (:attr:`read_count`); the stage itself
    is where the mock says it is.

    Parameters
    ----------
    nan_on_read : int, keyword-only
        Which reading is NaN (>= 1; default 1).
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage`.
    """

    def __init__(self, *, nan_on_read: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.nan_on_read = check_int(nan_on_read, "nan_on_read", 1)
        #: number of calls to :meth:`get_position_um`
        self.read_count = 0

    def get_position_um(self) -> float:
        """Return the mock's position, except NaN on the ``nan_on_read``-th call."""
        self.read_count += 1
        if self.read_count == self.nan_on_read:
            return math.nan
        return super().get_position_um()


class SettlingStage(MockZStage):
    """A mock stage that reports idle too early, while it is still moving.

    :meth:`wait_until_idle` returns ``idle_early_ms`` of simulated time before the move
    and its settling end (at once when that is already past), and every reading takes
    ``read_time_ms``, so two readings of the moving stage disagree. With the mock's
    default speed (1000 um/s) a 1 um move takes 1 ms.

    Parameters
    ----------
    idle_early_ms : float, keyword-only
        How early the wait returns (>= 0; default 10 ms).
    read_time_ms : float, keyword-only
        Simulated time one :meth:`get_position_um` takes (>= 0; default 1 ms).
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage` (``settle_ms`` defaults
        to 0 here, so an early return falls within the travel).

    Examples
    --------
    >>> stage = SettlingStage(idle_early_ms=20.0)
    >>> stage.move_to_um(100.0); stage.wait_until_idle()
    >>> stage.get_position_um() < stage.get_position_um() < 100.0
    True
    """

    def __init__(
        self, *, idle_early_ms: float = 10.0, read_time_ms: float = 1.0, **options: Any
    ) -> None:
        options.setdefault("settle_ms", 0.0)
        super().__init__(**options)
        self.idle_early_ms = check_positive(idle_early_ms, "idle_early_ms", allow_zero=True)
        self.read_time_ms = check_positive(read_time_ms, "read_time_ms", allow_zero=True)

    def get_position_um(self) -> float:
        """Read the position, then let ``read_time_ms`` pass."""
        z = super().get_position_um()
        self.clock.advance(self.read_time_ms / 1000.0)
        return z

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Like the mock's, but return ``idle_early_ms`` before the move has ended."""
        if self._faulted or self._hung:
            super().wait_until_idle(timeout_s)
            return
        end_s = self._t2
        self._t2 = max(end_s - self.idle_early_ms / 1000.0, self._t0)  # the wait sees this
        try:
            super().wait_until_idle(timeout_s)
        finally:
            self._t2 = end_s  # the carriage keeps its own pace


class _ChosenMoveStage(MockZStage, abc.ABC):
    """A mock stage that alters the accepted move ``chosen_move`` (every move when None)."""

    chosen_move: int | None = None

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        """Start the move as the mock does; alter it if it is the chosen one."""
        before = self.move_count
        super().move_to_um(z_um, timeout_s=timeout_s)
        if self.move_count > before and self.chosen_move in (None, self.move_count):
            self._alter_move()

    @abc.abstractmethod
    def _alter_move(self) -> None:
        """Change the move just started (the carriage's target or its timing)."""


class OvershootingStage(_ChosenMoveStage):
    """A mock stage whose moves end ``overshoot_um`` below their targets.

    The position reported is the true one (below the target). Only the move chosen by
    ``overshoot_on_move`` overshoots, or every move when it is None.

    Parameters
    ----------
    overshoot_um : float, keyword-only
        How far below the target the move ends (> 0).
    overshoot_on_move : int, keyword-only
        The accepted move (1-based, as counted by :attr:`move_count`) that overshoots;
        None (default): every move.
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage`.

    Examples
    --------
    >>> stage = OvershootingStage(overshoot_um=2.0, position_um=5.0)
    >>> stage.move_to_um(0.0); stage.wait_until_idle(); stage.get_position_um()
    -2.0
    """

    def __init__(
        self, *, overshoot_um: float, overshoot_on_move: int | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.overshoot_um = check_positive(overshoot_um, "overshoot_um")
        self.chosen_move = _optional_move(overshoot_on_move, "overshoot_on_move")

    @property
    def overshoot_on_move(self) -> int | None:
        """The move that overshoots (None: every move)."""
        return self.chosen_move

    def _alter_move(self) -> None:
        self._to_um -= self.overshoot_um  # the carriage ends below the target


class SlowStage(_ChosenMoveStage):
    """A mock stage whose moves take ``delay_s`` longer and whose waits ignore ``timeout_s``.

    :meth:`wait_until_idle` always waits (in simulated time) until the move is over,
    however long that is, and returns normally: a driver that never times out.

    Parameters
    ----------
    delay_s : float, keyword-only
        Extra duration of a slow move (> 0).
    slow_on_move : int, keyword-only
        The accepted move (1-based) that is slow; None (default): every move.
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage`.

    Examples
    --------
    >>> stage = SlowStage(delay_s=30.0)
    >>> stage.move_to_um(1.0); stage.wait_until_idle(timeout_s=1.0)
    >>> stage.clock.time() > 30.0
    True
    """

    def __init__(self, *, delay_s: float, slow_on_move: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.delay_s = check_positive(delay_s, "delay_s")
        self.chosen_move = _optional_move(slow_on_move, "slow_on_move")

    @property
    def slow_on_move(self) -> int | None:
        """The slow move (None: every move)."""
        return self.chosen_move

    def _alter_move(self) -> None:
        self._t1 += self.delay_s  # the carriage arrives later
        self._t2 += self.delay_s

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Wait until the move is over, ignoring ``timeout_s``."""
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        super().wait_until_idle(None)


def _real_delay(value: Any, name: str) -> float:
    out = check_positive(value, name, allow_zero=True)
    if out > MAX_REAL_DELAY_S:
        raise ValueError(f"{name} must be <= {MAX_REAL_DELAY_S!r} s, got {out!r}")
    return out


class ReversedStage(MockZStage):
    """A mock stage that moves opposite to the command, and reports where it really is.

    A move from the drive's position ``p`` to ``z`` goes to ``2 p - z`` instead (held at
    the travel limits, as an end stop would hold it); the play, speed and settling of the
    mock apply to that move. The command is checked against the limits as sent, and the
    log records the command as sent (:attr:`MockZStage.commanded_um`), so a test sees
    what the caller asked for; :attr:`reached_um` lists where each move went.

    Parameters
    ----------
    reversed_on_move : int, keyword-only
        The accepted move (1-based) that goes the wrong way; None (default): every move.
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage`.

    Examples
    --------
    >>> stage = ReversedStage(position_um=100.0)
    >>> stage.move_to_um(112.0); stage.wait_until_idle(); stage.get_position_um()
    88.0
    >>> stage.commanded_um, stage.reached_um
    ([112.0], [88.0])
    """

    def __init__(self, *, reversed_on_move: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.reversed_on_move = _optional_move(reversed_on_move, "reversed_on_move")
        #: the drive target of every accepted move (the mirrored one when reversed)
        self.reached_um: list[float] = []

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        """Start the move the wrong way (see the class notes)."""
        z = check_finite_real(z_um, "z_um")
        lo, hi = self.limits_um
        if not lo <= z <= hi:  # the command as sent is refused, as the mock refuses it
            here = self._here()
            self.log.append(StageEvent(self.clock.time(), "move", z, here))
            self.log.append(StageEvent(self.clock.time(), "refused", z, here))
            raise StageLimitError(f"z_um={z!r} is outside the stage limits [{lo!r}, {hi!r}] um")
        flip = self.reversed_on_move in (None, self.move_count + 1)
        target = min(max(2.0 * self._motor_um - z, lo), hi) if flip else z
        first = len(self.log)
        before = self.move_count
        try:
            super().move_to_um(target, timeout_s=timeout_s)
        finally:
            for i in range(first, len(self.log)):  # the log shows the command as sent
                e = self.log[i]
                if e.kind in ("move", "refused", "fault"):
                    self.log[i] = StageEvent(e.time_s, e.kind, z, e.measured_um)
            if self.move_count > before:
                self.reached_um.append(target)


class LateReportingStage(MockZStage):
    """A mock stage whose ``wait_until_idle`` returns ``late_s`` seconds late in real time.

    The wait sleeps ``late_s`` of wall-clock time (``time.sleep``) before it waits for the
    move as the mock does, whatever ``timeout_s`` it is given: a driver that polls a busy
    flag over a slow bus, or blocks in a vendor call. Only code that keeps a real-time
    deadline itself notices (the simulated clock does not move during the sleep).

    Parameters
    ----------
    late_s : float, keyword-only
        Real-time delay of each late wait (>= 0, at most :data:`MAX_REAL_DELAY_S`).
    late_on_move : int, keyword-only
        The accepted move (1-based) whose wait is late; None (default): every wait, also
        one without a move before it.
    **options
        Options of :class:`~nanoro_optics.hardware.MockZStage`.
    """

    def __init__(self, *, late_s: float, late_on_move: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.late_s = _real_delay(late_s, "late_s")
        self.late_on_move = _optional_move(late_on_move, "late_on_move")
        #: number of waits that were late
        self.late_count = 0

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Sleep ``late_s`` (real time) if this wait is chosen, then wait as the mock does."""
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        if self.late_on_move in (None, self.move_count):
            self.late_count += 1
            time.sleep(self.late_s)
        super().wait_until_idle(timeout_s)


class BlockingCamera:
    """A camera whose chosen snap blocks in real time, then delivers a fresh frame.

    Snap ``k`` (1-based) returns a new array filled with ``k`` (modulo an integer dtype's
    range); :attr:`delivered` keeps each frame that was returned. The snap chosen by
    ``block_on_snap`` (every snap when None) first waits ``block_s`` seconds of real time,
    or until :meth:`release` when ``block_s`` is None, whatever ``timeout_s`` it is given.

    Parameters
    ----------
    shape : tuple of int, keyword-only
        Frame shape, 2-D or ``(rows, cols, channels)`` (default ``(4, 4)``).
    dtype : numpy dtype, keyword-only
        An integer or float dtype (default ``uint16``).
    block_on_snap : int, keyword-only
        The snap that blocks (1-based); None (default): every snap.
    block_s : float or None, keyword-only
        How long it blocks (>= 0, at most :data:`MAX_REAL_DELAY_S`); None (default):
        until :meth:`release` is called.
    exposure_ms : float, keyword-only
        Initial exposure (> 0).

    Examples
    --------
    >>> cam = BlockingCamera(block_on_snap=2, block_s=0.0)
    >>> [int(cam.snap()[0, 0]) for _ in range(2)], cam.blocked_count
    ([1, 2], 1)
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...] = (4, 4),
        dtype: Any = np.uint16,
        block_on_snap: int | None = None,
        block_s: float | None = None,
        exposure_ms: float = 1.0,
    ) -> None:
        self._template = BufferReusingCamera(shape=shape, dtype=dtype, exposure_ms=exposure_ms)
        self.block_on_snap = _optional_move(block_on_snap, "block_on_snap")
        self.block_s = None if block_s is None else _real_delay(block_s, "block_s")
        self._released = threading.Event()
        #: number of snaps that blocked
        self.blocked_count = 0
        #: a copy of every frame returned by :meth:`snap`
        self.delivered: list[np.ndarray] = []

    @property
    def exposure_ms(self) -> float:
        """Current exposure in ms."""
        return self._template.exposure_ms

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure (finite, > 0)."""
        self._template.set_exposure_ms(ms)

    @property
    def snap_count(self) -> int:
        """Number of calls to :meth:`snap` (the blocking ones included)."""
        return self._template.snap_count

    def release(self) -> None:
        """Let every blocked snap (and every later one) return at once."""
        self._released.set()

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        """Return a new frame filled with the snap number, after blocking if chosen."""
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        k = self._template.snap_count + 1
        if self.block_on_snap in (None, k):
            self.blocked_count += 1
            self._released.wait(self.block_s)
        frame = self._template.snap().copy()  # a fresh array per snap
        self.delivered.append(frame.copy())
        return frame

    def __repr__(self) -> str:
        return f"BlockingCamera(block_on_snap={self.block_on_snap}, snaps={self.snap_count})"


# ------------------------------------------------------------------ fault-injection scans

#: Misbehaviours :class:`FaultScan` can inject: ``"none"``; a stage that ``"fail"`` s, hangs
#: (``"hang"``, simulated), reads NaN (``"nan"``), overshoots below its target
#: (``"overshoot"``), is slow and ignores its timeout (``"slow"``, simulated), reports idle
#: while moving (``"settling"``), moves the wrong way (``"reversed"``) or reports idle late
#: in real time (``"late"``); a camera that fails (``"camera"``) or blocks in real time
#: (``"blocking"``).
FAULT_SCAN_KINDS = (
    "none",
    "fail",
    "hang",
    "nan",
    "overshoot",
    "slow",
    "settling",
    "reversed",
    "late",
    "camera",
    "blocking",
)
#: Wall time (s) a scan may take beyond ``timeout_s`` per blocked device call before
#: :func:`run_fault_scan` calls it a hang (every other call of a scan on the simulated
#: clock returns at once).
HANG_SLACK_S = 1.0


@dataclass(frozen=True)
class FaultScan:
    """One scan on misbehaving doubles, for :func:`run_fault_scan`.

    Attributes
    ----------
    kind : str
        One of :data:`FAULT_SCAN_KINDS`.
    at : int
        The move, reading or snap (1-based) that goes wrong; for ``"reversed"``, 1 means
        every move (a motor wired the wrong way), more the one move ``at``.
    size : float
        ``overshoot_um`` of an overshoot, ``delay_s`` (simulated) of a slow move,
        ``idle_early_ms`` of a settling stage (> 0); unused otherwise.
    limits_um : (float, float)
        The stage's travel limits.
    start_um : float
        Where the stage stands (the start), inside the limits.
    spacing_um, count : float, int
        The plan: ``count`` steps of ``spacing_um`` above the start (``count + 1`` images).
    backlash_um : float
        The executor's backlash overshoot (>= 0).
    stage_backlash_um, noise_um : float
        The stage's play and positioning noise (>= 0).
    plan_has_start : bool
        Give the start in the plan; else the executor reads it.
    return_to_start : bool
        The executor's ``return_to_start``.
    timeout_s : float
        The executor's ``timeout_s`` (> 0); a late wait or a blocked snap lasts 20 times
        as long (a blocked snap until released).
    """

    kind: str = "none"
    at: int = 1
    size: float = 1.0
    limits_um: tuple[float, float] = (0.0, 1000.0)
    start_um: float = 100.0
    spacing_um: float = 1.0
    count: int = 4
    backlash_um: float = 0.0
    stage_backlash_um: float = 0.0
    noise_um: float = 0.0
    plan_has_start: bool = True
    return_to_start: bool = True
    timeout_s: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in FAULT_SCAN_KINDS:
            raise ValueError(f"kind must be one of {FAULT_SCAN_KINDS}, got {self.kind!r}")
        check_int(self.at, "at", 1)
        check_positive(self.size, "size")
        lo, hi = check_interval(self.limits_um, "limits_um")
        start = check_finite_real(self.start_um, "start_um")
        if not lo <= start <= hi:
            raise ValueError(f"start_um must be inside limits_um {self.limits_um}, got {start!r}")
        spacing = check_positive(self.spacing_um, "spacing_um")
        if not math.isfinite(start + spacing * check_int(self.count, "count", 0) + 100.0):
            raise ValueError(
                f"spacing_um={spacing!r} x count={self.count} above start_um={start!r} is not "
                "a finite position"
            )
        for name in ("backlash_um", "stage_backlash_um", "noise_um"):
            check_positive(getattr(self, name), name, allow_zero=True)
        for name in ("plan_has_start", "return_to_start"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        timeout = check_positive(self.timeout_s, "timeout_s")
        if 20 * timeout > MAX_REAL_DELAY_S:
            raise ValueError(f"timeout_s must be <= {MAX_REAL_DELAY_S / 20!r} s, got {timeout!r}")


@dataclass(frozen=True)
class FaultScanOutcome:
    """What :func:`run_fault_scan` saw: the executor's result and the devices' ground truth.

    Attributes
    ----------
    scan : FaultScan
        The scan that ran.
    outcome : str
        ``"complete"``, ``"stopped"`` (an ``AcquisitionError``), ``"refused"`` (a
        ``ValueError`` or ``HardwareError`` before anything moved) or the name of any
        other exception (a defect).
    cause : str
        Name of the error's cause (``""`` when none).
    moves : int
        Move commands the stage received.
    moves_from_below_start : int
        Moves commanded while the stage stood below the start by more than the
        executor's readout tolerance: a second move after one that went below the start.
    moves_outside_limits : int
        Move commands outside the stage limits.
    frames_delivered, frames_kept, frames_lost : int
        Frames the camera returned in time, frames in the stack (or ``err.partial``), and
        frames delivered in time but missing or altered in the stack.
    elapsed_s, allowed_s : float
        Wall time of the scan and what it may take (``timeout_s`` per blocked device call
        plus :data:`HANG_SLACK_S`).
    """

    scan: FaultScan
    outcome: str
    cause: str
    moves: int
    moves_from_below_start: int
    moves_outside_limits: int
    frames_delivered: int
    frames_kept: int
    frames_lost: int
    elapsed_s: float
    allowed_s: float

    @property
    def hung(self) -> bool:
        """True when the scan took longer than :attr:`allowed_s`."""
        return self.elapsed_s > self.allowed_s

    @property
    def safe(self) -> bool:
        """True when no rule was broken (no unsafe move, no frame lost, no hang, no defect)."""
        return (
            self.outcome in ("complete", "stopped", "refused")
            and self.moves_from_below_start == 0
            and self.moves_outside_limits == 0
            and self.frames_lost == 0
            and not self.hung
        )


def _fault_stage(scan: FaultScan) -> MockZStage:
    options: dict[str, Any] = {
        "limits_um": scan.limits_um,
        "position_um": scan.start_um,
        "backlash_um": scan.stage_backlash_um,
        "position_noise_um": scan.noise_um,
        "speed_um_per_s": 1e5,  # every healthy move well inside timeout_s
        "settle_ms": 1.0,
    }
    k, at, size = scan.kind, scan.at, scan.size
    if k == "fail":
        return MockZStage(fail_on_move=at, **options)
    if k == "hang":
        return MockZStage(hang_on_move=at, **options)
    if k == "nan":
        return NaNReadingStage(nan_on_read=at, **options)
    if k == "overshoot":
        return OvershootingStage(overshoot_um=size, overshoot_on_move=at, **options)
    if k == "slow":
        return SlowStage(delay_s=size, slow_on_move=at, **options)
    if k == "settling":
        return SettlingStage(idle_early_ms=size, **options)
    if k == "reversed":
        return ReversedStage(reversed_on_move=None if at == 1 else at, **options)
    if k == "late":
        return LateReportingStage(late_s=20 * scan.timeout_s, late_on_move=at, **options)
    return MockZStage(**options)


def run_fault_scan(scan: FaultScan) -> FaultScanOutcome:
    """Run :func:`~nanoro_optics.acquire.run_zscan` on the doubles ``scan`` describes; audit it.

    The stage's log (every command, with where the stage stood when it came) and the
    camera's delivered frames are the ground truth the outcome is measured against.

    Parameters
    ----------
    scan : FaultScan
        The rig, the plan and the fault.

    Returns
    -------
    FaultScanOutcome

    Examples
    --------
    >>> out = run_fault_scan(FaultScan(kind="reversed", backlash_um=2.0, timeout_s=1.0))
    >>> out.outcome, out.moves, out.moves_from_below_start, out.safe
    ('stopped', 1, 0, True)
    """
    from ..acquire import DEFAULT_READOUT_TOLERANCE_UM, run_zscan
    from ..hardware.errors import AcquisitionError, CameraTimeoutError, HardwareError
    from ..zscan import ZScanPlan

    if not isinstance(scan, FaultScan):
        raise TypeError(f"scan must be a FaultScan, got {type(scan).__name__}")
    stage = _fault_stage(scan)
    camera: Any
    if scan.kind == "blocking":
        camera = BlockingCamera(shape=(2, 2), block_on_snap=scan.at)
    else:
        camera = BufferReusingCamera(
            shape=(2, 2), fail_on_snap=scan.at if scan.kind == "camera" else None
        )
    plan = ZScanPlan(
        scan.spacing_um * scan.count,
        scan.spacing_um,
        scan.count,
        start_um=scan.start_um if scan.plan_has_start else None,
    )
    outcome, cause = "complete", ""
    kept: tuple[np.ndarray, ...] = ()
    t0 = time.perf_counter()
    try:
        stack = run_zscan(
            plan,
            stage,
            camera,
            backlash_um=scan.backlash_um,
            return_to_start=scan.return_to_start,
            timeout_s=scan.timeout_s,
            position_tolerance_um=max(
                0.25 * scan.spacing_um, scan.stage_backlash_um + 6 * scan.noise_um
            ),
        )
        kept = stack.frames
    except AcquisitionError as exc:
        outcome, kept = "stopped", exc.partial.frames
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
    except (ValueError, HardwareError) as exc:
        outcome, cause = "refused", type(exc).__name__
    except Exception as exc:  # reported as a defect, not raised
        outcome = type(exc).__name__
    elapsed = time.perf_counter() - t0
    delivered = list(camera.delivered)  # before a blocked snap is released
    if isinstance(camera, BlockingCamera):
        camera.release()
    n_blocked = getattr(camera, "blocked_count", 0) + getattr(stage, "late_count", 0)
    abandoned_snap = 1 if cause == CameraTimeoutError.__name__ else 0
    altered = sum(
        not np.array_equal(got, truth)
        for got, truth in zip(kept, delivered[: len(kept)], strict=False)
    )
    lost = altered + max(0, len(delivered) - len(kept) - abandoned_snap)
    lo, hi = scan.limits_um
    floor = scan.start_um - DEFAULT_READOUT_TOLERANCE_UM
    moves = [e for e in stage.log if e.kind == "move"]
    return FaultScanOutcome(
        scan=scan,
        outcome=outcome,
        cause=cause,
        moves=len(moves),
        moves_from_below_start=sum(e.measured_um < floor for e in moves),
        moves_outside_limits=sum(not lo <= e.commanded_um <= hi for e in moves),
        frames_delivered=len(delivered),
        frames_kept=len(kept),
        frames_lost=int(lost),
        elapsed_s=elapsed,
        allowed_s=n_blocked * scan.timeout_s + HANG_SLACK_S,
    )
