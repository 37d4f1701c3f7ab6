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
from typing import Any

import numpy as np

from .._validation import check_int, check_positive
from ..hardware.errors import CameraError
from ..hardware.mock_stage import MockZStage, SimulatedClock

__all__ = [
    "BufferReusingCamera",
    "NaNReadingStage",
    "OvershootingStage",
    "SettlingStage",
    "SlowStage",
]


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
