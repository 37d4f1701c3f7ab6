"""A mock focus stage on a simulated clock, with backlash, noise, drift and injected faults.

Nothing here sleeps: moves, settling and timeouts advance a :class:`SimulatedClock` that
the stage can share with a :class:`~nanoro_optics.hardware.sim_camera.SimulatedCamera`
(exposures advance it too) and with :func:`nanoro_optics.acquire.run_zscan` (its settle
waits go through ``stage.clock.sleep``). Tests therefore run thousands of scans in seconds.

Model
-----
Motion is a constant-speed ramp followed by a settle time. Backlash is the classic *play*
(dead-band) operator: the carriage is pushed down by the drive when the drive goes below
it and dragged up when the drive goes more than ``backlash_um`` above it, so after an
upward move the carriage sits ``backlash_um`` below the target, and a target approached
from above (after an overshoot of at least ``backlash_um``) is reached exactly. Position
noise is a Gaussian error of the carriage drawn once per move (standard deviation
``position_noise_um``); drift is a constant creep in um/s since the stage was created, as
from thermal expansion. ``get_position_um`` reports the carriage's true position (a
perfect encoder), which is what a camera images.

References
----------
.. [1] M. A. Krasnosel'skii and A. V. Pokrovskii, *Systems with Hysteresis*, Springer
   (1989), the play operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import (
    check_finite_real,
    check_int,
    check_interval,
    check_positive,
    check_range,
)
from .errors import StageFault, StageLimitError, StageTimeoutError

__all__ = ["MIN_SPEED_UM_PER_S", "MockZStage", "SimulatedClock", "StageEvent"]

#: Slowest travel speed (um/s) :class:`MockZStage` accepts (1 pm/s).
MIN_SPEED_UM_PER_S = 1e-6


class SimulatedClock:
    """A clock that advances only when told to; stands in for ``time.monotonic``/``sleep``.

    Parameters
    ----------
    start_s : float, optional
        Initial reading in seconds.

    Examples
    --------
    >>> clock = SimulatedClock()
    >>> clock.sleep(0.25); clock.advance(0.5)
    >>> clock.time()
    0.75
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = check_finite_real(start_s, "start_s")

    def time(self) -> float:
        """Return the current reading in seconds."""
        return self._now_s

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by ``dt_s`` seconds (>= 0; the reading stays finite)."""
        later = self._now_s + check_positive(dt_s, "dt_s", allow_zero=True)
        if not math.isfinite(later):
            raise ValueError(
                f"dt_s={dt_s!r} takes the clock past the largest float from {self._now_s!r} s"
            )
        self._now_s = later

    def sleep(self, dt_s: float) -> None:
        """Alias of :meth:`advance`, with the signature of :func:`time.sleep`."""
        self.advance(dt_s)

    def __repr__(self) -> str:
        return f"SimulatedClock(time={self._now_s!r})"


@dataclass(frozen=True)
class StageEvent:
    """One line of :attr:`MockZStage.log`.

    Attributes
    ----------
    time_s : float
        Simulated time of the event.
    kind : str
        ``"move"`` (a command, accepted or not), ``"refused"`` (a move rejected by a limit
        or a fault state), ``"idle"`` (motion and settling finished), ``"timeout"``,
        ``"fault"`` or ``"stop"``.
    commanded_um : float
        Target of the command (NaN for events that have none).
    measured_um : float
        Measured position at the time of the event.
    """

    time_s: float
    kind: str
    commanded_um: float
    measured_um: float


def _check_timeout(timeout_s: Any) -> float | None:
    if timeout_s is None:
        return None
    return check_positive(timeout_s, "timeout_s", allow_zero=True)


class MockZStage:
    """A simulated focus drive that follows the :class:`~nanoro_optics.hardware.ZStage` protocol.

    Parameters
    ----------
    limits_um : (float, float), optional
        Travel limits ``(lo, hi)``; moves outside raise
        :class:`~nanoro_optics.hardware.errors.StageLimitError` (never clipped).
    position_um : float, optional
        Initial position, inside the limits.
    speed_um_per_s : float, optional
        Travel speed (>= :data:`MIN_SPEED_UM_PER_S`).
    settle_ms : float, optional
        Settling time after each move (>= 0).
    backlash_um : float, optional
        Mechanical play (>= 0), see the module notes.
    position_noise_um : float, optional
        Standard deviation of the per-move positioning error (>= 0).
    drift_um_per_s : float, optional
        Constant drift of the carriage.
    fail_on_move : int, optional
        The k-th accepted move (1-based) raises
        :class:`~nanoro_optics.hardware.errors.StageFault` and leaves the stage faulted:
        every later move and wait raises ``StageFault`` until :meth:`reset`.
    hang_on_move : int, optional
        The k-th accepted move never finishes: :meth:`wait_until_idle` raises
        :class:`~nanoro_optics.hardware.errors.StageTimeoutError` after its timeout (or
        ``hang_timeout_s`` of simulated time when it has none).
    hang_timeout_s : float, optional
        Simulated time a wait without timeout spends on a hung move before giving up.
    seed : int, optional
        Seed of the positioning noise.
    clock : SimulatedClock, optional
        Shared clock; a new one is made when omitted (see :attr:`clock`).

    Examples
    --------
    >>> stage = MockZStage(limits_um=(0.0, 100.0), position_um=10.0, backlash_um=2.0)
    >>> stage.move_to_um(20.0); stage.wait_until_idle()
    >>> stage.get_position_um()  # an upward move ends short by the play
    18.0
    >>> stage.move_to_um(150.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nanoro_optics.hardware.errors.StageLimitError: z_um=150.0 is outside the stage limits ...
    """

    def __init__(
        self,
        *,
        limits_um: tuple[float, float] = (-5000.0, 5000.0),
        position_um: float = 0.0,
        speed_um_per_s: float = 1000.0,
        settle_ms: float = 5.0,
        backlash_um: float = 0.0,
        position_noise_um: float = 0.0,
        drift_um_per_s: float = 0.0,
        fail_on_move: int | None = None,
        hang_on_move: int | None = None,
        hang_timeout_s: float = 30.0,
        seed: int = 0,
        clock: SimulatedClock | None = None,
    ) -> None:
        lo, hi = self._limits = check_interval(limits_um, "limits_um")
        z0 = check_finite_real(position_um, "position_um")
        if not lo <= z0 <= hi:
            raise ValueError(f"position_um must be inside limits_um {self._limits}, got {z0!r}")
        self.speed_um_per_s = check_range(
            speed_um_per_s, "speed_um_per_s", MIN_SPEED_UM_PER_S, None
        )
        self.settle_ms = check_positive(settle_ms, "settle_ms", allow_zero=True)
        self.backlash_um = check_positive(backlash_um, "backlash_um", allow_zero=True)
        self.position_noise_um = check_positive(
            position_noise_um, "position_noise_um", allow_zero=True
        )
        self.drift_um_per_s = check_finite_real(drift_um_per_s, "drift_um_per_s")
        self.fail_on_move = (
            None if fail_on_move is None else check_int(fail_on_move, "fail_on_move", 1)
        )
        self.hang_on_move = (
            None if hang_on_move is None else check_int(hang_on_move, "hang_on_move", 1)
        )
        self.hang_timeout_s = check_positive(hang_timeout_s, "hang_timeout_s")
        check_int(seed, "seed", 0)
        if clock is not None and not isinstance(clock, SimulatedClock):
            raise TypeError(f"clock must be a SimulatedClock, got {type(clock).__name__}")
        self.clock = clock if clock is not None else SimulatedClock()
        self._rng = np.random.default_rng(seed)
        self._t_created = self.clock.time()
        # carriage trajectory: ramp from _from_um (at _t0) to _to_um (at _t1), settled at _t2
        self._motor_um = z0
        self._from_um = z0
        self._to_um = z0
        self._t0 = self._t1 = self._t2 = self._t_created
        self._jitter_um = 0.0
        self._hung = False
        self._faulted = False
        #: number of accepted moves (the ones counted by ``fail_on_move``/``hang_on_move``)
        self.move_count = 0
        #: number of calls to :meth:`stop`
        self.stop_count = 0
        #: every command and event, in order (see :class:`StageEvent`)
        self.log: list[StageEvent] = []

    # -- protocol -------------------------------------------------------------------------
    @property
    def limits_um(self) -> tuple[float, float]:
        """Travel limits ``(lo, hi)`` in um."""
        return self._limits

    def get_position_um(self) -> float:
        """Return the carriage position now (noise and drift included)."""
        return self._position_at(self.clock.time())

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        """Start an absolute move to ``z_um``; returns at once (see :meth:`wait_until_idle`).

        Raises
        ------
        StageLimitError
            If ``z_um`` is outside :attr:`limits_um` (the stage does not move).
        StageFault
            If the stage is faulted, or this is the move chosen by ``fail_on_move``.
        """
        _check_timeout(timeout_s)
        z = check_finite_real(z_um, "z_um")
        now = self.clock.time()
        here = self._position_at(now)
        self.log.append(StageEvent(now, "move", z, here))
        if self._faulted:
            self.log.append(StageEvent(now, "refused", z, here))
            raise StageFault("stage is in a fault state; call reset() first")
        lo, hi = self._limits
        if not lo <= z <= hi:
            self.log.append(StageEvent(now, "refused", z, here))
            raise StageLimitError(f"z_um={z!r} is outside the stage limits [{lo!r}, {hi!r}] um")
        travel_s = abs(z - self._motor_um) / self.speed_um_per_s
        if not math.isfinite(travel_s + self.settle_ms / 1000.0 + now):
            self.log.append(StageEvent(now, "refused", z, here))
            raise ValueError(
                f"z_um={z!r}: the move from {self._motor_um!r} um at speed_um_per_s="
                f"{self.speed_um_per_s!r} would end past the largest float time"
            )
        self.move_count += 1
        if self.fail_on_move == self.move_count:
            self._freeze(now)
            self._faulted = True
            self.log.append(StageEvent(now, "fault", z, here))
            raise StageFault(f"injected stage fault on move {self.move_count} (to {z!r} um)")
        carriage = self._carriage_at(now)
        target = max(min(carriage, z), z - self.backlash_um)  # play operator
        self._motor_um = z
        self._from_um, self._to_um = carriage, target
        self._t0 = now
        self._t1 = now + travel_s
        self._t2 = self._t1 + self.settle_ms / 1000.0
        if self.position_noise_um > 0:
            self._jitter_um = float(self._rng.normal(0.0, self.position_noise_um))
        self._hung = self.hang_on_move == self.move_count

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Advance the simulated clock until the move has ended and settled.

        Raises
        ------
        StageTimeoutError
            If ``timeout_s`` (simulated) passes first, or the move hangs.
        StageFault
            If the stage is faulted.
        """
        timeout = _check_timeout(timeout_s)
        now = self.clock.time()
        if self._faulted:
            raise StageFault("stage is in a fault state; call reset() first")
        if self._hung:
            wait = self.hang_timeout_s if timeout is None else timeout
            self.clock.advance(wait)
            self.log.append(StageEvent(self.clock.time(), "timeout", self._motor_um, self._here()))
            raise StageTimeoutError(
                f"stage did not reach {self._motor_um!r} um within {wait!r} s (move hung)"
            )
        remaining = max(self._t2 - now, 0.0)
        if timeout is not None and remaining > timeout:
            self.clock.advance(timeout)
            self.log.append(StageEvent(self.clock.time(), "timeout", self._motor_um, self._here()))
            raise StageTimeoutError(
                f"stage did not become idle within timeout_s={timeout!r} s ({remaining!r} s needed)"
            )
        self.clock.advance(remaining)
        self.log.append(StageEvent(self.clock.time(), "idle", self._motor_um, self._here()))

    def stop(self) -> None:
        """Halt now: the carriage stays where it is; a fault state is kept."""
        now = self.clock.time()
        self._freeze(now)
        self.stop_count += 1
        self.log.append(StageEvent(now, "stop", math.nan, self._position_at(now)))

    # -- extras ---------------------------------------------------------------------------
    @property
    def faulted(self) -> bool:
        """True after an injected fault, until :meth:`reset`."""
        return self._faulted

    @property
    def is_moving(self) -> bool:
        """True while a move (or its settling) is under way."""
        return self._hung or self.clock.time() < self._t2

    def reset(self) -> None:
        """Clear a fault state and any injected fault still pending."""
        self._faulted = False
        self._hung = False
        self.fail_on_move = None
        self.hang_on_move = None

    @property
    def commanded_um(self) -> list[float]:
        """Targets of every move command received (accepted or refused), in order."""
        return [e.commanded_um for e in self.log if e.kind == "move"]

    # -- internals ------------------------------------------------------------------------
    def _carriage_at(self, t: float) -> float:
        if self._hung:
            return self._from_um
        if t >= self._t1 or self._t1 <= self._t0:
            return self._to_um
        frac = (t - self._t0) / (self._t1 - self._t0)
        return self._from_um + frac * (self._to_um - self._from_um)

    def _position_at(self, t: float) -> float:
        drift = self.drift_um_per_s * (t - self._t_created)
        return self._carriage_at(t) + self._jitter_um + drift

    def _here(self) -> float:
        """Return the position now, for the log (without calling :meth:`get_position_um`)."""
        return self._position_at(self.clock.time())

    def _freeze(self, t: float) -> None:
        here = self._carriage_at(t)
        self._from_um = self._to_um = here
        self._motor_um = here
        self._t0 = self._t1 = self._t2 = t
        self._hung = False

    def __repr__(self) -> str:
        return (
            f"MockZStage(limits_um={self._limits}, position_um={self._here()!r}, "
            f"moves={self.move_count}, faulted={self._faulted})"
        )
